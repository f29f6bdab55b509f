/**
 * The Node scenario harness (test/support/node-relay.ts) is the product's relay, not a model of
 * it: rules only worker/relay enforces are observed through it (the strict frame parser, a
 * per-identity quota, the alarm's auth timeout and mailbox TTL), and an object that hibernates
 * and wakes up from its sockets' attachments keeps delivering.
 */
import { expect, it } from "vitest";
import { CLOSE, type ClientFrame, LIMITS, type ServerFrame } from "../../shared/protocol";
import {
  connect,
  disconnect,
  errors,
  messages,
  online,
  say,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const relayErrors = (relay: NodeRelay, to: string) =>
  relay.log.flatMap((x) =>
    x.to === to && x.frame.t === "error" ? [[x.frame.code, x.frame.id]] : [],
  );

it("bad input and a quota: answered with the real relay's error codes", async () => {
  const relay = new NodeRelay();
  const [alice] = (await online(relay, "alice")) as [TestUser];
  const conn = alice.conn;
  if (conn === null) throw new Error("alice is online");
  // Schemas are strict (PROTOCOL.md §6): an unknown key makes the frame bad_frame.
  conn.fromClient({ v: 1, t: "fetch_bundle", id: "b1", username: "bob", pad: 1 } as ClientFrame);
  conn.fromClient({ v: 1, t: "fetch_bundle", id: "b2", username: "bob" });
  await relay.settle();
  expect(relayErrors(relay, "alice")).toEqual([
    ["bad_frame", "b1"],
    ["unknown_user", "b2"],
  ]);
  // One identity creates at most maxGroupsCreatedPerIdentity groups (§7.5).
  const n = LIMITS.maxGroupsCreatedPerIdentity;
  for (let i = 0; i <= n; i++) {
    await alice.client.joinGroup(`g${i}`);
    await relay.settle();
  }
  expect(
    relayErrors(relay, "alice")
      .slice(2)
      .map(([code]) => code),
  ).toEqual(["limit_reached"]);
  expect(relay.group(`g${n - 1}`)?.members).toEqual(["alice"]);
  expect(relay.group(`g${n}`)).toBeNull();
});

it("the alarm closes a socket that never authenticates, and purges mail past its TTL", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await disconnect(bob);
  await say(alice, "dm:bob", "unread for a week");
  expect(relay.stored("bob")).toBe(1);
  // A socket that ignores `hello`.
  const got: ServerFrame[] = [];
  let disconnected = false;
  const mute = relay.connect({
    onConnected: () => undefined,
    onServerFrame: async (f) => {
      got.push(f);
    },
    onDisconnected: () => {
      disconnected = true;
    },
  });
  await relay.settle();
  expect(got.map((f) => f.t)).toEqual(["hello"]);
  await relay.advance(LIMITS.authTimeoutSec * 1000);
  expect(disconnected).toBe(true);
  expect(mute.closing?.code).toBe(CLOSE.authTimeout);
  // A week in silence: alice's connection went idle (§4.5), the message expired (§7.3).
  await relay.advance(LIMITS.mailboxTtlMs);
  expect(alice.conn?.closing?.code).toBe(CLOSE.idle);
  expect(relay.stored("bob")).toBe(0);
  await connect(bob);
  expect(messages(bob, "dm:alice")).toEqual([]);
});

it("presence: the alarm closes a silent connection, not one whose pings the runtime answered", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  const step = (LIMITS.presenceTimeoutSec * 1000 * 2) / 3;
  await relay.advance(step);
  bob.conn?.fromClient({ v: 1, t: "ping" });
  await relay.settle();
  await relay.advance(step);
  expect(alice.conn?.closing?.code).toBe(CLOSE.idle);
  expect(bob.conn?.closing).toBeNull();
  const toBob = relay.log.filter((x) => x.to === "bob").map((x) => x.frame);
  expect(toBob.filter((f) => f.t === "pong")).toHaveLength(1);
  // bob's view: the snapshot after his welcome, then the deltas (PROTOCOL.md §6.3).
  const view = new Set<string>();
  for (const f of toBob) {
    if (f.t === "presence") for (const u of f.users) view.add(u.username);
    if (f.t !== "presence_delta") continue;
    for (const u of f.online) view.add(u.username);
    for (const n of f.offline) view.delete(n);
  }
  expect([...view]).toEqual(["bob"]);
});

it("hibernation: the object forgets everything in memory and carries on from the attachments", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "before");
  await relay.hibernate();
  await say(alice, "dm:bob", "after");
  await say(bob, "dm:alice", "still here");
  expect(messages(bob, "dm:alice")).toEqual(["before", "after"]);
  expect(messages(alice, "dm:bob")).toEqual(["still here"]);
  expect(relay.online("alice")).toBe(alice.conn);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("presence deltas: at most one per viewer per interval; a user flapping collapses to one entry", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  const toAlice = () =>
    relay.log.filter((x) => x.to === "alice" && x.frame.t === "presence_delta").map((x) => x.frame);
  // The clock stands still: bob connects and leaves ten times within one interval.
  const before = toAlice().length;
  for (let i = 0; i < 10; i++) {
    if (bob.conn) relay.disconnect(bob.conn);
    bob.conn = null;
    await relay.settle();
    await connect(bob);
  }
  if (bob.conn) relay.disconnect(bob.conn);
  bob.conn = null;
  await relay.settle();
  // Held back: nothing more went to alice than the one delta the interval allows (already spent
  // on bob's first arrival in `online`).
  expect(toAlice().length).toBe(before);
  await relay.advance(LIMITS.presenceDeltaIntervalMs);
  const after = toAlice().slice(before);
  // One delta for twenty changes, with bob once: his state at send time.
  expect(after).toHaveLength(1);
  expect(after[0]).toMatchObject({ online: [], offline: ["bob"] });
  expect(alice.client.presence().map((u) => u.username)).toEqual(["alice"]);
});

it("presence under the production default: strangers see only themselves", async () => {
  const relay = new NodeRelay("main", "https://parley.test", null, "contacts");
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await relay.advance(LIMITS.presenceDeltaIntervalMs);
  expect(alice.client.presence().map((u) => u.username)).toEqual(["alice"]);
  expect(bob.client.presence().map((u) => u.username)).toEqual(["bob"]);
  expect(alice.client.presenceScope()).toBe("contacts");
  // bob opts in to "everyone"; alice has not: still nothing either way.
  await bob.client.setPresence("everyone");
  await relay.advance(LIMITS.presenceDeltaIntervalMs);
  expect(alice.client.presence().map((u) => u.username)).toEqual(["alice"]);
  // Both opted in: they see each other.
  await alice.client.setPresence("everyone");
  await relay.advance(LIMITS.presenceDeltaIntervalMs);
  expect(alice.client.presence().map((u) => u.username)).toEqual(["alice", "bob"]);
  expect(bob.client.presence().map((u) => u.username)).toEqual(["bob", "alice"]);
});
