/**
 * Dialogs: a contact's 60-digit safety number (12 groups of 5) with a QR code to compare in
 * person (and a camera scanner where the browser has one), "mark as verified" / "accept new key";
 * a group's roster with each member's fingerprint; "New chat" by username; and confirmations.
 * Every dialog is a native modal <dialog>: focus moves in, stays in, Escape closes, and focus
 * goes back to what opened it.
 */
import {
  createMemo,
  createResource,
  createSignal,
  For,
  type JSX,
  onCleanup,
  onMount,
  Show,
} from "solid-js";
import { safetyNumber, safetyNumberGroups } from "../../../shared/crypto";
import { fromB64u } from "../../../shared/encoding";
import { useParley } from "../app/context";
import type { ConvView } from "../state/model";
import { nameProblem } from "../state/names";
import { avatarClass } from "./format";
import { GroupAccessPanel, MemberRole } from "./GroupDialogs";
import { LazyQr } from "./lazy";
import { NameHint } from "./NameHint";
import { canScan, type ScanVerdict, safetyQrText, scanVerdict, startScanning } from "./safety-scan";

let modalSeq = 0;

export function Modal(props: {
  title: string;
  onClose: () => void;
  children: JSX.Element;
  testid: string;
  /** What gets the focus when the dialog opens (default: the first focusable control). */
  initialFocus?: () => HTMLElement | undefined;
  /** The id of the text that explains the dialog (read out with its title). */
  describedBy?: string;
}) {
  let dlg: HTMLDialogElement | undefined;
  const titleId = `modal-title-${++modalSeq}`;
  // Back to the opener on close, so keyboard users continue where they were.
  const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  onMount(() => {
    dlg?.showModal();
    props.initialFocus?.()?.focus();
  });
  onCleanup(() => {
    if (opener?.isConnected) opener.focus({ preventScroll: true });
  });
  return (
    <dialog
      ref={dlg}
      class="modal"
      aria-labelledby={titleId}
      aria-describedby={props.describedBy}
      data-testid={props.testid}
      onClose={() => props.onClose()}
    >
      <div class="modal-body">
        <header class="modal-header">
          <h2 id={titleId} class="ellipsis" title={props.title}>
            {props.title}
          </h2>
          <button type="button" class="icon-button" aria-label="Close" onClick={() => dlg?.close()}>
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
              <path class="icon-stroke" d="M6 6l12 12M18 6L6 18" />
            </svg>
          </button>
        </header>
        {props.children}
      </div>
    </dialog>
  );
}

/** "Are you sure?" for actions that cannot be undone from the same screen (leave, end chat). */
export function ConfirmDialog(props: {
  title: string;
  children: JSX.Element;
  confirmLabel: string;
  onConfirm: () => void;
  onClose: () => void;
}) {
  let cancel: HTMLButtonElement | undefined;
  let dlg: HTMLDivElement | undefined;
  const close = () => dlg?.closest("dialog")?.close();
  const textId = `confirm-text-${++modalSeq}`;
  return (
    <Modal
      title={props.title}
      onClose={props.onClose}
      testid="confirm-dialog"
      // The safe choice has the focus: Enter on an unexpected dialog does no harm.
      initialFocus={() => cancel}
      describedBy={textId}
    >
      <div ref={dlg} id={textId} class="confirm-text wrap-anywhere">
        {props.children}
      </div>
      <div class="modal-actions">
        <button
          type="button"
          class="secondary"
          ref={cancel}
          data-testid="confirm-cancel"
          onClick={close}
        >
          Cancel
        </button>
        <button
          type="button"
          class="primary danger-fill"
          data-testid="confirm-ok"
          onClick={() => {
            props.onConfirm();
            close();
          }}
        >
          {props.confirmLabel}
        </button>
      </div>
    </Modal>
  );
}

/** Start a 1:1 chat with anyone registered on the relay, online or not, by typing their name. */
export function NewChatDialog(props: { onClose: () => void }) {
  const { state, actions } = useParley();
  const [name, setName] = createSignal("");
  const [tried, setTried] = createSignal(false);
  let input: HTMLInputElement | undefined;
  let form: HTMLFormElement | undefined;
  const self = createMemo(() =>
    name() !== "" && name() === state.me?.username
      ? "That is you. Type the username of the person you want to write to."
      : null,
  );
  const invalid = () => self() !== null || nameProblem(name()) !== null;
  return (
    <Modal
      title="New chat"
      onClose={props.onClose}
      testid="new-chat-dialog"
      initialFocus={() => input}
    >
      <form
        ref={form}
        class="stack"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          if (invalid()) {
            setTried(true);
            input?.focus();
            return;
          }
          const who = name();
          form?.closest("dialog")?.close();
          actions.openChat(who);
        }}
      >
        <label for="new-chat-name">Their username</label>
        <input
          id="new-chat-name"
          ref={input}
          autocomplete="off"
          autocapitalize="none"
          spellcheck={false}
          maxLength={64}
          aria-describedby="new-chat-help new-chat-problem"
          aria-invalid={tried() && invalid() ? "true" : undefined}
          value={name()}
          onInput={(e) => setName(e.currentTarget.value)}
        />
        <NameHint
          id="new-chat-problem"
          value={name()}
          extra={self()}
          showEmpty={tried()}
          onAccept={(n) => {
            setName(n);
            input?.focus();
          }}
        />
        <p id="new-chat-help" class="help">
          They do not need to be online: Parley fetches their key from the relay, and your first
          message waits there until they come back.
        </p>
        <div class="modal-actions">
          <button type="submit" class="primary" data-testid="new-chat-open">
            Open chat
          </button>
        </div>
      </form>
    </Modal>
  );
}

