/** Stories: both sides start at the same moment (online and offline); the tie-break converges. */
import { expect, it } from "vitest";
import {
  connect,
  disconnect,
  errors,
  messages,
  newUser,
  online,
  say,
  status,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

it("simultaneous online init: the smaller name's handshake wins, one session both ways", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await Promise.all([alice.client.startChat("bob"), bob.client.startChat("alice")]);
  await relay.settle();
  expect(status(alice, "dm:bob")).toBe("secure");
  expect(status(bob, "dm:alice")).toBe("secure");
  await say(bob, "dm:alice", "b1");
  await say(alice, "dm:bob", "a1");
  await say(bob, "dm:alice", "b2");
  expect(messages(alice, "dm:bob")).toEqual(["b1", "b2"]);
  expect(messages(bob, "dm:alice")).toEqual(["a1"]);
  const a = (await alice.store.get("dm/bob")) as { current: { sid: string } };
  const b = (await bob.store.get("dm/alice")) as { current: { sid: string } };
  expect(a.current.sid).toBe(b.current.sid);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("crossing prekey messages: each side's first message decrypts, both converge on one session", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(alice, bob);
  await disconnect(alice, bob);
  // each writes while the other is offline: two independent async starts
  await connect(alice);
  await say(alice, "dm:bob", "a-first");
  await disconnect(alice);
  relay.intercept = (to, f) => (to === "bob" && f.t === "deliver" ? null : f); // bob does not get it yet
  await connect(bob);
  await say(bob, "dm:alice", "b-first");
  await disconnect(bob);
  relay.intercept = null;
  await connect(alice, bob);
  expect(messages(alice, "dm:bob")).toEqual(["b-first"]);
  expect(messages(bob, "dm:alice")).toEqual(["a-first"]);
  for (let i = 0; i < 2; i++) {
    await say(alice, "dm:bob", `a${i}`);
    await say(bob, "dm:alice", `b${i}`);
  }
  expect(messages(alice, "dm:bob")).toEqual(["b-first", "b0", "b1"]);
  expect(messages(bob, "dm:alice")).toEqual(["a-first", "a0", "a1"]);
  const a = (await alice.store.get("dm/bob")) as { current: { sid: string } };
  const b = (await bob.store.get("dm/alice")) as { current: { sid: string } };
  expect(a.current.sid).toBe(b.current.sid);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});
