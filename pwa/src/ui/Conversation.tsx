/**
 * Right pane: the selected conversation — header with actions, key-change banner, the message
 * log (own bubbles right, others left, sender names in groups, time, delivery state, system
 * lines) and the composer (Enter sends, Shift+Enter is a newline).
 */
import { createEffect, createMemo, createSignal, For, Match, on, Show, Switch } from "solid-js";
import type { DeliveryState } from "../../../shared/core/client-api";
import { useParley } from "../app/context";
import { type ConvView, sendBlockedReason } from "../state/model";
import type { HistoryEntry, HistoryMessage, HistorySystem } from "../storage/schemas";
import { avatarClass, formatDay, formatTime, hueOf } from "./format";

const DELIVERY_LABEL: Record<DeliveryState, string> = {
  sending: "Sending",
  sent: "Sent to relay",
  delivered: "Delivered",
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
          <Match when={props.state === "delivered"}>
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

function Entry(props: { entry: HistoryEntry; conv: ConvView; prev: HistoryEntry | undefined }) {
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
        {(s) => (
          <li class={`system sys-${s().sysKind}`} data-testid="system-line">
            <span>{s().text}</span>
          </li>
        )}
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
              classList={{ out: m().direction === "out", in: m().direction === "in" }}
              data-testid="message"
              data-from={m().from}
            >
              <div class="bubble">
                <Show when={showName()}>
                  <span class={`sender hue-text-${hueOf(m().from) % 12}`}>{m().from}</span>
                </Show>
                <span class="text" data-testid="message-text">
                  {m().text}
                </span>
                <span class="meta">
                  <time dateTime={new Date(m().at).toISOString()}>{formatTime(m().at)}</time>
                  <Show when={m().direction === "out"}>
                    <DeliveryIcon state={m().delivery ?? "sending"} />
                  </Show>
                </span>
              </div>
            </li>
          );
        }}
      </Show>
    </>
  );
}

/** Unsent text per conversation id (memory only: drafts are plaintext, never stored). */
const drafts = new Map<string, string>();

export function Conversation(props: {
  conv: ConvView;
  onVerify: (username: string) => void;
  onMembers: () => void;
}) {
  const { state, actions } = useParley();
  const [draft, setDraft] = createSignal("");
  let log: HTMLOListElement | undefined;
  let input: HTMLTextAreaElement | undefined;

  const blocked = createMemo(() => sendBlockedReason(props.conv));
  /** Whose key changed: the peer, or in a group the member named by the latest key-change line. */
  const changedWho = createMemo(() => {
    if (props.conv.kind === "direct") return props.conv.name;
    for (let i = props.conv.entries.length - 1; i >= 0; i--) {
      const e = props.conv.entries[i];
      if (e?.kind === "sys" && e.sysKind === "key_changed" && e.username) return e.username;
    }
    return undefined;
  });
  const isMember = () =>
    props.conv.kind === "direct" || props.conv.epoch >= 0 || props.conv.joining;
  const subtitle = createMemo(() => {
    const c = props.conv;
    if (c.kind === "group") {
      if (!isMember()) return "You are not a member";
      return `${c.members.length} member${c.members.length === 1 ? "" : "s"} · epoch ${Math.max(c.epoch, 0)}`;
    }
    return c.members[0]?.fingerprint ?? "";
  });

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
  // One draft per conversation: switching chats keeps what was typed where it was typed.
  createEffect(
    on(
      () => props.conv.id,
      (id, prev) => {
        if (prev !== undefined) drafts.set(prev, draft());
        setDraft(drafts.get(id) ?? "");
        input?.focus({ preventScroll: true });
      },
    ),
  );

  const submit = async () => {
    const text = draft();
    if (!text.trim() || blocked()) return;
    setDraft("");
    const ok = await actions.send(text);
    if (!ok) setDraft(text);
  };

  return (
    <section class="conversation" aria-label={`Conversation with ${props.conv.name}`}>
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
          <h2 data-testid="conv-title">
            {props.conv.kind === "group" ? "#" : ""}
            {props.conv.name}
          </h2>
          <span class="conv-sub">{subtitle()}</span>
        </div>
        <div class="conv-actions">
          <Show
            when={props.conv.kind === "direct"}
            fallback={
              <>
                <button type="button" class="secondary" onClick={() => props.onMembers()}>
                  Members
                </button>
                <Show
                  when={isMember()}
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
                    onClick={() => void actions.leaveGroup(props.conv.name)}
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
              onClick={() => void actions.endChat(props.conv.name)}
            >
              End chat
            </button>
          </Show>
        </div>
      </header>

      <Show when={props.conv.status === "key_changed"}>
        <div class="banner danger" role="alert" data-testid="key-change-banner">
          <p>
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
          <li class="empty-log">
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
            <Entry entry={entry} conv={props.conv} prev={props.conv.entries[i() - 1]} />
          )}
        </For>
      </ol>

      <Show when={blocked()}>
        {(why) => (
          <p class="composer-note" data-testid="composer-blocked">
            {why()}
          </p>
        )}
      </Show>
      <form
        class="composer"
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <label for="composer-input" class="visually-hidden">
          Message {props.conv.name}
        </label>
        <textarea
          id="composer-input"
          ref={input}
          rows={Math.min(6, Math.max(1, draft().split("\n").length))}
          data-testid="composer"
          placeholder={
            blocked() !== null
              ? "Sending paused"
              : state.conn.kind === "online"
                ? "Message"
                : "Message — sent when back online"
          }
          disabled={blocked() !== null}
          aria-describedby="composer-help"
          value={draft()}
          onInput={(e) => setDraft(e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              void submit();
            }
          }}
        />
        <span id="composer-help" class="visually-hidden">
          Enter sends, Shift+Enter starts a new line.
        </span>
        <button
          type="submit"
          class="primary send"
          data-testid="send"
          disabled={blocked() !== null || draft().trim().length === 0}
          aria-label="Send"
        >
          <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
            <path class="icon-fill" d="M3 20.5l18-8.5L3 3.5l2.5 7L15 12l-9.5 1.5z" />
          </svg>
        </button>
      </form>
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
