/**
 * Groups as steps (PROTOCOL.md §9): joining and leaving (both write-ahead through the in-flight
 * registry), receiving commits and messages, sending, and carrying out group-policy.ts's
 * decision of who commits when. The crypto is group.ts's pure transitions.
 */
import { ed25519Sign } from "../../crypto";
import { fromB64u, toB64u } from "../../encoding";
import { type ErrorCode, type GroupState, LIMITS, PROTOCOL_VERSION } from "../../protocol";
import type { ConversationId } from "../client-api";
import { b64 } from "../codec";
import type { Content, Invite, TextContent } from "../content";
import { CoreError } from "../errors";
import {
  applyOwnCommit,
  type CommitAccess,
  createCommit,
  decryptGroup,
  emptyGroup,
  encryptGroup,
  type GroupRecord,
  nextRoster,
  parseGroupRecord,
  receiveCommit,
} from "../group";
import {
  AccessError,
  ADD_AUTH_TTL_MS,
  checkAdd,
  checkCommitAccess,
  checkRemoval,
  decodeGroupInfo,
  GROUP_INFO_LIMITS,
  type GroupInfo,
  type GroupPolicy,
  linkKeyPair,
  policyOf,
  removalBy,
  type SignedGroupInfo,
  signAdd,
  signGroupInfo,
  signLeave,
  signLinkJoin,
  signRemoval,
  verifyGroupInfo,
  type Who,
} from "../group-access";
import { leftGroup, phaseOf } from "../group-record";
import { KEYS } from "../store";
import { type Contact, checkKey } from "../trust";
import { announceContent, announceOutgoing, announceReceived, outboxSend, sendDm } from "./direct";
import { error, system, type Tx } from "./effects";
import { trackGroupGaps } from "./gaps";
import { decideCommit, fallbackStillDue } from "./group-policy";
import { endFlight, joinOf, leaveOf, nextId, startFlight } from "./inflight";
import { isOnline } from "./link";
import { loadGroup, loadPrekeys, me } from "./load";
import { summarizeGroup } from "./summaries";

export const groupId = (name: string): ConversationId => `group:${name}`;

// ---------------------------------------------------------------------------------------------
// Join and leave (§9.3, §9.4): persisted before the frame leaves, sent again at every welcome

/**
 * Join `name`; `auth` is the invitation of a closed group (§9.7.3: a member's signed add, or a
 * join signed with an invite link's key), `draftInfo` the signed state of a group we create.
 */
export async function joinGroup(
  tx: Tx,
  name: string,
  auth?: string,
  draftInfo?: string,
): Promise<void> {
  const rec = await loadGroup(tx, name);
  const base: GroupRecord = draftInfo === undefined ? rec : { ...rec, draftInfo };
  const next: GroupRecord = base.status === "member" ? base : { ...base, status: "joining" };
  tx.put(KEYS.group(name), next);
  // A leave still waiting to go is superseded: the join is what the user wants now.
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null && !leave.flight.rejoin) endFlight(tx, leave.id);
  const pending = joinOf(tx.state.flights, name);
  // A join with an invitation replaces one without (the invitation is what lets it in).
  if (pending !== null && auth !== undefined) endFlight(tx, pending);
  if (pending === null || auth !== undefined)
    startFlight(tx, { kind: "join", group: name, ...(auth === undefined ? {} : { auth }) });
  summarizeGroup(tx, next);
}

export async function leaveGroup(tx: Tx, name: string): Promise<void> {
  const rec = await loadGroup(tx, name);
  const join = joinOf(tx.state.flights, name);
  if (join !== null) endFlight(tx, join);
  if (leaveOf(tx.state.flights, name) === null) {
    startFlight(tx, { kind: "leave", group: name, rejoin: false, auth: await leaveAuth(tx, rec) });
  }
  summarizeGroup(tx, rec);
}

/** Our signed leave (§9.7.4), bound to the epoch we hold: every member checks it. */
async function leaveAuth(tx: Tx, rec: GroupRecord): Promise<string> {
  const { env } = tx;
  return toB64u(
    await signLeave({
      hub: env.hub,
      group: rec.group,
      name: env.username,
      ik: env.identity.publicKey,
      // Without keys (a rejoin that dropped them) the relay's epoch is the best we know.
      epoch: rec.current?.epoch ?? tx.state.relayGroups.get(rec.group)?.epoch ?? 0,
      sign: (m) => ed25519Sign(env.identity.privateKey, m),
    }),
  );
}

/**
 * `left` (§9.4): the relay took us out. The keys go, unless this was the leave of a rejoin. In a
 * closed group (§9.7.4) a `left` we did not ask for must come with an admin's signed removal; one
 * without is the relay's word alone, and is shown as such (the relay stops our traffic either way).
 */
