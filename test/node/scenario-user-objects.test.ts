/**
 * Real engines on user objects (docs/ARCHITECTURE.md "User objects"): every client opens its
 * user's route, so each user is its own object, and bundles, messages and presence cross between
 * objects as calls. The conversation is the same as on the hub's route: the
 * engines do not know the difference.
 */
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import {
  connect,
  disconnect,
  errors,
  messages,
  newUser,
  online,
  say,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

/** A hub whose users are on their own routes, with the production presence default. */
const routedRelay = () => new NodeRelay("main", "https://parley.test", null, "contacts", true);

/** `names` online on users' routes, and `alice` has started a chat with `bob`. */
async function chatting(...names: string[]): Promise<{ relay: NodeRelay; users: TestUser[] }> {
  const relay = routedRelay();
  const users = (await online(relay, ...names)) as TestUser[];
  await (users[0] as TestUser).client.startChat("bob");
  await relay.settle();
  return { relay, users };
}

const seen = (u: TestUser) =>
  u.client
    .presence()
    .map((p) => p.username)
    .sort();

describe("engines on user objects", () => {
  it("start a chat offline (PQXDH from the peer's object), talk both ways, get receipts", async () => {
    const { relay, users } = await chatting("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await say(alice, "dm:bob", "hello bob");
    await say(bob, "dm:alice", "hello alice");
    await say(alice, "dm:bob", "how are you?");
    expect(messages(bob, "dm:alice")).toEqual(["hello bob", "how are you?"]);
    expect(messages(alice, "dm:bob")).toEqual(["hello alice"]);
    // Each user's mailbox was its own object's; the hub's object held nobody, and was asked
    // once per user, at its first authentication, for what it held (a hand-over: nothing).
    expect(relay.hubObject.events).toBe(2);
    expect(relay.hubObject.life.store.countMailbox("bob")).toBe(0);
    expect([...relay.userObjects.keys()].sort()).toEqual(["alice", "bob"]);
    const tables = relay.dumpTables();
    expect(tables["user/alice/users"]?.map((r) => r.username)).toEqual(["alice"]);
    expect(tables["user/bob/users"]?.map((r) => r.username)).toEqual(["bob"]);
    // bob's end-to-end receipts crossed back from bob's object to alice: both texts delivered.
    const delivered = alice.events.filter((e) => e.type === "delivery" && e.state === "delivered");
    expect(delivered.length).toBe(2);
    // The relay itself sends no receipt frame on acknowledgement (PROTOCOL.md §7.3).
    expect(relay.log.filter((x) => x.frame.t === "receipt")).toEqual([]);
    expect(errors(alice)).toEqual([]);
    expect(errors(bob)).toEqual([]);
  });

  it("what an object still holds of a sender's crosses in one call however many acknowledgements changed it", async () => {
    const { relay, users } = await chatting("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await say(alice, "dm:bob", "hello"); // the session's handshake goes with it
    await say(bob, "dm:alice", "hi");
    const acksOfBob = () =>
      relay.clientLog.filter((x) => x.from === "bob" && x.frame.t === "ack").length;
    const acks0 = acksOfBob();
    const calls0 = relay.heldCalls;
    // Five messages at once: bob's engine acknowledges each delivery in a frame of its own.
    const texts = ["one", "two", "three", "four", "five"];
    for (const t of texts) await alice.client.sendText("dm:bob", t);
    await relay.settle();
    expect(messages(bob, "dm:alice")).toEqual(["hello", ...texts]);
    expect(acksOfBob() - acks0).toBeGreaterThanOrEqual(texts.length);
    // alice's object learnt that bob's holds none of hers now (her total, §7.3)…
    const held = relay.userObjects.get("alice")?.life.store.heldElsewhere("alice", 0);
    expect(held).toBe(0);
    // …from far fewer calls between the objects than acknowledgements: one from bob's object
    // for the five (and one each way for the end-to-end receipts the engines answered with).
    expect(relay.heldCalls - calls0).toBeGreaterThanOrEqual(1);
    expect(relay.heldCalls - calls0).toBeLessThanOrEqual(3);
    expect(errors(alice)).toEqual([]);
    expect(errors(bob)).toEqual([]);
  });

  it("presence: writing to someone lets them see you; a stranger sees nobody", async () => {
    const { relay, users } = await chatting("alice", "bob", "eve");
    const [alice, bob, eve] = users as [TestUser, TestUser, TestUser];
    await say(alice, "dm:bob", "hi");
    await relay.advance(LIMITS.presenceDeltaIntervalMs);
    expect(seen(bob)).toEqual(["alice", "bob"]);
    // bob's engine answered with its end-to-end receipt, a `send` too: alice sees him (§6.3).
    expect(seen(alice)).toEqual(["alice", "bob"]);
    expect(seen(eve)).toEqual(["eve"]);
    await disconnect(alice);
    expect(seen(bob)).toEqual(["bob"]);
    expect(seen(eve)).toEqual(["eve"]);
  });

  it("a send whose call to the recipient's object lost its answer is sent again and arrives once", async () => {
    const { relay, users } = await chatting("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await say(alice, "dm:bob", "one");
    // The next enqueue is applied in bob's object, and its answer is lost on the way back.
    let lose = 1;
    relay.loseCall = (m) => m === "enqueue" && lose-- > 0;
    await alice.client.sendText("dm:bob", "two");
    await relay.settle().catch(() => undefined);
    // The sender was answered `internal`; its outbox keeps the frame for the next connection.
    expect(relay.failures).toEqual(["relay answered `internal`"]);
    relay.failures.length = 0;
    expect(messages(bob, "dm:alice")).toEqual(["one", "two"]);
    await disconnect(alice);
    await connect(alice);
    await say(alice, "dm:bob", "three");
    // The retry was recognised in bob's object (§7.3 "Retries"): one copy of "two" was stored
    // and delivered (the engine would drop a second as a replay; the relay never made one).
    expect(messages(bob, "dm:alice")).toEqual(["one", "two", "three"]);
    const bodies = relay.log.flatMap((x) =>
      x.to === "bob" && x.frame.t === "deliver" && x.frame.item.kind === "direct"
        ? [x.frame.item.body]
        : [],
    );
    expect(new Set(bodies).size).toBe(bodies.length);
    expect(relay.stored("bob")).toBe(0);
    expect(errors(bob)).toEqual([]);
  });

  it("a message to an offline user waits in its object, across that object's restart", async () => {
    const { relay, users } = await chatting("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await say(alice, "dm:bob", "before");
    await disconnect(bob);
    await say(alice, "dm:bob", "while away 1");
    await say(alice, "dm:bob", "while away 2");
    expect(relay.stored("bob")).toBe(2);
    await relay.hibernate();
    await connect(bob);
    expect(messages(bob, "dm:alice")).toEqual(["before", "while away 1", "while away 2"]);
    expect(relay.stored("bob")).toBe(0);
  });

  it("a user of the hub's route who moves to its own route finds there the mail, decisions and device the hub's object held", async () => {
    const relay = new NodeRelay("main", "https://parley.test", null, "contacts", false);
    const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await alice.client.startChat("bob");
    await relay.settle();
    await say(alice, "dm:bob", "before");
    await bob.client.acceptContact("alice");
    await relay.settle();
    await disconnect(bob);
    await say(alice, "dm:bob", "while away 1");
    await say(alice, "dm:bob", "while away 2");
    expect(relay.hubObject.life.store.countMailbox("bob")).toBe(2);
    // The app updates: connections made from now on take their users' routes.
    relay.routed = true;
    // Another identity claiming "bob" on bob's route first gets nothing, and takes nothing away.
    const mallory = await newUser(relay, "bob");
    await connect(mallory);
    expect(errors(mallory).map((e) => e.message)).toEqual([expect.stringContaining("name_taken")]);
    expect(relay.userObject("bob").life.store.countMailbox("bob")).toBe(0);
    await disconnect(alice);
    await connect(alice, bob);
    expect(messages(bob, "dm:alice")).toEqual(["before", "while away 1", "while away 2"]);
    const bobs = relay.userObject("bob").life.store;
    expect(bobs.contactState("bob", "alice")).toBe("accepted");
    expect(bobs.getDevice("bob")).toBe(relay.hubObject.life.store.getDevice("bob"));
    // Taken once: a later connection brings nothing again.
    await disconnect(bob);
    await connect(bob);
    const bodies = relay.log.flatMap((x) =>
      x.to === "bob" && x.frame.t === "deliver" && x.frame.item.kind === "direct"
        ? [x.frame.item.body]
        : [],
    );
    expect(new Set(bodies).size).toBe(bodies.length);
    await say(alice, "dm:bob", "on our own routes");
    expect(messages(bob, "dm:alice")).toEqual([
      "before",
      "while away 1",
      "while away 2",
      "on our own routes",
    ]);
    expect(errors(alice)).toEqual([]);
    expect(errors(bob)).toEqual([]);
  });

  it("a flood from one user loads only its own object and its peer's", async () => {
    const { relay, users } = await chatting("alice", "bob", "mallory");
    const [alice, , mallory] = users as [TestUser, TestUser, TestUser];
    await say(alice, "dm:bob", "hi");
    await mallory.client.startChat("bob");
    await relay.settle();
    const before = new Map([...relay.userObjects].map(([n, o]) => [n, o.events]));
    const hub0 = relay.hubObject.events;
    for (let i = 0; i < 50; i++) await mallory.client.sendText("dm:bob", `spam ${i}`);
    await relay.settle();
    const handled = (n: string) => (relay.userObjects.get(n)?.events ?? 0) - (before.get(n) ?? 0);
    // mallory's frames land on mallory's object, each send is one call to bob's, and bob's
    // acknowledgements and receipts are bob's and mallory's; alice's object handles nothing.
    expect(handled("mallory")).toBeGreaterThanOrEqual(50);
    expect(handled("bob")).toBeGreaterThanOrEqual(50);
    expect(handled("alice")).toBe(0);
    expect(relay.hubObject.events).toBe(hub0);
  });
});
