/**
 * Right pane: the selected conversation — header with actions (leaving and ending ask first),
 * key-change and unknown-user banners, the message log (own bubbles right, others left, sender
 * names in groups, time, delivery state, system lines in plain words with the engine's text
 * behind "Details", http(s) links clickable) and the composer (Composer.tsx).
 */
import { createEffect, createMemo, createSignal, For, Match, on, Show, Switch } from "solid-js";
import type { DeliveryState } from "../../../shared/core/client-api";
import { useParley } from "../app/context";
import { type ConvView, isMember, sendBlockedReason } from "../state/model";
import { rowKey } from "../storage/history";
import type { HistoryEntry, HistoryMessage, HistorySystem } from "../storage/schemas";
import { FileMessage, UploadList } from "./Attachments";
import { Composer } from "./Composer";
import { ConfirmDialog } from "./Dialogs";
import { avatarClass, formatDay, formatTime, hueOf } from "./format";
import { InviteButton } from "./GroupDialogs";
import { linkify } from "./linkify";
import {
  ConvOptions,
  Edited,
  MessageMenu,
  Quote,
  Reactions,
  SearchDialog,
  TypingLine,
} from "./MessageParts";
import { describeLog, unknownUserText, type Worded } from "./wording";

const DELIVERY_LABEL: Record<DeliveryState, string> = {
  sending: "Sending",
  sent: "Sent to relay",
  delivered: "Delivered",
  read: "Read",
  failed: "Not sent",
};

function DeliveryIcon(props: { state: DeliveryState }) {
  return (
    <span
      class={`delivery d-${props.state}`}
      title={DELIVERY_LABEL[props.state]}
      data-delivery={props.state}
    >
      <span class="visually-hidden">{DELIVERY_LABEL[props.state]}</span>
      <svg viewBox="0 0 18 12" width="16" height="11" aria-hidden="true">
        <Switch>
          <Match when={props.state === "sending"}>
            <circle class="icon-stroke" cx="6" cy="6" r="4.5" />
            <path class="icon-stroke" d="M6 3.5V6l1.7 1.2" />
          </Match>
          <Match when={props.state === "sent"}>
            <path class="icon-stroke" d="M2 6.5l3 3 7-7" />
          </Match>
          <Match when={props.state === "delivered" || props.state === "read"}>
            <path class="icon-stroke" d="M1 6.5l3 3 7-7M7 9.5l.5.5 8-8" />
          </Match>
          <Match when={props.state === "failed"}>
            <path class="icon-stroke" d="M6 2v5M6 9.5v.5" />
          </Match>
        </Switch>
      </svg>
    </span>
  );
}

/** Message text as DOM nodes: text runs, and http(s) links that open in a new tab. */
function MessageText(props: { text: string }) {
  return (
    <span class="text" dir="auto" data-testid="message-text">
      <For each={linkify(props.text)}>
        {(run) =>
          run.kind === "link" ? (
            <a href={run.href} target="_blank" rel="noopener noreferrer">
              {run.text}
            </a>
          ) : (
            run.text
          )
        }
      </For>
    </span>
  );
}

function SystemEntry(props: { entry: HistorySystem; worded: Worded }) {
  return (
    <li class={`system sys-${props.entry.sysKind}`} data-testid="system-line">
      <span class="sys-text" dir="auto">
        {props.worded.text}
      </span>
      <Show when={props.worded.details}>
        {(d) => (
          <details class="sys-details">
            <summary>Details</summary>
            <span class="sys-raw">{d()}</span>
          </details>
        )}
      </Show>
    </li>
  );
}