export async function onLeft(tx: Tx, name: string, auth?: string): Promise<void> {
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null) endFlight(tx, leave.id);
  // The leave half of a rejoin: we hold no keys and wait for our join.
  if (leave?.flight.rejoin) return;
  const rec = await loadGroup(tx, name);
  if (leave === null && rec.status === "member") {
    const who = await removedBy(tx, rec, auth);
    const text =
      who === null
        ? `The relay took you out of ${name}, but you did not leave and no admin removed you`
        : `${who} (an admin) removed you from ${name}`;
    // A valid removal reads as our leaving (its details name the admin); one without, as refused.
    system(tx, groupId(name), who === null ? "refused" : "left", text, {
      username: tx.env.username,
    });
  }
  await forget(tx, name);
}

/** The admin whose valid signed removal `auth` is, or null (§9.7.4). */
async function removedBy(tx: Tx, rec: GroupRecord, auth: string | undefined) {
  if (rec.info === undefined || rec.current === null || auth === undefined) return null;
  const { env } = tx;
  try {
    const info = decodeGroupInfo(b64(rec.info, "info"), env.hub, rec.group).info;
    const bytes = b64(auth, "auth");
    const how = await checkRemoval({
      hub: env.hub,
      group: rec.group,
      info,
      member: { name: env.username, ik: env.identityKey },
      auth: bytes,
      since: rec.since?.[env.username] ?? 0,
    });
    if (how !== "remove") return null;
    const admin = removalBy(bytes);
    return rec.current.roster.find((m) => m.ik === admin)?.name ?? "someone";
  } catch (e) {
    if (e instanceof CoreError) return null;
    throw e;
  }
}

/** Forget every key of the group: a departed member must not read later epochs (§9.4). */
async function forget(tx: Tx, name: string): Promise<void> {
  const rec = await loadGroup(tx, name);
  const next = leftGroup(name);
  tx.put(KEYS.group(name), next);
  if (rec.status !== "left")
    system(tx, groupId(name), "left", `You left ${name}`, { username: tx.env.username });
  summarizeGroup(tx, next);
}

/** The relay answered our join (`accepted`): the group state follows in a `group` frame. */
export function onJoinAccepted(tx: Tx, id: string): void {
  endFlight(tx, id);
}

/** The relay answered our leave (`accepted`): `left` follows and ends the flight. */
export function onLeaveAccepted(_tx: Tx, _id: string): void {}

/** Refusals that leave a frame worth sending again on the next connection (§10.1). */
export const TRANSIENT: ReadonlySet<ErrorCode> = new Set([
  "rate_limited",
  "internal",
  "not_authenticated",
]);

export async function onJoinRefused(tx: Tx, id: string, name: string, code: ErrorCode) {
  if (TRANSIENT.has(code)) return; // kept: the next welcome sends it again
  endFlight(tx, id);
  const rec = await loadGroup(tx, name);
  if (rec.status === "joining") {
    const next = { ...rec, status: "none" as const };
    tx.put(KEYS.group(name), next);
    summarizeGroup(tx, next);
  }
}

export async function onLeaveRefused(tx: Tx, id: string, name: string, code: ErrorCode) {
  if (TRANSIENT.has(code)) return;
  const f = tx.state.flights.get(id);
  endFlight(tx, id);
  // not_member: the relay holds no membership to end — we are out already; keep no keys.
  const rec = await loadGroup(tx, name);
  const held = rec.status === "member" || rec.status === "joining";
  if (code === "not_member" && f?.kind === "leave" && !f.rejoin && held) await forget(tx, name);
  else summarizeGroup(tx, rec);
}

// ---------------------------------------------------------------------------------------------
// Relay group state

/** A `group` frame: the relay's state of a group we are in or joining (§9.1). */
export async function onGroupState(tx: Tx, state: GroupState): Promise<void> {
  tx.state.relayGroups.set(state.group, state);
  await evaluateGroup(tx, state.group);
  // `removalPending` comes from the relay's state: a committer whose `accepted` arrived before
  // this frame would otherwise keep showing the pending removal.
  if (tx.state.summaries.has(groupId(state.group)))
    summarizeGroup(tx, await loadGroup(tx, state.group));
}

function commitLines(
  tx: Tx,
  name: string,
  rec: GroupRecord,
  added: string[],
  removed: string[],
  by: string,
) {
  const id = groupId(name);
  for (const n of removed)
    if (!added.includes(n)) system(tx, id, "left", `${n} left`, { username: n });
  for (const n of added) system(tx, id, "joined", `${n} joined`, { username: n });
  const epoch = rec.current?.epoch ?? 0;
  system(tx, id, "epoch", `New group key (epoch ${epoch}) from ${by}`, { epoch, username: by });
}

// ---------------------------------------------------------------------------------------------
// Receiving

