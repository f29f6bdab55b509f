/**
 * The composer: Enter sends, Shift+Enter is a newline. What is typed is a draft of this
 * conversation (kept sealed across reloads, see the controller's keepDraft), and it leaves the
 * composer only once the engine accepted it: a refusal, or a crash half-way through a split send,
 * never loses text. Near the engine's length limit a counter shows; over it, sending is refused
 * with the reason and the text can go as several messages (state/split.ts).
 */
import { createEffect, createMemo, createSignal, on, Show } from "solid-js";
import { useParley } from "../app/context";
import { type ConvView, sendBlockedReason } from "../state/model";
import { lengthNote, splitText } from "../state/split";
import { AttachButtons } from "./Attachments";
import { snippet } from "./MessageParts";

export function Composer(props: { conv: ConvView }) {
  const { state, actions, messaging, transfers } = useParley();
  const sendFiles = (files: File[]) => {
    if (blocked() !== null) return;
    transfers.sendFiles(files, props.conv.id, "", messaging.takeReply(props.conv.id));
  };
  /** Replying to a message, or editing one of ours (§8.6.1); the edit's text is no draft. */
  const mode = () => messaging.compose()[props.conv.id];
  const editing = () => {
    const m = mode();
    return m?.t === "edit" ? m.id : null;
  };
  const [draft, setShown] = createSignal("");
  /** A send in progress (parts accepted so far), per conversation. */
  const [sending, setSending] = createSignal<{ id: string; done: number; total: number } | null>(
    null,
  );
  let input: HTMLTextAreaElement | undefined;

  const blocked = createMemo(() => sendBlockedReason(props.conv));
  const note = createMemo(() => lengthNote(draft()));
  const busy = () => sending()?.id === props.conv.id;
  const over = () => note()?.over === true;

  /** Change the draft of `id`, and what the composer shows if `id` is on screen. */
  const setDraft = (id: string, text: string) => {
    actions.keepDraft(id, text);
    if (props.conv.id === id) setShown(text);
  };
  const onType = (text: string) => {
    if (editing() !== null) setShown(text);
    else {
      setDraft(props.conv.id, text);
      messaging.typing(props.conv.id, text.trim().length > 0);
    }
  };

  // Editing starts with the message's text; leaving edit mode brings the draft back.
  createEffect(
    on(editing, (id, prev) => {
      if (id !== null) {
        const m = props.conv.entries.find(
          (e) => e.kind === "msg" && e.direction === "out" && e.id === id,
        );
        setShown(m?.kind === "msg" ? m.text : "");
        input?.focus();
      } else if (prev !== undefined && prev !== null) setShown(actions.draftOf(props.conv.id));
    }),
  );

  // One draft per conversation: switching chats (or reloading) keeps what was typed where.
  createEffect(
    on(
      () => props.conv.id,
      (id) => {
        setShown(actions.draftOf(id));
        input?.focus({ preventScroll: true });
      },
    ),
  );

  const submit = async () => {
    const id = props.conv.id;
    const text = draft();
    if (busy() || blocked() !== null || text.trim().length === 0 || over()) return;
    const mid = editing();
    if (mid !== null) {
      setSending({ id, done: 0, total: 1 });
      await actions.sendEdit(text, id, mid);
      setSending(null);
      return;
    }
    setSending({ id, done: 0, total: 1 });
    const ok = await actions.send(text, id);
    setSending(null);
    if (ok) setDraft(id, "");
  };

  /** Over the limit: send the parts in order, each removed from the draft once accepted. */
  const sendSplit = async () => {
    const id = props.conv.id;
    const text = draft();
    if (busy() || blocked() !== null) return;
    const parts = splitText(text);
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (!part) break;
      setSending({ id, done: i, total: parts.length });
      if (!(await actions.send(part.text, id))) break;
      setDraft(id, text.slice(part.end).replace(/^\s+/, ""));
    }
    setSending(null);
  };

  return (
    <>
      <Show when={blocked()}>
        {(why) => (
          <p class="composer-note" data-testid="composer-blocked">
            {why()}
          </p>
        )}
      </Show>
      <Show when={busy() && (sending()?.total ?? 0) > 1}>
        <p class="composer-note" role="status" data-testid="split-progress">
          Sending {(sending()?.done ?? 0) + 1} of {sending()?.total}…
        </p>
      </Show>
      <Show when={note()}>
        {(n) => (
          <div
            class="length-note"
            classList={{ over: n().over }}
            id="composer-length"
            aria-live="polite"
            data-testid="length-note"
          >
            <span>
              {n().over ? `${n().text} Sending is paused so nothing is cut off.` : n().text}
            </span>
            <Show when={n().over}>
              <button
                type="button"
                class="small primary"
                data-testid="send-split"
                disabled={blocked() !== null || busy()}
                onClick={() => void sendSplit()}
              >
                Send as {n().parts} messages
              </button>
            </Show>
          </div>
        )}
      </Show>
      <Show when={mode()}>
        {(m) => (
          <div class="compose-mode" data-testid="compose-mode">
            <span class="compose-mode-text">
              {(() => {
                const x = m();
                if (x.t === "edit") return "Editing your message";
                const i = props.conv.entries.findIndex(
                  (e) => e.kind === "msg" && e.id === x.to.id && e.from === x.to.from,
                );
                const e = props.conv.entries[i];
                return `Replying to ${x.to.from}: ${e?.kind === "msg" ? snippet(e.text, 60) : ""}`;
              })()}
            </span>
            <button
              type="button"
              class="icon-button"
              aria-label="Cancel"
              data-testid="compose-cancel"
              onClick={() => messaging.cancelCompose(props.conv.id)}
            >
              <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true">
                <path class="icon-stroke" d="M6 6l12 12M18 6L6 18" />
              </svg>
            </button>
          </div>
        )}
      </Show>
      <form
        class="composer"
        onSubmit={(e) => {
          e.preventDefault();
          void submit();
        }}
      >
        <AttachButtons disabled={blocked() !== null} onFiles={sendFiles} />
        <label for="composer-input" class="visually-hidden">
          Message {props.conv.name}
        </label>
        <textarea
          id="composer-input"
          ref={input}
          dir="auto"
          rows={Math.min(6, Math.max(1, draft().split("\n", 7).length))}
          data-testid="composer"
          placeholder={
            blocked() !== null
              ? "Sending paused"
              : state.conn.kind === "online"
                ? "Message"
                : "Message — sent when back online"
          }
          disabled={blocked() !== null}
          readOnly={busy()}
          aria-describedby={note() ? "composer-help composer-length" : "composer-help"}
          value={draft()}
          onInput={(e) => onType(e.currentTarget.value)}
          onPaste={(e) => {
            // A pasted image or file is sent as an attachment; pasted text stays text.
            const files = [...(e.clipboardData?.files ?? [])];
            if (files.length === 0) return;
            e.preventDefault();
            sendFiles(files);
          }}
          onKeyDown={(e) => {
            if (e.key === "Escape" && mode() !== undefined) {
              messaging.cancelCompose(props.conv.id);
              return;
            }
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
          disabled={blocked() !== null || draft().trim().length === 0 || over() || busy()}
          aria-label="Send"
        >
          <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
            <path class="icon-fill" d="M3 20.5l18-8.5L3 3.5l2.5 7L15 12l-9.5 1.5z" />
          </svg>
        </button>
      </form>
    </>
  );
}
