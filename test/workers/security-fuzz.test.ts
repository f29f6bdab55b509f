/**
 * A bounded random-frame fuzz against the real Durable Object (docs/SECURITY.md §6): six
 * authenticated clients send a fixed-seed mix of schema-valid frames with random content (joins,
 * commits, group sends, sends, acks, prekey uploads, bundle fetches for random names), one-field
 * mutations of them, and junk. Afterwards: the relay never answered `internal`, never sent a frame
 * outside the wire contract, no promise rejection went unhandled — and honest engines in the same
 * hub still authenticate, form a group and chat.
 */
import { SELF } from "cloudflare:test";
import fc from "fast-check";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { ParleyClient } from "../../shared/core/client";
import type { ParleyEvent } from "../../shared/core/client-api";
import { MemoryStore } from "../../shared/core/store";
import { generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { LIMITS, parseServerFrame } from "../../shared/protocol";
import { RELINK_MS } from "../../worker/relay/group-home";
import { freshHub, ORIGIN, oneTimePrekeys, signedPrekey, TestClient } from "./support/client";

const unhandled: unknown[] = [];
const onUnhandled = (e: PromiseRejectionEvent) => unhandled.push(e.reason);

const names = ["alice", "bob", "f0", "f1", "f2", "f3", "zed", "g", "broadcast"];
const name = fc.constantFrom(...names);
const b64 = (max: number) => fc.uint8Array({ minLength: 1, maxLength: max }).map(toB64u);
const id = fc.string({ minLength: 1, maxLength: 8 });
const epoch = fc.integer({ min: 0, max: 5 });

function frames(spk: Awaited<ReturnType<typeof signedPrekey>>) {
  const valid = fc.oneof(
    fc.record({ v: fc.constant(1), t: fc.constant("send"), id, to: name, body: b64(120) }),
    fc.record({ v: fc.constant(1), t: fc.constant("join"), id, group: name }),
    fc.record({ v: fc.constant(1), t: fc.constant("leave"), id, group: name }),
    fc.record({
      v: fc.constant(1),
      t: fc.constant("commit"),
      id,
      group: name,
      parentEpoch: epoch,
      members: fc.uniqueArray(name, { minLength: 1, maxLength: 4 }),
      core: b64(200),
      wraps: fc.uniqueArray(fc.record({ to: name, wrap: b64(80) }), {
        minLength: 1,
        maxLength: 4,
        selector: (w) => w.to,
      }),
    }),
    fc.record({
      v: fc.constant(1),
      t: fc.constant("group_send"),
      id,
      group: name,
      epoch,
      body: b64(120),
    }),
    fc.record({
      v: fc.constant(1),
      t: fc.constant("ack"),
      mids: fc.array(fc.integer({ min: 1, max: 50 }).map(String), { minLength: 1, maxLength: 5 }),
    }),
    fc.record({ v: fc.constant(1), t: fc.constant("fetch_bundle"), id, username: name }),
    fc.record({
      v: fc.constant(1),
      t: fc.constant("upload_prekeys"),
      id,
      signedPrekey: fc.constantFrom(spk, { ...spk, sig: toB64u(randomBytes(64)) }),
      oneTimePrekeys: fc
        .tuple(fc.nat({ max: 1_000_000 }), fc.nat({ max: 5 }))
        .map(([from, n]) => oneTimePrekeys(from, n)),
    }),
  );
  const mutated = fc.tuple(valid, fc.nat(), fc.jsonValue({ maxDepth: 2 })).map(([f, i, val]) => {
    const keys = Object.keys(f);
    return JSON.stringify({ ...f, [keys[i % keys.length] as string]: val });
  });
  return fc.oneof(
    { weight: 5, arbitrary: valid.map((f) => JSON.stringify(f)) },
    { weight: 3, arbitrary: mutated },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((j) => JSON.stringify(j)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 60 }) },
  );
}

interface Honest {
  client: ParleyClient;
  events: ParleyEvent[];
  ws: WebSocket;
}

/** An honest engine; `routed`: on its user's route (PROTOCOL.md §4.1), else the hub's. */
async function honest(hub: string, name: string, routed: boolean): Promise<Honest> {
  const identity = await generateIdentityKeyPair();
  const events: ParleyEvent[] = [];
  let ws: WebSocket | null = null;
  const client = await ParleyClient.create({
    hub,
    origin: ORIGIN,
    username: name,
    identity,
    store: new MemoryStore(),
    transport: { send: (f) => sendOpen(ws, f) },
    now: () => Date.now(),
  });
  client.subscribe((e) => events.push(e));
  const route = routed ? `&user=${name}` : "";
  const res = await SELF.fetch(`${ORIGIN}/ws?hub=${hub}${route}`, {
    headers: { Upgrade: "websocket", Origin: ORIGIN },
  });
  if (res.webSocket === null) throw new Error("no socket");
  ws = res.webSocket;
  ws.accept();
  client.onConnected();
  ws.addEventListener("message", (e) => {
    const r = parseServerFrame(e.data);
    if (!r.ok) throw new Error(`relay sent an invalid frame: ${r.code}`);
    void client.onServerFrame(r.frame);
  });
  await until(() => events.some((e) => e.type === "ready"), `${name} ready`);
  return { client, events, ws };
}

