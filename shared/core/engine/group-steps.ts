/**
 * Groups as steps (PROTOCOL.md §9): joining and leaving (both write-ahead through the in-flight
 * registry), receiving commits and messages, sending, and carrying out group-policy.ts's
 * decision of who commits when. The crypto is group.ts's pure transitions.
 */
import { ed25519Sign } from "../../crypto";
import { toB64u } from "../../encoding";
import {
  type ErrorCode,
  type GroupState,
  LEAF_QUEUE,
  LIMITS,
  PROTOCOL_VERSION,
} from "../../protocol";
import type { ConversationId } from "../client-api";
import { b64 } from "../codec";
import type { TextContent } from "../content";
import { CoreError } from "../errors";
import {
  applyOwnCommit,
  createCommit,
  decryptGroup,
  emptyGroup,
  encryptGroup,
  type GroupRecord,
  makeLeaves,
  nextRoster,
  pendingFrom,
  publicLeaf,
  receiveCommit,
} from "../group";
import { leftGroup, phaseOf } from "../group-record";
import { KEYS } from "../store";
import { type Contact, checkKey } from "../trust";
import { announceOutgoing, announceReceived, outboxSend } from "./direct";
import { error, system, type Tx } from "./effects";
import { trackGroupGaps } from "./gaps";
import { decideCommit, fallbackStillDue } from "./group-policy";
import { endFlight, joinOf, leaveOf, nextId, startFlight } from "./inflight";
import { isOnline } from "./link";
import { loadGroup, me } from "./load";
import { summarizeGroup } from "./summaries";

export const groupId = (name: string): ConversationId => `group:${name}`;

// ---------------------------------------------------------------------------------------------
// Join and leave (§9.3, §9.4): persisted before the frame leaves, sent again at every welcome

export async function joinGroup(tx: Tx, name: string): Promise<void> {
  const rec = await loadGroup(tx, name);
  // A leave still waiting to go is superseded: the join is what the user wants now.
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null && !leave.flight.rejoin) endFlight(tx, leave.id);
  if (joinOf(tx.state.flights, name) !== null) {
    summarizeGroup(tx, rec);
    return;
  }
  if (rec.status === "member" && rec.leaves.length > 0) {
    // Still a member (a leave was pressed and superseded): the join only keeps us in; the relay
    // leaves an active member's leaf keys alone.
    startFlight(tx, { kind: "join", group: name, leaves: rec.leaves.map(publicLeaf) });
    summarizeGroup(tx, rec);
    return;
  }
  await startJoin(tx, name, rec);
}

/**
 * Persist a `joining` record with fresh leaf keys and send the join that publishes them
 * (§9.3): an adding commit is accepted only while we are joining, sealed to one of these keys.
 * Leaf keys of an earlier join are deleted: an old commit sealed to them cannot pull us back in.
 */
async function startJoin(tx: Tx, name: string, rec: GroupRecord): Promise<GroupRecord> {
  const leaves = await freshLeaves(
    tx,
    name,
    tx.state.relayGroups.get(name)?.epoch ?? 0,
    LEAF_QUEUE,
  );
  const next: GroupRecord = { ...rec, status: "joining", leaves };
  tx.put(KEYS.group(name), next);
  startFlight(tx, { kind: "join", group: name, leaves: leaves.map(publicLeaf) });
  summarizeGroup(tx, next);
  return next;
}

function freshLeaves(tx: Tx, group: string, epoch: number, count: number) {
  const { env } = tx;
  return makeLeaves({
    hub: env.hub,
    group,
    epoch,
    count,
    random: env.random,
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
  });
}

/**
 * After entering an epoch (§9.3): the leaf key that opened it is gone; make fresh ones so the
 * relay keeps LEAF_QUEUE of ours, and publish them (write-ahead, sent again at every welcome).
 */
async function refillLeaves(tx: Tx, rec: GroupRecord): Promise<GroupRecord> {
  const missing = LEAF_QUEUE - rec.leaves.length;
  if (rec.status !== "member" || rec.current === null || missing <= 0) return rec;
  const fresh = await freshLeaves(tx, rec.group, rec.current.epoch, missing);
  const next = { ...rec, leaves: [...rec.leaves, ...fresh] };
  tx.put(KEYS.group(rec.group), next);
  startFlight(tx, { kind: "leaf", group: rec.group, leaves: fresh.map(publicLeaf) });
  return next;
}

/** The relay answered a leaf upload (stored, or not a member any more): done either way. */
export function onLeafAnswered(tx: Tx, id: string): void {
  endFlight(tx, id);
}