export async function onCommit(
  tx: Tx,
  item: { group: string; epoch: number; core: string; wrap: string },
  from: string,
  fromKey: string,
): Promise<void> {
  const name = item.group;
  const { env } = tx;
  const rec = await loadGroup(tx, name);
  // Our own commit echoed back (self-wrap), or an old duplicate: nothing to do.
  if (rec.status === "member" && rec.current && item.epoch <= rec.current.epoch) return;
  const prekeys = await loadPrekeys(tx);
  const spkSecret = (id: number) => {
    const k = prekeys.spk.id === id ? prekeys.spk : prekeys.oldSpks.find((o) => o.id === id);
    return k ? fromB64u(k.priv) : null;
  };
  const received = await receiveCommit({
    record: rec,
    hub: env.hub,
    me: me(env),
    itemEpoch: item.epoch,
    core: b64(item.core, "core"),
    wrap: b64(item.wrap, "wrap"),
    spkSecret,
    now: tx.now,
    from: { name: from, identityKey: fromKey },
  });
  // Closed groups (§9.7.2): the state change, every add and every removal must be authorized,
  // or the whole commit is refused (AccessError), never applied.
  const joining = !(rec.status === "member" && rec.current !== null);
  const c = received.view.core;
  const info = await checkCommitAccess({
    hub: env.hub,
    group: name,
    prev: {
      info: rec.info,
      roster: joining ? [] : (rec.current?.roster ?? []),
      since: rec.since ?? {},
    },
    commit: c,
    joining,
  });
  const r = {
    ...received,
    record: withAccess(env.hub, received.record, rec, {
      info: info?.blob,
      epoch: c.epoch,
      added: c.added,
      removed: c.removed,
      joining,
      self: env.username,
    }),
  };
  // A roster key that contradicts a pin, or the relay's own record of that name, refuses the
  // whole commit (§8.7, §9.4 step 5): applying it would switch the group to a key someone else
  // holds. Nothing is re-pinned or flagged, so a forged commit cannot poison contacts; only
  // names we have no pin for are pinned (TOFU), once the commit is otherwise valid.
  const state = tx.state.relayGroups.get(name);
  const relayKeys = new Map(
    [...(state?.members ?? []), ...(state?.pendingJoins ?? [])].map((m) => [
      m.username,
      m.identityKey,
    ]),
  );
  const pins: Contact[] = [];
  for (const m of r.view.core.roster) {
    if (m.name === env.username) continue;
    const known = relayKeys.get(m.name);
    if (known !== undefined && known !== m.ik) {
      throw new CoreError("key_changed", `commit gives ${m.name} a key the relay does not list`);
    }
    const check = checkKey(tx.state.contacts.get(m.name) ?? null, m.name, m.ik, tx.now);
    if (check.result === "changed") {
      throw new CoreError("key_changed", `commit gives ${m.name} a key other than the pinned one`);
    }
    if (check.result === "pinned") pins.push(check.contact);
  }
  tx.put(KEYS.group(name), r.record);
  for (const c of pins) {
    tx.put(KEYS.contact(c.username), c);
    tx.state.contacts.set(c.username, c);
  }
  trackGroupGaps(tx, r.record);
  const core = r.view.core;
  commitLines(tx, name, r.record, core.added, core.removed, core.committer);
  summarizeGroup(tx, r.record);
  await evaluateGroup(tx, name);
}

/**
 * Carry the closed-group part of a record into its next epoch (§9.7): the state the commit set,
 * `since` for the members it added (ours too when it added us), and a draft of ours still ahead of
 * the new state's version. A refusal notice ends with a valid commit.
 */
function withAccess(
  hub: string,
  next: GroupRecord,
  before: GroupRecord,
  c: {
    info: string | undefined;
    epoch: number;
    added: readonly string[];
    removed: readonly string[];
    joining: boolean;
    self: string;
  },
): GroupRecord {
  const { info, epoch, added, removed, joining, self } = c;
  const { info: _i, since: _s, draftInfo: _d, refused: _r, ...base } = next;
  const since: Record<string, number> = joining ? {} : { ...(before.since ?? {}) };
  for (const n of removed) delete since[n];
  for (const n of added) since[n] = epoch;
  if (joining) since[self] = epoch;
  const out: GroupRecord = { ...base, since };
  if (info !== undefined) out.info = info;
  const draft = before.draftInfo;
  if (draft !== undefined && draft !== info && info !== undefined) {
    // Kept only if it is a later version than the one now in force (another admin's change won).
    const v = (b: string) => {
      try {
        return decodeGroupInfo(fromB64u(b), hub, next.group).info.version;
      } catch {
        return -1;
      }
    };
    if (v(draft) > v(info)) out.draftInfo = draft;
  }
  return out;
}

/** A commit we refused for want of authorization (§9.7.5): kept and shown; we do not rejoin. */
export async function onAccessRefused(
  tx: Tx,
  name: string,
  epoch: number,
  e: AccessError,
): Promise<void> {
  const rec = await loadGroup(tx, name);
  const text = `Refused a change to ${name}: ${e.message}`;
  const next: GroupRecord = { ...rec, refused: { epoch, text } };
  tx.put(KEYS.group(name), next);
  system(tx, groupId(name), "refused", text, e.subject === "" ? {} : { username: e.subject });
  summarizeGroup(tx, next);
}

