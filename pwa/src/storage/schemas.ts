/**
 * Schemas for everything the PWA reads back from IndexedDB. Storage is a trust boundary like the
 * socket: a record that does not parse is ignored (and reported), never cast.
 */
import * as v from "valibot";
import { FileRef, InviteSchema } from "../../../shared/core/content";
import {
  DisappearMs,
  MAX_CONTENT_TYPE_CHARS,
  MAX_REACTION_CHARS,
  MessageRef,
} from "../../../shared/core/message-content";
import { MAX_EDIT_VERSIONS } from "../../../shared/core/messages";
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
  delivery: v.optional(v.picklist(["sending", "sent", "delivered", "read", "failed"])),
  /** The message this one replies to (PROTOCOL.md §8.6.1). */
  reply: v.optional(MessageRef),
  /** Disappearing timer (ms after `at`); expired entries are deleted (shared/core/messages.ts). */
  exp: v.optional(DisappearMs),
  /** A closed-group invitation the text carries (PROTOCOL.md §9.7.3). */
  invite: v.optional(InviteSchema),
  /** Earlier versions of an edited message, oldest first. */
  edits: v.optional(
    v.pipe(
      v.array(v.strictObject({ text: v.pipe(v.string(), v.maxLength(100_000)), at: Ms })),
      v.maxLength(MAX_EDIT_VERSIONS),
    ),
  ),
  editedAt: v.optional(Ms),
  /** Deleted for everyone by its author: a tombstone without text. */
  deleted: v.optional(v.literal(true)),
  reactions: v.optional(
    v.pipe(
      v.array(
        v.strictObject({ from: Name, emoji: v.pipe(v.string(), v.maxLength(MAX_REACTION_CHARS)) }),
      ),
      v.maxLength(1000),
    ),
  ),
  /** A newer client's content type this version cannot show (§8.6.1): its type name. */
  unsupported: v.optional(v.pipe(v.string(), v.maxLength(MAX_CONTENT_TYPE_CHARS))),
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
    /** A contact's signed device list changed or was refused (PROTOCOL.md §4.6). */
    "device_added",
    "device_removed",
    "device_list_refused",
    /** The disappearing timer changed (§8.6.1); `ms` is the new timer, 0 = off. */
    "timer",
    "refused",
  ]),
  text: v.pipe(v.string(), v.maxLength(1000)),
  username: v.optional(Name),
  epoch: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  count: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  ms: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
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
export const ConvMeta = v.strictObject({
  lastReadAt: Ms,
  hidden: v.optional(v.boolean()),
  /** No notifications for it. */
  muted: v.optional(v.boolean()),
  /** Listed under "Archived" until a message arrives (unless muted). */
  archived: v.optional(v.boolean()),
});
export type ConvMeta = v.InferOutput<typeof ConvMeta>;
