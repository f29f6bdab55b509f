/**
 * The main protocol-core stories through the REAL relay (worker/relay, hibernating Durable
 * Object) inside workerd: ParleyClient engines talk over WebSockets opened with SELF.fetch.
 * Same stories as test/node/scenario-*.test.ts, minus the hostile-relay ones (those need a relay
 * that lies: the Node harness, test/support/node-relay.ts, runs this relay with hooks for that).
 */
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ParleyClient } from "../../shared/core/client";
import type { ChatMessage, ConversationId, ParleyEvent } from "../../shared/core/client-api";
import { decryptGroup, type GroupRecord, parseGroupRecord } from "../../shared/core/group";
import { MemoryStore } from "../../shared/core/store";
import { generateIdentityKeyPair, type IdentityKeyPair } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import { parseServerFrame, type ServerFrame } from "../../shared/protocol";
import { statusOf } from "../support/status";

const ORIGIN = "http://relay.test";
let hubs = 0;
const freshHub = () => `core-${Date.now().toString(36)}-${++hubs}`;

interface User {
  name: string;
  identity: IdentityKeyPair;
  store: MemoryStore;
  client: ParleyClient;
  events: ParleyEvent[];
  received: ServerFrame[];
  ws: WebSocket | null;
}

async function newUser(hub: string, name: string): Promise<User> {
  const u: Partial<User> = {
    name,
    identity: await generateIdentityKeyPair(),
    store: new MemoryStore(),
    events: [],
    received: [],
    ws: null,
  };
  return boot(hub, u as User);
}

async function boot(hub: string, u: User): Promise<User> {
  u.client = await ParleyClient.create({
    hub,
    origin: ORIGIN,
    username: u.name,
    identity: u.identity,
    store: u.store,
    transport: { send: (f) => u.ws?.send(JSON.stringify(f)) },
    now: () => Date.now(),
  });
  u.client.subscribe((e) => u.events.push(e));
  return u;
}

async function connect(hub: string, u: User): Promise<void> {
  const res = await SELF.fetch(`${ORIGIN}/ws?hub=${hub}`, {
    headers: { Upgrade: "websocket", Origin: ORIGIN },
  });
  const ws = res.webSocket;
  if (res.status !== 101 || ws === null) throw new Error(`upgrade failed: ${res.status}`);
  ws.accept();
  u.ws = ws;
  u.client.onConnected();
  ws.addEventListener("message", (e) => {
    const r = parseServerFrame(e.data);
    if (!r.ok) throw new Error(`relay sent an invalid frame: ${r.code}`);
    u.received.push(r.frame);
    void u.client.onServerFrame(r.frame);
  });
  ws.addEventListener("close", () => u.client.onDisconnected());
  await until(() => u.events.some((e) => e.type === "ready"), `${u.name} ready`);
}

async function disconnect(u: User): Promise<void> {
  u.ws?.close(1000, "bye");
  u.ws = null;
  u.client.onDisconnected();
  await sleep(50);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, what: string, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
    await sleep(10);
  }
}

function texts(u: User, id: ConversationId): string[] {
  return u.events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .filter((m) => m.conversationId === id && m.direction === "in")
    .map((m) => m.text);
}

const status = (u: User, id: ConversationId) => statusOf(u, id);
const epochOf = (u: User, id: ConversationId) =>
  u.client.conversations().find((c) => c.id === id)?.epoch;
const errorsOf = (u: User) => u.events.filter((e) => e.type === "error");

