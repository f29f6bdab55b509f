/** Story: bob registered once and went offline; alice writes to him; he reads it when back. */
import { expect, it } from "vitest";
import { spkMessage } from "../../shared/core/prekeys";
import { ed25519Sign } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import {
  connect,
  disconnect,
  errors,
  lines,
  messages,
  newUser,
  say,
  status,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

it("async start via prekeys: first message waits in the mailbox, one-time prekey used once", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(bob);
  // bob uploaded a batch of one-time prekeys on his first connection (welcome said 0 < 20)
  expect(relay.oneTimePrekeys("bob")).toBe(100);
  await disconnect(bob);
  await connect(alice);
  await say(alice, "dm:bob", "are you there?");
  await say(alice, "dm:bob", "second");
  expect(status(alice, "dm:bob")).toBe("secure");
  expect(relay.oneTimePrekeys("bob")).toBe(99);
  expect(relay.stored("bob")).toBe(2);
  expect(messages(bob, "dm:alice")).toEqual([]);
  await connect(bob);
  expect(messages(bob, "dm:alice")).toEqual(["are you there?", "second"]);
  expect(relay.stored("bob")).toBe(0);
  // bob's one-time prekey secret is gone after use (§8.3.3)
  const pre = (await bob.store.get("prekeys")) as { opks: { id: number }[] };
  expect(pre.opks.length).toBe(99);
  await say(bob, "dm:alice", "yes!");
  await say(alice, "dm:bob", "great");
  expect(messages(alice, "dm:bob")).toEqual(["yes!"]);
  expect(messages(bob, "dm:alice")).toEqual(["are you there?", "second", "great"]);
  // After bob's reply alice stops repeating the prekey fields: plain ratchet messages now.
  const last = relay.clientLog.filter((x) => x.from === "alice" && x.frame.t === "send").at(-1);
  if (last?.frame.t !== "send") throw new Error("no send");
  const bytes = Buffer.from(last.frame.body, "base64url");
  expect(bytes[1]).toBe(0x05);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("without one-time prekeys left the start still works (signed prekey only)", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(bob);
  await disconnect(bob);
  relay.takeOneTimePrekeys("bob");
  await connect(alice);
  await say(alice, "dm:bob", "no opk");
  await connect(bob);
  expect(messages(bob, "dm:alice")).toEqual(["no opk"]);
  expect(errors(bob)).toEqual([]);
});

it("the start is post-quantum (PROTOCOL.md §8.3.5): a one-time KEM prekey used once, no 'not post-quantum' line", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(bob);
  // bob's first upload carried 50 one-time ML-KEM prekeys with the 100 X25519 ones.
  await disconnect(bob);
  await connect(alice);
  await say(alice, "dm:bob", "post-quantum hello");
  expect(relay.oneTimeKemPrekeys("bob")).toBe(49);
  const first = relay.clientLog.find((x) => x.from === "alice" && x.frame.t === "send");
  if (first?.frame.t !== "send") throw new Error("no send");
  expect(Buffer.from(first.frame.body, "base64url")[1]).toBe(0x06); // prekey_pq
  await connect(bob);
  expect(messages(bob, "dm:alice")).toEqual(["post-quantum hello"]);
  const pre = (await bob.store.get("prekeys")) as { kopks: { id: number }[] };
  expect(pre.kopks.length).toBe(49);
  for (const u of [alice, bob]) {
    const id = u === alice ? "dm:bob" : "dm:alice";
    expect(lines(u, id).some((l) => l.kind === "session_started")).toBe(true);
    expect(lines(u, id).some((l) => l.kind === "not_post_quantum")).toBe(false);
  }
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("a classical peer (PROTOCOL.md §8.3.5): the start is classical and both sides say 'not post-quantum'", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(bob);
  await disconnect(bob);
  // bob as a client from before post-quantum prekeys publishes: his signed prekey signed under
  // the v1 label, no PQ prekey, no one-time KEM prekeys. (Made with bob's own identity key: only
  // bob can sign it, so this is what a classical bob's bundle looks like on the wire.)
  const v1Sigs = new Map<string, string>();
  relay.intercept = (to, frame) => {
    if (frame.t !== "bundle" || to !== "alice") return frame;
    const { id, key } = frame.signedPrekey;
    const sig = v1Sigs.get(`${id}:${key}`);
    if (sig === undefined) throw new Error("bundle for an unexpected signed prekey");
    return { ...frame, signedPrekey: { id, key, sig }, pqPrekey: null, oneTimeKemPrekey: null };
  };
  const pre = (await bob.store.get("prekeys")) as { spk: { id: number; pub: string } };
  v1Sigs.set(
    `${pre.spk.id}:${pre.spk.pub}`,
    toB64u(
      await ed25519Sign(bob.identity.privateKey, spkMessage(pre.spk.id, fromB64u(pre.spk.pub))),
    ),
  );
  await connect(alice);
  await say(alice, "dm:bob", "classical hello");
  const first = relay.clientLog.find((x) => x.from === "alice" && x.frame.t === "send");
  if (first?.frame.t !== "send") throw new Error("no send");
  expect(Buffer.from(first.frame.body, "base64url")[1]).toBe(0x04); // classical prekey (§8.1)
  await connect(bob);
  expect(messages(bob, "dm:alice")).toEqual(["classical hello"]);
  for (const u of [alice, bob]) {
    const id = u === alice ? "dm:bob" : "dm:alice";
    expect(lines(u, id).filter((l) => l.kind === "not_post_quantum").length).toBe(1);
  }
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});
