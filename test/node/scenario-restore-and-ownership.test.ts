/**
 * Stories about persistence (§10): state serialised mid-conversation and restored into a new
 * engine continues the conversation; write-ahead means a ciphertext is only ever handed out
 * after its state is stored; a second engine on the same store takes ownership and the first
 * refuses to send (no key/nonce reuse from stale state).
 */
import { expect, it } from "vitest";
import { MemoryStore } from "../../shared/core/store";
import { connect, errors, messages, online, restart, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

it("serialise / restore mid-conversation (1:1 and group)", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await alice.client.joinGroup("broadcast");
  await relay.settle();
  await bob.client.joinGroup("broadcast");
  await relay.settle();
  await say(alice, "dm:bob", "one");
  await say(bob, "dm:alice", "two");
  await say(bob, "group:broadcast", "g-one");
  // alice's whole state goes through JSON (what IndexedDB holds is the same records)
  const dump = alice.store.dump();
  await restart(alice, MemoryStore.load(dump));
  await connect(alice);
  await say(alice, "dm:bob", "three");
  await say(bob, "dm:alice", "four");
  await say(alice, "group:broadcast", "g-two");
  await say(bob, "group:broadcast", "g-three");
  expect(messages(bob, "dm:alice")).toEqual(["one", "three"]);
  expect(messages(alice, "dm:bob")).toEqual(["two", "four"]);
  expect(messages(bob, "group:broadcast")).toEqual(["g-two"]);
  expect(messages(alice, "group:broadcast")).toEqual(["g-one", "g-three"]);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("write-ahead: the outgoing frame is in the store before the transport sees it", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  const conn = alice.conn;
  if (!conn) throw new Error("connected");
  const seen: boolean[] = [];
  const orig = conn.fromClient.bind(conn);
  conn.fromClient = (f) => {
    if (f.t === "send") {
      // MemoryStore.list snapshots synchronously (no await before it reads): this is the store
      // content at the moment the transport is handed the frame
      void alice.store
        .list("outbox/")
        .then((xs) => seen.push(xs.some((x) => JSON.stringify(x.value).includes(f.body))));
    }
    orig(f);
  };
  await say(alice, "dm:bob", "durable");
  expect(seen).toEqual([true]);
  expect(messages(bob, "dm:alice")).toEqual(["durable"]);
  // accepted → the outbox entry is gone
  expect(await alice.store.list("outbox/")).toEqual([]);
});

it("a crash after persisting but before sending: the same bytes are resent on reconnect", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  const conn = alice.conn;
  if (!conn) throw new Error("connected");
  conn.fromClient = () => undefined; // the socket dies silently
  await alice.client.sendText("dm:bob", "survives");
  const stored = await alice.store.list("outbox/");
  expect(stored.length).toBe(1);
  await restart(alice, MemoryStore.load(alice.store.dump()));
  await connect(alice);
  expect(messages(bob, "dm:alice")).toEqual(["survives"]);
  expect(await alice.store.list("outbox/")).toEqual([]);
});

it("two engines on one store: the newer owns it, the older refuses to send (stale_state)", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  const older = alice.client;
  await restart(alice); // a second tab / restored instance on the SAME store
  await expect(older.sendText("dm:bob", "from stale tab")).rejects.toMatchObject({
    code: "stale_state",
  });
  await connect(alice);
  await say(alice, "dm:bob", "from owner");
  expect(messages(bob, "dm:alice")).toEqual(["from owner"]);
});

it("after a reload the engine numbers its frames from 1 again, and the relay still delivers every new message (§7.3 Retries, §10.1)", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  const ids = new Map<string, string[]>();
  const watch = () => {
    const conn = alice.conn;
    if (!conn) throw new Error("connected");
    const orig = conn.fromClient.bind(conn);
    conn.fromClient = (f) => {
      if (f.t === "send") ids.set(f.id, [...(ids.get(f.id) ?? []), f.body]);
      orig(f);
    };
  };
  watch();
  for (const text of ["one", "two", "three"]) await say(alice, "dm:bob", text);
  await restart(alice, MemoryStore.load(alice.store.dump()));
  await connect(alice);
  watch();
  const after = ["four", "five", "six", "seven", "eight", "nine", "ten"];
  for (const text of after) await say(alice, "dm:bob", text);
  // The numbering did start again: some id carried two different sends to bob.
  expect([...ids.values()].some((bodies) => new Set(bodies).size > 1)).toBe(true);
  expect(messages(bob, "dm:alice")).toEqual(["one", "two", "three", ...after]);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});