/** The camera view that reads the other person's code and says whether it matches ours. */
function Scanner(props: { ours: string }) {
  let video: HTMLVideoElement | undefined;
  const [verdict, setVerdict] = createSignal<ScanVerdict | null>(null);
  const [failed, setFailed] = createSignal(false);
  let stop: (() => void) | null = null;
  let gone = false;
  onMount(() => {
    if (!video) return;
    startScanning(video, (payload) => {
      const v = scanVerdict(payload, props.ours);
      // Another QR code in view (not a safety number) is ignored: keep looking.
      if (v === "not_parley") return;
      setVerdict(v);
      stop?.();
      stop = null;
    }).then(
      (s) => {
        if (gone || verdict() !== null) s();
        else stop = s;
      },
      () => setFailed(true),
    );
  });
  onCleanup(() => {
    gone = true;
    stop?.();
  });
  return (
    <div class="scanner">
      <Show when={verdict() === null && !failed()}>
        <p class="help">Point the camera at the code on their screen.</p>
      </Show>
      <video ref={video} class="scanner-video" muted playsinline aria-label="Camera view" />
      <Show when={failed()}>
        <p class="error" role="alert">
          Parley could not use the camera. Compare the numbers by reading them out instead.
        </p>
      </Show>
      <Show when={verdict()}>
        {(v) => (
          <p
            class={v() === "match" ? "verified-note" : "error"}
            role="alert"
            data-testid="scan-verdict"
            data-verdict={v()}
          >
            {v() === "match"
              ? "✓ The codes match: nobody is in the middle."
              : "✗ The codes do not match. Do not mark them as verified; someone may be intercepting."}
          </p>
        )}
      </Show>
    </div>
  );
}

