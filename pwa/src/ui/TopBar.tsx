/**
 * Top bar: who I am (username + fingerprint) and the status of the selected chat (§4.7); below
 * it, while the connection needs attention, a notice with a countdown and "Retry now", or "Use
 * here" after another tab or device took the connection over.
 */
import { createMemo, createSignal, onCleanup, Show } from "solid-js";
import { useParley } from "../app/context";
import { isMember } from "../state/model";
import { chatStatusLabel } from "./format";
import { Logo } from "./Logo";
import { connectionNotice } from "./wording";

export function TopBar(props: { onSettings: () => void }) {
  const { state, notifyPerm, actions } = useParley();
  const selected = createMemo(() => (state.selected ? state.convs[state.selected] : undefined));
  const status = createMemo(() =>
    chatStatusLabel(state.conn, selected()?.status ?? null, Date.now(), selected()),
  );
  const selectedName = () => {
    const c = selected();
    return c ? `${c.kind === "group" ? "#" : ""}${c.name}` : "";
  };
  const joinable = createMemo(() => {
    const c = selected();
    return c?.kind === "group" && !isMember(c) && state.conn.kind === "online" ? c : undefined;
  });

  return (
    <header class="topbar">
      <div class="brand">
        <Logo size={28} />
        <span class="brand-name">Parley</span>
      </div>
      <div class="me">
        <span class="me-name ellipsis" data-testid="my-username" title={state.me?.username}>
          {state.me?.username}
        </span>
        <span class="fingerprint" title="Your key fingerprint" data-testid="my-fingerprint">
          {state.me?.fingerprint}
        </span>
      </div>
      <div class="topbar-right">
        <div class="chat-status" role="status" aria-live="polite" data-testid="chat-status">
          <Show when={selected()}>
            <span class="status-chat" title={selectedName()}>
              {selectedName()}:
            </span>
          </Show>
          <span class={`pill tone-${status().tone}`} data-tone={status().tone}>
            {status().label}
          </span>
        </div>
        <Show when={joinable()}>
          {(g) => (
            <button
              type="button"
              class="small primary"
              data-testid="topbar-join"
              aria-label={`Join #${g().name}`}
              onClick={() => void actions.joinGroup(g().name)}
            >
              Join
            </button>
          )}
        </Show>
        <Show when={notifyPerm() === "default"}>
          <button
            type="button"
            class="icon-button"
            title="Notify me about messages while Parley is in the background"
            aria-label="Enable notifications"
            data-testid="enable-notifications"
            onClick={() => void actions.enableNotifications()}
          >
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
              <path class="icon-stroke" d="M6 16V11a6 6 0 1 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0" />
            </svg>
          </button>
        </Show>
        <button
          type="button"
          class="icon-button"
          aria-label="Settings"
          title="Settings"
          data-testid="open-settings"
          onClick={() => props.onSettings()}
        >
          <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
            <circle class="icon-stroke" cx="12" cy="12" r="3" />
            <path
              class="icon-stroke"
              d="M12 2v3M12 19v3M4.2 4.2l2.1 2.1M17.7 17.7l2.1 2.1M2 12h3M19 12h3M4.2 19.8l2.1-2.1M17.7 6.3l2.1-2.1"
            />
          </svg>
        </button>
      </div>
    </header>
  );
}

/**
 * "Reconnecting in N s… [Retry now]" or "Signed in elsewhere… [Use here]". Not a live region:
 * the countdown would be read out every second; the status pill above already announces the
 * change to "Offline".
 */
export function ConnectionNotice() {
  const { state, actions } = useParley();
  const [now, setNow] = createSignal(Date.now());
  // Tick twice a second so the countdown never shows a stale second.
  const timer = setInterval(() => setNow(Date.now()), 500);
  onCleanup(() => clearInterval(timer));
  const notice = createMemo(() => connectionNotice(state.conn, now()));
  return (
    <Show when={notice()}>
      {(n) => (
        <div
          class="conn-notice"
          classList={{ replaced: n().action === "use_here" }}
          data-testid="conn-notice"
          data-seconds={n().seconds ?? undefined}
        >
          <span class="conn-notice-text">{n().text}</span>
          <button
            type="button"
            class="small primary"
            data-testid={n().action === "retry" ? "retry-now" : "use-here"}
            onClick={() => (n().action === "retry" ? actions.retryNow() : actions.useHere())}
          >
            {n().action === "retry" ? "Retry now" : "Use here"}
          </button>
        </div>
      )}
    </Show>
  );
}