/** A delivered commit we refused: remembered, so a group stuck on it can heal (§9.4). */
export function noteRefusedCommit(tx: Tx, group: string, epoch: number): void {
  const prev = tx.state.refusedEpochs.get(group) ?? -1;
  tx.state.refusedEpochs.set(group, Math.max(prev, epoch));
}

export async function onGroupMessage(
  tx: Tx,
  from: string,
  name: string,
  epoch: number,
  body: Uint8Array,
): Promise<void> {
  const rec = await loadGroup(tx, name);
  const r = await decryptGroup({ record: rec, hub: tx.env.hub, sender: from, epoch, body });
  tx.put(KEYS.group(name), r.record);
  trackGroupGaps(tx, r.record);
  // A text is a message; anything else (§8.6.1) goes to the UI to apply or show.
  if (r.content.t === "text" || r.content.t === "file")
    announceReceived(tx, groupId(name), from, r.content);
  else announceContent(tx, groupId(name), from, "in", r.content);
}

// ---------------------------------------------------------------------------------------------
// Sending

export async function sendGroup(tx: Tx, name: string, content: Content): Promise<void> {
  const { env } = tx;
  const rec = await loadGroup(tx, name);
  const p = phaseOf(rec);
  const state = tx.state.relayGroups.get(name);
  if (p.t !== "member") throw new CoreError("not_member", `not a member of ${name}`);
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null && !leave.flight.rejoin) throw new CoreError("not_member", `leaving ${name}`);
  // Nothing may be sent under an epoch a leaver still knows (§9.4).
  if (state && state.pendingLeaves.length > 0)
    throw new CoreError("removal_pending", "a removal is pending");
  if (state && state.epoch !== p.current.epoch)
    throw new CoreError("stale_epoch", "waiting for the new epoch");
  if (p.current.roster.some((m) => tx.state.contacts.get(m.name)?.changedKey)) {
    throw new CoreError("key_changed", "a member's key changed; accept it first");
  }
  const enc = await encryptGroup({
    record: rec,
    hub: env.hub,
    me: me(env),
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
    content,
  });
  const { id, seq } = nextId(tx);
  const frame = {
    v: PROTOCOL_VERSION,
    t: "group_send",
    id,
    group: name,
    epoch: enc.epoch,
    body: toB64u(enc.body),
  } as const;
  tx.put(KEYS.group(name), enc.record);
  if (content.t === "text" || content.t === "file") {
    announceOutgoing(tx, groupId(name), content);
    outboxSend(tx, frame, seq, { conversationId: groupId(name), messageId: content.id });
  } else {
    announceContent(tx, groupId(name), env.username, "out", content);
    outboxSend(tx, frame, seq);
  }
  await evaluateGroup(tx, name);
}

// ---------------------------------------------------------------------------------------------
// Committing (§9.2)

/** Carry out group-policy.ts's decision for `name`. */
export async function evaluateGroup(tx: Tx, name: string): Promise<void> {
  const s = tx.state;
  const state = s.relayGroups.get(name);
  if (!state || !isOnline(s.link)) return;
  const rec = await loadGroup(tx, name);
  const leave = leaveOf(s.flights, name);
  const d = decideCommit({
    me: tx.env.username,
    state,
    record: rec,
    online: s.online,
    refusedEpoch: s.refusedEpochs.get(name),
    leaving: leave !== null && !leave.flight.rejoin,
    rejoining: leave !== null || joinOf(s.flights, name) !== null,
    tuning: tx.env.tuning,
    now: tx.now,
    policy: policyOf(
      rec.status === "member" && rec.info !== undefined ? rec.info : state.info,
      tx.env.hub,
      name,
    ),
    blocked: rec.refused !== undefined && rec.refused.epoch >= state.epoch,
    draftDue: rec.draftInfo !== undefined && rec.status === "member",
  });
  switch (d.t) {
    case "wait":
      return;
    case "forget":
      return forget(tx, name);
    case "commit": {
      const r: GroupRecord =
        d.joiner && rec.status !== "joining" && rec.status !== "member"
          ? { ...rec, status: "joining" }
          : rec;
      return makeCommit(tx, name, state, r);
    }
    case "fallback":
      tx.timer(
        `${name}:${state.epoch}`,
        d.delayMs,
        { t: "fallback", group: name, epoch: state.epoch },
        true,
      );
      return;
    case "rejoin": {
      let r = rec;
      if (d.dropKeys) {
        s.refusedEpochs.delete(name);
        r = emptyGroup(name);
        tx.put(KEYS.group(name), r);
        summarizeGroup(tx, r);
      }
      return rejoin(tx, name, r);
    }
  }
}

/** Leave and join again (§9.4), both through the registry: the `left` is expected. */
async function rejoin(tx: Tx, name: string, rec: GroupRecord): Promise<void> {
  const next: GroupRecord = { ...rec, status: "joining" };
  tx.put(KEYS.group(name), next);
  startFlight(tx, { kind: "leave", group: name, rejoin: true, auth: await leaveAuth(tx, rec) });
  startFlight(tx, { kind: "join", group: name });
  summarizeGroup(tx, next);
}

