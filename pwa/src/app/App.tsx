/** Top-level routing on the app phase; the messenger layout once an identity exists. */
import {
  createEffect,
  createMemo,
  createSignal,
  Match,
  onCleanup,
  onMount,
  Show,
  Switch,
} from "solid-js";
import { unreadTotal } from "../state/model";
import { Conversation, EmptyPane } from "../ui/Conversation";
import { MembersDialog, VerifyDialog } from "../ui/Dialogs";
import { LazyLinkingScreen } from "../ui/lazy";
import { Creating, Onboarding } from "../ui/Onboarding";
import { RetiredBanner } from "../ui/Retired";
import { BootScreen, FatalScreen, LockScreen, OtherTabScreen } from "../ui/Screens";
import { SettingsDialog } from "../ui/Settings";
import { Sidebar } from "../ui/Sidebar";
import { Toasts } from "../ui/Toasts";
import { ConnectionNotice, TopBar } from "../ui/TopBar";
import { tabTitle } from "../ui/wording";
import { ParleyContext, useParley } from "./context";
import type { Parley } from "./controller";

function Messenger() {
  const { state } = useParley();
  const [verifyFor, setVerifyFor] = createSignal<string | null>(null);
  const [membersOpen, setMembersOpen] = createSignal(false);
  const [settingsOpen, setSettingsOpen] = createSignal(false);
  const selected = createMemo(() => (state.selected ? state.convs[state.selected] : undefined));
  // "(3) Parley": unread messages show in the tab strip and the task switcher.
  createEffect(() => {
    document.title = tabTitle(unreadTotal(state));
  });
  onCleanup(() => {
    document.title = tabTitle(0);
  });
  return (
    <div class="app" classList={{ "has-selection": !!selected() }}>
      <TopBar onSettings={() => setSettingsOpen(true)} />
      <ConnectionNotice />
      <RetiredBanner />
      <div class="panes">
        <Sidebar />
        <Show when={selected()} keyed={false} fallback={<EmptyPane />}>
          {(c) => (
            <Conversation
              conv={c()}
              onVerify={(u) => setVerifyFor(u)}
              onMembers={() => setMembersOpen(true)}
            />
          )}
        </Show>
      </div>
      <Show when={settingsOpen()}>
        <SettingsDialog onClose={() => setSettingsOpen(false)} />
      </Show>
      <Show when={verifyFor()}>
        {(u) => <VerifyDialog username={u()} onClose={() => setVerifyFor(null)} />}
      </Show>
      <Show when={membersOpen() && selected()?.kind === "group" && selected()}>
        {(c) => (
          <MembersDialog
            conv={c()}
            onClose={() => setMembersOpen(false)}
            onVerify={(u) => {
              setMembersOpen(false);
              setVerifyFor(u);
            }}
          />
        )}
      </Show>
    </div>
  );
}

export function App(props: { parley: Parley }) {
  const p = props.parley;
  onMount(() => {
    const onVis = () => {
      const visible = document.visibilityState === "visible";
      // Hidden may be the last moment this page runs (phones discard background tabs).
      if (!visible) p.actions.flushDrafts();
      p.actions.setVisible(visible);
    };
    document.addEventListener("visibilitychange", onVis);
    const onOnline = () => p.actions.retryNow();
    window.addEventListener("online", onOnline);
    const onHide = () => p.actions.flushDrafts();
    window.addEventListener("pagehide", onHide);
    onCleanup(() => {
      document.removeEventListener("visibilitychange", onVis);
      window.removeEventListener("online", onOnline);
      window.removeEventListener("pagehide", onHide);
    });
  });
  return (
    <ParleyContext.Provider value={p}>
      <Switch>
        <Match when={p.phase().p === "boot"}>
          <BootScreen />
        </Match>
        <Match when={p.phase().p === "blocked"}>
          <OtherTabScreen lost={false} />
        </Match>
        <Match when={p.phase().p === "lost"}>
          <OtherTabScreen lost />
        </Match>
        <Match
          when={(() => {
            const ph = p.phase();
            return ph.p === "fatal" ? ph : undefined;
          })()}
        >
          {(ph) => <FatalScreen message={ph().message} />}
        </Match>
        <Match
          when={(() => {
            const ph = p.phase();
            return ph.p === "locked" ? ph : undefined;
          })()}
        >
          {(ph) => <LockScreen error={ph().error} />}
        </Match>
        <Match
          when={(() => {
            const ph = p.phase();
            return ph.p === "onboarding" ? ph : undefined;
          })()}
        >
          {(ph) => <Onboarding error={ph().error} taken={ph().taken} />}
        </Match>
        <Match
          when={(() => {
            const ph = p.phase();
            return ph.p === "creating" ? ph : undefined;
          })()}
        >
          {(ph) => <Creating username={ph().username} step={ph().step} detail={ph().detail} />}
        </Match>
        <Match
          when={(() => {
            const ph = p.phase();
            return ph.p === "linking" ? ph : undefined;
          })()}
        >
          {(ph) => <LazyLinkingScreen code={ph().code} expired={ph().expired} error={ph().error} />}
        </Match>
        <Match when={p.phase().p === "ready"}>
          <Messenger />
        </Match>
      </Switch>
      <Toasts store={p.toasts} />
    </ParleyContext.Provider>
  );
}
