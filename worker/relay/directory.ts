/**
 * Key directory rules (PROTOCOL.md §7.4): checks on a one-time prekey upload that need no crypto
 * and no storage, so they are unit-tested alone. The signed prekey's signature is checked in
 * auth.ts; storage in store.ts.
 */
import {
  type ErrorCode,
  LIMITS,
  type OneTimeKemPrekey,
  type OneTimePrekey,
} from "../../shared/protocol";

/**
 * Validate an upload of one-time prekeys given how many the owner has stored and how many of the
 * uploaded ids are new. Duplicate ids inside one upload are a client bug (`bad_frame`); going over
 * the stored bound refuses the whole upload (`limit_reached`) so the result is all-or-nothing.
 */
export function checkUpload(
  keys: readonly OneTimePrekey[],
  stored: number,
  newIds: number,
): { ok: true } | { ok: false; code: ErrorCode } {
  const ids = new Set(keys.map((k) => k.id));
  if (ids.size !== keys.length) return { ok: false, code: "bad_frame" };
  if (keys.length > LIMITS.maxOneTimePrekeysPerUpload) return { ok: false, code: "bad_frame" };
  if (stored + newIds > LIMITS.maxOneTimePrekeysStored) return { ok: false, code: "limit_reached" };
  return { ok: true };
}

/** The same checks for one-time KEM prekeys (§8.3.5), with their own bounds. */
export function checkKemUpload(
  keys: readonly OneTimeKemPrekey[],
  stored: number,
  newIds: number,
): { ok: true } | { ok: false; code: ErrorCode } {
  const ids = new Set(keys.map((k) => k.id));
  if (ids.size !== keys.length) return { ok: false, code: "bad_frame" };
  if (keys.length > LIMITS.maxOneTimeKemPrekeysPerUpload) return { ok: false, code: "bad_frame" };
  if (stored + newIds > LIMITS.maxOneTimeKemPrekeysStored)
    return { ok: false, code: "limit_reached" };
  return { ok: true };
}

/** Should the owner be told to upload more? */
export function prekeysLow(remaining: number): boolean {
  return remaining < LIMITS.oneTimePrekeysLowWatermark;
}

/**
 * May a new identity take over a username another identity holds (PROTOCOL.md §4.3)? Only when
 * the holder is offline, has not authenticated for LIMITS.usernameIdleReclaimMs and has no
 * undelivered mail (which would otherwise be handed to the new identity). Without this a script
 * could squat names forever. Peers see the new key as a key change, never a silent re-bind.
 */
export function usernameReclaimable(
  holder: { online: boolean; seenAt: number | null; undelivered: number },
  now: number,
): boolean {
  return (
    !holder.online &&
    holder.seenAt !== null &&
    now - holder.seenAt >= LIMITS.usernameIdleReclaimMs &&
    holder.undelivered === 0
  );
}