/** A fallback committer's turn came: commit if the leave is still pending at that epoch. */
export async function onFallback(tx: Tx, name: string, epoch: number): Promise<void> {
  const state = tx.state.relayGroups.get(name);
  const rec = await loadGroup(tx, name);
  if (!fallbackStillDue(state, rec, epoch)) return;
  await makeCommit(tx, name, state, rec);
}

async function makeCommit(
  tx: Tx,
  name: string,
  state: GroupState,
  rec: GroupRecord,
): Promise<void> {
  const { env } = tx;
  const s = tx.state;
  const unsendable = s.unsendableCommits.get(name);
  if (unsendable === state.epoch) return;
  const hold = s.commitHolds.get(name);
  if (hold !== undefined && hold.epoch !== state.epoch) s.commitHolds.delete(name);
  else if (hold?.held) return;
  if (unsendable !== undefined) s.unsendableCommits.delete(name);
  const plan = await planAccess(tx, name, state, rec);
  if (plan === null) return;
  const { roster, added, removed } = nextRoster(plan.state);
  if (!roster.some((m) => m.name === env.username)) return;
  // Never wrap the epoch secret to a key that contradicts a pin (relay MITM, §8.7).
  const pins: Contact[] = [];
  for (const m of roster) {
    if (m.name === env.username) {
      if (m.ik !== env.identityKey)
        throw new CoreError("identity_mismatch", "relay lists us with another key");
      continue;
    }
    const c = s.contacts.get(m.name);
    const check = checkKey(c ?? null, m.name, m.ik, tx.now);
    if (check.result === "changed") {
      if (c?.changedKey !== m.ik) {
        s.contacts.set(m.name, check.contact);
        tx.put(KEYS.contact(m.name), check.contact);
        system(tx, groupId(name), "key_changed", `${m.name}'s safety number changed`, {
          username: m.name,
        });
        error(tx, "key_changed", `${m.name}'s key changed; not committing`, groupId(name));
      }
      summarizeGroup(tx, rec);
      return;
    }
    if (check.result === "pinned") pins.push(check.contact);
  }
  const built = await createCommit({
    hub: env.hub,
    group: name,
    parentEpoch: state.epoch,
    committer: env.username,
    committerIk: env.identity.publicKey,
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
    roster,
    added,
    removed,
    access: plan.access,
    random: env.random,
  });
  for (const c of pins) {
    tx.put(KEYS.contact(c.username), c);
    s.contacts.set(c.username, c);
  }
  const { id } = nextId(tx);
  const frame = {
    v: PROTOCOL_VERSION,
    t: "commit",
    id,
    group: name,
    parentEpoch: state.epoch,
    members: roster.map((m) => m.name),
    core: toB64u(built.core),
    wraps: built.wraps.map((w) => ({ to: w.to, wrap: toB64u(w.wrap) })),
    ...(plan.info === undefined ? {} : { info: plan.info }),
    ...(plan.refused.length === 0 ? {} : { refused: plan.refused }),
  } as const;
  // The limits are sized for the largest legal commit (§7.1), so this never trips with a
  // conforming relay; but a frame over them would be refused as `too_large` without an `id`
  // (we could not tell it was our commit) — never send it, and do not retry this epoch.
  if (
    frame.core.length > LIMITS.maxCommitCoreChars ||
    JSON.stringify(frame).length > LIMITS.maxFrameBytes
  ) {
    s.unsendableCommits.set(name, state.epoch);
    error(
      tx,
      "relay_error",
      "too_large: the commit exceeds the frame limit",
      groupId(name),
      "too_large",
    );
    return;
  }
  const next: GroupRecord = {
    ...rec,
    pendingCommit: {
      id,
      parentEpoch: state.epoch,
      secret: toB64u(built.secret),
      roster,
      added,
      removed,
      at: tx.now,
      ...(plan.info === undefined ? {} : { info: plan.info }),
    },
  };
  tx.put(KEYS.group(name), next);
  s.flights.set(id, { kind: "commit", group: name });
  tx.send(frame);
}

/**
 * What a commit we build carries for a closed group (§9.7.2), or null when we must not commit:
 * the state in force (ours; a creating commit's our draft; a joiner's the relay's copy, which
 * every member checks), our draft if it is a later version and we are an admin, the pending
 * joins that are authorized (the others are left out: the relay drops them), and for every
 * pending removal its authorization — a removal without one is the relay's alone, and we do not
 * commit it (shown once).
 */