/**
 * A frame on the socket if it is still open. An engine's timers outlive a test's sockets; a
 * send on a closed socket throws in workerd, and the engine's outbox keeps the frame anyway.
 */
function sendOpen(ws: WebSocket | null | undefined, f: unknown): void {
  if (ws !== null && ws !== undefined && ws.readyState === WebSocket.OPEN)
    ws.send(JSON.stringify(f));
}

async function until(pred: () => boolean, what: string, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const inbox = (u: Honest, conv: string) =>
  u.events.flatMap((e) =>
    e.type === "message" && e.message.conversationId === conv && e.message.direction === "in"
      ? [e.message.text]
      : [],
  );

describe("security: random-frame fuzz against the Durable Object", () => {
  beforeEach(() => {
    unhandled.length = 0;
    globalThis.addEventListener?.("unhandledrejection", onUnhandled);
  });
  afterEach(() => {
    globalThis.removeEventListener?.("unhandledrejection", onUnhandled);
  });
  // What the relay's objects still do after the last run (a group's home opens its links again
  // at its alarm, RELINK_MS after its last batch) runs before the test environment is torn down.
  afterAll(() => new Promise((r) => setTimeout(r, RELINK_MS + 1000)));

  // Both routes: on users' routes a group's frames reach members by their homes' links.
  it.each([
    ["the hub's route", false],
    ["users' routes", true],
  ])(
    "570 random frames from six clients on %s: no crash, no internal error, honest users served",
    async (_route, routed) => {
      const hub = freshHub("fuzz");
      const fuzzers: TestClient[] = [];
      // Six identities, each with its own buckets and malformed counter.
      for (const [i, n] of ["f0", "f1", "f2", "f3", "f4", "f5"].entries()) {
        const { c } = await TestClient.connect(hub, n, undefined, { routed });
        const keys = c.keys;
        if (keys === null) throw new Error("keys");
        // Under each connection's burst and malformed budget: the fuzz tests handlers, not limits.
        const per = Math.min(LIMITS.connBurst, LIMITS.maxMalformed) - 5;
        const sample = fc.sample(frames(await signedPrekey(keys, 1)), {
          numRuns: per,
          seed: 7000 + i,
        });
        for (const raw of sample) c.sendRaw(raw);
        fuzzers.push(c);
      }
      for (const c of fuzzers) if (c.closed === null) await c.sync();
      for (const c of fuzzers) {
        expect(c.invalid).toEqual([]);
        const codes = c.queue.flatMap((f) => (f.t === "error" ? [f.code] : []));
        expect(codes).not.toContain("internal");
        // The fuzz reached the handlers: typed refusals from deep inside, not just the parser.
        expect(
          codes.some((x) =>
            ["not_member", "stale_epoch", "roster_mismatch", "unknown_user"].includes(x),
          ),
        ).toBe(true);
        expect(c.queue.some((f) => f.t === "accepted")).toBe(true);
      }
      // Honest users in the same hub: authenticate, chat 1:1 and in a group.
      const alice = await honest(hub, "alice", routed);
      const bob = await honest(hub, "bob", routed);
      await alice.client.startChat("bob");
      await until(
        () => alice.client.conversations().find((c) => c.id === "dm:bob")?.session === "ready",
        "secure",
      );
      await alice.client.sendText("dm:bob", "after the fuzz");
      await until(() => inbox(bob, "dm:alice").includes("after the fuzz"), "bob reads");
      const fresh = `grp${Date.now().toString(36).slice(-6)}`;
      await alice.client.joinGroup(fresh);
      await until(
        () => (alice.client.conversations().find((c) => c.id === `group:${fresh}`)?.epoch ?? 0) > 0,
        "group",
      );
      await bob.client.joinGroup(fresh);
      await until(
        () =>
          bob.client.conversations().find((c) => c.id === `group:${fresh}`)?.members.length === 2,
        "bob in group",
      );
      await bob.client.sendText(`group:${fresh}`, "group after the fuzz");
      await until(
        () => inbox(alice, `group:${fresh}`).includes("group after the fuzz"),
        "group read",
      );
      expect(unhandled).toEqual([]);
      for (const c of fuzzers) c.close();
      alice.ws.close(1000);
      bob.ws.close(1000);
    },
    60_000,
  );
});