export async function leaveGroup(tx: Tx, name: string): Promise<void> {
  const rec = await loadGroup(tx, name);
  const join = joinOf(tx.state.flights, name);
  if (join !== null) endFlight(tx, join);
  if (leaveOf(tx.state.flights, name) === null) {
    startFlight(tx, { kind: "leave", group: name, rejoin: false });
  }
  summarizeGroup(tx, rec);
}

/** `left` (§9.4): the relay took us out. The keys go, unless this was the leave of a rejoin. */
export async function onLeft(tx: Tx, name: string): Promise<void> {
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null) endFlight(tx, leave.id);
  // The leave half of a rejoin: we hold no keys and wait for our join.
  if (leave?.flight.rejoin) return;
  await forget(tx, name);
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
  const r = await receiveCommit({
    record: rec,
    hub: env.hub,
    me: me(env),
    itemEpoch: item.epoch,
    core: b64(item.core, "core"),
    wrap: b64(item.wrap, "wrap"),
    now: tx.now,
    from: { name: from, identityKey: fromKey },
  });
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
  const next = await refillLeaves(tx, r.record);
  trackGroupGaps(tx, next);
  const core = r.view.core;
  commitLines(tx, name, next, core.added, core.removed, core.committer);
  summarizeGroup(tx, next);
  await evaluateGroup(tx, name);
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
  announceReceived(tx, groupId(name), from, r.content);
}

// ---------------------------------------------------------------------------------------------
// Sending

export async function sendGroup(tx: Tx, name: string, content: TextContent): Promise<void> {
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
  announceOutgoing(tx, groupId(name), content);
  outboxSend(tx, frame, seq, { conversationId: groupId(name), messageId: content.id });
  await evaluateGroup(tx, name);
}

// ---------------------------------------------------------------------------------------------
// Committing (§9.2)

/** Carry out group-policy.ts's decision for `name`. */
export async function evaluateGroup(tx: Tx, name: string): Promise<void> {
  const s = tx.state;
  const state = s.relayGroups.get(name);
  if (!state || !isOnline(s.link)) return;
  let rec = await loadGroup(tx, name);
  const pc = rec.pendingCommit;
  if (pc !== null && !s.flights.has(pc.id) && state.epoch <= pc.parentEpoch) {
    // Our commit's frame died with a connection and the relay did not take it (its epoch did
    // not move): build again. Had it been taken, it comes back through our mailbox and is
    // applied as the commit we persisted (§9.4).
    rec = { ...rec, pendingCommit: null };
    tx.put(KEYS.group(name), rec);
  }
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
  startFlight(tx, { kind: "leave", group: name, rejoin: true });
  await startJoin(tx, name, rec);
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
  if (unsendable !== undefined) s.unsendableCommits.delete(name);
  const { roster, added, removed } = nextRoster(state);
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
  // Our keys of the parent epoch chain the new one (§9.3); a joiner holds none.
  const cur = rec.status === "member" && rec.current?.epoch === state.epoch ? rec.current : null;
  const built = await createCommit({
    hub: env.hub,
    group: name,
    parentEpoch: state.epoch,
    prev:
      cur === null || cur.init === null
        ? null
        : { init: b64(cur.init, "init"), interim: b64(cur.interim, "interim") },
    parentInterim: b64(state.interim, "interim"),
    ownLeaves: rec.leaves,
    committer: env.username,
    committerIk: env.identity.publicKey,
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
    roster,
    added,
    removed,
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
    wraps: built.wraps.map((w) => ({ to: w.to, leaf: w.leaf, wrap: toB64u(w.wrap) })),
    interim: toB64u(built.interim),
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
    pendingCommit: pendingFrom(built, {
      id,
      parentEpoch: state.epoch,
      roster,
      added,
      removed,
      at: tx.now,
    }),
  };
  tx.put(KEYS.group(name), next);
  s.flights.set(id, { kind: "commit", group: name });
  tx.send(frame);
}

/** Our commit was accepted: move to its epoch (the secret was persisted before it left). */
export async function onCommitAccepted(tx: Tx, id: string, name: string): Promise<void> {
  tx.state.flights.delete(id);
  const rec = await loadGroup(tx, name);
  if (rec.pendingCommit?.id !== id) return;
  const p = rec.pendingCommit;
  const applied = applyOwnCommit(rec, tx.env.hub, me(tx.env), tx.now);
  tx.put(KEYS.group(name), applied);
  const next = await refillLeaves(tx, applied);
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
    }
    tx.put(KEYS.group(name), { ...rec, pendingCommit: null });
  }
  await evaluateGroup(tx, name);
}
