/**
 * Group commits (PROTOCOL.md §9.2, §9.4): signed roster changes that move a group to its next
 * epoch, with the epoch's secrets HPKE-wrapped to every member's leaf key (group-leaves.ts) and
 * chained from the previous epoch and the transcript (group-schedule.ts).
 *
 *   core    = u32be(len(body)) || body || sig(64) || tag(32)
 *   body    = lp("parley/v2/commit", hub, group, u64(parent), u64(epoch), interim[parent],
 *                committer, committer_ik, roster, added, removed [, access])
 *   roster  = lp(lp(name, ik, u32(leaf_id), u64(leaf_epoch), leaf_key, leaf_nonce, leaf_sig)
 *                for each member, sorted by name)
 *   added/removed = lp(name, …) sorted
 *   access  = closed groups only (§9.7.2, group-access.ts): lp("parley/v1/group-access",
 *                signed_info, lp(lp(name, auth) for each authorized add),
 *                lp(lp(name, auth) for each removal)), entries sorted by name
 *   sig     = Ed25519(committer, lp("parley/v2/commit-sig", body))
 *   tag     = HMAC-SHA256(confirm_key[epoch], confirmed[epoch])          (group-schedule.ts)
 *   roster entries of hybrid leaf keys append leaf_kem_hash = SHA-256(ML-KEM half) (§9.2.2)
 *   wrap    = 0x01 || enc(32) || HPKE-Seal(leaf_key, secret, info = lp("parley/v2/group-wrap",
 *                hub, group, u64(epoch)) || lp(kind, name, ik, u32(leaf_id)), aad = SHA-256(body))
 *             to a classical leaf key; to a hybrid one 0x02 || enc(1120) || X-Wing HPKE-Seal(
 *                leaf_kem || leaf_key, secret, same info and aad)                  (§9.2.3)
 *   kind    = "member": secret = commit_secret (a member of the parent epoch, committer too);
 *             "joiner": secret = joiner_secret (an added member, or every member when the
 *             committer is itself joining and holds no init secret)
 *   The committer's own wrap seals 32 random bytes to a key pair made for it and dropped (§9.2.3).
 */
import {
  constantTimeEqual,
  ed25519Verify,
  HPKE_XWING_ENC_BYTES,
  hpkeOpen,
  hpkeOpenXWing,
  hpkeSeal,
  hpkeSealMany,
  hpkeSealManyXWing,
  hpkeSealXWing,
  randomBytes,
  sha256,
  wipe,
  x25519GenerateKeyPair,
  xwingGenerateKeyPair,
} from "../crypto";
import { concatBytes, lp, u32be } from "../encoding";
import type { GroupState } from "../protocol";
import { b64, enc } from "./codec";
import { CoreError, malformed } from "./errors";
import type { EpochState, GroupRecord, PendingCommit, RosterEntry } from "./group";
import {
  type CommitAccess,
  type CommitCore,
  decodeCommitBody,
  encodeCommitBody,
  sortNames,
  splitCore,
} from "./group-commit-codec";
import {
  checkNoDowngrade,
  consumeLeaves,
  hybridRecipientKey,
  ownLeafFor,
  rosterFromMembers,
  verifyRosterLeaves,
} from "./group-leaves";
import {
  confirmationTag,
  confirmedTranscript,
  epochKeys,
  groupContext,
  interimTranscript,
  joinerSecret,
  WRAP_V1,
  WRAP_XWING,
  wrapInfoFor,
  ZERO_HASH,
} from "./group-schedule";
import type { Random } from "./ratchet";

// ---------------------------------------------------------------------------------------------
// Building a commit (§9.2)

