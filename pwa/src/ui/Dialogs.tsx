/**
 * Verification views: a contact's 60-digit safety number (12 groups of 5) with a QR code to
 * compare in person, "mark as verified" / "accept new key"; and a group's roster with each
 * member's fingerprint.
 */
import { createResource, For, type JSX, onMount, Show } from "solid-js";
import { safetyNumber, safetyNumberGroups } from "../../../shared/crypto";
import { fromB64u } from "../../../shared/encoding";
import { useParley } from "../app/context";
import type { ConvView } from "../state/model";
import { avatarClass } from "./format";
import { Qr } from "./Qr";

export function Modal(props: {
  title: string;
  onClose: () => void;
  children: JSX.Element;
  testid: string;
}) {
  let dlg: HTMLDialogElement | undefined;
  onMount(() => dlg?.showModal());
  return (
    <dialog
      ref={dlg}
      class="modal"
      aria-labelledby="modal-title"
      data-testid={props.testid}
      onClose={() => props.onClose()}
    >
      <div class="modal-body">
        <header class="modal-header">
          <h2 id="modal-title">{props.title}</h2>
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
  return (
    <Modal title={`Verify ${props.username}`} onClose={props.onClose} testid="verify-dialog">
      <p class="muted">
        Compare these numbers with {props.username} in person or over a call you trust, or scan the
        code on their screen. If they match, nobody is in the middle.
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
            <Qr text={`parley-safety-number:v1:${n()}`} label="Safety number as a QR code" />
          </div>
        )}
      </Show>
      <dl class="keys">
        <dt>{state.me?.username} (you)</dt>
        <dd class="fingerprint">{state.me?.fingerprint}</dd>
        <dt>{props.username}</dt>
        <dd class="fingerprint">{contact()?.fingerprint ?? "—"}</dd>
        <Show when={announcedKey()}>
          <dt>{props.username} (new key)</dt>
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
            <p class="verified-note" data-testid="verified-note">
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
        Epoch {Math.max(props.conv.epoch, 0)}. Every membership change rotates the group key, so
        people who left cannot read what comes next.
      </p>
      <ul class="roster">
        <For each={props.conv.members} fallback={<li class="muted">No members yet.</li>}>
          {(m) => (
            <li>
              <span class={avatarClass(m.username)} aria-hidden="true">
                {m.username.slice(0, 1).toUpperCase()}
              </span>
              <span class="roster-main">
                <span class="row-name">
                  {m.username}
                  {m.username === state.me?.username ? " (you)" : ""}
                  <Show when={m.verified}>
                    <span class="pill tone-good small-pill">verified</span>
                  </Show>
                </span>
                <span class="fingerprint">{m.fingerprint}</span>
              </span>
              <Show when={m.username !== state.me?.username}>
                <button type="button" class="small" onClick={() => props.onVerify(m.username)}>
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
