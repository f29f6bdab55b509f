/**
 * Stories about prekey upkeep (§8.3.1) and handshake robustness (§8.2.3, §8.2.5): the signed
 * prekey rotates after 7 days and the old one still works for 14 days; one-time prekeys are
 * replenished on prekeys_low; an unanswered online handshake falls back to an async start; a
 * redelivered handshake init is not answered twice.
 */
import { expect, it } from "vitest";
import { DAY } from "../../shared/core/prekeys";
import {
  connect,
  disconnect,
  errors,
  lines,
  messages,
  newUser,
  online,
  say,
  status,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const spkOf = async (u: TestUser) =>
  (await u.store.get("prekeys")) as {
    spk: { id: number };
    oldSpks: { id: number }[];
    opks: unknown[];
  };

it("signed prekey rotates weekly; a start made with the old one works within the grace period", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(bob);
  await disconnect(bob);
  const first = (await spkOf(bob)).spk.id;
  // six days later alice fetches bob's bundle (still SPK 1) and writes while bob is away; the
  // relay keeps mail for LIMITS.mailboxTtlMs (7 days), so bob must be back within that
  relay.clock += 6 * DAY;
  await connect(alice);
  await say(alice, "dm:bob", "made with spk 1");
  // bob's SPK is 8 days old when he returns: it rotates, and SPK 1 still opens alice's start
  relay.clock += 2 * DAY;
  await connect(bob);
  expect((await spkOf(bob)).spk.id).toBe(first + 1);
  expect((await spkOf(bob)).oldSpks.map((o) => o.id)).toEqual([first]);
  expect(relay.signedPrekey("bob")?.id).toBe(first + 1);
  expect(messages(bob, "dm:alice")).toEqual(["made with spk 1"]);
  // beyond the grace period the old secret is gone
  relay.clock += 15 * DAY;
  await disconnect(bob);
  await connect(bob);
  expect((await spkOf(bob)).spk.id).toBe(first + 2);
  expect((await spkOf(bob)).oldSpks.map((o) => o.id)).toEqual([first + 1]);
});

it("one-time prekeys are replenished when the relay reports them low", async () => {
  const relay = new NodeRelay();
  const [, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  expect(relay.oneTimePrekeys("bob")).toBe(100);
  relay.takeOneTimePrekeys("bob", 90);
  await disconnect(bob);
  await connect(bob);
  // welcome said 10 (< 20): one batch of 100 uploaded, the relay keeps at most 200
  expect(relay.oneTimePrekeys("bob")).toBe(110);
  expect((await spkOf(bob)).opks.length).toBe(200);
  expect(errors(bob)).toEqual([]);
});

it("an online handshake nobody answers falls back to an async start", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  // bob's engine never sees alice's init (a relay dropping it, or a crashed tab)
  relay.intercept = (to, f) => (to === "bob" && f.t === "deliver" ? null : f);
  await alice.client.startChat("bob");
  await relay.settle();
  expect(status(alice, "dm:bob")).toBe("handshaking");
  relay.intercept = null;
  relay.clock += 31_000;
  await say(alice, "dm:bob", "are you there");
  expect(status(alice, "dm:bob")).toBe("secure");
  // bob gets the (old) init and the prekey message on reconnect: the prekey start wins
  await disconnect(bob);
  await connect(bob);
  expect(messages(bob, "dm:alice")).toEqual(["are you there"]);
  await say(bob, "dm:alice", "yes");
  expect(messages(alice, "dm:bob")).toEqual(["yes"]);
  expect(errors(alice)).toEqual([]);
});

it("a redelivered handshake init is not answered twice", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  const inits: unknown[] = [];
  relay.intercept = (to, f) => {
    if (to === "bob" && f.t === "deliver") inits.push(f);
    return f;
  };
  await alice.client.startChat("bob");
  await relay.settle();
  relay.intercept = null;
  const first = inits[0] as Parameters<typeof bob.client.onServerFrame>[0];
  const sends = () =>
    relay.clientLog.filter((x) => x.from === "bob" && x.frame.t === "send").length;
  const before = sends();
  await bob.client.onServerFrame({ ...first, mid: "4242" } as typeof first);
  await relay.settle();
  expect(sends()).toBe(before);
  await say(alice, "dm:bob", "still fine");
  expect(messages(bob, "dm:alice")).toEqual(["still fine"]);
  expect(errors(bob)).toEqual([]);
});

it("identity restored on a new device: a message on the lost session is repaired and sent again, none lost", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "old device");
  // bob moves his identity (not his sessions, §10.2) to a fresh device
  await disconnect(bob);
  const bob2 = await newUser(relay, "bob", { identity: bob.identity });
  await connect(bob2);
  await say(alice, "dm:bob", "lost on the way");
  // bob2 cannot read it: it makes a new session and asks alice to send again (§8.10) …
  expect(lines(bob2, "dm:alice").map((l) => l.kind)).toContain("repairing");
  // … and alice, told so on the new session, sends it again and says so.
  const resending = lines(alice, "dm:bob").filter((l) => l.kind === "resending");
  expect(resending.map((l) => l.count)).toEqual([1]);
  await say(alice, "dm:bob", "after healing");
  await say(bob2, "dm:alice", "new device here");
  expect(messages(bob2, "dm:alice")).toEqual(["lost on the way", "after healing"]);
  expect(messages(alice, "dm:bob")).toEqual(["new device here"]);
  expect(status(alice, "dm:bob")).toBe("secure");
  // Everything alice sent is receipted end to end: nothing left to send again.
  expect(await alice.store.list("sent/bob/")).toEqual([]);
});
