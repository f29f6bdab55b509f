/**
 * Trust on first use (PROTOCOL.md §8.7): the first identity key seen for a username is pinned;
 * any different key later is recorded as `changedKey` and blocks sending until the user accepts
 * it (which clears verification). Pure functions over a serialisable Contact record.
 */
import * as v from "valibot";
import { Key32, Uint } from "./codec";

export const ContactSchema = v.strictObject({
  username: v.string(),
  identityKey: Key32,
  verified: v.boolean(),
  /** A different key seen since pinning (from presence, a bundle, a handshake or a roster). */
  changedKey: v.nullable(Key32),
  pinnedAt: Uint,
});
export type Contact = v.InferOutput<typeof ContactSchema>;

export type KeyCheck =
  | { result: "pinned"; contact: Contact }
  | { result: "match"; contact: Contact }
  | { result: "changed"; contact: Contact };

/** Compare a key seen for `username` with the pin; never mutates `contact`. */
export function checkKey(
  contact: Contact | null,
  username: string,
  identityKey: string,
  now: number,
): KeyCheck {
  if (contact === null) {
    return {
      result: "pinned",
      contact: { username, identityKey, verified: false, changedKey: null, pinnedAt: now },
    };
  }
  if (contact.identityKey === identityKey) return { result: "match", contact };
  // Verification was of the old key: it resets as soon as a different key shows up (§8.7).
  return { result: "changed", contact: { ...contact, changedKey: identityKey, verified: false } };
}

/** The user accepted the new key: re-pin, verification resets (§8.7). */
export function acceptChange(contact: Contact, now: number): Contact {
  if (contact.changedKey === null) return contact;
  return {
    ...contact,
    identityKey: contact.changedKey,
    changedKey: null,
    verified: false,
    pinnedAt: now,
  };
}

export function markVerified(contact: Contact): Contact {
  return { ...contact, verified: true };
}

export function blocked(contact: Contact | null): boolean {
  return contact !== null && contact.changedKey !== null;
}
