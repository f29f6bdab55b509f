/**
 * Story (PROTOCOL.md §10.1): "Join" and "Leave" pressed while offline are written ahead, like a
 * message: persisted in the in-flight registry before any frame, sent at the next welcome, and
 * carried through — a leave pressed offline ends with every key of the group forgotten and the
 * remaining members re-keyed without us; a join pressed offline ends as a member at a new epoch,
 * even across an engine restart (a reload) in between.
 */
import { expect, it } from "vitest";
import {
  connect,
  disconnect,
  messages,
  online,
  restart,
  say,
  status,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;

const summary = (u: TestUser) => u.client.conversations().find((c) => c.id === G);

async function threeInGroup() {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob", "carol"]);
  return { relay, alice, bob, carol };
}

it("Leave pressed offline is persisted, shown as leaving, and takes effect after reconnect", async () => {
  const { relay, alice, bob, carol } = await threeInGroup();
  await disconnect(carol);
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  // Written ahead: the leave is in carol's store before any frame could go.
  const flights = await carol.store.list("flight/");
  expect(flights.map((f) => f.value)).toEqual([
    expect.objectContaining({ kind: "leave", group: "broadcast" }),
  ]);
  expect(summary(carol)).toMatchObject({ leaving: true });
  expect(status(carol, G)).toBe("offline");
  await expect(carol.client.sendText(G, "still here?")).rejects.toMatchObject({
    code: "not_member",
  });
  // A reload before the connection comes back: the leave survives it.
  await restart(carol);
  expect(summary(carol)?.leaving).toBe(true);
  await connect(carol);
  await relay.settle();
  // The relay took carol out, a remaining member re-keyed without her, and her keys are gone.
  expect(relay.group("broadcast")).toMatchObject({ members: ["alice", "bob"], pendingLeaves: [] });
  const rec = (await carol.store.get("group/broadcast")) as { status: string; current: unknown };
  expect(rec).toMatchObject({ status: "left", current: null });
  expect(summary(carol)).toMatchObject({ leaving: false, epoch: -1 });
  expect(await carol.store.list("flight/")).toEqual([]);
  await say(alice, G, "after carol left");
  expect(messages(bob, G)).toContain("after carol left");
  expect(messages(carol, G)).not.toContain("after carol left");
});

it("Join pressed offline is persisted and, after a reload and reconnect, makes us a member", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.joinGroup("broadcast");
  await relay.settle();
  await disconnect(bob);
  await bob.client.joinGroup("broadcast");
  await relay.settle();
  expect((await bob.store.list("flight/")).map((f) => f.value)).toEqual([
    expect.objectContaining({ kind: "join", group: "broadcast" }),
  ]);
  expect(summary(bob)).toMatchObject({ joining: true });
  await restart(bob);
  await connect(bob);
  await relay.settle();
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob"]);
  expect(summary(bob)).toMatchObject({ joining: false, epoch: 2 });
  expect(status(bob, G)).toBe("secure");
  expect(await bob.store.list("flight/")).toEqual([]);
  await say(alice, G, "welcome bob");
  await say(bob, G, "hi alice");
  expect(messages(bob, G)).toEqual(["welcome bob"]);
  expect(messages(alice, G)).toEqual(["hi alice"]);
});

it("Leave then Join pressed offline: only the join goes, and we stay a member", async () => {
  const { relay, alice, carol } = await threeInGroup();
  await disconnect(carol);
  await carol.client.leaveGroup("broadcast");
  await carol.client.joinGroup("broadcast");
  await relay.settle();
  expect((await carol.store.list("flight/")).map((f) => f.value)).toEqual([
    expect.objectContaining({ kind: "join", group: "broadcast" }),
  ]);
  await connect(carol);
  await relay.settle();
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob", "carol"]);
  await say(alice, G, "still three");
  expect(messages(carol, G)).toContain("still three");
});
