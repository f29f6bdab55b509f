/**
 * The pieces of everyday messaging in the conversation view (PROTOCOL.md §8.6.1, §12.6): a
 * reply's quote, reactions, "edited" with the earlier versions on request, a tombstone for a
 * deleted message, "unsupported message", the per-message actions menu, the chat options
 * (disappearing timer, mute, archive), the typing line and search. The decisions are
 * shared/core/messages.ts's; these only render and call the controller.
 */
import { createMemo, createSignal, For, onCleanup, onMount, Show } from "solid-js";
import type { ConversationId } from "../../../shared/core/client-api";
import type { MessageRef } from "../../../shared/core/message-content";
import {
  canDeleteForEveryone,
  findMessage,
  formatDuration,
  reactionSummary,
} from "../../../shared/core/messages";
import { useParley } from "../app/context";
import { type ConvView, parseConvId, timerOf, typingNow } from "../state/model";
import { rowKey } from "../storage/history";
import type { HistoryEntry, HistoryMessage } from "../storage/schemas";
import { Modal } from "./Dialogs";
import { formatTime } from "./format";

export const REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🙏"] as const;

/** Timers offered in the chat options (any value in DISAPPEAR_MIN_MS…MAX is valid on the wire). */
export const TIMER_CHOICES = [0, 30_000, 300_000, 3_600_000, 86_400_000, 604_800_000] as const;

