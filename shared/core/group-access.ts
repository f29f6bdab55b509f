/**
 * Closed groups (PROTOCOL.md §9.7): the signed group state (title, description, policy, admins,
 * invite-link keys) and the authorizations every member checks before it accepts a commit — who
 * may be added (a member's signed add, or a join signed with an invite-link key) and who may be
 * removed (the member's own signed leave, or an admin's signed removal). Pure: bytes in, a typed
 * refusal or nothing out. The engine (engine/group-steps.ts) calls these checks on every commit it
 * builds or receives; the relay only reads the policy (it never decides who may join).
 *
 *   info      = lp("parley/v1/group-info", hub, group, u64(version), title, description, policy,
 *                  lp(admin_ik…), lp(link_pk…))
 *   signed    = lp(info, signer_ik, Ed25519(signer, lp("parley/v1/group-info-sig", info)))
 *   add auth  = lp("add", inviter, inviter_ik, u64(expiry_ms), sig)
 *                 sig = Ed25519(inviter, lp("parley/v1/group-add", hub, group, invitee, invitee_ik, u64(expiry_ms)))
 *   link auth = lp("link", link_pk, sig)
 *                 sig = Ed25519(link, lp("parley/v1/group-link-join", hub, group, joiner, joiner_ik))
 *                 link key pair = Ed25519 seed HKDF-SHA256(secret, "", "parley/v1/group-link", 32)
 *   leave     = lp("leave", u64(epoch), sig)
 *                 sig = Ed25519(member, lp("parley/v1/group-leave", hub, group, name, ik, u64(epoch)))
 *   removal   = lp("remove", admin_ik, u64(epoch), sig)
 *                 sig = Ed25519(admin, lp("parley/v1/group-remove", hub, group, name, ik, u64(epoch)))
 */
import {
  constantTimeEqual,
  ed25519KeyPairFromSeed,
  ed25519Verify,
  hkdfSha256,
  type IdentityKeyPair,
} from "../crypto";
import { lp } from "../encoding";
import { userOfMember } from "../protocol";
import { b64, enc, Reader, u64be } from "./codec";
import { CoreError, malformed } from "./errors";

export type GroupPolicy = "open" | "invite";

/** Bounds of the signed group state (§9.7.1). */
export const GROUP_INFO_LIMITS = {
  maxTitleBytes: 128,
  maxDescriptionBytes: 1024,
  maxAdmins: 32,
  maxLinks: 16,
} as const;

/** How long a member's signed add stays usable (§9.7.3). */
export const ADD_AUTH_TTL_MS = 7 * 24 * 60 * 60 * 1000;

export interface GroupInfo {
  version: number;
  title: string;
  description: string;
  policy: GroupPolicy;
  /** Identity keys (base64url) of the admins; the creator first. */
  admins: string[];
  /** Public keys (base64url) of the invite links still valid. */
  links: string[];
}

export interface SignedGroupInfo {
  info: GroupInfo;
  /** The admin who signed this version (base64url identity key). */
  signer: string;
  /** The exact signed bytes (what a commit carries), base64url. */
  blob: string;
}

export type AccessRefusal =
  | "no_auth"
  | "malformed"
  | "bad_signature"
  | "expired"
  | "inviter_not_member"
  | "unknown_link"
  | "not_admin"
  | "stale"
  | "state_missing"
  | "state_rollback"
  | "state_forged"
  /** A device member (§4.7) that its user's device list removed, or our own not on our list. */
  | "device_not_listed";

/** A refused commit or pending change, with the member it concerns (for the notice). */
export class AccessError extends CoreError {
  constructor(
    readonly refusal: AccessRefusal,
    readonly subject: string,
    detail: string,
  ) {
    super("not_authorized", detail);
  }
}