describe("protocol core through the real relay", () => {
  it("online handshake and chat both ways, delivery receipts", async () => {
    const hub = freshHub();
    const alice = await newUser(hub, "alice");
    const bob = await newUser(hub, "bob");
    await connect(hub, alice);
    await connect(hub, bob);
    // Strangers see each other online only if both choose "everyone" (§6.3): the online
    // handshake needs the peer in presence.
    await alice.client.setPresence("everyone");
    await bob.client.setPresence("everyone");
    await until(() => alice.client.presence().length === 2, "presence");
    await alice.client.startChat("bob");
    await until(
      () => status(alice, "dm:bob") === "secure" && status(bob, "dm:alice") === "secure",
      "secure",
    );
    await alice.client.sendText("dm:bob", "hello bob");
    await until(() => texts(bob, "dm:alice").length === 1, "bob reads");
    await bob.client.sendText("dm:alice", "hi alice");
    await until(() => texts(alice, "dm:bob").length === 1, "alice reads");
    await until(
      () => alice.events.some((e) => e.type === "delivery" && e.state === "delivered"),
      "receipt",
    );
    expect(texts(bob, "dm:alice")).toEqual(["hello bob"]);
    expect(texts(alice, "dm:bob")).toEqual(["hi alice"]);
    expect(await alice.client.safetyNumber("bob")).toBe(await bob.client.safetyNumber("alice"));
    // the relay only ever carried ciphertext
    for (const f of bob.received) expect(JSON.stringify(f)).not.toContain("hello bob");
    expect(errorsOf(alice)).toEqual([]);
    expect(errorsOf(bob)).toEqual([]);
    await disconnect(alice);
    await disconnect(bob);
  });

  it("offline start via prekeys: the message waits in the mailbox", async () => {
    const hub = freshHub();
    const alice = await newUser(hub, "alice");
    const bob = await newUser(hub, "bob");
    await connect(hub, bob);
    await until(() => bob.received.some((f) => f.t === "accepted"), "bob uploaded prekeys");
    await disconnect(bob);
    await connect(hub, alice);
    await alice.client.sendText("dm:bob", "waiting for you");
    await until(
      () => alice.events.some((e) => e.type === "delivery" && e.state === "sent"),
      "accepted",
    );
    // bob comes back with a fresh engine on his persisted store (as after a page reload)
    await boot(hub, bob);
    await connect(hub, bob);
    await until(() => texts(bob, "dm:alice").length === 1, "bob reads the mailbox");
    expect(texts(bob, "dm:alice")).toEqual(["waiting for you"]);
    await bob.client.sendText("dm:alice", "got it");
    await until(() => texts(alice, "dm:bob").length === 1, "reply");
    expect(errorsOf(bob)).toEqual([]);
    await disconnect(alice);
    await disconnect(bob);
  });

  it("replayed and altered deliveries (as a hostile relay would send them) are rejected", async () => {
    const hub = freshHub();
    const alice = await newUser(hub, "alice");
    const bob = await newUser(hub, "bob");
    await connect(hub, alice);
    await connect(hub, bob);
    await alice.client.setPresence("everyone");
    await bob.client.setPresence("everyone");
    await until(() => alice.client.presence().length === 2, "presence");
    await alice.client.startChat("bob");
    await until(
      () => status(alice, "dm:bob") === "secure" && status(bob, "dm:alice") === "secure",
      "secure",
    );
    await alice.client.sendText("dm:bob", "genuine");
    await until(() => texts(bob, "dm:alice").length === 1, "bob reads");
    const d = bob.received.filter((f) => f.t === "deliver").at(-1);
    if (d?.t !== "deliver" || d.item.kind !== "direct") throw new Error("no direct delivery");
    // replay the same frame twice: no duplicate, no error (at-least-once semantics)
    await bob.client.onServerFrame(d);
    await bob.client.onServerFrame({ ...d, mid: "900000" });
    // flip one bit of the tag, one of the header
    const body = fromB64u(d.item.body);
    for (const at of [body.length - 1, 30]) {
      const t = body.slice();
      t[at] = (t[at] as number) ^ 1;
      await bob.client.onServerFrame({
        ...d,
        mid: String(910000 + at),
        item: { kind: "direct", body: toB64u(t) },
      });
    }
    expect(texts(bob, "dm:alice")).toEqual(["genuine"]);
    // the tag-flipped copy names a message number already read: dropped as a replay before any
    // decryption; the header-flipped copy names a new ratchet key: its AEAD check fails
    expect(errorsOf(bob).map((e) => (e.type === "error" ? e.code : ""))).toEqual([
      "decrypt_failed",
    ]);
    await alice.client.sendText("dm:bob", "still working");
    await until(() => texts(bob, "dm:alice").length === 2, "next message");
    await disconnect(alice);
    await disconnect(bob);
  });

  it("broadcast group: everyone reads everyone; after carol leaves she cannot read the next epoch", async () => {
    const hub = freshHub();
    const G = "group:broadcast" as const;
    const users = [
      await newUser(hub, "alice"),
      await newUser(hub, "bob"),
      await newUser(hub, "carol"),
    ];
    const [alice, bob, carol] = users as [User, User, User];
    for (const u of users) await connect(hub, u);
    for (const [i, u] of users.entries()) {
      await u.client.joinGroup("broadcast");
      await until(
        () => users.slice(0, i + 1).every((x) => epochOf(x, G) === i + 1),
        `epoch ${i + 1}`,
      );
    }
    await alice.client.sendText(G, "hello all");
    await until(() => texts(bob, G).length === 1 && texts(carol, G).length === 1, "fan-out");
    await carol.client.sendText(G, "carol here");
    await until(() => texts(bob, G).length === 2 && texts(alice, G).length === 1, "fan-out 2");
    const carolKeys = parseGroupRecord(await carol.store.get("group/broadcast"));
    await carol.client.leaveGroup("broadcast");
    await until(() => epochOf(alice, G) === 4 && epochOf(bob, G) === 4, "epoch 4 without carol");
    await alice.client.sendText(G, "after carol left");
    await until(() => texts(bob, G).length === 3, "bob reads epoch 4");
    await sleep(100);
    expect(texts(carol, G)).toEqual(["hello all"]);
    // take the real ciphertext bob received and try carol's last epoch keys on it: carol never
    // stored the epoch secret (§9.5), only its sender chains; relabel them as epoch 4 (with its
    // public transcript hash, as bob holds it) from n = 0
    const d = bob.received.filter((f) => f.t === "deliver" && f.item.kind === "group").at(-1);
    if (d?.t !== "deliver" || d.item.kind !== "group") throw new Error("no group delivery");
    expect(d.item.epoch).toBe(4);
    const old = carolKeys.current;
    if (!old) throw new Error("carol had keys");
    expect(old).not.toHaveProperty("secret");
    const guess: GroupRecord = {
      ...carolKeys,
      current: {
        ...old,
        epoch: 4,
        transcript:
          parseGroupRecord(await bob.store.get("group/broadcast")).current?.transcript ?? "",
        receivers: old.receivers.map((r) => ({ ...r, n: 0, skipped: [] })),
      },
    };
    await expect(
      decryptGroup({ record: guess, hub, sender: "alice", epoch: 4, body: fromB64u(d.item.body) }),
    ).rejects.toMatchObject({ code: "decrypt_failed" });
    for (const u of users) expect(errorsOf(u)).toEqual([]);
    for (const u of users) await disconnect(u);
  });

  it("concurrent joins and a rejoin converge on one epoch for everyone", async () => {
    const hub = freshHub();
    const G = "group:broadcast" as const;
    const users = [
      await newUser(hub, "alice"),
      await newUser(hub, "bob"),
      await newUser(hub, "carol"),
      await newUser(hub, "dave"),
    ];
    const [alice, bob, carol, dave] = users as [User, User, User, User];
    for (const u of users) await connect(hub, u);
    await alice.client.joinGroup("broadcast");
    await until(() => epochOf(alice, G) === 1, "alice in");
    // bob, carol and dave join at the same moment: one commit wins, the others are absorbed
    await Promise.all([bob, carol, dave].map((u) => u.client.joinGroup("broadcast")));
    const same = () => {
      const e = users.map((u) => epochOf(u, G));
      return e.every((x) => x !== undefined && x > 1 && x === e[0]);
    };
    await until(same, "one epoch for all four");
    await dave.client.sendText(G, "dave in");
    await until(() => [alice, bob, carol].every((u) => texts(u, G).includes("dave in")), "fan-out");
    // carol leaves and comes back
    await carol.client.leaveGroup("broadcast");
    await until(
      () =>
        [alice, bob, dave].every(
          (u) => u.client.conversations().find((c) => c.id === G)?.members.length === 3,
        ),
      "carol out",
    );
    await carol.client.joinGroup("broadcast");
    await until(same, "carol back");
    await bob.client.sendText(G, "welcome back carol");
    await until(() => texts(carol, G).includes("welcome back carol"), "carol reads");
    for (const u of users) expect(errorsOf(u)).toEqual([]);
    for (const u of users) await disconnect(u);
  });
  it("a restore claims the identity: the old engine is retired, can take it back, and 1:1 and groups heal", async () => {
    const hub = freshHub();
    const alice = await newUser(hub, "alice");
    const bob = await newUser(hub, "bob");
    await connect(hub, alice);
    await connect(hub, bob);
    const D = "dm:bob" as ConversationId;
    const G = "group:broadcast" as ConversationId;
    await alice.client.startChat("bob");
    await alice.client.joinGroup("broadcast");
    await bob.client.joinGroup("broadcast");
    await until(
      () => epochOf(alice, G) === epochOf(bob, G) && (epochOf(bob, G) ?? 0) >= 1,
      "group",
    );
    await alice.client.sendText(D, "from the laptop");
    await until(() => texts(bob, "dm:alice").includes("from the laptop"), "first");
    // The first welcome cleared the claim: a reload of the same store does not claim again.
    expect(await alice.store.get("meta/device")).toMatchObject({ claim: false });

    // Restored on a new device: same identity, fresh store (which claims).
    const restored = await boot(hub, {
      name: "alice",
      identity: alice.identity,
      store: new MemoryStore(),
      events: [],
      received: [],
      ws: null,
    } as unknown as Parameters<typeof boot>[1]);
    await connect(hub, restored);
    await until(
      () => alice.events.some((e) => e.type === "connection" && e.state === "retired"),
      "old engine retired",
    );
    await bob.client.sendText("dm:alice", "to wherever alice is");
    await until(() => texts(restored, D).includes("to wherever alice is"), "repaired");
    // The restored device lost the group's state: it rejoins and reads the group again.
    await until(
      () => (epochOf(restored, G) ?? 0) > 0 && epochOf(restored, G) === epochOf(bob, G),
      "rejoined",
    );
    await bob.client.sendText(G, "group after restore");
    await until(() => texts(restored, G).includes("group after restore"), "group read");

    // The old browser reloads (a new engine on its store) and connects: refused, never welcomed.
    const readyBefore = alice.events.filter((e) => e.type === "ready").length;
    alice.ws?.close(1000, "bye");
    alice.client.onDisconnected();
    await boot(hub, alice);
    const res = await SELF.fetch(`${ORIGIN}/ws?hub=${hub}`, {
      headers: { Upgrade: "websocket", Origin: ORIGIN },
    });
    const ws = res.webSocket;
    if (ws === null) throw new Error("upgrade failed");
    ws.accept();
    alice.ws = ws;
    alice.client.onConnected();
    let closed = 0;
    ws.addEventListener("message", (e) => {
      const r = parseServerFrame(e.data);
      if (r.ok) void alice.client.onServerFrame(r.frame);
    });
    ws.addEventListener("close", (e) => {
      closed = e.code;
      alice.client.onDisconnected();
    });
    await until(() => closed === 4005, "refused with 4005");
    expect(alice.events.filter((e) => e.type === "ready").length).toBe(readyBefore);
    const states = alice.events.flatMap((e) => (e.type === "connection" ? [e.state] : []));
    expect(states.at(-1)).toBe("retired");

    // Taking it back: the old engine claims, the restored one is retired in turn.
    await alice.client.reclaimDevice();
    await connect(hub, alice);
    await until(
      () => restored.events.some((e) => e.type === "connection" && e.state === "retired"),
      "restored engine retired",
    );
    await bob.client.sendText("dm:alice", "back on the laptop");
    await until(() => texts(alice, D).includes("back on the laptop"), "repaired again");
    await alice.client.sendText(D, "laptop reply");
    await until(() => texts(bob, "dm:alice").includes("laptop reply"), "reply");
    await disconnect(alice);
    await disconnect(bob);
  });
});