export function snippet(text: string, n = 80): string {
  const t = text.replace(/\s+/g, " ").trim();
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

/** The message a reply quotes, as this device has it (never the sender's claim of its text). */
export function Quote(props: { to: MessageRef; entries: readonly HistoryEntry[] }) {
  const quoted = createMemo(() => {
    const i = findMessage(props.entries, props.to);
    const e = i >= 0 ? props.entries[i] : undefined;
    return e?.kind === "msg" ? e : undefined;
  });
  return (
    <blockquote class="quote" data-testid="quote">
      <span class="quote-from">{props.to.from}</span>
      <span class="quote-text" dir="auto">
        {(() => {
          const q = quoted();
          if (!q) return "Original message not available";
          if (q.deleted) return "This message was deleted";
          return snippet(q.text);
        })()}
      </span>
    </blockquote>
  );
}

export function Reactions(props: { m: HistoryMessage; me: string; conv: ConversationId }) {
  const { messaging } = useParley();
  const groups = createMemo(() => reactionSummary(props.m));
  return (
    <Show when={groups().length > 0}>
      <ul class="reactions" data-testid="reactions">
        <For each={groups()}>
          {(g) => {
            const mine = () => g.from.includes(props.me);
            return (
              <li>
                <button
                  type="button"
                  class="reaction"
                  classList={{ mine: mine() }}
                  title={g.from.join(", ")}
                  aria-label={`${g.emoji} by ${g.from.join(", ")}`}
                  data-testid="reaction"
                  onClick={() =>
                    void messaging.react(
                      props.conv,
                      { id: props.m.id, from: props.m.from },
                      mine() ? "" : g.emoji,
                    )
                  }
                >
                  {g.emoji}
                  <Show when={g.from.length > 1}>
                    <span class="reaction-count">{g.from.length}</span>
                  </Show>
                </button>
              </li>
            );
          }}
        </For>
      </ul>
    </Show>
  );
}

/** "edited", opening the earlier versions. */
export function Edited(props: { m: HistoryMessage }) {
  return (
    <Show when={props.m.editedAt !== undefined && !props.m.deleted}>
      <details class="edited" data-testid="edited">
        <summary>edited</summary>
        <ol class="versions" data-testid="versions">
          <For each={props.m.edits ?? []}>
            {(v) => (
              <li>
                <time>{formatTime(v.at)}</time> <span dir="auto">{v.text}</span>
              </li>
            )}
          </For>
        </ol>
      </details>
    </Show>
  );
}

/** The actions of one message: reply, react, edit and delete (own), delete for me. */
export function MessageMenu(props: { m: HistoryMessage; conv: ConvView }) {
  const { messaging } = useParley();
  const [open, setOpen] = createSignal(false);
  const [confirmDelete, setConfirmDelete] = createSignal(false);
  /** Where the menu goes: fixed to the window, so the log's scrolling and header never clip it. */
  const [place, setPlace] = createSignal<Record<string, string>>({});
  let root: HTMLDivElement | undefined;
  let button: HTMLButtonElement | undefined;
  const MENU_W = 240;
  const MENU_H = 260;
  const toggle = () => {
    if (open()) {
      setOpen(false);
      return;
    }
    const r = button?.getBoundingClientRect();
    if (r) {
      const w = Math.min(MENU_W, window.innerWidth - 16);
      const left =
        props.m.direction === "out"
          ? r.right - w
          : Math.max(8, Math.min(r.left, window.innerWidth));
      const x = Math.max(8, Math.min(left, window.innerWidth - w - 8));
      const below = window.innerHeight - r.bottom > MENU_H;
      setPlace({
        left: `${x}px`,
        width: `${w}px`,
        ...(below
          ? { top: `${r.bottom + 4}px` }
          : { bottom: `${window.innerHeight - r.top + 4}px` }),
      });
    }
    setOpen(true);
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Escape") setOpen(false);
  };
  onMount(() => document.addEventListener("keydown", onKey));
  onCleanup(() => document.removeEventListener("keydown", onKey));
  const close = () => setOpen(false);
  const onDoc = (e: MouseEvent) => {
    if (root && e.target instanceof Node && !root.contains(e.target)) close();
  };
  onMount(() => document.addEventListener("click", onDoc));
  onCleanup(() => document.removeEventListener("click", onDoc));
  const ref = () => ({ id: props.m.id, from: props.m.from });
  const own = () => props.m.direction === "out";
  const usable = () => !props.m.deleted && props.m.unsupported === undefined;
  return (
    <div class="msg-menu" ref={root}>
      <button
        type="button"
        class="icon-button msg-menu-button"
        aria-label="Message actions"
        aria-haspopup="menu"
        aria-expanded={open()}
        data-testid="message-actions"
        ref={button}
        onClick={toggle}
      >
        <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
          <circle cx="5" cy="12" r="1.8" fill="currentColor" />
          <circle cx="12" cy="12" r="1.8" fill="currentColor" />
          <circle cx="19" cy="12" r="1.8" fill="currentColor" />
        </svg>
      </button>
      <Show when={open()}>
        <div class="msg-menu-list" role="menu" data-testid="message-menu" style={place()}>
          <Show when={usable()}>
            <div class="react-row">
              <For each={REACTIONS}>
                {(emoji) => (
                  <button
                    type="button"
                    role="menuitem"
                    class="react-choice"
                    aria-label={`React ${emoji}`}
                    data-testid={`react-${emoji}`}
                    onClick={() => {
                      void messaging.react(props.conv.id, ref(), emoji);
                      close();
                    }}
                  >
                    {emoji}
                  </button>
                )}
              </For>
            </div>
            <button
              type="button"
              role="menuitem"
              data-testid="action-reply"
              onClick={() => {
                messaging.startReply(props.conv.id, ref());
                close();
              }}
            >
              Reply
            </button>
            <Show when={own()}>
              <button
                type="button"
                role="menuitem"
                data-testid="action-edit"
                onClick={() => {
                  messaging.startEdit(props.conv.id, props.m.id);
                  close();
                }}
              >
                Edit
              </button>
            </Show>
          </Show>
          <Show when={own() && canDeleteForEveryone(props.m, Date.now())}>
            <button
              type="button"
              role="menuitem"
              class="danger"
              data-testid="action-delete-everyone"
              onClick={() => {
                void messaging.deleteForEveryone(props.conv.id, props.m.id);
                close();
              }}
            >
              Delete for everyone
            </button>
          </Show>
          <button
            type="button"
            role="menuitem"
            class="danger"
            data-testid="action-delete-me"
            onClick={() => {
              setConfirmDelete(true);
              close();
            }}
          >
            Delete for me
          </button>
        </div>
      </Show>
      <Show when={confirmDelete()}>
        <Modal
          title="Delete for me?"
          onClose={() => setConfirmDelete(false)}
          testid="confirm-dialog"
        >
          <p class="confirm-text">
            This device forgets the message. Others in the chat still have it.
          </p>
          <div class="modal-actions">
            <button
              type="button"
              class="secondary"
              data-testid="confirm-cancel"
              onClick={() => setConfirmDelete(false)}
            >
              Cancel
            </button>
            <button
              type="button"
              class="primary danger-fill"
              data-testid="confirm-ok"
              onClick={() => {
                messaging.deleteForMe(props.conv.id, props.m);
                setConfirmDelete(false);
              }}
            >
              Delete
            </button>
          </div>
        </Modal>
      </Show>
    </div>
  );
}

/** "bob is typing…" under the log. */
export function TypingLine(props: { conv: ConvView }) {
  const { messaging } = useParley();
  const who = createMemo(() => typingNow(props.conv, messaging.now()));
  return (
    <div class="typing-line" aria-live="polite" data-testid="typing">
      <Show when={who().length > 0}>
        {who().join(", ")} {who().length === 1 ? "is" : "are"} typing…
      </Show>
    </div>
  );
}

/** Disappearing timer, mute and archive for one conversation. */
export function ConvOptions(props: { conv: ConvView; onClose: () => void }) {
  const { messaging } = useParley();
  const timer = () => timerOf(props.conv);
  return (
    <Modal title="Chat options" onClose={props.onClose} testid="conv-options">
      <div class="options">
        <label class="option-row">
          <span>Disappearing messages</span>
          <select
            data-testid="timer-select"
            value={String(timer())}
            onChange={(e) => void messaging.setTimer(props.conv.id, Number(e.currentTarget.value))}
          >
            <For
              each={[
                ...TIMER_CHOICES,
                ...(TIMER_CHOICES.includes(timer() as never) ? [] : [timer()]),
              ]}
            >
              {(ms) => <option value={String(ms)}>{ms === 0 ? "Off" : formatDuration(ms)}</option>}
            </For>
          </select>
        </label>
        <p class="muted small">
          New messages disappear from every device in this chat this long after they arrive. Anyone
          in the chat can change it.
        </p>
        <label class="option-row">
          <input
            type="checkbox"
            data-testid="mute"
            checked={props.conv.muted}
            onChange={(e) => messaging.setMuted(props.conv.id, e.currentTarget.checked)}
          />
          <span>Mute notifications</span>
        </label>
        <label class="option-row">
          <input
            type="checkbox"
            data-testid="archive"
            checked={props.conv.archived}
            onChange={(e) => messaging.setArchived(props.conv.id, e.currentTarget.checked)}
          />
          <span>Archive this chat</span>
        </label>
      </div>
    </Modal>
  );
}

/** Search every conversation on this device; a result opens its chat at that message. */
export function SearchDialog(props: { onClose: () => void }) {
  const { state, actions, messaging } = useParley();
  const [query, setQuery] = createSignal("");
  const [hits, setHits] = createSignal<{ key: string; message: HistoryMessage }[]>([]);
  const [busy, setBusy] = createSignal(false);
  let input: HTMLInputElement | undefined;
  let seq = 0;
  const run = async (q: string) => {
    const mine = ++seq;
    setBusy(true);
    const r = await messaging.search(q);
    if (mine !== seq) return;
    setHits(r);
    setBusy(false);
  };
  const open = (m: HistoryMessage) => {
    const p = parseConvId(m.conversationId);
    if (!p) return;
    if (p.kind === "direct") actions.openChat(p.name);
    else actions.select(m.conversationId);
    messaging.jumpTo(m.conversationId, rowKey(m));
    props.onClose();
  };
  return (
    <Modal
      title="Search messages"
      onClose={props.onClose}
      testid="search-dialog"
      initialFocus={() => input}
    >
      <input
        ref={input}
        type="search"
        class="search-input"
        placeholder="Search your messages"
        aria-label="Search your messages"
        data-testid="search-input"
        value={query()}
        onInput={(e) => {
          setQuery(e.currentTarget.value);
          void run(e.currentTarget.value);
        }}
      />
      <ul class="search-results" data-testid="search-results" aria-busy={busy()}>
        <For each={hits()}>
          {(h) => (
            <li>
              <button
                type="button"
                class="search-hit"
                data-testid="search-hit"
                onClick={() => open(h.message)}
              >
                <span class="hit-where">
                  {state.convs[h.message.conversationId]?.kind === "group" ? "#" : ""}
                  {state.convs[h.message.conversationId]?.name ?? h.message.conversationId}
                  {" · "}
                  {h.message.from}
                </span>
                <span class="hit-text" dir="auto">
                  {snippet(h.message.text, 120)}
                </span>
              </button>
            </li>
          )}
        </For>
        <Show when={query().trim().length > 0 && hits().length === 0 && !busy()}>
          <li class="muted">No messages found.</li>
        </Show>
      </ul>
    </Modal>
  );
}
