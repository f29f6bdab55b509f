/**
 * Each group as its own object (worker/relay/group-object.ts; docs/ARCHITECTURE.md "The hub's
 * objects"): the single writer of the group's roster, epoch and pendings, called by the hub for
 * every join, leave, removal and commit. Alone, then through the real relay in Node with the
 * object unreachable, restarting, or applying a call whose answer never comes back.
 */
import { describe, expect, it } from "vitest";
import type { ServerFrame } from "../../shared/protocol";
import { GroupSequencer } from "../../worker/relay/group-object";
import { emptyGroup, type GroupRecord } from "../../worker/relay/groups";
import { connect, disconnect, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";
import { NodeSql } from "../support/node-sql";

const rec = (over: Partial<GroupRecord>): GroupRecord => ({ ...emptyGroup("g"), ...over });

describe("GroupSequencer", () => {
  it("asks for the hub's copy until it has one, then applies transitions with increasing seq", () => {
    const g = new GroupSequencer(new NodeSql());
    expect(g.apply(0, { t: "join", user: "alice", maxGroupSize: 10 })).toEqual({ t: "resync" });
    g.seed(0, emptyGroup("g"));
    const a = g.apply(0, { t: "join", user: "alice", maxGroupSize: 10 });
    expect(a).toMatchObject({ t: "ok", seq: 1, changed: true });
    const c = g.apply(1, {
      t: "commit",
      req: { committer: "alice", parentEpoch: 0, members: ["alice"], wrapsTo: [] },
    });
    expect(c).toMatchObject({ t: "ok", seq: 2, group: rec({ epoch: 1, members: ["alice"] }) });
    // Refusals change nothing and say which record they were judged on.
    const stale = g.apply(2, {
      t: "commit",
      req: { committer: "alice", parentEpoch: 0, members: ["alice"], wrapsTo: [] },
    });
    expect(stale).toMatchObject({ t: "refused", code: "stale_epoch", seq: 2 });
    // A join that changes nothing is no transition.
    expect(g.apply(2, { t: "join", user: "alice", maxGroupSize: 10 })).toMatchObject({
      t: "ok",
      seq: 2,
      changed: false,
    });
  });

  it("undoes the transition the hub never applied, so a re-sent call gets the same answer", () => {
    const g = new GroupSequencer(new NodeSql());
    g.seed(4, rec({ epoch: 2, members: ["alice", "bob"] }));
    const commit = {
      t: "commit" as const,
      req: { committer: "bob", parentEpoch: 2, members: ["alice", "bob"], wrapsTo: ["alice"] },
    };
    const first = g.apply(4, commit);
    expect(first).toMatchObject({ t: "ok", seq: 5, group: { epoch: 3 } });
    // The hub's copy still says 4: the answer was lost. The same call again is the same answer.
    expect(g.apply(4, commit)).toEqual(first);
    // Another committer on the same parent, after a lost answer: it wins, as the hub never told
    // anyone of the first (without the undo it would get stale_epoch on an epoch nobody holds).
    const other = { ...commit, req: { ...commit.req, committer: "alice", wrapsTo: ["bob"] } };
    expect(g.apply(4, other)).toMatchObject({ t: "ok", seq: 5, group: { epoch: 3 } });
    // Once the hub names 5 the transition is confirmed: 4 can no longer be placed.
    expect(g.apply(5, { t: "leave", user: "bob" })).toMatchObject({ t: "ok", seq: 6 });
    expect(g.apply(4, { t: "leave", user: "alice" })).toEqual({ t: "resync" });
  });

  it("a removal needs the admin still active here, and the member too", () => {
    const g = new GroupSequencer(new NodeSql());
    g.seed(0, rec({ epoch: 1, members: ["alice", "bob"], pendingLeaves: ["alice"] }));
    expect(g.apply(0, { t: "remove", user: "bob", by: "alice" })).toMatchObject({
      t: "refused",
      code: "not_member",
    });
    expect(g.apply(0, { t: "remove", user: "carol", by: "bob" })).toMatchObject({
      t: "refused",
      code: "unknown_user",
    });
  });

  it("keeps its state and the transition waiting for the hub's confirmation across a restart", () => {
    const sql = new NodeSql();
    const g = new GroupSequencer(sql);
    g.seed(0, emptyGroup("g"));
    g.apply(0, { t: "join", user: "alice", maxGroupSize: 10 });
    const again = new GroupSequencer(sql);
    expect(again.state()).toEqual(g.state());
    // The hub never confirmed seq 1: still undone on its next call.
    expect(again.apply(0, { t: "join", user: "bob", maxGroupSize: 10 })).toMatchObject({
      t: "ok",
      seq: 1,
      group: { pendingJoins: ["bob"] },
    });
  });
});

const G = "group:team" as const;
const epochOf = (u: TestUser) => u.client.conversations().find((c) => c.id === G)?.epoch;
const errorsTo = (relay: NodeRelay, name: string, code: string) =>
  relay.log.filter((x) => x.to === name && x.frame.t === "error" && x.frame.code === code);
/** Group states the relay pushed to `name` for `group`, in order. */
const statesTo = (relay: NodeRelay, name: string, group: string) =>
  relay.log.flatMap((x) =>
    x.to === name && x.frame.t === "group" && x.frame.state.group === group
      ? [(x.frame as Extract<ServerFrame, { t: "group" }>).state]
      : [],
  );

/** The object's record and seq equal the hub's copy. */
function inStep(relay: NodeRelay, group: string): void {
  expect(relay.groupObject(group).seq.state()).toEqual({
    seq: relay.groupSeq(group),
    group: relay.group(group),
  });
}

describe("group objects behind the relay", () => {
  it("every join and commit goes through the group's object; its record is the hub's copy", async () => {
    const relay = new NodeRelay();
    const users = (await online(relay, "alice", "bob", "carol")) as TestUser[];
    for (const u of users) {
      await u.client.joinGroup("team");
      await relay.settle();
    }
    expect(relay.group("team")).toMatchObject({ members: ["alice", "bob", "carol"] });
    inStep(relay, "team");
    // Only the team's object was called; a group_send needs no call.
    expect([...relay.groupObjects.keys()]).toEqual(["team"]);
    const calls = relay.groupObject("team").calls;
    await say(alice(users), G, "hello");
    expect(messages(users[1] as TestUser, G)).toEqual(["hello"]);
    expect(relay.groupObject("team").calls).toBe(calls);
  });

  it("an unreachable group object: the join is answered `internal`, nothing changes, the next one works", async () => {
    const relay = new NodeRelay();
    const [a, b] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await a.client.joinGroup("team");
    await relay.settle();
    const before = relay.group("team");
    relay.groupObject("team").fail = true;
    await b.client.joinGroup("team");
    await relay.settle().catch(() => undefined);
    expect(errorsTo(relay, "bob", "internal").length).toBeGreaterThan(0);
    expect(new Set(relay.failures)).toEqual(new Set(["relay answered `internal`"]));
    relay.failures.length = 0;
    expect(relay.group("team")).toEqual(before);
    relay.groupObject("team").fail = false;
    // The connection goes on; bob's client asks again after its next welcome.
    await disconnect(b);
    await connect(b);
    await relay.settle();
    expect(relay.group("team")?.members).toEqual(["alice", "bob"]);
    expect(epochOf(a)).toBe(epochOf(b));
    inStep(relay, "team");
  });

  it("a commit whose answer is lost once: the hub's re-sent call gets the same answer, and the commit is accepted once", async () => {
    const relay = new NodeRelay();
    const [a, b] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await a.client.joinGroup("team");
    await relay.settle();
    const epoch = relay.group("team")?.epoch as number;
    let lost = 0;
    relay.groupObject("team").loseAnswer = (op) => op.t === "commit" && lost++ === 0;
    await b.client.joinGroup("team");
    await relay.settle();
    expect(lost).toBeGreaterThan(1);
    expect(relay.group("team")).toMatchObject({ epoch: epoch + 1, members: ["alice", "bob"] });
    // One commit was built on that epoch and it was accepted: nothing refused, nothing rebuilt.
    const commits = relay.clientLog.filter(
      (x) => x.frame.t === "commit" && x.frame.parentEpoch === epoch,
    );
    expect(commits).toHaveLength(1);
    expect(relay.log.filter((x) => x.frame.t === "error")).toEqual([]);
    inStep(relay, "team");
    expect(epochOf(b)).toBe(epoch + 1);
  });

  it("a commit applied by the object whose answers are all lost: `internal`, nobody hears of that epoch, the rebuilt commit wins", async () => {
    const relay = new NodeRelay();
    const [a, b, c] = (await online(relay, "alice", "bob", "carol")) as [
      TestUser,
      TestUser,
      TestUser,
    ];
    for (const u of [a, b]) {
      await u.client.joinGroup("team");
      await relay.settle();
    }
    const epoch = relay.group("team")?.epoch as number;
    const obj = relay.groupObject("team");
    let lost = 0;
    // The hub makes a call three times before it answers `internal` (hub.ts #callGroup).
    obj.loseAnswer = (op) => op.t === "commit" && lost++ < 3;
    await c.client.joinGroup("team");
    await relay.settle().catch(() => undefined);
    expect(lost).toBeGreaterThan(3);
    expect(relay.failures).toEqual(["relay answered `internal`"]);
    relay.failures.length = 0;
    // The epoch the object applied first was never pushed to anyone: every state any member saw
    // at epoch + 1 is the one the relay accepted in the end.
    const accepted = relay.group("team");
    expect(accepted).toMatchObject({ epoch: epoch + 1, members: ["alice", "bob", "carol"] });
    for (const name of ["alice", "bob", "carol"]) {
      const seen = statesTo(relay, name, "team").filter((s) => s.epoch === epoch + 1);
      expect(seen.length).toBeGreaterThan(0);
      for (const s of seen) expect(s.members.map((m) => m.username)).toEqual(accepted?.members);
    }
    inStep(relay, "team");
    expect([epochOf(a), epochOf(b), epochOf(c)]).toEqual([epoch + 1, epoch + 1, epoch + 1]);
    await say(c, G, "in at last");
    expect(messages(a, G)).toContain("in at last");
    expect(messages(b, G)).toContain("in at last");
  });

  it("the group object restarting, and the hub's object restarting, lose nothing of the group", async () => {
    const relay = new NodeRelay();
    const [a, b] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await a.client.joinGroup("team");
    await relay.settle();
    relay.groupObject("team").restart();
    await b.client.joinGroup("team");
    await relay.settle();
    inStep(relay, "team");
    await relay.hibernate();
    relay.groupObject("team").restart();
    await b.client.leaveGroup("team");
    await relay.settle();
    expect(relay.group("team")).toMatchObject({ members: ["alice"], pendingLeaves: [] });
    inStep(relay, "team");
    expect(epochOf(a)).toBe(relay.group("team")?.epoch);
  });

  it("a hub's groups from before group objects are handed to a new object on first use", async () => {
    const relay = new NodeRelay();
    const [a, b] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await a.client.joinGroup("team");
    await relay.settle();
    const held = relay.group("team");
    // As after the migration that created the class: the hub's tables hold the group, no object does.
    relay.groupObjects.delete("team");
    await b.client.joinGroup("team");
    await relay.settle();
    expect(relay.group("team")).toMatchObject({
      epoch: (held?.epoch ?? 0) + 1,
      members: ["alice", "bob"],
    });
    inStep(relay, "team");
  });
});

function alice(users: TestUser[]): TestUser {
  return users[0] as TestUser;
}