async function planAccess(
  tx: Tx,
  name: string,
  state: GroupState,
  rec: GroupRecord,
): Promise<{ state: GroupState; access?: CommitAccess; info?: string; refused: string[] } | null> {
  const { env } = tx;
  const creating = state.epoch === 0 && state.members.length === 0;
  const member = rec.status === "member" && rec.current !== null;
  let current: SignedGroupInfo | null = null;
  try {
    if (member && rec.info !== undefined)
      current = decodeGroupInfo(b64(rec.info, "info"), env.hub, name);
    else if (!member && !creating && state.info !== undefined)
      current = await verifyGroupInfo(b64(state.info, "info"), env.hub, name);
  } catch (e) {
    if (!(e instanceof CoreError)) throw e;
  }
  let next = current;
  if (rec.draftInfo !== undefined) {
    const d = decodeGroupInfo(b64(rec.draftInfo, "info"), env.hub, name);
    if (creating && current === null) next = d;
    else if (
      current !== null &&
      d.info.version > current.info.version &&
      current.info.admins.includes(env.identityKey)
    )
      next = d;
  }
  if (next === null) return { state, refused: [] };
  const rules = current?.info ?? next.info;
  const parentRoster: Who[] = member
    ? (rec.current?.roster ?? [])
    : state.members.map((m) => ({ name: m.username, ik: m.identityKey }));
  const authOf = (xs: GroupState["joinAuths"], n: string) => {
    const a = xs?.find((x) => x.username === n)?.auth;
    return a === undefined ? null : b64(a, "auth");
  };
  const joins: GroupState["pendingJoins"] = [];
  const refused: string[] = [];
  const adds: CommitAccess["adds"] = [];
  for (const m of state.pendingJoins) {
    const auth = authOf(state.joinAuths, m.username);
    if (m.username !== env.username || !creating) {
      try {
        await checkAdd({
          hub: env.hub,
          group: name,
          info: rules,
          parentRoster,
          invitee: { name: m.username, ik: m.identityKey },
          auth,
          now: tx.now,
        });
      } catch (e) {
        if (!(e instanceof AccessError)) throw e;
        notice(
          tx,
          name,
          `${m.username}:${state.epoch}:join`,
          `Not adding ${m.username}: ${e.message}`,
          m.username,
        );
        refused.push(m.username);
        continue;
      }
    }
    joins.push(m);
    if (auth !== null) adds.push({ name: m.username, auth });
  }
  const removals: CommitAccess["removals"] = [];
  const committed = new Map(parentRoster.map((m) => [m.name, m]));
  for (const n of state.pendingLeaves) {
    const m = committed.get(n);
    if (m === undefined) continue;
    const auth = authOf(state.leaveAuths, n);
    try {
      await checkRemoval({
        hub: env.hub,
        group: name,
        info: current?.info ?? null,
        member: m,
        auth,
        since: rec.since?.[n] ?? 0,
      });
    } catch (e) {
      if (!(e instanceof AccessError)) throw e;
      notice(
        tx,
        name,
        `${n}:${state.epoch}:leave`,
        `Not committing the relay's removal of ${n}: ${e.message}`,
        n,
      );
      return null;
    }
    if (auth !== null) removals.push({ name: n, auth });
  }
  return {
    state: { ...state, pendingJoins: joins },
    access: { info: b64(next.blob, "info"), adds, removals },
    info: next.blob,
    refused,
  };
}

/** A closed-group notice (§9.7.5), shown once per subject and epoch. */
function notice(tx: Tx, name: string, key: string, text: string, username: string): void {
  const seen = tx.state.accessNotices;
  const k = `${name}/${key}`;
  if (seen.has(k)) return;
  seen.add(k);
  system(tx, groupId(name), "refused", text, { username });
}

/** Our commit was accepted: move to its epoch (the secret was persisted before it left). */
export async function onCommitAccepted(tx: Tx, id: string, name: string): Promise<void> {
  tx.state.flights.delete(id);
  const rec = await loadGroup(tx, name);
  if (rec.pendingCommit?.id !== id) return;
  tx.state.commitHolds.delete(name);
  const p = rec.pendingCommit;
  const next = withAccess(tx.env.hub, applyOwnCommit(rec, tx.env.hub, me(tx.env), tx.now), rec, {
    info: p.info,
    epoch: p.parentEpoch + 1,
    added: p.added,
    removed: p.removed,
    joining: rec.status !== "member" || rec.current === null,
    self: tx.env.username,
  });
  // A draft our own commit could not carry (not a later version) is dropped, not retried.
  if (next.draftInfo !== undefined && next.draftInfo !== p.info && rec.draftInfo === next.draftInfo)
    delete next.draftInfo;
  tx.put(KEYS.group(name), next);
  trackGroupGaps(tx, next);
  commitLines(tx, name, next, p.added, p.removed, tx.env.username);
  summarizeGroup(tx, next);
  await evaluateGroup(tx, name);
}

