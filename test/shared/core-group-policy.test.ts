/**
 * Who commits a group, and when (engine/group-policy.ts, PROTOCOL.md §9.2.4, §9.4, §9.6): each
 * rule of the pure `decideCommit`, and a property — for a pending leave, exactly one online
 * remaining member commits at once and every other online one has its own fallback turn.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type CommitInputs,
  decideCommit,
  fallbackStillDue,
} from "../../shared/core/engine/group-policy";
import type { EpochState, GroupRecord } from "../../shared/core/group";
import type { GroupState, Member } from "../../shared/protocol";

const TUNING = {
  groupUpdateAfterMessages: 100,
  groupUpdateAfterMs: 86_400_000,
  fallbackCommitDelayMs: 5000,
};

const member = (username: string) => ({ username }) as Member;

function relay(epoch: number, members: string[], joins: string[] = [], leaves: string[] = []) {
  return {
    group: "g",
    epoch,
    members: members.map(member),
    pendingJoins: joins.map(member),
    pendingLeaves: leaves,
  } as GroupState;
}

function record(
  status: GroupRecord["status"],
  epoch: number | null,
  extra: { sent?: number; startedAt?: number; pending?: boolean } = {},
): GroupRecord {
  const current =
    epoch === null
      ? null
      : ({ epoch, sent: extra.sent ?? 0, startedAt: extra.startedAt ?? 0 } as EpochState);
  return {
    group: "g",
    status,
    current,
    previous: null,
    pendingCommit: extra.pending ? ({ id: "1", parentEpoch: epoch ?? 0 } as never) : null,
    leaves: [],
  };
}

function inputs(over: Partial<CommitInputs>): CommitInputs {
  return {
    me: "bob",
    state: relay(3, ["alice", "bob", "carol"]),
    record: record("member", 3),
    online: new Set(["alice", "bob", "carol"]),
    refusedEpoch: undefined,
    leaving: false,
    rejoining: false,
    tuning: TUNING,
    now: 1000,
    ...over,
  };
}

describe("decideCommit", () => {
  it("a steady group: nothing to do", () => {
    expect(decideCommit(inputs({}))).toEqual({ t: "wait" });
  });

  it("a pending joiner commits itself in (§9.2.4)", () => {
    const state = relay(3, ["alice", "carol"], ["bob"]);
    expect(decideCommit(inputs({ state, record: record("joining", null) }))).toEqual({
      t: "commit",
      joiner: true,
    });
    // …also from `none` (state lost) and while a commit of ours is not in flight only.
    expect(decideCommit(inputs({ state, record: record("none", null) }))).toEqual({
      t: "commit",
      joiner: true,
    });
    const pending = record("joining", null, { pending: true });
    expect(decideCommit(inputs({ state, record: pending }))).toEqual({ t: "wait" });
  });

  it("a pending leave: the lowest online remaining name commits, the others fall back by rank", () => {
    const state = relay(3, ["alice", "bob", "carol", "dave"], [], ["alice"]);
    const online = new Set(["alice", "bob", "carol", "dave"]);
    expect(decideCommit(inputs({ me: "bob", state, online }))).toEqual({
      t: "commit",
      joiner: false,
    });
    expect(decideCommit(inputs({ me: "carol", state, online }))).toEqual({
      t: "fallback",
      rank: 1,
      delayMs: 5000,
    });
    // An offline member is skipped in the order.
    expect(decideCommit(inputs({ me: "dave", state, online: new Set(["dave", "bob"]) }))).toEqual({
      t: "fallback",
      rank: 1,
      delayMs: 5000,
    });
    // The leaver never commits its own removal.
    expect(decideCommit(inputs({ me: "alice", state, online }))).toEqual({ t: "wait" });
  });

  it("our own accepted commit ahead of the relay's state: wait for its `group` frame", () => {
    const state = relay(3, ["alice", "bob"], ["carol"]);
    expect(decideCommit(inputs({ state, record: record("member", 4) }))).toEqual({ t: "wait" });
  });

  it("a commit on its way (our epoch behind the relay's): wait", () => {
    const state = relay(4, ["alice", "bob", "carol"], [], ["carol"]);
    expect(decideCommit(inputs({ state, record: record("member", 3) }))).toEqual({ t: "wait" });
  });

  it("the relay no longer lists us: forget the keys (§9.4)", () => {
    const state = relay(4, ["alice", "carol"]);
    expect(decideCommit(inputs({ state, record: record("member", 3) }))).toEqual({
      t: "forget",
    });
  });

  it("listed as a member but holding no keys: rejoin once (§9.4)", () => {
    expect(decideCommit(inputs({ record: record("none", null) }))).toEqual({
      t: "rejoin",
      dropKeys: false,
    });
    expect(decideCommit(inputs({ record: record("none", null), rejoining: true }))).toEqual({
      t: "wait",
    });
  });

  it("the relay moved to an epoch whose commit we refused: drop the keys and rejoin", () => {
    const state = relay(4, ["alice", "bob", "carol"]);
    expect(decideCommit(inputs({ state, record: record("member", 3), refusedEpoch: 4 }))).toEqual({
      t: "rejoin",
      dropKeys: true,
    });
    expect(decideCommit(inputs({ state, record: record("member", 3), refusedEpoch: 3 }))).toEqual({
      t: "wait",
    });
  });

  it("periodic update (§9.6): by count for anyone, by age for the lowest name only", () => {
    expect(decideCommit(inputs({ record: record("member", 3, { sent: 100 }) }))).toEqual({
      t: "commit",
      joiner: false,
    });
    const old = record("member", 3, { startedAt: 0 });
    const now = TUNING.groupUpdateAfterMs;
    expect(decideCommit(inputs({ me: "alice", record: old, now }))).toEqual({
      t: "commit",
      joiner: false,
    });
    expect(decideCommit(inputs({ me: "bob", record: old, now }))).toEqual({ t: "wait" });
    // Never while someone else's join waits for its own commit.
    const state = relay(3, ["alice", "bob", "carol"], ["dave"]);
    expect(decideCommit(inputs({ state, record: record("member", 3, { sent: 100 }) }))).toEqual({
      t: "wait",
    });
  });

  it("our own leave pending (pressed, maybe offline): never commit meanwhile", () => {
    const state = relay(3, ["alice", "bob", "carol"], [], ["alice"]);
    expect(decideCommit(inputs({ state, leaving: true }))).toEqual({ t: "wait" });
    expect(
      decideCommit(inputs({ record: record("member", 3, { sent: 500 }), leaving: true })),
    ).toEqual({ t: "wait" });
  });

  it("property: for a pending leave exactly one online remaining member commits now", () => {
    const names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    fc.assert(
      fc.property(
        fc.subarray(names, { minLength: 2 }),
        fc.nat(),
        fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }),
        (members, leaverPick, onlineFlags) => {
          const leaver = members[leaverPick % members.length] as string;
          const state = relay(5, members, [], [leaver]);
          const online = new Set(members.filter((_, i) => onlineFlags[i]));
          const stayers = members.filter((m) => m !== leaver && online.has(m));
          const decisions = stayers.map((me) =>
            decideCommit(inputs({ me, state, online, record: record("member", 5) })),
          );
          const now = decisions.filter((d) => d.t === "commit");
          const ranks = decisions.flatMap((d) => (d.t === "fallback" ? [d.rank] : []));
          expect(now.length).toBe(stayers.length > 0 ? 1 : 0);
          expect(new Set(ranks).size).toBe(ranks.length);
          expect(ranks.every((r) => r >= 1)).toBe(true);
        },
      ),
    );
  });
});

describe("fallbackStillDue", () => {
  it("only while the same leave is still pending at the same epoch and nothing is in flight", () => {
    const state = relay(3, ["alice", "bob"], [], ["alice"]);
    expect(fallbackStillDue(state, record("member", 3), 3)).toBe(true);
    expect(fallbackStillDue(state, record("member", 3), 2)).toBe(false);
    expect(fallbackStillDue(relay(3, ["alice", "bob"]), record("member", 3), 3)).toBe(false);
    expect(fallbackStillDue(state, record("member", 3, { pending: true }), 3)).toBe(false);
    expect(fallbackStillDue(undefined, record("member", 3), 3)).toBe(false);
  });
});

describe("closed groups (PROTOCOL.md §9.7)", () => {
  it("an invite-only group's joiner waits to be added; the creator of a new one commits", () => {
    const joining = record("joining", null);
    expect(
      decideCommit(
        inputs({
          me: "dave",
          record: joining,
          policy: "invite",
          state: relay(3, ["alice", "bob"], ["dave"]),
        }),
      ),
    ).toEqual({ t: "wait" });
    expect(
      decideCommit(
        inputs({ me: "dave", record: joining, policy: "invite", state: relay(0, [], ["dave"]) }),
      ),
    ).toEqual({ t: "commit", joiner: true });
    // open: the joiner commits itself, as before
    expect(
      decideCommit(
        inputs({
          me: "dave",
          record: joining,
          policy: "open",
          state: relay(3, ["alice"], ["dave"]),
        }),
      ),
    ).toEqual({ t: "commit", joiner: true });
  });

  it("a pending join of an invite-only group: rank 0 adds it, the others fall back", () => {
    const state = relay(3, ["alice", "bob", "carol"], ["dave"]);
    expect(decideCommit(inputs({ me: "alice", state, policy: "invite" }))).toEqual({
      t: "commit",
      joiner: false,
    });
    expect(decideCommit(inputs({ me: "bob", state, policy: "invite" }))).toEqual({
      t: "fallback",
      rank: 1,
      delayMs: 5000,
    });
    expect(decideCommit(inputs({ me: "alice", state, policy: "open" }))).toEqual({ t: "wait" });
    expect(fallbackStillDue(state, record("member", 3), 3)).toBe(true);
  });

  it("a refused (unauthorized) epoch blocks committing and re-joining; a draft commits at once", () => {
    expect(
      decideCommit(
        inputs({
          state: relay(4, ["alice", "bob", "carol", "mallory"]),
          record: record("member", 3),
          refusedEpoch: 4,
          blocked: true,
        }),
      ),
    ).toEqual({ t: "wait" });
    expect(decideCommit(inputs({ draftDue: true }))).toEqual({ t: "commit", joiner: false });
  });
});
