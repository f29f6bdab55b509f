/**
 * Committing as steps (PROTOCOL.md §9.2): carrying out group-policy.ts's decision of who commits
 * when, building our commit with the closed-group authorizations it must carry (§9.7.2), and the
 * relay's answers to it (accepted, refused, held back for room and retried).
 */
import { ed25519Sign } from "../../crypto";
import { toB64u } from "../../encoding";
import {
  type ErrorCode,
  type GroupState,
  LIMITS,
  PROTOCOL_VERSION,
  userOfMember,
} from "../../protocol";
import { b64 } from "../codec";
import { CoreError } from "../errors";
import {
  applyOwnCommit,
  type CommitAccess,
  createCommit,
  emptyGroup,
  type GroupRecord,
  leafKemsOf,
  nextRoster,
  pendingFrom,
} from "../group";
import {
  AccessError,
  checkAdd,
  checkRemoval,
  decodeGroupInfo,
  policyOf,
  type SignedGroupInfo,
  verifyGroupInfo,
  type Who,
} from "../group-access";
import { KEYS } from "../store";
import { type Contact, checkKey } from "../trust";
import { error, system, type Tx } from "./effects";
import { trackGroupGaps } from "./gaps";
import { forget, joinLeaves, leaveAuth, refillLeaves, sendJoin } from "./group-membership";
import { decideCommit, fallbackStillDue } from "./group-policy";
import { commitLines, deviceMemberCheck, groupId, memberLabel, withAccess } from "./group-steps";
import { joinOf, leaveOf, nextId, startFlight } from "./inflight";
import { isOnline } from "./link";
import { loadGroup, meInGroups, selfMember } from "./load";
import { summarizeGroup } from "./summaries";

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
    me: selfMember(tx),
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
  // Everything is made before the `leave` goes out, so the `join` follows it at once: a member
  // who commits the leave in between would make this a stranger's join (in an invite-only group:
  // `invite_required`).
  const auth = await leaveAuth(tx, rec);
  const leaves = await joinLeaves(tx, name);
  startFlight(tx, { kind: "leave", group: name, rejoin: true, auth });
  sendJoin(tx, name, rec, leaves);
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
  const self = selfMember(tx);
  if (!roster.some((m) => m.name === self)) return;
  // Never wrap the epoch secret to a key that contradicts a pin (relay MITM, §8.7). A member is
  // a device (§4.7): its key is its user's, ours for our own other devices.
  const pins: Contact[] = [];
  for (const m of roster) {
    const user = userOfMember(m.name);
    if (user === env.username) {
      if (m.ik !== env.identityKey) {
        error(tx, "identity_mismatch", "relay lists us with another key", groupId(name));
        return;
      }
      continue;
    }
    const c = s.contacts.get(user);
    const check = checkKey(c ?? null, user, m.ik, tx.now);
    if (check.result === "changed") {
      if (c?.changedKey !== m.ik) {
        s.contacts.set(user, check.contact);
        tx.put(KEYS.contact(user), check.contact);
        system(tx, groupId(name), "key_changed", `${user}'s safety number changed`, {
          username: user,
        });
        error(tx, "key_changed", `${user}'s key changed; not committing`, groupId(name));
      }
      summarizeGroup(tx, rec);
      return;
    }
    if (check.result === "pinned") pins.push(check.contact);
  }
  // Our keys of the parent epoch chain the new one (§9.3); a joiner holds none.
  const cur = rec.status === "member" && rec.current?.epoch === state.epoch ? rec.current : null;
  let built: Awaited<ReturnType<typeof createCommit>>;
  try {
    built = await createCommit({
      hub: env.hub,
      group: name,
      parentEpoch: state.epoch,
      prev:
        cur === null || cur.init === null
          ? null
          : { init: b64(cur.init, "init"), interim: b64(cur.interim, "interim") },
      parentInterim: b64(state.interim, "interim"),
      ownLeaves: rec.leaves,
      committer: self,
      committerIk: env.identity.publicKey,
      sign: (m) => ed25519Sign(env.identity.privateKey, m),
      roster,
      added,
      removed,
      access: plan.access,
      random: env.random,
      kems: leafKemsOf(plan.state),
      prevRoster: cur?.roster,
    });
  } catch (e) {
    // A roster the relay made that we must not commit on (our own entry is not ours, a leaf
    // key does not verify, §9.4): shown, nothing sent; the verb that asked goes on.
    if (!(e instanceof CoreError)) throw e;
    error(tx, e.code, e.message, groupId(name));
    return;
  }
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
    pendingCommit: pendingFrom(built, {
      id,
      parentEpoch: state.epoch,
      roster,
      added,
      removed,
      at: tx.now,
      ...(plan.info === undefined ? {} : { info: plan.info }),
    }),
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
    // A device its user removed, or one of ours not on our list, is never added (§9.7.2).
    const refusal = await deviceMemberCheck(tx, m.username);
    if (refusal !== null) {
      const who = await memberLabel(tx, m.username);
      notice(
        tx,
        name,
        `${m.username}:${state.epoch}:join`,
        `Not adding ${who}: it ${refusal.replace(/^is not let back in: /, "")}`,
        m.username,
      );
      refused.push(m.username);
      continue;
    }
    if (m.username !== selfMember(tx) || !creating) {
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
        const who = await memberLabel(tx, m.username);
        notice(
          tx,
          name,
          `${m.username}:${state.epoch}:join`,
          `Not adding ${who}: ${e.message.replaceAll(m.username, who)}`,
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
      // A device of ours that our list removed (§4.7): its signed leave is ours to send and on
      // its way (leaveForRemovedDevices); wait for it without a notice.
      if (auth === null && userOfMember(n) === env.username && n !== selfMember(tx)) return null;
      const who = await memberLabel(tx, n);
      notice(
        tx,
        name,
        `${n}:${state.epoch}:leave`,
        `Not committing the relay's removal of ${who}: ${e.message.replaceAll(n, who)}`,
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
  system(tx, groupId(name), "refused", text, { username: userOfMember(username) });
}

/** Our commit was accepted: move to its epoch (the secret was persisted before it left). */
export async function onCommitAccepted(tx: Tx, id: string, name: string): Promise<void> {
  tx.state.flights.delete(id);
  const rec = await loadGroup(tx, name);
  if (rec.pendingCommit?.id !== id) return;
  tx.state.commitHolds.delete(name);
  const p = rec.pendingCommit;
  const applied = withAccess(
    tx.env.hub,
    applyOwnCommit(rec, tx.env.hub, meInGroups(tx), tx.now),
    rec,
    {
      info: p.info,
      epoch: p.parentEpoch + 1,
      added: p.added,
      removed: p.removed,
      joining: rec.status !== "member" || rec.current === null,
      self: selfMember(tx),
    },
  );
  // A draft our own commit could not carry (not a later version) is dropped, not retried.
  if (
    applied.draftInfo !== undefined &&
    applied.draftInfo !== p.info &&
    rec.draftInfo === applied.draftInfo
  )
    delete applied.draftInfo;
  tx.put(KEYS.group(name), applied);
  const next = await refillLeaves(tx, applied);
  trackGroupGaps(tx, next);
  await commitLines(tx, name, next, p.added, p.removed, selfMember(tx));
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