function Entry(props: {
  entry: HistoryEntry;
  conv: ConvView;
  prev: HistoryEntry | undefined;
  worded: Worded | null | undefined;
  me: string;
  focused: boolean;
}) {
  const newDay = () =>
    !props.prev ||
    new Date(props.prev.at).toDateString() !== new Date(props.entry.at).toDateString();
  const e = () => props.entry;
  const sys = (): HistorySystem | undefined => {
    const x = e();
    return x.kind === "sys" ? x : undefined;
  };
  const msg = (): HistoryMessage | undefined => {
    const x = e();
    return x.kind === "msg" ? x : undefined;
  };
  return (
    <>
      <Show when={newDay()}>
        <li class="day">
          <span>{formatDay(e().at)}</span>
        </li>
      </Show>
      <Show when={sys()}>
        {(s) => <Show when={props.worded}>{(w) => <SystemEntry entry={s()} worded={w()} />}</Show>}
      </Show>
      <Show when={msg()}>
        {(m) => {
          const showName = () =>
            props.conv.kind === "group" &&
            m().direction === "in" &&
            !(props.prev?.kind === "msg" && props.prev.from === m().from && !newDay());
          return (
            <li
              class="msg"
              classList={{
                out: m().direction === "out",
                in: m().direction === "in",
                focused: props.focused,
              }}
              data-testid="message"
              data-from={m().from}
              data-key={rowKey(m())}
            >
              <div class="bubble">
                <Show when={showName()}>
                  <span class={`sender hue-text-${hueOf(m().from) % 12}`} title={m().from}>
                    {m().from}
                  </span>
                </Show>
                <Show when={m().reply && !m().deleted ? m().reply : undefined}>
                  {(r) => <Quote to={r()} entries={props.conv.entries} />}
                </Show>
                <Show when={m().file && !m().deleted ? m().file : undefined}>
                  {(f) => <FileMessage entry={{ ...m(), file: f() }} />}
                </Show>
                <Switch
                  fallback={
                    <Show when={m().file === undefined || m().text !== ""}>
                      <MessageText text={m().text} />
                    </Show>
                  }
                >
                  <Match when={m().deleted}>
                    <span class="text tombstone" data-testid="message-text">
                      This message was deleted
                    </span>
                  </Match>
                  <Match when={m().unsupported !== undefined}>
                    <span class="text tombstone" data-testid="message-text">
                      Unsupported message — a newer version of Parley is needed to show it
                    </span>
                  </Match>
                </Switch>
                <Show when={m().direction === "in" && !m().deleted ? m().invite : undefined}>
                  {(inv) => <InviteButton invite={inv()} />}
                </Show>
                <Reactions m={m()} me={props.me} conv={props.conv.id} />
                <span class="meta">
                  <Show when={m().exp !== undefined}>
                    <span
                      class="disappearing"
                      role="img"
                      title="Disappearing message"
                      aria-label="Disappearing message"
                    >
                      ⏱
                    </span>
                  </Show>
                  <Edited m={m()} />
                  <time dateTime={new Date(m().at).toISOString()}>{formatTime(m().at)}</time>
                  <Show when={m().direction === "out"}>
                    <DeliveryIcon state={m().delivery ?? "sending"} />
                  </Show>
                </span>
              </div>
              <MessageMenu m={m()} conv={props.conv} />
            </li>
          );
        }}
      </Show>
    </>
  );
}