/** The roster the relay will require: (committed − pendingLeaves) ∪ pendingJoins (§9.1). */
export function nextRoster(state: GroupState): {
  roster: RosterEntry[];
  added: string[];
  removed: string[];
} {
  const leaving = new Set(state.pendingLeaves);
  const byUser = new Map<string, GroupState["members"][number]>();
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

/** Which secret a member's wrap holds (§9.2): both ends decide it from the signed body alone. */
function wrapKind(c: { added: readonly string[]; committer: string }, name: string) {
  return c.added.includes(c.committer) || c.added.includes(name)
    ? ("joiner" as const)
    : ("member" as const);
}

/**
 * What a committer does (§9.4): check every roster entry's leaf key and build the commit, the
 * two at once — the checks can run on other threads (ed25519VerifyMany) while the seals run
 * here. Nothing is returned unless every check passed.
 */
export async function createCommit(
  params: Parameters<typeof buildCommit>[0] & {
    ownLeaves: GroupRecord["leaves"];
    /** The roster of our current epoch (none when joining): checked for downgrades (§9.3). */
    prevRoster?: readonly RosterEntry[] | undefined;
  },
): ReturnType<typeof buildCommit> {
  // Our own entry must carry our own identity key and one of our own leaf keys (§9.4): a roster
  // from the relay that lists another key under our name would hand the epoch's secrets, and
  // our sending chain, to its holder (another device of the same identity included).
  const own = params.roster.find((m) => m.name === params.committer);
  if (own === undefined || !constantTimeEqual(b64(own.ik, "ik"), params.committerIk)) {
    throw new CoreError("roster_mismatch", "our own roster entry does not carry our identity key");
  }
  if (!params.ownLeaves.some((l) => l.id === own.leafId && l.key === own.leafKey)) {
    throw new CoreError("identity_mismatch", "our own roster entry is not one of our leaf keys");
  }
  // A member of our epoch whose leaf key was hybrid keeps a hybrid one (§9.3 "Downgrade").
  if (params.prevRoster !== undefined) checkNoDowngrade(params.prevRoster, params.roster);
  const [, built] = await Promise.all([
    verifyRosterLeaves(params.hub, params.group, params.roster),
    buildCommit(params),
  ]);
  return built;
}

export interface BuiltCommit {
  core: Uint8Array;
  wraps: { to: string; leaf: number; wrap: Uint8Array }[];
  /** What applying it needs (persisted before the commit leaves, §10.1). */
  joiner: Uint8Array;
  transcript: Uint8Array;
  interim: Uint8Array;
}

/**
 * The commit construction alone (§9.2.3), for a roster already checked (or, in tests, one a
 * forger would use). `prev` is our state of the parent epoch (null: we are joining and hold no
 * init secret; `parentInterim` is then the relay's).
 */
export async function buildCommit(params: {
  hub: string;
  group: string;
  parentEpoch: number;
  prev: { init: Uint8Array; interim: Uint8Array } | null;
  parentInterim?: Uint8Array;
  committer: string;
  committerIk: Uint8Array;
  sign(message: Uint8Array): Promise<Uint8Array>;
  roster: RosterEntry[];
  added: string[];
  removed: string[];
  access?: CommitAccess | undefined;
  random: Random;
  /**
   * The ML-KEM halves of the roster's hybrid leaf keys, by name (base64url, from the relay's
   * group state, §9.2.3): each must hash to the entry's `leafKem`, which its signature covers.
   */
  kems?: ReadonlyMap<string, string>;
}): Promise<BuiltCommit> {
  const epoch = params.parentEpoch + 1;
  // A member without `prev` cannot make a commit its peers accept (their tag check fails); the
  // engine never builds one, forgery tests do.
  const joining = params.added.includes(params.committer);
  const parentInterim =
    params.prev !== null && !joining
      ? params.prev.interim
      : (params.prev?.interim ?? params.parentInterim ?? ZERO_HASH);
  const fresh = params.random(32);
  const commitSecret = joining ? null : fresh;
  const joiner =
    commitSecret === null || params.prev === null
      ? fresh
      : joinerSecret(params.prev.init, commitSecret, params.hub, params.group, epoch);
  const body = encodeCommitBody({ ...params, epoch, parentInterim });
  const sig = await params.sign(lp("parley/v2/commit-sig", body));
  const transcript = confirmedTranscript(parentInterim, body, sig);
  const keys = epochKeys(joiner, groupContext(params.hub, params.group, epoch, transcript), []);
  const tag = confirmationTag(keys.confirmKey, transcript);
  wipe(keys.init);
  const aad = sha256(body);
  const info = wrapInfoFor(params.hub, params.group, epoch);
  const c = { added: params.added, committer: params.committer };
  // Every member gets a wrap, the committer included: the relay then mails the commit back to
  // its author too, so a committer that loses its connection before `accepted` still learns
  // the outcome from its mailbox (§9.2.3). The committer never opens its own wrap (it applies the
  // commit it persisted, §9.4), so that wrap holds random bytes sealed to a key pair made for it
  // and dropped: sealed to one of the committer's own leaf keys, it would hand the new epoch to
  // whoever had copied those keys and the parent epoch's init secret — post-compromise security
  // would not survive the victim's own update (§9.3). Two seal batches: one per kind of secret.
  const kinds = params.roster.map((m) => wrapKind(c, m.name));
  // Hybrid leaf keys get X-Wing wraps (0x02), classical ones X25519 wraps (0x01), §9.2.3.
  const hybridKey = (m: RosterEntry): Uint8Array => {
    const kem = params.kems?.get(m.name);
    // A malformed hash is `malformed` before a missing key is `downgrade` (as before the cache).
    b64(m.leafKem as string, "leaf kem hash");
    if (kem === undefined)
      throw new CoreError("downgrade", `no ML-KEM key for ${m.name}'s hybrid leaf key`);
    return hybridRecipientKey(m, kem);
  };
  const seal = async (kind: "member" | "joiner", secret: Uint8Array) => {
    const ms = params.roster.filter((m, i) => kinds[i] === kind && m.name !== params.committer);
    const target = (m: RosterEntry) => ({
      recipientPublicKey: m.leafKem === undefined ? b64(m.leafKey, "leaf") : hybridKey(m),
      info: info(kind, m.name, b64(m.ik, "ik"), m.leafId),
    });
    const classical = ms.filter((m) => m.leafKem === undefined);
    const hybrid = ms.filter((m) => m.leafKem !== undefined);
    const [sealedC, sealedH] = await Promise.all([
      hpkeSealMany(classical.map(target), secret, aad),
      hpkeSealManyXWing(hybrid.map(target), secret, aad),
    ]);
    const wrapOf = (
      version: number,
      m: RosterEntry,
      w: { enc: Uint8Array; ciphertext: Uint8Array },
    ) => ({
      to: m.name,
      leaf: m.leafId,
      wrap: concatBytes(new Uint8Array([version]), w.enc, w.ciphertext),
    });
    return [
      ...classical.map((m, i) => wrapOf(WRAP_V1, m, sealedC[i] as (typeof sealedC)[number])),
      ...hybrid.map((m, i) => wrapOf(WRAP_XWING, m, sealedH[i] as (typeof sealedH)[number])),
    ];
  };
  const self = params.roster.find((m) => m.name === params.committer);
  const selfWrap = async (m: RosterEntry) => {
    const kind = wrapKind(c, m.name);
    const i = info(kind, m.name, b64(m.ik, "ik"), m.leafId);
    // Not from `params.random`: nothing depends on these bytes, not even a test vector. Same
    // format as the committer's leaf key, so the self-wrap looks like every other wrap.
    const pt = randomBytes(32);
    if (m.leafKem !== undefined) {
      const dropped = await xwingGenerateKeyPair();
      wipe(dropped.secretKey);
      const w = await hpkeSealXWing(dropped.publicKey, pt, i, aad);
      return {
        to: m.name,
        leaf: m.leafId,
        wrap: concatBytes(new Uint8Array([WRAP_XWING]), w.enc, w.ciphertext),
      };
    }
    const dropped = await x25519GenerateKeyPair();
    wipe(dropped.secretKey);
    const w = await hpkeSeal(dropped.publicKey, pt, i, aad);
    return {
      to: m.name,
      leaf: m.leafId,
      wrap: concatBytes(new Uint8Array([WRAP_V1]), w.enc, w.ciphertext),
    };
  };
  const sealed = new Map(
    [
      ...(commitSecret === null ? [] : await seal("member", commitSecret)),
      ...(await seal("joiner", joiner)),
      ...(self === undefined ? [] : [await selfWrap(self)]),
    ].map((w) => [w.to, w]),
  );
  // In roster order, as the frame lists `members` (§9.2.3).
  const wraps = params.roster.map((m) => sealed.get(m.name) as BuiltCommit["wraps"][number]);
  if (commitSecret !== null && commitSecret !== joiner) wipe(commitSecret);
  return {
    core: concatBytes(u32be(body.length), body, sig, tag),
    wraps,
    joiner,
    transcript,
    interim: interimTranscript(transcript, tag),
  };
}

// ---------------------------------------------------------------------------------------------
// Entering an epoch (§9.3)

/**
 * Derive the epoch's keys from its joiner secret and transcript; only the derived chains, the
 * next init secret and the public transcript hashes are returned (and stored): no stored record
 * contains an epoch secret (§9.5). Throws if `tag` is not the epoch's confirmation tag.
 */
export function enterEpoch(p: {
  hub: string;
  group: string;
  epoch: number;
  joiner: Uint8Array;
  transcript: Uint8Array;
  tag: Uint8Array | null;
  interim: Uint8Array;
  roster: RosterEntry[];
  me: { name: string; identityKey: Uint8Array };
  now: number;
}): EpochState {
  const others = p.roster.filter((m) => m.name !== p.me.name);
  const mine = p.roster.find((m) => m.name === p.me.name);
  if (mine === undefined) throw new CoreError("not_member", "we are not in the roster");
  const keys = epochKeys(
    p.joiner,
    groupContext(p.hub, p.group, p.epoch, p.transcript),
    [mine, ...others].map((m) => ({
      name: m.name,
      ik: b64(m.ik, "ik"),
      leaf: b64(m.leafKey, "leaf"),
    })),
  );
  // A relay (or committer) handing us a different secret than the one the tag was made with is
  // caught here: the tag binds the secret to the transcript (§9.3).
  if (p.tag !== null && !constantTimeEqual(confirmationTag(keys.confirmKey, p.transcript), p.tag)) {
    wipe(keys.init);
    throw new CoreError("bad_signature", "commit confirmation tag mismatch");
  }
  const [own, ...theirs] = keys.chains;
  return {
    epoch: p.epoch,
    roster: p.roster,
    startedAt: p.now,
    send: { ck: enc(own as Uint8Array), n: 0 },
    receivers: others.map((m, i) => ({
      name: m.name,
      ck: enc(theirs[i] as Uint8Array),
      n: 0,
      skipped: [],
    })),
    sent: 0,
    skipSeq: 0,
    transcript: enc(p.transcript),
    interim: enc(p.interim),
    init: enc(keys.init),
    authenticator: enc(keys.authenticator),
  };
}

/** The record after entering `next`: the old epoch turns receive-only and loses its init secret. */
function moveTo(record: GroupRecord, next: EpochState, used: GroupRecord["leaves"][number] | null) {
  const cur = record.current;
  return {
    group: record.group,
    status: "member" as const,
    previous: cur === null ? null : { ...cur, init: null },
    current: next,
    pendingCommit: null,
    leaves: consumeLeaves(record.leaves, used),
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
  const joiner = b64(p.joiner, "joiner");
  const next = enterEpoch({
    hub,
    group: record.group,
    epoch: p.parentEpoch + 1,
    joiner,
    transcript: b64(p.transcript, "transcript"),
    tag: null,
    interim: b64(p.interim, "interim"),
    roster: p.roster,
    me,
    now,
  });
  wipe(joiner);
  const mine = p.roster.find((m) => m.name === me.name);
  return moveTo(record, next, mine === undefined ? null : ownLeafFor(record, mine));
}

export function pendingFrom(
  built: BuiltCommit,
  p: Omit<PendingCommit, "coreHash" | "joiner" | "transcript" | "interim">,
): PendingCommit {
  return {
    ...p,
    coreHash: enc(sha256(built.core)),
    joiner: enc(built.joiner),
    transcript: enc(built.transcript),
    interim: enc(built.interim),
  };
}

export interface CommitView {
  core: CommitCore;
  /** interim[epoch] of the applied commit. */
  interim: Uint8Array;
}

/**
 * Verify and apply a commit delivered to us (§9.4): committer signature, committer membership
 * (or the joiner itself), parent epoch and transcript, exact roster change, our own entry (our
 * identity key and one of our leaf keys), leaf signatures, the wrapped secret and the
 * confirmation tag. A commit under our own name is applied only if it is the one we persisted.
 * Throws CoreError (`fork` when the commit extends another history than ours); the input is
 * never changed.
 */
export async function receiveCommit(params: {
  record: GroupRecord;
  hub: string;
  me: { name: string; identityKey: Uint8Array };
  itemEpoch: number;
  core: Uint8Array;
  wrap: Uint8Array;
  now: number;
  /**
   * The relay-authenticated sender of the delivery (`deliver.from` / `fromKey`): the committer
   * named inside the opaque core must be the account that actually sent the commit (§9.4 step 2).
   */
  from: { name: string; identityKey: string };
}): Promise<{ record: GroupRecord; view: CommitView }> {
  const { record, hub, me } = params;
  const { body, sig, tag } = splitCore(params.core);
  const c = decodeCommitBody(body);
  if (c.hub !== hub || c.group !== record.group) throw malformed("commit for another group");
  if (params.from.name !== c.committer || params.from.identityKey !== enc(c.committerIk)) {
    throw new CoreError("not_member", "commit was not sent by its committer");
  }
  if (c.epoch !== params.itemEpoch || c.epoch !== c.parentEpoch + 1)
    throw new CoreError("stale_epoch", "epoch numbers");
  if (c.committer === me.name) {
    // Ours (self-wrap), or another device's under our name: only the commit we persisted is
    // applied; anything else would put us on a sending chain we did not choose (§9.4).
    const p = record.pendingCommit;
    if (
      p === null ||
      !constantTimeEqual(b64(p.coreHash, "hash"), sha256(params.core)) ||
      p.parentEpoch !== c.parentEpoch
    ) {
      throw new CoreError("identity_mismatch", "a commit under our name that we did not make");
    }
    const applied = applyOwnCommit(record, hub, me, params.now);
    return { record: applied, view: { core: c, interim: b64(p.interim, "interim") } };
  }
  const names = c.roster.map((m) => m.name);
  if (new Set(names).size !== names.length)
    throw new CoreError("roster_mismatch", "duplicate roster names");
  const inRoster = new Set(names);
  const mine = c.roster.find((m) => m.name === me.name);
  if (!mine || !constantTimeEqual(b64(mine.ik, "ik"), me.identityKey)) {
    throw new CoreError("not_member", "we are not in this commit's roster");
  }
  const cur = record.current;
  const existing = cur !== null && record.status === "member" && !c.added.includes(me.name);
  if (existing) {
    if (c.parentEpoch !== cur.epoch)
      throw new CoreError("stale_epoch", "commit does not extend our epoch");
    // The transcript: a commit that extends another history than ours is a fork (§9.3), shown
    // as such and never applied.
    if (!constantTimeEqual(c.parentInterim, b64(cur.interim, "interim")))
      throw new CoreError("fork", "this group's history diverged");
    checkRosterChange(cur, c, inRoster);
  } else {
    // Joining (§9.3): we must have asked (a `join` of ours is pending) and be added with a leaf
    // key made for that join; an old commit that added us before is refused.
    if (!c.added.includes(me.name)) throw new CoreError("not_member", "commit does not add us");
    // A member whose leave and join again were folded into one commit is removed and added.
    const rejoined = record.status === "member" && c.removed.includes(me.name);
    if (record.status !== "joining" && !rejoined)
      throw new CoreError("not_member", "a commit adds us but we did not ask to join");
    if (cur !== null && c.parentEpoch < cur.epoch) throw new CoreError("stale_epoch", "old commit");
  }
  if (!inRoster.has(c.committer)) throw new CoreError("not_member", "committer not in roster");
  for (const n of c.added)
    if (!inRoster.has(n)) throw new CoreError("roster_mismatch", "added not in roster");
  const committer = c.roster.find((m) => m.name === c.committer);
  if (!committer || !constantTimeEqual(b64(committer.ik, "ik"), c.committerIk)) {
    throw new CoreError("bad_signature", "committer key is not its roster key");
  }
  if (!(await ed25519Verify(c.committerIk, lp("parley/v2/commit-sig", body), sig))) {
    throw new CoreError("bad_signature", "commit signature does not verify");
  }
  const leaf = ownLeafFor(record, mine);
  if (leaf === null && mine.leafKem === undefined) {
    // Our hybrid leaf key named without its ML-KEM half: stripped on the way (§9.3).
    const ours = record.leaves.find((l) => l.id === mine.leafId && l.key === mine.leafKey);
    if (ours?.kem !== undefined)
      throw new CoreError("downgrade", "our hybrid leaf key is named without its ML-KEM half");
  }
  if (leaf === null) {
    // Sealed to a leaf key we never made (another device's, listed under our name) or one we
    // already deleted: we cannot, and must not, enter this epoch (§9.3). Shown as a gap.
    throw new CoreError("no_prekey", "the commit is sealed to a leaf key we do not hold");
  }
  await verifyRosterLeaves(hub, record.group, c.roster);
  const kind = wrapKind(c, me.name);
  let secret: Uint8Array;
  try {
    secret = await openWrap(
      leaf,
      params.wrap,
      wrapInfoFor(hub, record.group, c.epoch)(kind, me.name, me.identityKey, mine.leafId),
      sha256(body),
    );
  } catch (e) {
    if (e instanceof CoreError) throw e;
    throw new CoreError("decrypt_failed", "cannot open the wrapped epoch secret");
  }
  if (secret.length !== 32) throw malformed("epoch secret");
  let joiner = secret;
  if (kind === "member") {
    const init = existing && cur.init !== null ? b64(cur.init, "init") : null;
    if (init === null) throw new CoreError("stale_epoch", "no init secret for the parent epoch");
    joiner = joinerSecret(init, secret, hub, record.group, c.epoch);
    wipe(secret);
  }
  const transcript = confirmedTranscript(c.parentInterim, body, sig);
  const interim = interimTranscript(transcript, tag);
  const next = enterEpoch({
    hub,
    group: record.group,
    epoch: c.epoch,
    joiner,
    transcript,
    tag,
    interim,
    roster: c.roster,
    me,
    now: params.now,
  });
  // Best effort in JS (copies may linger in the GC heap), but never kept or persisted (§9.5).
  wipe(joiner);
  const base = existing ? record : { ...record, current: null, previous: null };
  return { record: moveTo(base, next, leaf), view: { core: c, interim } };
}

/**
 * Open our wrap with the leaf key it names (§9.4 step 4). The format must be the one of our leaf
 * key: an X25519 wrap (0x01) for a hybrid leaf key is a downgrade — only a relay or committer
 * that dropped the ML-KEM half makes one — and is refused without being opened.
 */
async function openWrap(
  leaf: GroupRecord["leaves"][number],
  wrap: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const version = wrap[0];
  if (leaf.kem !== undefined) {
    if (version === WRAP_V1)
      throw new CoreError("downgrade", "an X25519 wrap for our hybrid leaf key");
    if (version !== WRAP_XWING || wrap.length < 1 + HPKE_XWING_ENC_BYTES + 16)
      throw malformed("wrap");
    const enc = wrap.slice(1, 1 + HPKE_XWING_ENC_BYTES);
    return hpkeOpenXWing(
      b64(leaf.priv, "leaf"),
      enc,
      wrap.slice(1 + HPKE_XWING_ENC_BYTES),
      info,
      aad,
    );
  }
  if (version !== WRAP_V1 || wrap.length < 1 + 32 + 16) throw malformed("wrap");
  return hpkeOpen(b64(leaf.priv, "leaf"), wrap.slice(1, 33), wrap.slice(33), info, aad);
}

/** The roster change must be exactly the announced one (§9.4). */
function checkRosterChange(cur: EpochState, c: CommitCore, inRoster: ReadonlySet<string>): void {
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
  checkNoDowngrade(cur.roster, c.roster);
}
