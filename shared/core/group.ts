/**
 * Broadcast groups (PROTOCOL.md §9): signed epoch commits with HPKE-wrapped epoch secrets,
 * per-sender ratcheted chains, and per-message Ed25519 signatures. Pure functions over a
 * serialisable GroupRecord; the engine (client.ts) decides when to commit and does the I/O.
 *
 *   core      = u32be(len(body)) || body || tag(32) || sig(64)
 *   body      = lp("parley/v1/commit", hub, group, u64(parent), u64(epoch), committer, committer_ik,
 *                  roster, added, removed)
 *                  [, access]  (closed groups only, §9.7.2)
 *   roster    = lp(lp(name, ik, u32(spk_id), spk_key, spk_sig) for each member, sorted by name)
 *   access    = lp("parley/v1/group-access", signed_info, lp(lp(name, auth) for each authorized add),
 *                  lp(lp(name, auth) for each removal)), entries sorted by name
 *   added/removed = lp(name, …) sorted
 *   tag       = HMAC-SHA256(HKDF(secret, "", lp("parley/v1/group-confirm", hub, group, u64(epoch)), 32), body)
 *   sig       = Ed25519(committer, lp("parley/v1/commit-sig", body, tag))
 *   wrap      = enc(32) || HPKE-Seal(spk, secret, info = lp("parley/v1/group-wrap", hub, group,
 *                  u64(epoch), name, ik, u32(spk_id)), aad = SHA-256(body))
 *   message   = 0x01 0x11 u32be(n) || nonce(12) || AES-256-GCM(mk_n, nonce, pad(content), aad) || sig(64)
 *               (nonce random per message; 0x10, with nonce(n) and no nonce field, is still read)
 */
import * as v from "valibot";
import { signedPrekeyTranscriptV2 } from "../auth";
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  constantTimeEqual,
  ed25519Verify,
  ed25519VerifyMany,
  hkdfSha256,
  hkdfSha256Expand,
  hkdfSha256Extract,
  hmacSha256,
  hpkeOpen,
  hpkeSealMany,
  randomBytes,
  sha256,
  wipe,
} from "../crypto";
import { concatBytes, lp, u32be } from "../encoding";
import type { GroupState, Member } from "../protocol";
import { b64, enc, Key32, Reader, Uint, u64be } from "./codec";
import { type Content, decodeContent, encodeContent, type ReceivedContent } from "./content";
import { CoreError, malformed } from "./errors";
import { spkMessage } from "./prekeys";
import { counterNonce, kdfCk, MAX_SKIP, type Random } from "./ratchet";

/**
 * Group message type (§9.5). 0x11 carries a random 96-bit AES-GCM nonce per message: two devices
 * that came to hold the same sending chain (an identity restored elsewhere, a relay listing the
 * other device's prekey for our name) derive the same message key for the same counter, and a
 * counter-derived nonce would then repeat under it (plaintexts recovered by XOR). With a random
 * nonce they never share a (key, nonce) pair (RFC 9420 §6.3.1's reuse guard, widened to the whole
 * nonce). 0x10 — nonce derived from the counter, no nonce field — is still read, never written.
 */
export const GROUP_MSG_TYPE = 0x11;
const GROUP_MSG_TYPE_COUNTER_NONCE = 0x10;
const NONCE = 12;
/** Skipped group message keys kept per group (all senders), oldest evicted first. */
export const MAX_GROUP_SKIPPED = 2000;
const SIG = 64;

export const RosterEntrySchema = v.strictObject({
  name: v.string(),
  ik: Key32,
  spkId: Uint,
  spkKey: Key32,
  spkSig: v.string(),
});
export type RosterEntry = v.InferOutput<typeof RosterEntrySchema>;

const ReceiverSchema = v.strictObject({
  name: v.string(),
  ck: Key32,
  n: Uint,
  /**
   * `seq` orders skipped keys across every sender of the epoch, so the bound evicts the oldest
   * first (§9.5). Keys stored before it existed have none and count as older than any that do.
   */
  skipped: v.array(v.strictObject({ n: Uint, mk: Key32, seq: v.optional(Uint) })),
});
type Receiver = v.InferOutput<typeof ReceiverSchema>;

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
  /** Next `seq` for a skipped key of this epoch (absent: none stored with one yet). */
  skipSeq: v.optional(Uint),
});
export type EpochState = v.InferOutput<typeof EpochSchema>;

export const PendingCommitSchema = v.strictObject({
  id: v.string(),
  parentEpoch: Uint,
  secret: Key32,
  roster: v.array(RosterEntrySchema),
  added: v.array(v.string()),
  removed: v.array(v.string()),
  at: Uint,
  /** Closed groups (§9.7.1): the signed group state this commit carries (base64url). */
  info: v.optional(v.string()),
});
export type PendingCommit = v.InferOutput<typeof PendingCommitSchema>;

