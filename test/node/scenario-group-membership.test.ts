/** Stories: concurrent joins, rejoin after leaving, fallback committer, periodic update. */
import { expect, it } from "vitest";
import {
  connect,
  disconnect,
  errors,
  messages,
  newUser,
  online,
  say,
  type TestUser,
  timers,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;
const epochOf = (u: TestUser) => u.client.conversations().find((c) => c.id === G)?.epoch;

async function joinAll(relay: NodeRelay, ...users: TestUser[]) {
  for (const u of users) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
}

it("concurrent joins: relay order wins, the loser is added by the winner's commit", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol, dave] = (await online(
    relay,
    "alice",
    "bob",
    "carol",
    "dave",
  )) as TestUser[] as [TestUser, TestUser, TestUser, TestUser];
  await joinAll(relay, alice, bob);
  expect(epochOf(alice)).toBe(2);
  // carol and dave join at the same moment: both try to commit on epoch 2. Their first commits
  // are held until both are made, so the two really race at the relay (making a join's leaf
  // keys takes long enough that one joiner could otherwise commit before the other joined).
  const held: Array<() => void> = [];
  for (const u of [carol, dave]) {
    const conn = u.conn;
    if (!conn) throw new Error("online");
    const orig = conn.fromClient.bind(conn);
    let first = true;
    conn.fromClient = (f) => {
      if (f.t !== "commit" || !first) return orig(f);
      first = false;
      held.push(() => orig(f));
    };
  }
  await Promise.all([carol.client.joinGroup("broadcast"), dave.client.joinGroup("broadcast")]);
  await relay.settle();
  expect(held).toHaveLength(2);
  for (const send of held) send();
  await relay.settle();
  const g = relay.group("broadcast");
  expect(g?.members).toEqual(["alice", "bob", "carol", "dave"]);
  expect(g?.pendingJoins).toEqual([]);
  const epochs = [alice, bob, carol, dave].map(epochOf);
  expect(new Set(epochs).size).toBe(1);
  expect(epochs[0]).toBe(g?.epoch);
  // one commit lost the race at the relay and was absorbed by the winner's
  const raceErrors = relay.log.filter(
    (x) =>
      x.frame.t === "error" &&
      (x.frame.code === "stale_epoch" || x.frame.code === "roster_mismatch"),
  );
  expect(raceErrors.length).toBeGreaterThan(0);
  await say(dave, G, "dave in");
  await say(carol, G, "carol in");
  expect(messages(alice, G)).toEqual(["dave in", "carol in"]);
  expect(messages(bob, G)).toEqual(["dave in", "carol in"]);
  expect(messages(carol, G)).toEqual(["dave in"]);
  for (const u of [alice, bob, carol, dave]) expect(errors(u)).toEqual([]);
});

it("rejoin: a member who left joins again and reads the new epoch only", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  await joinAll(relay, alice, bob, carol);
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  await say(alice, G, "while carol is away");
  await carol.client.joinGroup("broadcast");
  await relay.settle();
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob", "carol"]);
  expect(epochOf(carol)).toBe(epochOf(alice));
  await say(bob, G, "welcome back");
  expect(messages(carol, G)).toEqual(["welcome back"]);
  expect(messages(alice, G)).toEqual(["welcome back"]);
});

it("leave while the lowest member does not act: the next member commits after its delay", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  await joinAll(relay, alice, bob, carol);
  // alice never hears of the pending leave (the relay withholds it from her)
  relay.intercept = (to, f) => (to === "alice" && f.t === "group" ? null : f);
  timers.pending.splice(0);
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  expect(relay.group("broadcast")?.pendingLeaves).toEqual(["carol"]);
  // bob (rank 1) waits; sending is blocked meanwhile
  await expect(bob.client.sendText(G, "too early")).rejects.toMatchObject({
    code: "removal_pending",
  });
  expect(timers.fire()).toBeGreaterThan(0);
  await relay.settle();
  expect(relay.group("broadcast")).toMatchObject({
    members: ["alice", "bob"],
    pendingLeaves: [],
  });
  relay.intercept = null;
  await relay.settle();
  await say(bob, G, "carol is gone");
  expect(messages(alice, G)).toEqual(["carol is gone"]);
});

it("periodic update: after N messages the sender commits a fresh epoch", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice", { tuning: { groupUpdateAfterMessages: 3 } });
  const bob = await newUser(relay, "bob");
  await connect(alice, bob);
  await joinAll(relay, alice, bob);
  const start = epochOf(alice) as number;
  for (let i = 0; i < 3; i++) await say(alice, G, `m${i}`);
  expect(epochOf(alice)).toBe(start + 1);
  expect(epochOf(bob)).toBe(start + 1);
  await say(alice, G, "new epoch");
  await say(bob, G, "ack");
  expect(messages(bob, G)).toEqual(["m0", "m1", "m2", "new epoch"]);
  expect(messages(alice, G)).toEqual(["ack"]);
  // the update was an empty roster change: same members
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob"]);
});

it("periodic update by time: the lowest online member commits when the epoch is old", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await joinAll(relay, alice, bob);
  const start = epochOf(alice) as number;
  relay.clock += 25 * 60 * 60 * 1000;
  await say(bob, G, "a day later");
  await say(alice, G, "reply");
  expect(epochOf(bob)).toBe(start + 1);
  expect(messages(bob, G)).toEqual(["reply"]);
});

it("a member whose state was lost (identity imported on a new device) rejoins by itself", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await joinAll(relay, alice, bob);
  await disconnect(bob);
  const bob2 = await newUser(relay, "bob", { identity: bob.identity });
  await connect(bob2);
  await relay.settle();
  expect(relay.group("broadcast")).toMatchObject({
    members: ["alice", "bob"],
    pendingJoins: [],
    pendingLeaves: [],
  });
  expect(epochOf(bob2)).toBe(epochOf(alice));
  await say(alice, G, "hello new bob");
  expect(messages(bob2, G)).toEqual(["hello new bob"]);
  expect(errors(bob2)).toEqual([]);
});

it("leaving while the join is still pending cancels it", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await joinAll(relay, alice);
  relay.intercept = (to, f) => (to === "bob" && f.t === "group" ? null : f); // bob cannot commit yet
  await bob.client.joinGroup("broadcast");
  await relay.settle();
  expect(bob.client.conversations().find((c) => c.id === G)?.joining).toBe(true);
  await bob.client.leaveGroup("broadcast");
  await relay.settle();
  relay.intercept = null;
  expect(relay.group("broadcast")).toMatchObject({ members: ["alice"], pendingJoins: [] });
  expect(bob.client.conversations().find((c) => c.id === G)).toMatchObject({
    joining: false,
    epoch: -1,
  });
});