const utf8 = new TextEncoder();
const text = new TextDecoder("utf-8", { fatal: true });
function str(bytes: Uint8Array, what: string): string {
  try {
    return text.decode(bytes);
  } catch {
    throw malformed(what);
  }
}
function keyList(bytes: Uint8Array, max: number, what: string): string[] {
  const r = new Reader(bytes, what);
  const out: string[] = [];
  while (r.remaining() > 0) {
    const k = r.field(32);
    if (k.length !== 32) throw malformed(what);
    out.push(enc(k));
  }
  if (out.length > max || new Set(out).size !== out.length) throw malformed(what);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Signed group state (§9.7.1)

export function encodeGroupInfo(hub: string, group: string, i: GroupInfo): Uint8Array {
  if (
    utf8.encode(i.title).length > GROUP_INFO_LIMITS.maxTitleBytes ||
    utf8.encode(i.description).length > GROUP_INFO_LIMITS.maxDescriptionBytes ||
    i.admins.length === 0 ||
    i.admins.length > GROUP_INFO_LIMITS.maxAdmins ||
    i.links.length > GROUP_INFO_LIMITS.maxLinks
  ) {
    throw new RangeError("group info out of bounds");
  }
  return lp(
    "parley/v1/group-info",
    hub,
    group,
    u64be(i.version),
    i.title,
    i.description,
    i.policy,
    lp(...i.admins.map((k) => b64(k, "admin key"))),
    lp(...i.links.map((k) => b64(k, "link key"))),
  );
}

export async function signGroupInfo(
  hub: string,
  group: string,
  info: GroupInfo,
  signerIk: Uint8Array,
  sign: (m: Uint8Array) => Promise<Uint8Array>,
): Promise<SignedGroupInfo> {
  const body = encodeGroupInfo(hub, group, info);
  const sig = await sign(lp("parley/v1/group-info-sig", body));
  return { info, signer: enc(signerIk), blob: enc(lp(body, signerIk, sig)) };
}

/**
 * Parse a signed group state for `hub`/`group` without checking its signature (the relay reads
 * only the policy from it; clients call verifyGroupInfo). Throws `malformed`.
 */
export function decodeGroupInfo(
  blob: Uint8Array,
  hub: string,
  group: string,
): SignedGroupInfo & { body: Uint8Array; sig: Uint8Array } {
  const outer = new Reader(blob, "group info");
  const body = outer.field(8192);
  const signer = outer.field(32);
  const sig = outer.field(64);
  outer.end();
  if (signer.length !== 32 || sig.length !== 64) throw malformed("group info");
  const r = new Reader(body, "group info");
  if (str(r.field(64), "group info") !== "parley/v1/group-info") throw malformed("group info");
  if (str(r.field(64), "group info") !== hub || str(r.field(64), "group info") !== group)
    throw malformed("group info for another group");
  const version = new Reader(r.field(8), "group info version").u64();
  const title = str(r.field(GROUP_INFO_LIMITS.maxTitleBytes), "group title");
  const description = str(r.field(GROUP_INFO_LIMITS.maxDescriptionBytes), "group description");
  const policy = str(r.field(16), "group policy");
  if (policy !== "open" && policy !== "invite") throw malformed("group policy");
  const admins = keyList(r.field(), GROUP_INFO_LIMITS.maxAdmins, "group admins");
  const links = keyList(r.field(), GROUP_INFO_LIMITS.maxLinks, "group links");
  r.end();
  if (admins.length === 0) throw malformed("group admins");
  return {
    info: { version, title, description, policy, admins, links },
    signer: enc(signer),
    blob: enc(blob),
    body,
    sig,
  };
}

/** Decode and check the signature (by the key it names; who may sign is checkInfoChange's). */
export async function verifyGroupInfo(
  blob: Uint8Array,
  hub: string,
  group: string,
): Promise<SignedGroupInfo> {
  const d = decodeGroupInfo(blob, hub, group);
  const ok = await ed25519Verify(
    b64(d.signer, "signer"),
    lp("parley/v1/group-info-sig", d.body),
    d.sig,
  );
  if (!ok) throw new AccessError("bad_signature", "", "group state signature does not verify");
  return { info: d.info, signer: d.signer, blob: d.blob };
}

/**
 * May the group state move from `prev` to `next` in one commit (§9.7.1)? `prev` null means the
 * group had no signed state: then `next` is accepted only when the commit creates the group
 * (parent epoch 0) and is signed by its committer, who is the first admin, or when we are the
 * one being added (we learn the state from the commit that adds us). A group that had a state
 * keeps one; a new version is signed by an admin of the previous one; the same version must be
 * the same bytes.
 */
export function checkInfoChange(p: {
  prev: SignedGroupInfo | null;
  next: SignedGroupInfo | null;
  parentEpoch: number;
  committerIk: string;
  joining: boolean;
}): void {
  const { prev, next } = p;
  if (prev === null) {
    if (next === null || p.joining) return;
    if (p.parentEpoch !== 0)
      throw new AccessError("state_forged", "", "a signed state cannot be added to an old group");
    if (next.signer !== p.committerIk || next.info.admins[0] !== p.committerIk)
      throw new AccessError("not_admin", "", "the creating commit's state is not its own");
    return;
  }
  if (next === null) throw new AccessError("state_missing", "", "commit drops the group state");
  if (next.info.version < prev.info.version)
    throw new AccessError("state_rollback", "", "group state rolled back");
  if (next.info.version === prev.info.version) {
    if (next.blob !== prev.blob)
      throw new AccessError("state_forged", "", "two group states of one version");
    return;
  }
  if (!prev.info.admins.includes(next.signer))
    throw new AccessError("not_admin", "", "group state signed by someone who is not an admin");
}

// ---------------------------------------------------------------------------------------------
// Joining (§9.7.3)

export async function signAdd(p: {
  hub: string;
  group: string;
  inviter: string;
  inviterIk: Uint8Array;
  invitee: string;
  inviteeIk: Uint8Array;
  expiry: number;
  sign: (m: Uint8Array) => Promise<Uint8Array>;
}): Promise<Uint8Array> {
  const sig = await p.sign(
    lp("parley/v1/group-add", p.hub, p.group, p.invitee, p.inviteeIk, u64be(p.expiry)),
  );
  return lp("add", p.inviter, p.inviterIk, u64be(p.expiry), sig);
}

/** The invite link's Ed25519 key pair, from the 32-byte secret in the link's fragment. */
export async function linkKeyPair(secret: Uint8Array): Promise<IdentityKeyPair> {
  if (secret.length !== 32) throw malformed("invite link secret");
  return ed25519KeyPairFromSeed(
    hkdfSha256(secret, new Uint8Array(0), utf8.encode("parley/v1/group-link"), 32),
  );
}

export async function signLinkJoin(p: {
  hub: string;
  group: string;
  joiner: string;
  joinerIk: Uint8Array;
  link: IdentityKeyPair;
  sign: (key: CryptoKey, m: Uint8Array) => Promise<Uint8Array>;
}): Promise<Uint8Array> {
  const sig = await p.sign(
    p.link.privateKey,
    lp("parley/v1/group-link-join", p.hub, p.group, p.joiner, p.joinerIk),
  );
  return lp("link", p.link.publicKey, sig);
}

type Decoded =
  | { k: "add"; by: string; byIk: Uint8Array; expiry: number; sig: Uint8Array }
  | { k: "link"; pk: Uint8Array; sig: Uint8Array }
  | { k: "leave"; epoch: number; sig: Uint8Array }
  | { k: "remove"; adminIk: Uint8Array; epoch: number; sig: Uint8Array };

export function decodeAuth(bytes: Uint8Array): Decoded {
  const r = new Reader(bytes, "group authorization");
  const kind = str(r.field(8), "group authorization");
  const key = () => {
    const k = r.field(32);
    if (k.length !== 32) throw malformed("group authorization key");
    return k;
  };
  const u64 = () => new Reader(r.field(8), "group authorization").u64();
  const sig = () => {
    const s = r.field(64);
    if (s.length !== 64) throw malformed("group authorization signature");
    return s;
  };
  let d: Decoded;
  if (kind === "add") {
    const by = str(r.field(64), "inviter");
    d = { k: "add", by, byIk: key(), expiry: u64(), sig: sig() };
  } else if (kind === "link") d = { k: "link", pk: key(), sig: sig() };
  else if (kind === "leave") d = { k: "leave", epoch: u64(), sig: sig() };
  else if (kind === "remove") d = { k: "remove", adminIk: key(), epoch: u64(), sig: sig() };
  else throw malformed("group authorization kind");
  r.end();
  return d;
}

export interface Who {
  name: string;
  /** base64url identity key. */
  ik: string;
}

/**
 * Is adding `invitee` authorized (§9.7.3)? Open groups (or a group without a signed state) need
 * nothing. A member of the parent roster re-added under the same key (removed and added in one
 * commit: a rejoin) needs nothing. Otherwise: an unexpired add signed by a member of the parent
 * roster under its roster key, or a join signed by a link key the state lists.
 */
export async function checkAdd(p: {
  hub: string;
  group: string;
  info: GroupInfo | null;
  parentRoster: readonly Who[];
  invitee: Who;
  auth: Uint8Array | null;
  /** Our clock for the expiry check, or null to skip it (a member reading an old commit). */
  now: number | null;
}): Promise<void> {
  const { invitee } = p;
  if (p.info === null || p.info.policy === "open") return;
  // A rejoin, or another device of a member (§4.7): the identity is in already. Invitations
  // name the user, never a device, so any of the invitee's devices may use one.
  const user = userOfMember(invitee.name);
  if (p.parentRoster.some((m) => userOfMember(m.name) === user && m.ik === invitee.ik)) return;
  const fail = (r: AccessRefusal, d: string) => new AccessError(r, invitee.name, d);
  if (p.auth === null) throw fail("no_auth", `${invitee.name} was added without an invitation`);
  let d: Decoded;
  try {
    d = decodeAuth(p.auth);
  } catch {
    throw fail("malformed", `${invitee.name}'s invitation is malformed`);
  }
  const ik = b64(invitee.ik, "invitee key");
  if (d.k === "add") {
    const inviter = p.parentRoster.find((m) => userOfMember(m.name) === d.by);
    if (!inviter || !constantTimeEqual(b64(inviter.ik, "inviter key"), d.byIk))
      throw fail("inviter_not_member", `${invitee.name} was invited by a non-member`);
    if (p.now !== null && d.expiry < p.now)
      throw fail("expired", `${invitee.name}'s invitation expired`);
    const msg = lp("parley/v1/group-add", p.hub, p.group, user, ik, u64be(d.expiry));
    if (!(await ed25519Verify(d.byIk, msg, d.sig)))
      throw fail("bad_signature", `${invitee.name}'s invitation does not verify`);
    return;
  }
  if (d.k === "link") {
    if (!p.info.links.includes(enc(d.pk)))
      throw fail("unknown_link", `${invitee.name} used an invite link that is not valid`);
    const msg = lp("parley/v1/group-link-join", p.hub, p.group, user, ik);
    if (!(await ed25519Verify(d.pk, msg, d.sig)))
      throw fail("bad_signature", `${invitee.name}'s invite-link join does not verify`);
    return;
  }
  throw fail("malformed", `${invitee.name}'s invitation is not a join authorization`);
}

// ---------------------------------------------------------------------------------------------
// Leaving and removal (§9.7.4)

export async function signLeave(p: {
  hub: string;
  group: string;
  name: string;
  ik: Uint8Array;
  epoch: number;
  sign: (m: Uint8Array) => Promise<Uint8Array>;
}): Promise<Uint8Array> {
  const sig = await p.sign(
    lp("parley/v1/group-leave", p.hub, p.group, p.name, p.ik, u64be(p.epoch)),
  );
  return lp("leave", u64be(p.epoch), sig);
}

export async function signRemoval(p: {
  hub: string;
  group: string;
  adminIk: Uint8Array;
  member: { name: string; ik: Uint8Array };
  epoch: number;
  sign: (m: Uint8Array) => Promise<Uint8Array>;
}): Promise<Uint8Array> {
  const sig = await p.sign(
    lp("parley/v1/group-remove", p.hub, p.group, p.member.name, p.member.ik, u64be(p.epoch)),
  );
  return lp("remove", p.adminIk, u64be(p.epoch), sig);
}

/**
 * Is removing `member` authorized (§9.7.4)? Groups without a signed state need nothing. Otherwise
 * the member's own signed leave, or a removal signed by an admin of the current state, made in an
 * epoch at or after `since` (the epoch that last added the member, as far as we saw it): a leave
 * signed before a later re-join does not remove the member again.
 */
export async function checkRemoval(p: {
  hub: string;
  group: string;
  info: GroupInfo | null;
  member: Who;
  auth: Uint8Array | null;
  since: number;
}): Promise<"leave" | "remove" | "unchecked"> {
  const { member } = p;
  if (p.info === null) return "unchecked";
  const fail = (r: AccessRefusal, d: string) => new AccessError(r, member.name, d);
  if (p.auth === null)
    throw fail("no_auth", `${member.name} was removed without their leave or an admin's removal`);
  let d: Decoded;
  try {
    d = decodeAuth(p.auth);
  } catch {
    throw fail("malformed", `${member.name}'s removal is malformed`);
  }
  const ik = b64(member.ik, "member key");
  if (d.k !== "leave" && d.k !== "remove")
    throw fail("malformed", `${member.name}'s removal is not a removal`);
  if (d.epoch < p.since) throw fail("stale", `${member.name}'s removal predates their join`);
  if (d.k === "leave") {
    const msg = lp("parley/v1/group-leave", p.hub, p.group, member.name, ik, u64be(d.epoch));
    if (!(await ed25519Verify(ik, msg, d.sig)))
      throw fail("bad_signature", `${member.name}'s leave does not verify`);
    return "leave";
  }
  if (!p.info.admins.includes(enc(d.adminIk)))
    throw fail("not_admin", `${member.name} was removed by someone who is not an admin`);
  const msg = lp("parley/v1/group-remove", p.hub, p.group, member.name, ik, u64be(d.epoch));
  if (!(await ed25519Verify(d.adminIk, msg, d.sig)))
    throw fail("bad_signature", `${member.name}'s removal does not verify`);
  return "remove";
}

/**
 * The relay's check of a `remove` frame (PROTOCOL.md §7.5): the removal is signed by the sender
 * itself, an admin of the signed state the relay holds for the group (the copy of the last
 * commit's `info`). Without it any member could take any other out of the fan-out, and the
 * refused removal would stall the group's sends until it is committed. Members still check every
 * removal in the commit against the state they hold (§9.7.4); this check only keeps honest
 * relays from doing a member's bidding.
 */
export async function relayMayRemove(p: {
  hub: string;
  group: string;
  /** base64url of the held `info`, or undefined for a group without a signed state. */
  info: string | undefined;
  member: Who;
  /** base64url identity key of the sender. */
  senderIk: string;
  /** base64url of the removal authorization. */
  auth: string;
}): Promise<boolean> {
  if (p.info === undefined) return false;
  try {
    const info = decodeGroupInfo(b64(p.info, "group info"), p.hub, p.group).info;
    const auth = b64(p.auth, "removal");
    if (removalBy(auth) !== p.senderIk) return false;
    const r = await checkRemoval({
      hub: p.hub,
      group: p.group,
      info,
      member: p.member,
      auth,
      since: 0,
    });
    return r === "remove";
  } catch {
    return false;
  }
}

/** The admin who signed a removal authorization, if it is one (for the notice). */
export function removalBy(auth: Uint8Array | null): string | null {
  if (auth === null) return null;
  try {
    const d = decodeAuth(auth);
    return d.k === "remove" ? enc(d.adminIk) : null;
  } catch {
    return null;
  }
}

/** The policy a relay-held state names, without trusting it (the relay and joiners). */
export function policyOf(blob: string | undefined, hub: string, group: string): GroupPolicy {
  if (blob === undefined) return "open";
  try {
    return decodeGroupInfo(b64(blob, "group info"), hub, group).info.policy;
  } catch {
    return "open";
  }
}

// ---------------------------------------------------------------------------------------------
// A whole commit (§9.7.2)

/** The part of a decoded commit core (group.ts CommitCore) the access checks read. */
export interface CommitForAccess {
  parentEpoch: number;
  committerIk: Uint8Array;
  roster: readonly Who[];
  added: readonly string[];
  removed: readonly string[];
  access?:
    | {
        info: Uint8Array;
        adds: readonly { name: string; auth: Uint8Array }[];
        removals: readonly { name: string; auth: Uint8Array }[];
      }
    | undefined;
}

/**
 * Check a commit's closed-group part (§9.7.2) against what we held before it: the state change,
 * every add and every removal. `prev` is our state before the commit (`joining`: we are being
 * added and know nothing of the group yet, so only the state's own signature is checked).
 * Returns the new signed state (null: the group has none). Throws AccessError.
 */
export async function checkCommitAccess(p: {
  hub: string;
  group: string;
  prev: {
    info: string | undefined;
    roster: readonly Who[];
    since: Readonly<Record<string, number>>;
  };
  commit: CommitForAccess;
  joining: boolean;
}): Promise<SignedGroupInfo | null> {
  const c = p.commit;
  const next = c.access === undefined ? null : await verifyGroupInfo(c.access.info, p.hub, p.group);
  const prev =
    p.prev.info === undefined ? null : decodeGroupInfo(b64(p.prev.info, "info"), p.hub, p.group);
  const committerIk = enc(c.committerIk);
  checkInfoChange({ prev, next, parentEpoch: c.parentEpoch, committerIk, joining: p.joining });
  if (p.joining) return next;
  // Adds are judged by the state the group had (a creating commit: by the one it sets up).
  const rules = prev?.info ?? (c.parentEpoch === 0 ? (next?.info ?? null) : null);
  const creating = prev === null && c.parentEpoch === 0;
  const authOf = (xs: readonly { name: string; auth: Uint8Array }[] | undefined, n: string) =>
    xs?.find((x) => x.name === n)?.auth ?? null;
  for (const name of c.added) {
    const entry = c.roster.find((m) => m.name === name);
    if (entry === undefined) throw new AccessError("malformed", name, "added member not in roster");
    if (creating && entry.ik === committerIk) continue;
    // Expiry is the committer's check (§9.7.3): a member reading the commit days later must
    // still accept an add that was valid when it was committed.
    await checkAdd({
      hub: p.hub,
      group: p.group,
      info: rules,
      parentRoster: p.prev.roster,
      invitee: entry,
      auth: authOf(c.access?.adds, name),
      now: null,
    });
  }
  for (const name of c.removed) {
    const entry = p.prev.roster.find((m) => m.name === name);
    if (entry === undefined) continue; // receiveCommit refuses it as roster_mismatch
    await checkRemoval({
      hub: p.hub,
      group: p.group,
      info: prev?.info ?? null,
      member: entry,
      auth: authOf(c.access?.removals, name),
      since: p.prev.since[name] ?? 0,
    });
  }
  return next;
}
