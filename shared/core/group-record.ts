/**
 * A group record seen as a tagged union (PROTOCOL.md §9): `none | joining | member | left`,
 * so "a member with a current epoch" is a type the compiler checks, not a repeated
 * `status === "member" && current !== null`. The stored shape stays group.ts's GroupRecord.
 */
import type { EpochState, GroupRecord, PendingCommit } from "./group";

export type GroupPhase =
  /** Not joined (never, or keys dropped to join again). */
  | { t: "none"; record: GroupRecord }
  /** Join sent (or persisted to be sent): waiting for a commit that adds us. */
  | { t: "joining"; record: GroupRecord; pendingCommit: PendingCommit | null }
  /** In the group at `current.epoch`. */
  | {
      t: "member";
      record: GroupRecord;
      current: EpochState;
      pendingCommit: PendingCommit | null;
    }
  /** We left: every key of the group is forgotten (§9.4). */
  | { t: "left"; record: GroupRecord };

export function phaseOf(record: GroupRecord): GroupPhase {
  switch (record.status) {
    case "member":
      // A member record always carries its epoch (group.ts writes both together); one that
      // does not holds no key we could use, which is what `none` means.
      return record.current === null
        ? { t: "none", record }
        : { t: "member", record, current: record.current, pendingCommit: record.pendingCommit };
    case "joining":
      return { t: "joining", record, pendingCommit: record.pendingCommit };
    case "left":
      return { t: "left", record };
    case "none":
      return { t: "none", record };
  }
}

/** The record of a group we left: nothing of its keys is kept (§9.4). */
export function leftGroup(group: string): GroupRecord {
  return { group, status: "left", current: null, previous: null, pendingCommit: null, leaves: [] };
}
