/**
 * Groups (PROTOCOL.md §9): the stored record. Members' leaf keys wrap each commit's secrets;
 * every epoch's keys chain from the previous epoch and the transcript of every commit
 * (group-schedule.ts); commits are encoded in group-commit-codec.ts, built and checked in
 * group-commit.ts; messages are sealed and opened in group-message.ts. Pure functions over a
 * serialisable GroupRecord; the engine (engine/group-*.ts) decides when to commit and does the I/O.
 */
import * as v from "valibot";
import { B64n, Key32, Uint } from "./codec";
import { CoreError } from "./errors";

export const RosterEntrySchema = v.strictObject({
  name: v.string(),
  ik: Key32,
  /** The member's leaf key this epoch's commit was wrapped to (§9.3). */
  leafId: Uint,
  leafKey: Key32,
  leafEpoch: Uint,
  // Checked as bytes by the leaf signature check (§9.4); decoding them on every parse of a
  // 1000-member roster would cost more than the rest of the record.
  leafNonce: v.string(),
  leafSig: v.string(),
  /**
   * A hybrid leaf key (§9.3): SHA-256 of its ML-KEM-768 half (the X25519 half is `leafKey`).
   * Absent for a classical leaf key; the epoch is then not post-quantum for this member.
   */
  leafKem: v.optional(Key32),
});
export type RosterEntry = v.InferOutput<typeof RosterEntrySchema>;

export const ReceiverSchema = v.strictObject({
  name: v.string(),
  ck: Key32,
  n: Uint,
  /** `seq` orders skipped keys across every sender of the epoch, so the bound evicts the oldest first (§9.5). */
  skipped: v.array(v.strictObject({ n: Uint, mk: Key32, seq: Uint })),
});
export type Receiver = v.InferOutput<typeof ReceiverSchema>;

/**
 * One epoch as stored (§9.3, §10.1). The epoch secret itself is NOT part of it: on entering an
 * epoch the client derives every roster member's initial sender chain key (§9.5) and forgets the
 * secret, then ratchets each chain forward and deletes used message keys. A snapshot of this
 * record taken after message n of a sender cannot decrypt that sender's messages < n (forward
 * secrecy inside the epoch, §9.5).
 */
export const EpochSchema = v.strictObject({
  epoch: Uint,
  roster: v.array(RosterEntrySchema),
  startedAt: Uint,
  /** Our own sending chain in this epoch. */
  send: v.strictObject({ ck: Key32, n: Uint }),
  receivers: v.array(ReceiverSchema),
  /** Messages we sent in this epoch (drives periodic updates, §9.6). */
  sent: Uint,
  /** Next `seq` for a skipped key of this epoch. */
  skipSeq: Uint,
  /** confirmed[E] (§9.3): bound into every message's AAD. */
  transcript: Key32,
  /** interim[E]: what the next commit must chain from. */
  interim: Key32,
  /** init_secret[E]: kept while the epoch is current, deleted when the next one is entered. */
  init: v.nullable(Key32),
  /** The epoch authenticator members compare (§9.3). */
  authenticator: Key32,
});
export type EpochState = v.InferOutput<typeof EpochSchema>;

export const PendingCommitSchema = v.strictObject({
  id: v.string(),
  parentEpoch: Uint,
  /** SHA-256 of the core we sent: a delivered commit under our name must be this one (§9.4). */
  coreHash: Key32,
  joiner: Key32,
  transcript: Key32,
  interim: Key32,
  roster: v.array(RosterEntrySchema),
  added: v.array(v.string()),
  removed: v.array(v.string()),
  at: Uint,
  /** Closed groups (§9.7.1): the signed group state this commit carries (base64url). */
  info: v.optional(v.string()),
});
export type PendingCommit = v.InferOutput<typeof PendingCommitSchema>;

/**
 * One of our leaf keys (§9.3), oldest first; `priv` is deleted once its epoch is entered. A
 * hybrid one has `kem` (its ML-KEM-768 encapsulation key, base64url) and `priv` is then its
 * 32-byte X-Wing seed (§3.13); a classical one's `priv` is its X25519 secret.
 */
export const OwnLeafSchema = v.strictObject({
  id: Uint,
  key: Key32,
  priv: Key32,
  epoch: Uint,
  nonce: B64n(16),
  sig: B64n(64),
  kem: v.optional(v.string()),
});
export type OwnLeaf = v.InferOutput<typeof OwnLeafSchema>;

export const GroupRecordSchema = v.strictObject({
  group: v.string(),
  /** none: not joined; joining: join sent, waiting to be committed; member; left. */
  status: v.picklist(["none", "joining", "member", "left"]),
  current: v.nullable(EpochSchema),
  /** The previous epoch, kept receive-only for messages sent just before a commit. */
  previous: v.nullable(EpochSchema),
  pendingCommit: v.nullable(PendingCommitSchema),
  /** Leaf keys we published for this group and have not yet used (§9.3). */
  leaves: v.array(OwnLeafSchema),
  /**
   * Closed groups (§9.7): the signed group state of the current epoch (base64url), absent for a
   * group without one (open to anyone on the hub, as before closed groups existed).
   */
  info: v.optional(v.string()),
  /** Closed groups (§9.7.4): per member, the epoch of the last commit we saw add it. */
  since: v.optional(v.record(v.string(), Uint)),
  /**
   * Closed groups (§9.7.1): a signed group state we (an admin) want our next commit to carry —
   * the creator's first state, or a rename, promotion, policy or link change.
   */
  draftInfo: v.optional(v.string()),
  /** Closed groups (§9.7.5): the last refused commit or relay change, as shown to the user. */
  refused: v.optional(v.strictObject({ epoch: Uint, text: v.string() })),
});
export type GroupRecord = v.InferOutput<typeof GroupRecordSchema>;

export function emptyGroup(group: string): GroupRecord {
  return { group, status: "none", current: null, previous: null, pendingCommit: null, leaves: [] };
}

/**
 * A stored group record. One of the format before this key schedule (no `leaves`: its epochs
 * were wrapped to signed prekeys and hold no init secret or transcript, §9.3) cannot go on; it is
 * read as not joined, so an engine the relay still lists as a member re-joins with fresh leaf
 * keys (§9.4) instead of failing to load.
 */
export function parseGroupRecord(x: unknown): GroupRecord {
  if (x !== null && typeof x === "object" && !("leaves" in x)) {
    const group = (x as { group?: unknown }).group;
    if (typeof group === "string") return emptyGroup(group);
  }
  const r = v.safeParse(GroupRecordSchema, x);
  if (!r.success) throw new CoreError("malformed", "stored group state");
  return r.output;
}

export * from "./group-commit";
export * from "./group-commit-codec";
export * from "./group-leaves";
export * from "./group-message";