export function Conversation(props: {
  conv: ConvView;
  onVerify: (username: string) => void;
  onMembers: () => void;
}) {
  const { state, actions, messaging, transfers } = useParley();
  const [confirm, setConfirm] = createSignal<"leave" | "end" | null>(null);
  const [dropping, setDropping] = createSignal(false);
  const [panel, setPanel] = createSignal<"search" | "options" | null>(null);
  const focusKey = () => {
    const f = messaging.focus();
    return f?.conv === props.conv.id ? f.key : null;
  };
  let log: HTMLOListElement | undefined;

  /** Whose key changed: the peer, or in a group the member named by the latest key-change line. */
  const changedWho = createMemo(() => {
    if (props.conv.kind === "direct") return props.conv.name;
    for (let i = props.conv.entries.length - 1; i >= 0; i--) {
      const e = props.conv.entries[i];
      if (e?.kind === "sys" && e.sysKind === "key_changed" && e.username) return e.username;
    }
    return undefined;
  });
  const member = () => isMember(props.conv);
  const subtitle = createMemo(() => {
    const c = props.conv;
    if (c.kind === "group") {
      if (!member()) return "You are not a member";
      return `${c.members.length} member${c.members.length === 1 ? "" : "s"}`;
    }
    return c.members[0]?.fingerprint ?? "";
  });
  const title = () => `${props.conv.kind === "group" ? "#" : ""}${props.conv.name}`;
  /** System lines in plain words (null: folded into a neighbour, not shown on its own). */
  const worded = createMemo(() => describeLog(props.conv.entries, state.me?.username ?? null));

  // Follow the conversation: stick to the bottom when a message arrives, unless the user scrolled up.
  createEffect(
    on(
      () => [props.conv.id, props.conv.entries.length] as const,
      ([id], prev) => {
        if (!log) return;
        const el = log;
        const nearBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 160;
        if (!prev || prev[0] !== id || nearBottom) {
          queueMicrotask(() => {
            el.scrollTop = el.scrollHeight;
          });
        }
      },
    ),
  );

  // A search hit: scroll its message into view once it is on screen, and highlight it.
  createEffect(
    on(
      () => [messaging.focus(), props.conv.id] as const,
      ([f]) => {
        if (!f || f.conv !== props.conv.id || !log) return;
        const el = log;
        queueMicrotask(() => {
          const li = [...el.querySelectorAll<HTMLElement>("li[data-key]")].find(
            (x) => x.dataset.key === f.key,
          );
          li?.scrollIntoView({ block: "center" });
        });
      },
    ),
  );

  return (
    <section
      class="conversation"
      classList={{ dropping: dropping() }}
      aria-label={`Conversation with ${props.conv.name}`}
      // Drag and drop a file anywhere on the conversation to send it (PROTOCOL.md §8.6.1).
      onDragOver={(e) => {
        if (!e.dataTransfer?.types.includes("Files") || sendBlockedReason(props.conv) !== null)
          return;
        e.preventDefault();
        setDropping(true);
      }}
      onDragLeave={(e) => {
        if (e.currentTarget === e.target) setDropping(false);
      }}
      onDrop={(e) => {
        setDropping(false);
        const files = [...(e.dataTransfer?.files ?? [])];
        if (files.length === 0 || sendBlockedReason(props.conv) !== null) return;
        e.preventDefault();
        transfers.sendFiles(files, props.conv.id, "", messaging.takeReply(props.conv.id));
      }}
    >
      <header class="conv-header">
        <button
          type="button"
          class="icon-button back"
          aria-label="Back to conversations"
          onClick={() => actions.select(null)}
        >
          <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
            <path class="icon-stroke" d="M15 5l-7 7 7 7" />
          </svg>
        </button>
        <span
          class={props.conv.kind === "group" ? "avatar group-avatar" : avatarClass(props.conv.name)}
          aria-hidden="true"
        >
          {props.conv.kind === "group" ? "#" : props.conv.name.slice(0, 1).toUpperCase()}
        </span>
        <div class="conv-title">
          <h2 data-testid="conv-title" title={title()}>
            {title()}
          </h2>
          <span class="conv-sub">{subtitle()}</span>
        </div>
        <div class="conv-actions">
          <button
            type="button"
            class="icon-button"
            aria-label="Search messages"
            title="Search messages"
            data-testid="open-search"
            onClick={() => setPanel("search")}
          >
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
              <circle class="icon-stroke" cx="11" cy="11" r="6" />
              <path class="icon-stroke" d="M15.5 15.5L20 20" />
            </svg>
          </button>
          <button
            type="button"
            class="icon-button"
            aria-label="Chat options"
            title="Chat options: disappearing messages, mute, archive"
            data-testid="open-conv-options"
            onClick={() => setPanel("options")}
          >
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
              <circle class="icon-stroke" cx="12" cy="13" r="7" />
              <path class="icon-stroke" d="M12 9v4l2.5 1.5M10 3h4" />
            </svg>
          </button>
          <Show
            when={props.conv.kind === "direct"}
            fallback={
              <>
                <button type="button" class="secondary" onClick={() => props.onMembers()}>
                  Members
                </button>
                <Show
                  when={member()}
                  fallback={
                    <button
                      type="button"
                      class="primary"
                      data-testid="conv-join"
                      onClick={() => void actions.joinGroup(props.conv.name)}
                    >
                      Join
                    </button>
                  }
                >
                  <button
                    type="button"
                    class="secondary danger"
                    data-testid="conv-leave"
                    onClick={() => setConfirm("leave")}
                  >
                    Leave
                  </button>
                </Show>
              </>
            }
          >
            <button
              type="button"
              class="secondary"
              data-testid="open-verify"
              onClick={() => props.onVerify(props.conv.name)}
            >
              Safety number
            </button>
            <button
              type="button"
              class="secondary"
              data-testid="end-chat"
              title="Forget this session; the next message starts a fresh handshake"
              onClick={() => setConfirm("end")}
            >
              End chat
            </button>
          </Show>
        </div>
      </header>

      <Show when={props.conv.kind === "direct" && props.conv.missingUser}>
        <div class="banner danger" role="alert" data-testid="unknown-user-banner">
          <p class="wrap-anywhere">{unknownUserText(props.conv.name)}</p>
          <Show when={props.conv.entries.length === 0}>
            <div class="banner-actions">
              <button
                type="button"
                class="secondary"
                data-testid="close-chat"
                onClick={() => actions.closeChat(props.conv.id)}
              >
                Close this chat
              </button>
            </div>
          </Show>
        </div>
      </Show>

      <Show when={props.conv.kind === "direct" && props.conv.contact}>
        {(contact) => (
          <div class="banner" role="status" data-testid="request-banner">
            <p class="wrap-anywhere">
              <Show
                when={contact() === "request"}
                fallback={
                  <>
                    <strong>You blocked {props.conv.name}.</strong> The relay does not take their
                    messages to you.
                  </>
                }
              >
                <strong>Message request from {props.conv.name}.</strong> You have not talked before.
                Accept to take their messages as a contact's, or block them; replying accepts too.
              </Show>
            </p>
            <div class="banner-actions">
              <Show when={contact() === "request"}>
                <button
                  type="button"
                  class="secondary"
                  data-testid="block-request"
                  onClick={() => void actions.blockContact(props.conv.name)}
                >
                  Block
                </button>
              </Show>
              <button
                type="button"
                class="primary"
                data-testid="accept-request"
                onClick={() => void actions.acceptContact(props.conv.name)}
              >
                {contact() === "request" ? "Accept" : "Unblock"}
              </button>
            </div>
          </div>
        )}
      </Show>

      <Show when={props.conv.status === "key_changed"}>
        <div class="banner danger" role="alert" data-testid="key-change-banner">
          <p class="wrap-anywhere">
            <strong>{changedWho() ?? "A member"}’s safety number has changed.</strong> They may have
            reinstalled Parley — or someone may be intercepting. Compare safety numbers before you
            continue. Sending is paused.
          </p>
          <div class="banner-actions">
            <Show when={changedWho()}>
              {(who) => (
                <>
                  <button type="button" class="secondary" onClick={() => props.onVerify(who())}>
                    Compare
                  </button>
                  <button
                    type="button"
                    class="primary"
                    data-testid="accept-key"
                    onClick={() => void actions.acceptKeyChange(who())}
                  >
                    Accept new key
                  </button>
                </>
              )}
            </Show>
          </div>
        </div>
      </Show>

      <ol
        class="log"
        ref={log}
        role="log"
        aria-live="polite"
        aria-label="Messages"
        data-testid="log"
      >
        <Show when={props.conv.entries.length === 0}>
          <li class="empty-log wrap-anywhere">
            <Show
              when={props.conv.kind === "direct"}
              fallback={<>No messages in #{props.conv.name} yet.</>}
            >
              Messages to {props.conv.name} are end-to-end encrypted. Compare safety numbers to be
              sure nobody sits in between.
            </Show>
          </li>
        </Show>
        <For each={props.conv.entries}>
          {(entry, i) => (
            <Entry
              entry={entry}
              conv={props.conv}
              prev={props.conv.entries[i() - 1]}
              worded={worded().get(entry.id)}
              me={state.me?.username ?? ""}
              focused={entry.kind === "msg" && focusKey() === rowKey(entry)}
            />
          )}
        </For>
      </ol>

      <TypingLine conv={props.conv} />
      <UploadList conversationId={props.conv.id} />
      <Composer conv={props.conv} />

      <Show when={panel() === "search"}>
        <SearchDialog onClose={() => setPanel(null)} />
      </Show>
      <Show when={panel() === "options"}>
        <ConvOptions conv={props.conv} onClose={() => setPanel(null)} />
      </Show>

      <Show when={confirm() === "leave"}>
        <ConfirmDialog
          title={`Leave #${props.conv.name}?`}
          confirmLabel="Leave group"
          onConfirm={() => void actions.leaveGroup(props.conv.name)}
          onClose={() => setConfirm(null)}
        >
          <p>
            You will stop receiving its messages, and the group key is renewed so you cannot read
            what is said after you leave. You can join again later.
          </p>
          <Show
            when={
              (props.conv.members.find((m) => m.username === state.me?.username)?.devices ?? 1) > 1
            }
          >
            {/* A person leaves with all of their devices (PROTOCOL §4.7). */}
            <p data-testid="leave-all-devices">Your other devices in this group leave it too.</p>
          </Show>
        </ConfirmDialog>
      </Show>
      <Show when={confirm() === "end"}>
        <ConfirmDialog
          title={`End the chat with ${props.conv.name}?`}
          confirmLabel="End chat"
          onConfirm={() => void actions.endChat(props.conv.name)}
          onClose={() => setConfirm(null)}
        >
          <p>
            This device forgets the secure session with{" "}
            <span class="name-text">{props.conv.name}</span>. Your messages stay here; the next
            message starts a new session.
          </p>
        </ConfirmDialog>
      </Show>
    </section>
  );
}

export function EmptyPane() {
  return (
    <section class="conversation empty-pane" aria-label="No conversation selected">
      <div class="empty-inner">
        <h2>Pick someone to talk to</h2>
        <p class="muted">
          Choose a person on the left to start an end-to-end encrypted chat, or join #broadcast to
          talk to everyone in this hub.
        </p>
      </div>
    </section>
  );
}