/** Our commit was refused: a lost race is rebuilt on the relay's new state (§9.2.4). */
export async function onCommitRefused(
  tx: Tx,
  id: string,
  name: string,
  code: ErrorCode,
  message: string,
): Promise<void> {
  tx.state.flights.delete(id);
  const rec = await loadGroup(tx, name);
  if (rec.pendingCommit?.id === id) {
    if (code === "bad_frame" || code === "too_large") {
      // Not a race: the same state would build the same refused frame. Give up on this epoch
      // instead of rebuilding at once (§9.2.4).
      tx.state.unsendableCommits.set(name, rec.pendingCommit.parentEpoch);
      error(tx, "relay_error", `${code}: ${message}`, groupId(name), code);
    } else if (code === "mailbox_full" || code === "rate_limited") {
      // Transient but not a race: rebuilding now would be refused the same way and, repeated,
      // would spend the relay's budget for nothing. Wait, doubling each time (§9.2.4).
      const epoch = rec.pendingCommit.parentEpoch;
      const prev = tx.state.commitHolds.get(name);
      const attempt = prev !== undefined && prev.epoch === epoch ? prev.attempt + 1 : 0;
      tx.state.commitHolds.set(name, { epoch, attempt, held: true });
      tx.timer(
        `commit-retry/${name}`,
        commitRetryDelay(attempt),
        { t: "commit_retry", group: name },
        false,
      );
      if (attempt === 0) error(tx, "relay_error", `${code}: ${message}`, groupId(name), code);
    }
    tx.put(KEYS.group(name), { ...rec, pendingCommit: null });
  }
  await evaluateGroup(tx, name);
}

/** First retry after 5 s, doubling to at most 5 minutes. */
export function commitRetryDelay(attempt: number): number {
  return Math.min(5_000 * 2 ** attempt, 300_000);
}

/** A held commit's wait is over: decide again (offline, the next welcome will). */
export async function onCommitRetry(tx: Tx, name: string): Promise<void> {
  const hold = tx.state.commitHolds.get(name);
  if (hold === undefined) return;
  tx.state.commitHolds.set(name, { ...hold, held: false });
  if (isOnline(tx.state.link)) await evaluateGroup(tx, name);
}

/** At welcome: our commits come back through the mailbox (self-wrap), so none is in flight. */
export async function dropPendingCommits(tx: Tx): Promise<void> {
  for (const { value } of await tx.list("group/")) {
    const rec = parseGroupRecord(value);
    if (rec.pendingCommit !== null) tx.put(KEYS.group(rec.group), { ...rec, pendingCommit: null });
  }
}

// ---------------------------------------------------------------------------------------------
// Closed groups (§9.7): creating, inviting, invite links, admin changes and removals

const signer = (tx: Tx) => (m: Uint8Array) => ed25519Sign(tx.env.identity.privateKey, m);

/** Create `name` with a signed state (§9.7.1): we are its first admin; joining creates it. */
export async function createGroup(
  tx: Tx,
  name: string,
  opts: { title: string; description: string; policy: GroupPolicy },
): Promise<void> {
  const { env } = tx;
  const signed = await signGroupInfo(
    env.hub,
    name,
    {
      version: 1,
      title: opts.title,
      description: opts.description,
      policy: opts.policy,
      admins: [env.identityKey],
      links: [],
    },
    env.identity.publicKey,
    signer(tx),
  );
  await joinGroup(tx, name, undefined, signed.blob);
}

/** The group's state as we hold it, and whether we may change it (§9.7.1). */
async function adminState(tx: Tx, name: string): Promise<{ rec: GroupRecord; info: GroupInfo }> {
  const rec = await loadGroup(tx, name);
  if (rec.status !== "member" || rec.current === null || rec.info === undefined)
    throw new CoreError("not_member", `${name} has no signed state we hold`);
  const { hub } = tx.env;
  const cur = decodeGroupInfo(b64(rec.info, "info"), hub, name).info;
  if (!cur.admins.includes(tx.env.identityKey))
    throw new CoreError("not_authorized", `only an admin of ${name} can do that`);
  // A change not yet committed is built upon, keeping its version (one commit carries both).
  if (rec.draftInfo !== undefined) {
    const d = decodeGroupInfo(b64(rec.draftInfo, "info"), hub, name).info;
    if (d.version > cur.version) return { rec, info: d };
  }
  return { rec, info: { ...cur, version: cur.version + 1 } };
}

/**
 * Change the signed state (§9.7.1): rename, describe, set the policy, promote a member to admin,
 * add or revoke invite links. Signed now, carried by our next commit (made at once).
 */
export async function changeGroupInfo(
  tx: Tx,
  name: string,
  change: (info: GroupInfo, rec: GroupRecord) => GroupInfo,
): Promise<void> {
  const { rec, info } = await adminState(tx, name);
  const next = change(info, rec);
  const signed = await signGroupInfo(tx.env.hub, name, next, tx.env.identity.publicKey, signer(tx));
  const out: GroupRecord = { ...rec, draftInfo: signed.blob };
  tx.put(KEYS.group(name), out);
  summarizeGroup(tx, out);
  await evaluateGroup(tx, name);
}

/** A new invite link (§9.7.3): its key goes into the state; the secret only into the link. */
export async function createInviteLink(tx: Tx, name: string): Promise<string> {
  const secret = tx.env.random(32);
  const link = await linkKeyPair(secret);
  await changeGroupInfo(tx, name, (info) => {
    if (info.links.length >= GROUP_INFO_LIMITS.maxLinks)
      throw new CoreError("not_authorized", "too many invite links; revoke some first");
    return { ...info, links: [...info.links, toB64u(link.publicKey)] };
  });
  return toB64u(secret);
}