export function VerifyDialog(props: { username: string; onClose: () => void }) {
  const { state, actions } = useParley();
  const conv = () => state.convs[`dm:${props.username}`];
  /** The peer as the engine knows it: from the 1:1 chat, else from a group roster or presence. */
  const contact = () =>
    conv()?.members.find((m) => m.username === props.username) ??
    Object.values(state.convs)
      .flatMap((c) => c.members)
      .find((m) => m.username === props.username) ??
    state.presence.find((m) => m.username === props.username);
  /**
   * After a key change the engine's number is still for the pinned key. What the user must
   * compare is the number for the key now being announced (presence), so compute that one here
   * (same algorithm, PROTOCOL.md §3.7); when the peer is offline the new key is unknown.
   */
  const announcedKey = () => {
    if (conv()?.status !== "key_changed") return undefined;
    const now = state.presence.find((m) => m.username === props.username)?.identityKey;
    return now !== undefined && now !== contact()?.identityKey ? now : undefined;
  };
  const announcedFingerprint = () =>
    state.presence.find((m) => m.username === props.username)?.fingerprint;
  const [number] = createResource(
    () => `${props.username}:${contact()?.identityKey ?? ""}:${announcedKey() ?? ""}`,
    async () => {
      const fresh = announcedKey();
      const me = state.me;
      if (fresh === undefined || !me) return actions.safetyNumber(props.username);
      return safetyNumber(
        { username: me.username, identityKey: fromB64u(me.identityKey) },
        { username: props.username, identityKey: fromB64u(fresh) },
      );
    },
  );
  const verified = () => conv()?.status === "verified" || contact()?.verified === true;
  const scannable = canScan();
  const [scanning, setScanning] = createSignal(false);
  return (
    <Modal title={`Verify ${props.username}`} onClose={props.onClose} testid="verify-dialog">
      <p class="muted" data-testid="verify-intro">
        Compare these numbers with <span class="name-text">{props.username}</span> in person or over
        a call you trust{scannable ? ", or scan the code on their screen" : ""}. If they match,
        nobody is in the middle.
      </p>
      <Show when={conv()?.status === "key_changed"}>
        <p class="banner danger" role="alert">
          {props.username}’s key changed since you last talked.{" "}
          {announcedKey()
            ? "The number below is for the new key: it matches theirs only if nobody is in between."
            : "They are offline, so the new key is not known yet; the number below is for the old one."}
        </p>
      </Show>
      <Show
        when={number()}
        fallback={
          <p class="muted" role="status">
            {number.error ? `Could not compute: ${String(number.error)}` : "Computing…"}
          </p>
        }
      >
        {(n) => (
          <div class="verify">
            <div class="safety-number" data-testid="safety-number" data-digits={n()}>
              <For each={safetyNumberGroups(n())}>{(g) => <span>{g}</span>}</For>
            </div>
            <LazyQr text={safetyQrText(n())} label="Safety number as a QR code" />
          </div>
        )}
      </Show>
      <Show when={scannable && number()}>
        {(n) => (
          <Show
            when={scanning()}
            fallback={
              <button
                type="button"
                class="secondary"
                data-testid="scan-code"
                onClick={() => setScanning(true)}
              >
                Scan their code
              </button>
            }
          >
            <Scanner ours={n()} />
          </Show>
        )}
      </Show>
      <dl class="keys">
        <dt title={state.me?.username}>
          <span class="ellipsis">{state.me?.username}</span>&nbsp;(you)
        </dt>
        <dd class="fingerprint">{state.me?.fingerprint}</dd>
        <dt title={props.username}>
          <span class="ellipsis">{props.username}</span>
        </dt>
        <dd class="fingerprint">{contact()?.fingerprint ?? "—"}</dd>
        <Show when={announcedKey()}>
          <dt title={props.username}>
            <span class="ellipsis">{props.username}</span>&nbsp;(new key)
          </dt>
          <dd class="fingerprint bad-text">{announcedFingerprint()}</dd>
        </Show>
      </dl>
      <div class="modal-actions">
        <Show when={conv()?.status === "key_changed"}>
          <button
            type="button"
            class="secondary"
            onClick={() => void actions.acceptKeyChange(props.username)}
          >
            Accept new key
          </button>
        </Show>
        <Show
          when={!verified()}
          fallback={
            <p class="verified-note ellipsis" data-testid="verified-note" title={props.username}>
              ✓ You verified {props.username}
            </p>
          }
        >
          <button
            type="button"
            class="primary"
            data-testid="mark-verified"
            disabled={!number() || conv()?.status === "key_changed"}
            onClick={() => void actions.markVerified(props.username)}
          >
            Mark as verified
          </button>
        </Show>
      </div>
    </Modal>
  );
}

export function MembersDialog(props: {
  conv: ConvView;
  onClose: () => void;
  onVerify: (username: string) => void;
}) {
  const { state } = useParley();
  return (
    <Modal title={`#${props.conv.name} members`} onClose={props.onClose} testid="members-dialog">
      <p class="muted">
        Every membership change renews the group key, so people who left cannot read what comes
        next.{" "}
        <span data-testid="group-key-version">
          Group key version: {Math.max(props.conv.epoch, 0)}.
        </span>
      </p>
      <Show when={props.conv.authenticator !== ""}>
        <p class="muted">
          Group check code (the same for every member; compare it like a safety number):{" "}
          <code data-testid="group-authenticator">{props.conv.authenticator}</code>
        </p>
      </Show>
      <Show when={props.conv.kind === "group"}>
        <GroupAccessPanel conv={props.conv} />
      </Show>
      <ul class="roster">
        <For each={props.conv.members} fallback={<li class="muted">No members yet.</li>}>
          {(m) => (
            <li>
              <span class={avatarClass(m.username)} aria-hidden="true">
                {m.username.slice(0, 1).toUpperCase()}
              </span>
              <span class="roster-main">
                <span class="row-name-line" title={m.username}>
                  <span class="row-name">{m.username}</span>
                  <Show when={m.username === state.me?.username}>
                    <span class="no-shrink">(you)</span>
                  </Show>
                  <Show when={m.verified}>
                    <span class="pill tone-good small-pill">verified</span>
                  </Show>
                  <Show when={(m.devices ?? 1) > 1}>
                    {/* Each device is its own member (PROTOCOL §4.7), shown as the one person. */}
                    <span class="pill small-pill" data-testid="member-devices">
                      {m.devices} devices
                    </span>
                  </Show>
                </span>
                <span class="fingerprint">{m.fingerprint}</span>
              </span>
              <MemberRole conv={props.conv} member={m} />
              <Show when={m.username !== state.me?.username}>
                <button
                  type="button"
                  class="small"
                  aria-label={`Verify ${m.username}`}
                  onClick={() => props.onVerify(m.username)}
                >
                  Verify
                </button>
              </Show>
            </li>
          )}
        </For>
      </ul>
    </Modal>
  );
}
