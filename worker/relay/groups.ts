/**
 * Group rosters and commit sequencing as a pure state machine (PROTOCOL.md §7.5).
 *
 * The relay cannot read group traffic, but it is the one place that can order commits: it keeps,
 * per group, the committed roster at the current epoch and the joins/leaves waiting for a commit,
 * and accepts exactly one commit per epoch. Every transition returns a new record; inputs are never
 * mutated. Names are kept sorted so a record has one canonical form.
 */
import type { ErrorCode } from "../../shared/protocol";

export interface GroupRecord {
  readonly name: string;
  /** Epoch of the last accepted commit; 0 for a group nobody has committed to yet. */
  readonly epoch: number;
  /** Committed roster at `epoch` (includes members whose leave is pending). */
  readonly members: readonly string[];
  /** Users who asked to join and wait for a commit that adds them. */
  readonly pendingJoins: readonly string[];
  /** Committed members who left; removed from fanout at once, out of the roster at the next commit. */
  readonly pendingLeaves: readonly string[];
}

export type GroupOutcome =
  | { ok: true; group: GroupRecord; changed: boolean }
  | { ok: false; code: ErrorCode };

function sorted(names: Iterable<string>): string[] {
  return [...new Set(names)].sort();
}

export function emptyGroup(name: string): GroupRecord {
  return { name, epoch: 0, members: [], pendingJoins: [], pendingLeaves: [] };
}

/** Members who currently receive group messages: committed and not leaving. */
export function activeMembers(g: GroupRecord): string[] {
  const leaving = new Set(g.pendingLeaves);
  return g.members.filter((m) => !leaving.has(m));
}

/**
 * The roster the next commit must name: (committed − pending leaves) ∪ pending joins. Leaves are
 * removed first so that a member who left and asked to join again stays in, under a new epoch
 * secret (PROTOCOL.md §7.5).
 */
export function expectedRoster(g: GroupRecord): string[] {
  return sorted([...activeMembers(g), ...g.pendingJoins]);
}

/** Who is told about roster changes (`group` frames): active members and pending joiners. */
export function audience(g: GroupRecord): string[] {
  return expectedRoster(g);
}

/** No active member and no joiner: nobody can ever commit to this group again. */
export function isAbandoned(g: GroupRecord): boolean {
  return expectedRoster(g).length === 0;
}

/** True if `user` is involved with the group (welcome lists these groups). */
export function isInvolved(g: GroupRecord, user: string): boolean {
  return expectedRoster(g).includes(user);
}

export function join(g: GroupRecord, user: string, maxGroupSize: number): GroupOutcome {
  const active = activeMembers(g);
  if (active.includes(user) || g.pendingJoins.includes(user)) {
    return { ok: true, group: g, changed: false };
  }
  // Everyone the group state will list (committed, leaving or joining) counts, so a group frame
  // never carries more than maxGroupSize members plus maxGroupSize joiners (LIMITS).
  const listed = new Set([...g.members, ...g.pendingJoins, user]);
  if (listed.size > maxGroupSize) return { ok: false, code: "group_full" };
  return {
    ok: true,
    group: { ...g, pendingJoins: sorted([...g.pendingJoins, user]) },
    changed: true,
  };
}

export function leave(g: GroupRecord, user: string): GroupOutcome {
  if (g.pendingJoins.includes(user)) {
    // A joiner never received an epoch secret: dropping the request is enough.
    return {
      ok: true,
      group: { ...g, pendingJoins: g.pendingJoins.filter((u) => u !== user) },
      changed: true,
    };
  }
  if (g.pendingLeaves.includes(user)) return { ok: true, group: g, changed: false };
  if (g.members.includes(user)) {
    return {
      ok: true,
      group: { ...g, pendingLeaves: sorted([...g.pendingLeaves, user]) },
      changed: true,
    };
  }
  return { ok: false, code: "not_member" };
}

export interface CommitRequest {
  committer: string;
  parentEpoch: number;
  members: readonly string[];
  /** Recipients of the wrapped epoch secrets, in frame order. */
  wrapsTo: readonly string[];
  /**
   * The group is invite-only (its signed state says so, §9.7): only a committed member commits
   * (a joiner is added by a member, who checks its invitation), unless nobody is committed yet.
   */
  inviteOnly?: boolean;
  /** Pending joiners the commit leaves out (closed groups, §9.7.3): their joins are dropped. */
  refused?: readonly string[];
}

/**
 * Sequence one commit (PROTOCOL.md §7.5). Checks, in order: the committer belongs to the next
 * roster (`not_member`), the commit builds on the current epoch (`stale_epoch`), the member list
 * equals the next roster as a set (`roster_mismatch`), and there is exactly one wrap for every
 * new member except possibly the committer itself (`bad_frame`: a client bug, not a race).
 */
export function commit(
  g: GroupRecord,
  req: CommitRequest,
):
  | (GroupOutcome & { ok: false })
  | { ok: true; group: GroupRecord; changed: true; dropped: string[] } {
  const full = expectedRoster(g);
  if (!full.includes(req.committer)) return { ok: false, code: "not_member" };
  if (req.inviteOnly && g.members.length > 0 && !activeMembers(g).includes(req.committer))
    return { ok: false, code: "not_member" };
  if (req.parentEpoch !== g.epoch) return { ok: false, code: "stale_epoch" };
  const proposed = new Set(req.members);
  if (proposed.size !== req.members.length) return { ok: false, code: "roster_mismatch" };
  // A committer may refuse pending joiners (closed groups, §9.7.3: their invitation does not
  // check out); they are dropped. Everyone else of the next roster must be there, nobody more.
  const refused = new Set(req.refused ?? []);
  const dropped = g.pendingJoins.filter((u) => refused.has(u) && u !== req.committer);
  const next = full.filter((u) => !dropped.includes(u));
  if (proposed.size !== next.length) return { ok: false, code: "roster_mismatch" };
  for (const m of next) if (!proposed.has(m)) return { ok: false, code: "roster_mismatch" };
  const wrapped = new Set(req.wrapsTo);
  if (wrapped.size !== req.wrapsTo.length) return { ok: false, code: "bad_frame" };
  for (const to of wrapped) if (!proposed.has(to)) return { ok: false, code: "bad_frame" };
  for (const m of next) {
    if (m !== req.committer && !wrapped.has(m)) return { ok: false, code: "bad_frame" };
  }
  return {
    ok: true,
    group: { name: g.name, epoch: g.epoch + 1, members: next, pendingJoins: [], pendingLeaves: [] },
    changed: true,
    dropped,
  };
}

/** May `sender` post to the group at `epoch` right now? (PROTOCOL.md §7.5) */
export function checkGroupSend(
  g: GroupRecord,
  sender: string,
  epoch: number,
): { ok: true; recipients: string[] } | { ok: false; code: ErrorCode } {
  const active = activeMembers(g);
  if (!active.includes(sender)) return { ok: false, code: "not_member" };
  if (epoch !== g.epoch) return { ok: false, code: "stale_epoch" };
  if (g.pendingLeaves.length > 0) return { ok: false, code: "removal_pending" };
  return { ok: true, recipients: active.filter((m) => m !== sender) };
}