/** Promote `username` (a member) to admin (§9.7.1). */
export async function promoteMember(tx: Tx, name: string, username: string): Promise<void> {
  await changeGroupInfo(tx, name, (info, rec) => {
    const m = rec.current?.roster.find((x) => x.name === username);
    if (m === undefined) throw new CoreError("not_member", `${username} is not a member`);
    if (info.admins.includes(m.ik)) return info;
    if (info.admins.length >= GROUP_INFO_LIMITS.maxAdmins)
      throw new CoreError("not_authorized", "too many admins");
    return { ...info, admins: [...info.admins, m.ik] };
  });
}

/**
 * Take admin rights from `username` (§9.7.1), or step down ourselves: any admin may, as long as
 * one admin remains (a state with none cannot be signed or accepted). The next version is signed
 * by us, an admin of the current one, like every change; from it on, the demoted admin's removals
 * and state changes are refused by every member.
 */
export async function demoteMember(tx: Tx, name: string, username: string): Promise<void> {
  await changeGroupInfo(tx, name, (info, rec) => {
    const ik =
      username === tx.env.username
        ? tx.env.identityKey
        : rec.current?.roster.find((x) => x.name === username)?.ik;
    if (ik === undefined) throw new CoreError("not_member", `${username} is not a member`);
    if (!info.admins.includes(ik)) return info;
    if (info.admins.length === 1)
      throw new CoreError("not_authorized", "a group keeps at least one admin: make another first");
    return { ...info, admins: info.admins.filter((k) => k !== ik) };
  });
}

/** Join with an invite link's secret (§9.7.3): the join is signed with the link's key. */
export async function joinWithLink(tx: Tx, name: string, secret: string): Promise<void> {
  const { env } = tx;
  const link = await linkKeyPair(b64(secret, "invite link"));
  const auth = await signLinkJoin({
    hub: env.hub,
    group: name,
    joiner: env.username,
    joinerIk: env.identity.publicKey,
    link,
    sign: ed25519Sign,
  });
  await joinGroup(tx, name, toB64u(auth));
}

/**
 * Invite `username` (§9.7.3): our signed add for its pinned key, sent to it end to end as a 1:1
 * text carrying the invitation. Its `join` carries the add; the committer and every member check it.
 */
export async function inviteToGroup(tx: Tx, name: string, username: string): Promise<string> {
  const { env } = tx;
  const rec = await loadGroup(tx, name);
  if (rec.status !== "member" || rec.current === null)
    throw new CoreError("not_member", `not a member of ${name}`);
  const c = tx.state.contacts.get(username);
  if (c === undefined) throw new CoreError("unknown_session", `no key for ${username} yet`);
  const expiry = tx.now + ADD_AUTH_TTL_MS;
  const auth = await signAdd({
    hub: env.hub,
    group: name,
    inviter: env.username,
    inviterIk: env.identity.publicKey,
    invitee: username,
    inviteeIk: b64(c.identityKey, "ik"),
    expiry,
    sign: signer(tx),
  });
  const title =
    rec.info === undefined
      ? name
      : decodeGroupInfo(b64(rec.info, "info"), env.hub, name).info.title;
  const content: TextContent = {
    t: "text",
    id: toB64u(env.random(12)),
    ts: tx.now,
    text: `${env.username} invited you to join the group “${title || name}”`,
    invite: { group: name, title, auth: toB64u(auth), expiry },
  };
  await sendDm(tx, username, content);
  return content.id;
}

/** Accept an invitation received in a 1:1 text (§9.7.3): join with the inviter's add. */
export async function acceptInvite(tx: Tx, invite: Invite): Promise<void> {
  await joinGroup(tx, invite.group, invite.auth);
}

/**
 * Remove `username` (§9.7.4): our signed removal (admins only) goes to the relay with a `remove`;
 * the relay takes the member out and the next commit carries the removal for every member to check.
 */
export async function removeMember(tx: Tx, name: string, username: string): Promise<void> {
  const { env } = tx;
  const { rec } = await adminState(tx, name);
  const m = rec.current?.roster.find((x) => x.name === username);
  if (m === undefined || username === env.username)
    throw new CoreError("not_member", `${username} is not another member`);
  if (!isOnline(tx.state.link)) throw new CoreError("not_connected", "offline");
  const auth = await signRemoval({
    hub: env.hub,
    group: name,
    adminIk: env.identity.publicKey,
    member: { name: m.name, ik: b64(m.ik, "ik") },
    epoch: rec.current?.epoch ?? 0,
    sign: signer(tx),
  });
  const { id } = nextId(tx);
  tx.state.flights.set(id, { kind: "remove", group: name, user: username });
  tx.send({
    v: PROTOCOL_VERSION,
    t: "remove",
    id,
    group: name,
    user: username,
    auth: toB64u(auth),
  });
}