export const GroupRecordSchema = v.strictObject({
  group: v.string(),
  /** none: not joined; joining: join sent, waiting to be committed; member; left. */
  status: v.picklist(["none", "joining", "member", "left"]),
  current: v.nullable(EpochSchema),
  /** The previous epoch, kept receive-only for messages sent just before a commit. */
  previous: v.nullable(EpochSchema),
  pendingCommit: v.nullable(PendingCommitSchema),
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
  return { group, status: "none", current: null, previous: null, pendingCommit: null };
}

/**
 * Records written before epoch secrets stopped being stored carry `secret` in `current` and
 * `previous`. They are migrated, not reset: the chains derived from that secret are already in
 * the record, so dropping the field loses nothing, and the next write persists the record
 * without it (§10.1).
 */
function dropLegacyEpochSecret(x: unknown): unknown {
  if (x === null || typeof x !== "object") return x;
  const r = { ...(x as Record<string, unknown>) };
  for (const k of ["current", "previous"]) {
    const ep = r[k];
    if (ep !== null && typeof ep === "object" && "secret" in ep) {
      const { secret: _dropped, ...rest } = ep as Record<string, unknown>;
      r[k] = rest;
    }
  }
  return r;
}

export function parseGroupRecord(x: unknown): GroupRecord {
  const r = v.safeParse(GroupRecordSchema, dropLegacyEpochSecret(x));
  if (!r.success) throw new CoreError("malformed", "stored group state");
  return r.output;
}

// ---------------------------------------------------------------------------------------------
// Key schedule (§9.3, §9.5)

export function confirmKey(
  secret: Uint8Array,
  hub: string,
  group: string,
  epoch: number,
): Uint8Array {
  return hkdfSha256(
    secret,
    new Uint8Array(0),
    lp("parley/v1/group-confirm", hub, group, u64be(epoch)),
    32,
  );
}

export function senderChainKey(
  secret: Uint8Array,
  hub: string,
  group: string,
  epoch: number,
  name: string,
  ik: Uint8Array,
): Uint8Array {
  return hkdfSha256(
    secret,
    new Uint8Array(0),
    lp("parley/v1/group-sender", hub, group, u64be(epoch), name, ik),
    32,
  );
}

/**
 * senderChainKey for every member of one epoch, same bytes (test/shared/core-group-perf.test.ts).
 * HKDF is Expand(Extract(salt, secret), info, L) (RFC 5869 §2.2–2.3) and the PRK depends only on
 * the epoch secret, so it is extracted once per epoch instead of once per member; the lp() prefix
 * shared by every member's info is encoded once (§2.2: lp is a concatenation).
 */
export function senderChainKeys(
  secret: Uint8Array,
  hub: string,
  group: string,
  epoch: number,
  members: ReadonlyArray<{ name: string; ik: Uint8Array }>,
): Uint8Array[] {
  const prk = hkdfSha256Extract(secret, new Uint8Array(0));
  const prefix = lp("parley/v1/group-sender", hub, group, u64be(epoch));
  try {
    return members.map((m) => hkdfSha256Expand(prk, concatBytes(prefix, lp(m.name, m.ik)), 32));
  } finally {
    wipe(prk);
  }
}

export function wrapInfo(hub: string, group: string, epoch: number, m: RosterEntry): Uint8Array {
  return lp("parley/v1/group-wrap", hub, group, u64be(epoch), m.name, b64(m.ik, "ik"), m.spkId);
}

/**
 * `wrapInfo` for many members of one epoch. lp() is a plain concatenation of length-prefixed
 * fields (§2.2), so lp(a, b, c, d, e, f, g) = lp(a, b, c, d) || lp(e, f, g): the part shared by
 * every member is encoded once per commit instead of once per member. Same bytes as wrapInfo
 * (test/shared/core-group-perf.test.ts).
 */
export function wrapInfoFor(
  hub: string,
  group: string,
  epoch: number,
): (name: string, ik: Uint8Array, spkId: number) => Uint8Array {
  const prefix = lp("parley/v1/group-wrap", hub, group, u64be(epoch));
  return (name, ik, spkId) => concatBytes(prefix, lp(name, ik, spkId));
}

// ---------------------------------------------------------------------------------------------
// Commit core codec (§9.2)

export interface CommitCore {
  hub: string;
  group: string;
  parentEpoch: number;
  epoch: number;
  committer: string;
  committerIk: Uint8Array;
  roster: RosterEntry[];
  added: string[];
  removed: string[];
  /** Closed groups (§9.7.2): absent for a group without a signed state. */
  access?: CommitAccess | undefined;
}

/** What a closed group's commit carries for every member to check (§9.7.2). */
export interface CommitAccess {
  /** The signed group state of the new epoch. */
  info: Uint8Array;
  /** The authorization of each added member that needs one (by name). */
  adds: { name: string; auth: Uint8Array }[];
  /** The authorization of each removed member (its signed leave or an admin's removal). */
  removals: { name: string; auth: Uint8Array }[];
}

const byEntryName = (a: { name: string }, b: { name: string }) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

function encodeAccess(a: CommitAccess): Uint8Array {
  const entries = (xs: { name: string; auth: Uint8Array }[]) =>
    lp(...[...xs].sort(byEntryName).map((x) => lp(x.name, x.auth)));
  return lp("parley/v1/group-access", a.info, entries(a.adds), entries(a.removals));
}

function decodeAccess(bytes: Uint8Array): CommitAccess {
  const r = new Reader(bytes, "commit access");
  if (utf8(r.field(64)) !== "parley/v1/group-access") throw malformed("commit access label");
  const info = r.field(8192);
  const entries = (b: Uint8Array) =>
    list(b, (x) => {
      const e = { name: utf8(x.field(64)), auth: x.field(512) };
      x.end();
      return e;
    });
  const adds = entries(r.field());
  const removals = entries(r.field());
  r.end();
  return { info, adds, removals };
}

const sortNames = (xs: readonly string[]) => [...xs].sort();
const byName = (a: RosterEntry, b: RosterEntry) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export function encodeCommitBody(c: CommitCore): Uint8Array {
  const roster = lp(
    ...[...c.roster]
      .sort(byName)
      .map((m) => lp(m.name, b64(m.ik, "ik"), m.spkId, b64(m.spkKey, "spk"), b64(m.spkSig, "sig"))),
  );
  return lp(
    "parley/v1/commit",
    c.hub,
    c.group,
    u64be(c.parentEpoch),
    u64be(c.epoch),
    c.committer,
    c.committerIk,
    roster,
    lp(...sortNames(c.added)),
    lp(...sortNames(c.removed)),
    ...(c.access === undefined ? [] : [encodeAccess(c.access)]),
  );
}

const text = new TextDecoder("utf-8", { fatal: true });
function str(r: Reader): string {
  try {
    return text.decode(r.field(256));
  } catch (e) {
    if (e instanceof CoreError) throw e;
    throw malformed("commit string");
  }
}
/** Bad UTF-8 is a typed error like every other malformed input (never a bare TypeError). */
function utf8(bytes: Uint8Array): string {
  try {
    return text.decode(bytes);
  } catch {
    throw malformed("commit string");
  }
}
function list<T>(bytes: Uint8Array, item: (r: Reader) => T): T[] {
  const r = new Reader(bytes, "commit list");
  const out: T[] = [];
  while (r.remaining() > 0) out.push(item(new Reader(r.field(), "commit list item")));
  return out;
}

export function decodeCommitBody(body: Uint8Array): CommitCore {
  const r = new Reader(body, "commit body");
  if (str(r) !== "parley/v1/commit") throw malformed("commit label");
  const hub = str(r);
  const group = str(r);
  const parentEpoch = new Reader(r.field(8), "epoch").u64();
  const epoch = new Reader(r.field(8), "epoch").u64();
  const committer = str(r);
  const committerIk = r.field(32);
  const roster = list(r.field(), (x) => {
    const e = {
      name: str(x),
      ik: enc(x.field(32)),
      spkId: new Reader(x.field(4), "spk id").u32(),
      spkKey: enc(x.field(32)),
      spkSig: enc(x.field(64)),
    };
    x.end();
    return e;
  });
  const added = list(r.field(), (x) => utf8(x.rest()));
  const removed = list(r.field(), (x) => utf8(x.rest()));
  const access = r.remaining() > 0 ? decodeAccess(r.field()) : undefined;
  r.end();
  if (committerIk.length !== 32) throw malformed("committer key");
  return { hub, group, parentEpoch, epoch, committer, committerIk, roster, added, removed, access };
}

export function splitCore(core: Uint8Array): {
  body: Uint8Array;
  tag: Uint8Array;
  sig: Uint8Array;
} {
  const r = new Reader(core, "commit core");
  const body = r.field();
  const tag = r.bytes(32);
  const sig = r.bytes(SIG);
  r.end();
  return { body, tag, sig };
}

// ---------------------------------------------------------------------------------------------
// Building a commit (§9.2)

export function rosterFromMembers(members: readonly Member[]): RosterEntry[] {
  return members
    .map((m) => ({
      name: m.username,
      ik: m.identityKey,
      spkId: m.signedPrekey.id,
      spkKey: m.signedPrekey.key,
      spkSig: m.signedPrekey.sig,
    }))
    .sort(byName);
}

/** The roster the relay will require: (committed − pendingLeaves) ∪ pendingJoins (§9.1). */
export function nextRoster(state: GroupState): {
  roster: RosterEntry[];
  added: string[];
  removed: string[];
} {
  const leaving = new Set(state.pendingLeaves);
  const byUser = new Map<string, Member>();
  for (const m of state.members) if (!leaving.has(m.username)) byUser.set(m.username, m);
  const committed = new Set(state.members.map((m) => m.username));
  const added: string[] = [];
  for (const m of state.pendingJoins) {
    // A leaver who asked to join again stays in: removed and added in the same commit.
    if (!byUser.has(m.username)) added.push(m.username);
    byUser.set(m.username, m);
  }
  return {
    roster: rosterFromMembers([...byUser.values()]),
    added: sortNames(added),
    removed: sortNames(state.pendingLeaves.filter((n) => committed.has(n))),
  };
}

/**
 * Signed prekeys already verified, keyed by the exact strings that were verified (identity key,
 * id, prekey, signature; "." is outside the base64url alphabet, so the key is unambiguous, and
 * decoding is deterministic, so one key always means the same bytes). Why: every commit re-checks
 * the whole roster (§9.4), and in a steady group the entries are the same ones commit after
 * commit; Ed25519 verification is deterministic, so a positive result can be reused. Keyed by the
 * strings rather than a hash of them because a 1000-member roster is looked up on every commit
 * and a SHA-256 per entry was most of the warm check. Bounded (oldest evicted, ~200 B per entry);
 * only successes are remembered.
 */
const VERIFIED_MAX = 8192;
const verifiedPrekeys = new Set<string>();

const prekeyId = (m: RosterEntry) => `${m.ik}.${m.spkId}.${m.spkKey}.${m.spkSig}`;

/** Drop the cache (benchmarks measure the cold path with it; nothing else needs to). */
export function forgetVerifiedPrekeys(): void {
  verifiedPrekeys.clear();
}

/** Every roster entry's signed prekey must verify under its identity key before we wrap to it. */
export async function verifyRosterPrekeys(roster: readonly RosterEntry[]): Promise<void> {
  // One batch of independent checks (entries already verified cost one Set lookup): the crypto
  // seam spreads it over the runtime's threads (ed25519VerifyMany, §3.2); the first failure is
  // reported in roster order.
  const todo = roster.filter((m) => !verifiedPrekeys.has(prekeyId(m)));
  if (todo.length === 0) return;
  // A signed prekey is signed under the v2 label by post-quantum clients, v1 by older ones
  // (§8.3.5): either is the member's key. The v1 check runs only for entries the v2 one refused.
  const check = (label: (id: number, key: Uint8Array) => Uint8Array, ms: readonly RosterEntry[]) =>
    ed25519VerifyMany(
      ms.map((m) => ({
        publicKey: b64(m.ik, "ik"),
        message: label(m.spkId, b64(m.spkKey, "spk")),
        signature: b64(m.spkSig, "spk sig"),
      })),
    );
  const ok = await check(signedPrekeyTranscriptV2, todo);
  const retry = todo.filter((_, i) => !ok[i]);
  if (retry.length > 0) {
    const ok1 = await check(spkMessage, retry);
    let j = 0;
    for (const [i, v2] of ok.entries()) if (!v2) ok[i] = ok1[j++] ?? false;
  }
  for (const [i, m] of todo.entries()) {
    if (!ok[i])
      throw new CoreError("bad_signature", `signed prekey of ${m.name} signature does not verify`);
    verifiedPrekeys.add(prekeyId(m));
    if (verifiedPrekeys.size > VERIFIED_MAX) {
      const oldest = verifiedPrekeys.values().next().value;
      if (oldest !== undefined) verifiedPrekeys.delete(oldest);
    }
  }
}

/**
 * What a committer does (§9.4): check every roster entry's signed prekey and build the commit,
 * the two at once — the checks can run on other threads (ed25519VerifyMany) while the seals run
 * here. Nothing is returned unless every check passed: a wrap to a prekey that does not verify
 * never leaves this function (a failed check rejects; the sealed wraps are dropped).
 */
export async function createCommit(
  params: Parameters<typeof buildCommit>[0],
): ReturnType<typeof buildCommit> {
  // Our own entry must carry our own identity key (§9.4): a roster from the relay that lists
  // another key under our name would hand the epoch secret, and our sending chain, to its holder.
  const own = params.roster.find((m) => m.name === params.committer);
  if (own === undefined || !constantTimeEqual(b64(own.ik, "ik"), params.committerIk)) {
    throw new CoreError("roster_mismatch", "our own roster entry does not carry our identity key");
  }
  const [, built] = await Promise.all([verifyRosterPrekeys(params.roster), buildCommit(params)]);
  return built;
}

/**
 * The commit construction alone (§9.2.3), for a roster already checked (or, in tests, one a
 * forger would use): epoch secret, signed core, one HPKE wrap per member.
 */
export async function buildCommit(params: {
  hub: string;
  group: string;
  parentEpoch: number;
  committer: string;
  committerIk: Uint8Array;
  sign(message: Uint8Array): Promise<Uint8Array>;
  roster: RosterEntry[];
  added: string[];
  removed: string[];
  access?: CommitAccess | undefined;
  random: Random;
}): Promise<{ core: Uint8Array; wraps: { to: string; wrap: Uint8Array }[]; secret: Uint8Array }> {
  const epoch = params.parentEpoch + 1;
  const secret = params.random(32);
  const body = encodeCommitBody({ ...params, epoch });
  const tag = hmacSha256(confirmKey(secret, params.hub, params.group, epoch), body);
  const sig = await params.sign(lp("parley/v1/commit-sig", body, tag));
  const aad = sha256(body);
  const info = wrapInfoFor(params.hub, params.group, epoch);
  // Every member gets a wrap, the committer included: the relay then mails the commit back to
  // its author too, so a committer that loses its connection before `accepted` still learns
  // the outcome from its mailbox (§9.2.3).
  // The seals are independent; hpkeSealMany runs them with the concurrency that suits the
  // runtime's primitives.
  const sealed = await hpkeSealMany(
    params.roster.map((m) => ({
      recipientPublicKey: b64(m.spkKey, "spk"),
      info: info(m.name, b64(m.ik, "ik"), m.spkId),
    })),
    secret,
    aad,
  );
  const wraps = params.roster.map((m, i) => {
    const w = sealed[i] as { enc: Uint8Array; ciphertext: Uint8Array };
    return { to: m.name, wrap: concatBytes(w.enc, w.ciphertext) };
  });
  return { core: concatBytes(u32be(body.length), body, tag, sig), wraps, secret };
}

// ---------------------------------------------------------------------------------------------
// Entering an epoch

export function enterEpoch(
  hub: string,
  group: string,
  epoch: number,
  secret: Uint8Array,
  roster: RosterEntry[],
  me: { name: string; identityKey: Uint8Array },
  now: number,
): EpochState {
  // The secret is used here and nowhere else: the caller drops it, only the derived chains are
  // returned (and stored), so no stored record contains the epoch secret (§9.5).
  const others = roster.filter((m) => m.name !== me.name);
  const [mine, ...theirs] = senderChainKeys(secret, hub, group, epoch, [
    { name: me.name, ik: me.identityKey },
    ...others.map((m) => ({ name: m.name, ik: b64(m.ik, "ik") })),
  ]);
  return {
    epoch,
    roster,
    startedAt: now,
    send: { ck: enc(mine as Uint8Array), n: 0 },
    receivers: others.map((m, i) => ({
      name: m.name,
      ck: enc(theirs[i] as Uint8Array),
      n: 0,
      skipped: [],
    })),
    sent: 0,
  };
}

/** Our own commit was accepted by the relay: move to its epoch. */
export function applyOwnCommit(
  record: GroupRecord,
  hub: string,
  me: { name: string; identityKey: Uint8Array },
  now: number,
): GroupRecord {
  const p = record.pendingCommit;
  if (p === null) return record;
  const secret = b64(p.secret, "secret");
  const next = enterEpoch(hub, record.group, p.parentEpoch + 1, secret, p.roster, me, now);
  wipe(secret);
  return {
    ...record,
    status: "member",
    previous: record.current,
    current: next,
    pendingCommit: null,
  };
}

export interface CommitView {
  core: CommitCore;
}

/**
 * Verify and apply a commit delivered to us (§9.4): committer signature, committer membership
 * (or the joiner itself), parent epoch, exact roster change, our own entry, prekey signatures,
 * the wrapped secret and its confirmation tag. Throws CoreError; the input is never changed.
 */
export async function receiveCommit(params: {
  record: GroupRecord;
  hub: string;
  me: { name: string; identityKey: Uint8Array };
  itemEpoch: number;
  core: Uint8Array;
  wrap: Uint8Array;
  /** Our X25519 prekey secrets by signed-prekey id (current and within grace). */
  spkSecret(id: number): Uint8Array | null;
  now: number;
  /**
   * The relay-authenticated sender of the delivery (`deliver.from` / `fromKey`). Required: the
   * committer named inside the opaque core must be the account that actually sent the commit
   * (§9.4 step 2), otherwise any joiner could commit "as" a member.
   */
  from: { name: string; identityKey: string };
}): Promise<{ record: GroupRecord; view: CommitView }> {
  const { record, hub, me } = params;
  const { body, tag, sig } = splitCore(params.core);
  const c = decodeCommitBody(body);
  if (c.hub !== hub || c.group !== record.group) throw malformed("commit for another group");
  if (params.from.name !== c.committer || params.from.identityKey !== enc(c.committerIk)) {
    throw new CoreError("not_member", "commit was not sent by its committer");
  }
  if (c.epoch !== params.itemEpoch || c.epoch !== c.parentEpoch + 1)
    throw new CoreError("stale_epoch", "epoch numbers");
  const names = c.roster.map((m) => m.name);
  if (new Set(names).size !== names.length)
    throw new CoreError("roster_mismatch", "duplicate roster names");
  const inRoster = new Set(names);
  const mine = c.roster.find((m) => m.name === me.name);
  if (!mine || !constantTimeEqual(b64(mine.ik, "ik"), me.identityKey)) {
    throw new CoreError("not_member", "we are not in this commit's roster");
  }
  const cur = record.current;
  if (cur !== null && record.status === "member") {
    if (c.parentEpoch !== cur.epoch)
      throw new CoreError("stale_epoch", "commit does not extend our epoch");
    // The roster change must be exactly the announced one (§9.4).
    const old = new Map(cur.roster.map((m) => [m.name, m]));
    const expected = new Set([...old.keys()].filter((n) => !c.removed.includes(n)));
    for (const n of c.added) {
      // A member who left and re-joined is both removed and added (fresh secret either way).
      if (expected.has(n)) throw new CoreError("roster_mismatch", "added member already present");
      expected.add(n);
    }
    for (const n of c.removed)
      if (!old.has(n)) throw new CoreError("roster_mismatch", "removed unknown member");
    if (expected.size !== inRoster.size || [...expected].some((n) => !inRoster.has(n))) {
      throw new CoreError("roster_mismatch", "roster is not old roster + added − removed");
    }
    if (!old.has(c.committer) && !c.added.includes(c.committer)) {
      throw new CoreError("not_member", "committer is neither a member nor a joiner");
    }
    if (c.removed.includes(c.committer) && !c.added.includes(c.committer)) {
      throw new CoreError("not_member", "committer removes itself");
    }
    // A name keeps its identity key for ever (the relay binds a username to its first key,
    // §4.3), so a commit that gives any surviving name (the committer included) another key is
    // a key substitution and is refused outright, never applied (§9.4 step 5). Names listed in
    // both `removed` and `added` are not exempt: those lists are chosen by the committer.
    const changed = c.roster
      .filter((m) => {
        const o = old.get(m.name);
        return o !== undefined && o.ik !== m.ik;
      })
      .map((m) => m.name);
    if (changed.length > 0) {
      throw new CoreError("roster_mismatch", `identity key changed for ${changed.join(", ")}`);
    }
  } else {
    // We are joining: we must be among the added, the committer a member of the new roster.
    if (!c.added.includes(me.name)) throw new CoreError("not_member", "commit does not add us");
    if (cur !== null && c.parentEpoch < cur.epoch) throw new CoreError("stale_epoch", "old commit");
  }
  if (!inRoster.has(c.committer)) throw new CoreError("not_member", "committer not in roster");
  for (const n of c.added)
    if (!inRoster.has(n)) throw new CoreError("roster_mismatch", "added not in roster");
  const committer = c.roster.find((m) => m.name === c.committer);
  if (!committer || !constantTimeEqual(b64(committer.ik, "ik"), c.committerIk)) {
    throw new CoreError("bad_signature", "committer key is not its roster key");
  }
  if (!(await ed25519Verify(c.committerIk, lp("parley/v1/commit-sig", body, tag), sig))) {
    throw new CoreError("bad_signature", "commit signature does not verify");
  }
  await verifyRosterPrekeys(c.roster);
  const spkSecret = params.spkSecret(mine.spkId);
  if (spkSecret === null) throw new CoreError("no_prekey", "wrap is for a prekey we do not hold");
  if (params.wrap.length < 32 + 16) throw malformed("wrap");
  let secret: Uint8Array;
  try {
    secret = await hpkeOpen(
      spkSecret,
      params.wrap.slice(0, 32),
      params.wrap.slice(32),
      wrapInfo(hub, record.group, c.epoch, mine),
      sha256(body),
    );
  } catch {
    throw new CoreError("decrypt_failed", "cannot open the wrapped epoch secret");
  }
  if (secret.length !== 32) throw malformed("epoch secret");
  // A relay (or committer) handing us a different secret than the one the tag was made with is
  // caught here: the tag binds the secret to the signed body (§9.2).
  if (!constantTimeEqual(hmacSha256(confirmKey(secret, hub, record.group, c.epoch), body), tag)) {
    throw new CoreError("bad_signature", "commit confirmation tag mismatch");
  }
  const next = enterEpoch(hub, record.group, c.epoch, secret, c.roster, me, params.now);
  // Best effort in JS (copies may linger in the GC heap), but never kept or persisted (§9.5).
  wipe(secret);
  return {
    record: {
      group: record.group,
      status: "member",
      previous: cur,
      current: next,
      pendingCommit: null,
    },
    view: { core: c },
  };
}

// ---------------------------------------------------------------------------------------------
// Group messages (§9.5)

/** `nonce` is null for the legacy 0x10 type, which binds none. */
function msgAad(
  hub: string,
  group: string,
  epoch: number,
  sender: string,
  ik: Uint8Array,
  n: number,
  nonce: Uint8Array | null,
) {
  return nonce === null
    ? lp("parley/v1/group-msg", hub, group, u64be(epoch), sender, ik, n)
    : lp("parley/v1/group-msg", hub, group, u64be(epoch), sender, ik, n, nonce);
}
function sigInput(
  hub: string,
  group: string,
  epoch: number,
  sender: string,
  n: number,
  nonce: Uint8Array | null,
  ct: Uint8Array,
) {
  return nonce === null
    ? lp("parley/v1/group-sig", hub, group, u64be(epoch), sender, n, ct)
    : lp("parley/v1/group-sig", hub, group, u64be(epoch), sender, n, nonce, ct);
}

export async function encryptGroup(params: {
  record: GroupRecord;
  hub: string;
  me: { name: string; identityKey: Uint8Array };
  sign(message: Uint8Array): Promise<Uint8Array>;
  content: Content;
  /** Source of the per-message nonce (default: the CSPRNG). */
  random?: Random;
}): Promise<{ record: GroupRecord; body: Uint8Array; epoch: number }> {
  const cur = params.record.current;
  if (params.record.status !== "member" || cur === null)
    throw new CoreError("not_member", "not a member");
  const { ck, mk } = kdfCk(b64(cur.send.ck, "ck"));
  const n = cur.send.n;
  const g = params.record.group;
  const nonce = (params.random ?? randomBytes)(NONCE);
  const ct = await aesGcmEncrypt(
    mk,
    nonce,
    encodeContent(params.content),
    msgAad(params.hub, g, cur.epoch, params.me.name, params.me.identityKey, n, nonce),
  );
  const sig = await params.sign(sigInput(params.hub, g, cur.epoch, params.me.name, n, nonce, ct));
  const body = concatBytes(new Uint8Array([0x01, GROUP_MSG_TYPE]), u32be(n), nonce, ct, sig);
  const next: EpochState = { ...cur, send: { ck: enc(ck), n: n + 1 }, sent: cur.sent + 1 };
  return { record: { ...params.record, current: next }, body, epoch: cur.epoch };
}

/** Decrypt a group message from `sender`; signature first, so forgeries never touch state. */
export async function decryptGroup(params: {
  record: GroupRecord;
  hub: string;
  sender: string;
  epoch: number;
  body: Uint8Array;
}): Promise<{ record: GroupRecord; content: ReceivedContent }> {
  const { record, hub, sender, epoch } = params;
  const which =
    record.current?.epoch === epoch
      ? "current"
      : record.previous?.epoch === epoch
        ? "previous"
        : null;
  const ep = which === null ? null : record[which];
  if (ep === null || record.status !== "member")
    throw new CoreError("stale_epoch", "no keys for that epoch");
  const r = new Reader(params.body, "group message");
  if (r.u8() !== 0x01) throw malformed("group message header");
  const type = r.u8();
  if (type !== GROUP_MSG_TYPE && type !== GROUP_MSG_TYPE_COUNTER_NONCE)
    throw malformed("group message header");
  const n = r.u32();
  const nonce = type === GROUP_MSG_TYPE ? (r.remaining() >= NONCE ? r.bytes(NONCE) : null) : null;
  if ((type === GROUP_MSG_TYPE && nonce === null) || r.remaining() < 16 + SIG)
    throw malformed("group message");
  const ct = r.bytes(r.remaining() - SIG);
  const sig = r.bytes(SIG);
  const member = findByName(ep.roster, sender);
  const rxAt = indexByName(ep.receivers, sender);
  const rx = ep.receivers[rxAt];
  if (!member || !rx) throw new CoreError("not_member", "sender is not in the epoch's roster");
  // The previous epoch stays readable only for members who are still in the group (§9.5): the
  // relay delivers in order, so a departed member's last messages arrive before the commit
  // that removed it; anything later under its name is injection after removal.
  if (which === "previous" && (!record.current || !findByName(record.current.roster, sender))) {
    throw new CoreError("not_member", "sender left the group; its old epoch is closed");
  }
  const ik = b64(member.ik, "ik");
  if (!(await ed25519Verify(ik, sigInput(hub, record.group, epoch, sender, n, nonce, ct), sig))) {
    throw new CoreError("bad_signature", "group message signature does not verify");
  }
  const aad = msgAad(hub, record.group, epoch, sender, ik, n, nonce);
  let next: Receiver;
  let mk: Uint8Array;
  let skipSeq = ep.skipSeq ?? 0;
  const skippedIdx = rx.skipped.findIndex((s) => s.n === n);
  if (skippedIdx >= 0) {
    mk = b64((rx.skipped[skippedIdx] as { mk: string }).mk, "mk");
    next = { ...rx, skipped: rx.skipped.filter((_, i) => i !== skippedIdx) };
  } else {
    if (n < rx.n) throw new CoreError("replay", "group message counter already used");
    if (n - rx.n > MAX_SKIP) throw new CoreError("too_far", "group message too far ahead");
    let ck = b64(rx.ck, "ck");
    const skipped = [...rx.skipped];
    for (let i = rx.n; i < n; i++) {
      const s = kdfCk(ck);
      skipped.push({ n: i, mk: enc(s.mk), seq: skipSeq++ });
      ck = s.ck;
    }
    const s = kdfCk(ck);
    mk = s.mk;
    next = { ...rx, ck: enc(s.ck), n: n + 1, skipped };
  }
  let pt: Uint8Array;
  try {
    pt = await aesGcmDecrypt(mk, nonce ?? counterNonce(n), ct, aad);
  } catch {
    throw new CoreError("decrypt_failed", "group message does not authenticate");
  }
  const content = decodeContent(pt);
  let receivers = ep.receivers.slice();
  receivers[rxAt] = next;
  // Bound the skipped keys across all senders of the epoch, the oldest evicted first (§9.5): a
  // per-receiver share would let one sender's burst of losses evict another's recent keys, and
  // in a large group leave each sender only a couple of keys.
  let total = 0;
  for (const x of receivers) total += x.skipped.length;
  if (total > MAX_GROUP_SKIPPED) {
    receivers = evictOldestSkipped(receivers, total - MAX_GROUP_SKIPPED);
  } else {
    // Same names at the same positions: the new array inherits the old one's index.
    const idx = nameIndexes.get(ep.receivers);
    if (idx !== undefined) nameIndexes.set(receivers, idx);
  }
  const epoch2: EpochState = { ...ep, receivers, ...(skipSeq > 0 ? { skipSeq } : {}) };
  return { record: { ...record, [which as string]: epoch2 }, content };
}

/** Drop the `count` skipped keys with the lowest `seq` (no seq: oldest of all), §9.5. */
function evictOldestSkipped(receivers: Receiver[], count: number): Receiver[] {
  const all: { r: number; seq: number; n: number }[] = [];
  receivers.forEach((x, r) => {
    for (const s of x.skipped) all.push({ r, seq: s.seq ?? -1, n: s.n });
  });
  all.sort((a, b) => a.seq - b.seq || a.n - b.n);
  const drop = new Map<number, Set<number>>();
  for (const e of all.slice(0, count)) {
    const set = drop.get(e.r) ?? new Set<number>();
    set.add(e.n);
    drop.set(e.r, set);
  }
  return receivers.map((x, r) => {
    const set = drop.get(r);
    return set === undefined ? x : { ...x, skipped: x.skipped.filter((s) => !set.has(s.n)) };
  });
}

// Per-message lookups in a large group (§9.5). A group message names its sender; finding that
// sender's roster entry and chain by linear scans (and rebuilding the chains with a closure per
// entry) made the cost of receiving one message grow with the roster (it must stay flat, docs/PERFORMANCE.md).
// Stored epochs are never mutated (every update returns new arrays), so an index built once per
// array stays valid; each hit is still checked against the entry itself, and a miss falls back
// to the scan, so a stale or absent index can only cost time, never pick the wrong member.

const nameIndexes = new WeakMap<readonly { name: string }[], Map<string, number>>();

function indexByName(xs: readonly { name: string }[], name: string): number {
  let idx = nameIndexes.get(xs);
  if (idx === undefined) {
    idx = new Map();
    // First occurrence wins, as with Array.prototype.find.
    for (let i = xs.length - 1; i >= 0; i--) idx.set((xs[i] as { name: string }).name, i);
    nameIndexes.set(xs, idx);
  }
  const i = idx.get(name);
  if (i !== undefined && xs[i]?.name === name) return i;
  return xs.findIndex((x) => x.name === name);
}

function findByName<T extends { name: string }>(xs: readonly T[], name: string): T | undefined {
  return xs[indexByName(xs, name)];
}
