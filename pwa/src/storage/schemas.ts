/**
 * Schemas for everything the PWA reads back from IndexedDB. Storage is a trust boundary like the
 * socket: a record that does not parse is ignored (and reported), never cast.
 */
import * as v from "valibot";
import { FileRef } from "../../../shared/core/content";
import { Name } from "../../../shared/protocol";

const bytesOf = (n: number) =>
  v.pipe(
    v.instance(Uint8Array),
    v.check((b) => b.length === n, `expected ${n} bytes`),
  );
const bytesMin = (n: number) =>
  v.pipe(
    v.instance(Uint8Array),
    v.check((b) => b.length >= n, `expected at least ${n} bytes`),
  );

/** A CryptoKey of the given algorithm and type that JavaScript can never read out. */
const nonExtractableKey = (algorithm: string, type: KeyType) =>
  v.custom<CryptoKey>(
    (k) =>
      typeof CryptoKey !== "undefined" &&
      k instanceof CryptoKey &&
      k.algorithm.name === algorithm &&
      k.type === type &&
      !k.extractable,
    `expected a non-extractable ${algorithm} ${type} key`,
  );

export const DeviceKeyRecord = v.strictObject({
  v: v.literal(1),
  key: nonExtractableKey("AES-GCM", "secret"),
});
export type DeviceKeyRecord = v.InferOutput<typeof DeviceKeyRecord>;

/** AES-256-GCM box: 12-byte nonce, ciphertext with its 16-byte tag. */
export const Sealed = v.strictObject({ iv: bytesOf(12), ct: bytesMin(16) });
export type Sealed = v.InferOutput<typeof Sealed>;

export const LockRecord = v.strictObject({
  v: v.literal(1),
  kdf: v.strictObject({
    name: v.literal("PBKDF2-SHA256"),
    iterations: v.pipe(v.number(), v.integer(), v.minValue(600_000), v.maxValue(10_000_000)),
    salt: bytesOf(16),
  }),
  /** The 32 raw bytes of the device key, sealed under the passphrase key. */
  box: Sealed,
});
export type LockRecord = v.InferOutput<typeof LockRecord>;

export const ProfileRecord = v.strictObject({
  v: v.literal(1),
  username: Name,
  hub: Name,
  createdAt: v.pipe(v.number(), v.integer(), v.minValue(0)),
  identityPublicKey: bytesOf(32),
  /** Absent while a passphrase lock is on: the key is re-derived from the seed at unlock. */
  identityPrivateKey: v.optional(nonExtractableKey("Ed25519", "private")),
  /** The 32-byte identity seed sealed under the device key: only for passphrase export (§ backup). */
  sealedSeed: Sealed,
});
export type ProfileRecord = v.InferOutput<typeof ProfileRecord>;

export const HistoryRow = v.strictObject({
  key: v.pipe(v.string(), v.maxLength(200)),
  conv: v.pipe(v.string(), v.maxLength(80)),
  box: Sealed,
});
export type HistoryRow = v.InferOutput<typeof HistoryRow>;

const ConversationId = v.custom<`dm:${string}` | `group:${string}`>(
  (s) => typeof s === "string" && /^(dm|group):[a-z0-9][a-z0-9_-]{0,31}$/.test(s),
  "expected a conversation id",
);

export { ConversationId };

const Ms = v.pipe(v.number(), v.integer(), v.minValue(0));

export const HistoryMessage = v.strictObject({
  kind: v.literal("msg"),
  id: v.pipe(v.string(), v.minLength(1), v.maxLength(100)),
  conversationId: ConversationId,
  from: Name,
  direction: v.picklist(["in", "out"]),
  text: v.pipe(v.string(), v.maxLength(100_000)),
  sentAt: Ms,
  at: Ms,
  delivery: v.optional(v.picklist(["sending", "sent", "delivered", "failed"])),
  /** An attachment (PROTOCOL.md §8.6.1): its key stays sealed with the rest of the history. */
  file: v.optional(FileRef),
});
export type HistoryMessage = v.InferOutput<typeof HistoryMessage>;

export const HistorySystem = v.strictObject({
  kind: v.literal("sys"),
  id: v.pipe(v.string(), v.minLength(1), v.maxLength(100)),
  conversationId: ConversationId,
  sysKind: v.picklist([
    "joined",
    "left",
    "epoch",
    "key_changed",
    "key_accepted",
    "verified",
    "session_started",
    /** Written by the PWA itself when the user ends a 1:1 session (the engine has no line). */
    "session_ended",
    "decrypt_failed",
    "missing",
    "repairing",
    "resending",
    "not_post_quantum",
  ]),
  text: v.pipe(v.string(), v.maxLength(1000)),
  username: v.optional(Name),
  epoch: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  count: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  at: Ms,
});
export type HistorySystem = v.InferOutput<typeof HistorySystem>;

export const HistoryEntry = v.variant("kind", [HistoryMessage, HistorySystem]);
export type HistoryEntry = v.InferOutput<typeof HistoryEntry>;

/** An unsent draft (history.ts keeps it sealed in the history store). */
export const Draft = v.strictObject({
  kind: v.literal("draft"),
  conversationId: ConversationId,
  text: v.pipe(v.string(), v.maxLength(1_000_000)),
  at: Ms,
});
export type Draft = v.InferOutput<typeof Draft>;

/** Per-conversation UI bookkeeping: when the user last looked at it. */
export const ConvMeta = v.strictObject({ lastReadAt: Ms, hidden: v.optional(v.boolean()) });
export type ConvMeta = v.InferOutput<typeof ConvMeta>;
