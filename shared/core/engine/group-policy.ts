/**
 * Who commits a group, and when (PROTOCOL.md §9.2.4, §9.4, §9.6) — pure decisions over the
 * relay's group state and our record, with no I/O, so each rule has a unit test
 * (test/shared/core-group-policy.test.ts). group-steps.ts carries the decision out.
 */
import { type GroupState, userOfMember } from "../../protocol";
import type { Tuning } from "../client-api";
import type { GroupRecord } from "../group";
import { phaseOf } from "../group-record";

export type CommitDecision =
  /** Nothing to do now (a commit is on its way, someone else's turn, or nothing is due). */
  | { t: "wait" }
  /** The relay no longer lists us (we left from elsewhere): forget every key (§9.4). */
  | { t: "forget" }
  /** Commit now: as a pending joiner (`joiner`), the first committer of a leave, or an update. */
  | { t: "commit"; joiner: boolean }
  /** A pending leave, and `rank` others come first: commit after `delayMs` if still pending. */
  | { t: "fallback"; rank: number; delayMs: number }
  /**
   * Leave and join again for a fresh epoch (§9.4): we are listed as a member but hold no keys
   * and none are coming (`dropKeys` false: state lost), or the relay moved to an epoch whose
   * commit we refused (`dropKeys` true: forged, or one we can never open).
   */
  | { t: "rejoin"; dropKeys: boolean };

export interface CommitInputs {
  /** Our member name (§9.1): our username, or this linked device's address. */
  me: string;
  /** The relay's latest state of the group. */
  state: GroupState;
  record: GroupRecord;
  /** Users online now (presence), for the committer order. */
  online: ReadonlySet<string> | ReadonlyMap<string, unknown>;
  /** The latest epoch whose delivered commit we refused, if any. */
  refusedEpoch: number | undefined;
  /** We asked to leave (not as half of a rejoin) and wait for `left`. */
  leaving: boolean;
  /** A rejoin is already under way (its join is in flight). */
  rejoining: boolean;
  tuning: Pick<Tuning, "groupUpdateAfterMessages" | "groupUpdateAfterMs" | "fallbackCommitDelayMs">;
  now: number;
  /**
   * Closed groups (§9.7): the policy in force (ours, or for a joiner the relay's copy). In an
   * invite-only group members commit the adds (each checks the invitation); joiners wait.
   */
  policy?: "open" | "invite";
  /** We refused a commit of the relay's current epoch for want of authorization (§9.7.5). */
  blocked?: boolean;
  /** We hold a signed state change of our own (an admin's) for our next commit (§9.7.1). */
  draftDue?: boolean;
}

export function decideCommit(i: CommitInputs): CommitDecision {
  const { me, state, record: rec } = i;
  const WAIT = { t: "wait" } as const;
  // We are on our way out: the leave's `left` decides, and nothing is committed meanwhile.
  if (i.leaving) return WAIT;
  // Our own commit was accepted (we hold its epoch) but the relay's `group` frame for it has
  // not arrived yet: acting on the older state would build a second commit on the old epoch
  // that the relay refuses as `stale_epoch` (SECURITY.md L13). Decide when it comes (§9.2.1).
  if (rec.current !== null && rec.current.epoch > state.epoch) return WAIT;
  const p = phaseOf(rec);
  const isMember = state.members.some((m) => m.username === me);
  const joining = state.pendingJoins.some((m) => m.username === me);
  if (rec.status === "member" && !isMember && !joining) return { t: "forget" };
  if (rec.pendingCommit !== null) return WAIT;
  // Nothing is built on an epoch we refused; we do not rejoin into it either (§9.7.5).
  if (i.blocked) return WAIT;
  const invite = i.policy === "invite";
  // An invite-only group's joiner is added by a member, unless it creates the group (§9.7.3).
  if (joining && !(invite && state.members.length > 0)) return { t: "commit", joiner: true };
  if (joining) return WAIT;
  const leavers = new Set(state.pendingLeaves);
  const stays = isMember && !leavers.has(me);
  if (
    stays &&
    // A re-joiner whose join a concurrent commit folded in without adding it (§9.4) is stuck
    // the same way: listed as a member, holding no keys, its commit refused.
    (p.t === "member" || p.t === "joining") &&
    (rec.current?.epoch ?? -1) < state.epoch &&
    i.refusedEpoch !== undefined &&
    i.refusedEpoch >= state.epoch
  ) {
    // No valid commit for that epoch will ever reach us, and waiting would freeze the group
    // for every honest member: drop our keys and re-join; our own commit re-keys the group.
    return { t: "rejoin", dropKeys: true };
  }
  if (stays && rec.status === "none" && !i.rejoining) return { t: "rejoin", dropKeys: false };
  if (!stays || p.t !== "member") return WAIT;
  if (p.current.epoch !== state.epoch) return WAIT; // a commit is on its way through the mailbox
  const candidates = state.members
    .map((m) => m.username)
    // Presence is per user (§6.3): a device member is online while its user is.
    .filter((u) => !leavers.has(u) && (u === me || i.online.has(userOfMember(u))))
    .sort();
  const rank = candidates.indexOf(me);
  if (state.pendingLeaves.length > 0) {
    // The lowest online name commits the removal; the others follow, one delay per rank,
    // in case it does not (§9.2.4).
    if (rank === 0) return { t: "commit", joiner: false };
    return { t: "fallback", rank, delayMs: rank * i.tuning.fallbackCommitDelayMs };
  }
  if (state.pendingJoins.length > 0) {
    // Open groups: joiners commit themselves. Invite-only: the lowest online member adds them.
    if (!invite) return WAIT;
    if (rank === 0) return { t: "commit", joiner: false };
    return { t: "fallback", rank, delayMs: rank * i.tuning.fallbackCommitDelayMs };
  }
  if (i.draftDue) return { t: "commit", joiner: false };
  // Periodic update (§9.6): after N of our messages in the epoch, or (lowest name) when old.
  const dueByCount = p.current.sent >= i.tuning.groupUpdateAfterMessages;
  const dueByTime = rank === 0 && i.now - p.current.startedAt >= i.tuning.groupUpdateAfterMs;
  return dueByCount || dueByTime ? { t: "commit", joiner: false } : WAIT;
}

/** A fallback committer's turn came: commit only if the leave is still pending at `epoch`. */
export function fallbackStillDue(
  state: GroupState | undefined,
  record: GroupRecord,
  epoch: number,
): state is GroupState {
  if (!state || state.epoch !== epoch) return false;
  if (state.pendingLeaves.length === 0 && state.pendingJoins.length === 0) return false;
  return record.pendingCommit === null && record.current?.epoch === epoch;
}
