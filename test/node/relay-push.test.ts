/**
 * Web Push from the real relay (PROTOCOL.md §7.9), through NodeRelay (the production Hub and
 * Store) to a local push service on 127.0.0.1 that verifies each request's VAPID JWT and decrypts
 * its RFC 8291 payload (test/support/push-service.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ed25519KeyPairFromSeed, randomBytes } from "../../shared/crypto";
import { type ClientFrame, LIMITS, type ServerFrame } from "../../shared/protocol";
import {
  afterAttempt,
  classify,
  endpointAllowed,
  IDLE_PUSH_STATE,
  PUSH_PAYLOAD,
  parseRetryAfter,
  queued,
} from "../../worker/relay/push";
import type { PushConfig } from "../../worker/relay/push-send";
import { connect, disconnect, newUser, online, type TestUser } from "../support/clients";
import { link, newPhone, through } from "../support/linked-device";
import { NodeRelay } from "../support/node-relay";
import { PushService, type TestSubscription, testVapidKeys } from "../support/push-service";

let service: PushService;
const vapid = testVapidKeys();
const config: PushConfig = { ...vapid, subject: "mailto:ops@parley.test", allowLoopback: true };

beforeAll(async () => {
  service = await PushService.start();
});
afterAll(async () => {
  await service.stop();
});

let seq = 0;
function raw(u: Pick<TestUser, "conn">, frame: ClientFrame): void {
  u.conn?.fromClient(frame);
}

/** The relay's answer to the frame with this id. */
function answer(relay: NodeRelay, id: string): ServerFrame | undefined {
  return relay.log.find(
    (x) => (x.frame.t === "accepted" || x.frame.t === "error") && x.frame.id === id,
  )?.frame;
}

async function subscribe(
  relay: NodeRelay,
  u: Pick<TestUser, "conn">,
  sub: Pick<TestSubscription, "endpoint" | "keys">,
  vapidKey = vapid.publicKey,
): Promise<ServerFrame | undefined> {
  const id = `push${++seq}`;
  raw(u, { v: 1, t: "push_subscribe", id, endpoint: sub.endpoint, keys: sub.keys, vapidKey });
  await relay.settle();
  return answer(relay, id);
}

/** A direct item from `from` to `to` (opaque body: the relay never looks inside). */
async function sendTo(relay: NodeRelay, from: TestUser, to: string): Promise<void> {
  raw(from, { v: 1, t: "send", id: `m${++seq}`, to, body: "AAAA" });
  await relay.settle();
}

async function setup(): Promise<{
  relay: NodeRelay;
  alice: TestUser;
  bob: TestUser;
  sub: TestSubscription;
}> {
  const relay = new NodeRelay("main", "https://parley.test", config);
  const [alice, bob] = await online(relay, "alice", "bob");
  if (!alice || !bob) throw new Error("setup");
  const sub = service.subscribe();
  expect(await subscribe(relay, bob, sub)).toMatchObject({ t: "accepted" });
  await disconnect(bob);
  return { relay, alice, bob, sub };
}

describe("relay Web Push", () => {
  it("wakes an offline device with a VAPID-signed, RFC 8291-encrypted push that holds nothing readable", async () => {
    const { relay, alice, sub } = await setup();
    await sendTo(relay, alice, "bob");
    await relay.advance(0);
    const got = service.pushesTo(sub);
    expect(got).toHaveLength(1);
    const p = got[0];
    if (!p) throw new Error("no push");
    // Verified by the service: ES256 over aud/exp/sub with the relay's key, and decrypted.
    expect(p.vapidKey).toBe(vapid.publicKey);
    expect(p.jwt.sub).toBe("mailto:ops@parley.test");
    expect(p.plaintext).toBe(PUSH_PAYLOAD);
    expect(p.plaintext).not.toMatch(/alice|bob|AAAA/);
    // Padded to the whole 4 KiB record: the size says nothing either.
    expect(p.bodyBytes).toBe(4096);
    expect(p.ttl).toBe(String(LIMITS.pushTtlSec));
    expect(p.urgency).toBe("high");
    expect(p.topic).toBe("parley");
    expect(service.failures).toEqual([]);
    expect(relay.failures).toEqual([]);
  });

  it("coalesces a burst: 100 messages over 10 s are at most three pushes", async () => {
    const { relay, alice, sub } = await setup();
    for (let i = 0; i < 100; i++) {
      await sendTo(relay, alice, "bob");
      await relay.advance(100);
    }
    const n = service.pushesTo(sub).length;
    // One at once, then at most one per LIMITS.pushMinIntervalMs (5 s).
    expect(n).toBeGreaterThanOrEqual(2);
    expect(n).toBeLessThanOrEqual(3);
    expect(service.failures).toEqual([]);
  });

  it("sends nothing while the device is connected, nor for what it fetched on reconnecting", async () => {
    const { relay, alice, bob, sub } = await setup();
    await sendTo(relay, alice, "bob");
    await relay.advance(0);
    expect(service.pushesTo(sub)).toHaveLength(1);
    await sendTo(relay, alice, "bob"); // within the interval: waits
    expect(relay.pushSubscription("bob")?.pending).toBe(true);
    bob.conn = relay.connect(bob.client);
    await relay.settle();
    expect(relay.pushSubscription("bob")?.pending).toBe(false);
    await sendTo(relay, alice, "bob");
    await relay.advance(60_000);
    expect(service.pushesTo(sub)).toHaveLength(1);
  });

  it("deletes a subscription the push service says is gone (410)", async () => {
    const { relay, alice, sub } = await setup();
    service.expire(sub);
    await sendTo(relay, alice, "bob");
    await relay.advance(0);
    expect(service.attempts.filter((a) => a.subscription === sub.id)).toEqual([
      { subscription: sub.id, status: 410 },
    ]);
    expect(relay.pushSubscription("bob")).toBeNull();
    await relay.advance(10_000);
    await sendTo(relay, alice, "bob");
    await relay.advance(10_000);
    expect(service.attempts.filter((a) => a.subscription === sub.id)).toHaveLength(1);
  });

  it("retries 429 (after Retry-After) and 5xx with backoff, then delivers", async () => {
    const { relay, alice, sub } = await setup();
    service.respond(sub, { status: 429, retryAfter: "30" }, { status: 503 });
    await sendTo(relay, alice, "bob");
    await relay.advance(0);
    const statuses = () =>
      service.attempts.filter((a) => a.subscription === sub.id).map((a) => a.status);
    expect(statuses()).toEqual([429]);
    await relay.advance(29_000);
    expect(statuses()).toEqual([429]); // Retry-After holds it back
    await relay.advance(1000);
    expect(statuses()).toEqual([429, 503]);
    await relay.advance(10_000);
    expect(statuses()).toEqual([429, 503, 201]);
    expect(service.pushesTo(sub)).toHaveLength(1);
    expect(relay.pushSubscription("bob")?.pending).toBe(false);
  });

  it("gives a push up after pushMaxAttempts failures but keeps the subscription", async () => {
    const { relay, alice, sub } = await setup();
    service.respond(
      sub,
      ...Array.from({ length: LIMITS.pushMaxAttempts }, () => ({ status: 500 })),
    );
    await sendTo(relay, alice, "bob");
    await relay.advance(60 * 60_000);
    expect(service.attempts.filter((a) => a.subscription === sub.id)).toHaveLength(
      LIMITS.pushMaxAttempts,
    );
    expect(relay.pushSubscription("bob")).toMatchObject({ pending: false });
  });

  it("refuses endpoints it must not fetch, a stale VAPID key, and push when not configured", async () => {
    const relay = new NodeRelay("main", "https://parley.test", config);
    const [bob] = await online(relay, "bob");
    if (!bob) throw new Error("setup");
    const keys = service.subscribe().keys;
    for (const endpoint of [
      "https://10.0.0.1/push/x",
      "https://[::1]/push/x",
      "https://localhost/push/x",
      "https://push.internal/x",
      "https://push.example.org:8443/x",
      "http://push.example.org/x",
      "http://127.0.0.2:9000/x",
      "http://127.0.0.1/x",
      "https://user@push.example.org/x",
      "not a url",
    ]) {
      expect(await subscribe(relay, bob, { endpoint, keys }), endpoint).toMatchObject({
        t: "error",
        code: "push_endpoint",
      });
    }
    expect(relay.pushSubscription("bob")).toBeNull();
    const other = testVapidKeys().publicKey;
    expect(
      await subscribe(relay, bob, { endpoint: "https://push.example.org/x", keys }, other),
    ).toMatchObject({ t: "error", code: "push_key_changed" });
    expect(
      await subscribe(relay, bob, { endpoint: "https://push.example.org/x", keys }),
    ).toMatchObject({ t: "accepted" });

    const off = new NodeRelay();
    const [carol] = await online(off, "carol");
    if (!carol) throw new Error("setup");
    expect(
      await subscribe(off, carol, { endpoint: "https://push.example.org/x", keys }),
    ).toMatchObject({ t: "error", code: "push_unavailable" });
  });

  it("push_unsubscribe forgets the device's subscription", async () => {
    const relay = new NodeRelay("main", "https://parley.test", config);
    const [alice, bob] = await online(relay, "alice", "bob");
    if (!alice || !bob) throw new Error("setup");
    const sub = service.subscribe();
    await subscribe(relay, bob, sub);
    raw(bob, { v: 1, t: "push_unsubscribe", id: "u1" });
    await relay.settle();
    expect(answer(relay, "u1")).toMatchObject({ t: "accepted" });
    expect(relay.pushSubscription("bob")).toBeNull();
    await disconnect(bob);
    await sendTo(relay, alice, "bob");
    await relay.advance(10_000);
    expect(service.attempts.filter((a) => a.subscription === sub.id)).toHaveLength(0);
  });

  it("a pending push survives the object's hibernation", async () => {
    const { relay, alice, sub } = await setup();
    await sendTo(relay, alice, "bob");
    await relay.advance(0);
    await sendTo(relay, alice, "bob");
    await relay.hibernate();
    expect(relay.pushSubscription("bob")?.pending).toBe(true);
    await relay.advance(LIMITS.pushMinIntervalMs);
    expect(service.pushesTo(sub)).toHaveLength(2);
  });
});

describe("Web Push when a user moves to its user's route (PROTOCOL.md §4.1)", () => {
  it("a device's subscription moves with its user: a phone that is not running is woken for what comes there", async () => {
    const relay = new NodeRelay("main", "https://parley.test", config, "contacts", false);
    const seed = randomBytes(32);
    const alice = await newUser(relay, "alice", { identity: await ed25519KeyPairFromSeed(seed) });
    const [bob] = (await online(relay, "bob")) as [TestUser];
    await connect(alice);
    const phone = await newPhone(relay);
    await link(relay, alice, seed, phone);
    for (let i = 0; i < 8; i++) await relay.settle();
    const phoneId = (await through(relay, alice.client.ownDevices())).devices.find(
      (d) => d.name === "phone",
    )?.id;
    if (phoneId === undefined || phone.client === null) throw new Error("the phone did not link");
    const address = `alice.${phoneId}`;
    // On the hub's route the phone subscribes, then its app is closed.
    const sub = service.subscribe();
    expect(await subscribe(relay, phone, sub)).toMatchObject({ t: "accepted" });
    relay.disconnect(phone.conn);
    await relay.settle();
    // The app updates on the laptop, and on bob's side: both take their users' routes.
    relay.routed = true;
    await disconnect(alice, bob);
    await connect(alice, bob);
    const mine = relay.userObject("alice").life.hub.pushes.subscription(address);
    expect(mine?.endpoint).toBe(sub.endpoint);
    expect(mine?.state.pending).toBe(false);
    // bob writes to the phone: alice's object stores it for the phone and wakes it.
    raw(bob, { v: 1, t: "send", id: `m${++seq}`, to: "alice", device: phoneId, body: "AAAA" });
    for (let i = 0; i < 4; i++) await relay.settle();
    await relay.advance(0);
    const got = service.pushesTo(sub);
    expect(got).toHaveLength(1);
    expect(got[0]?.plaintext).toBe(PUSH_PAYLOAD);
    expect(service.failures).toEqual([]);
    // Only the identity's own hand-over carries it: another user's object holds none.
    expect(relay.userObject("bob").life.hub.pushes.subscription(address)).toBeNull();
  });
});

describe("push rules (worker/relay/push.ts)", () => {
  it("classifies push service answers (RFC 8030 §5, §7.3, §8.4)", () => {
    expect(classify(201, null, 0)).toEqual({ kind: "sent" });
    expect(classify(404, null, 0)).toEqual({ kind: "gone" });
    expect(classify(410, null, 0)).toEqual({ kind: "gone" });
    expect(classify(429, "7", 0)).toEqual({ kind: "retry", retryAfterMs: 7000 });
    expect(classify(502, null, 0)).toEqual({ kind: "retry", retryAfterMs: null });
    expect(classify(400, null, 0)).toEqual({ kind: "refused" });
    expect(classify(413, null, 0)).toEqual({ kind: "refused" });
    expect(classify(301, null, 0)).toEqual({ kind: "refused" });
  });

  it("reads Retry-After as seconds or an HTTP date, and ignores anything else", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now)).toBe(30_000);
    expect(parseRetryAfter("soon", now)).toBeNull();
    expect(parseRetryAfter("-1", now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });

  it("coalesces: queued while pending changes nothing; after a push the next waits the interval", () => {
    const first = queued(IDLE_PUSH_STATE, 1000);
    expect(first).toEqual({ pending: true, dueAt: 1000, lastSentAt: 0, attempts: 0 });
    expect(queued(first, 1500)).toBe(first);
    const sent = afterAttempt(first, { kind: "sent" }, 1000, 1200);
    expect(sent).toEqual({ pending: false, dueAt: 0, lastSentAt: 1000, attempts: 0 });
    if (sent === null) throw new Error("deleted");
    expect(queued(sent, 2000).dueAt).toBe(1000 + LIMITS.pushMinIntervalMs);
    expect(queued(sent, 1000 + LIMITS.pushMinIntervalMs + 1).dueAt).toBe(
      1000 + LIMITS.pushMinIntervalMs + 1,
    );
  });

  it("backs off exponentially, honours a longer Retry-After, and deletes on gone", () => {
    let st = queued(IDLE_PUSH_STATE, 0);
    const waits: number[] = [];
    for (let i = 0; i < LIMITS.pushMaxAttempts - 1; i++) {
      const next = afterAttempt(st, { kind: "retry", retryAfterMs: null }, 0, 0);
      if (next === null) throw new Error("deleted");
      waits.push(next.dueAt);
      st = next;
    }
    expect(waits).toEqual([2000, 4000, 8000, 16000]);
    const last = afterAttempt(st, { kind: "retry", retryAfterMs: null }, 0, 0);
    expect(last?.pending).toBe(false);
    const later = afterAttempt(
      queued(IDLE_PUSH_STATE, 0),
      { kind: "retry", retryAfterMs: 60_000 },
      0,
      0,
    );
    expect(later?.dueAt).toBe(60_000);
    expect(afterAttempt(st, { kind: "gone" }, 0, 0)).toBeNull();
  });

  it("admits public https push services only (and loopback only when allowed)", () => {
    for (const ok of [
      "https://fcm.googleapis.com/fcm/send/abc",
      "https://updates.push.services.mozilla.com/wpush/v2/abc",
      "https://web.push.apple.com/QGx",
      "https://wns2-par02p.notify.windows.com/w/?token=abc",
    ]) {
      expect(endpointAllowed(ok, false), ok).toBe(true);
    }
    for (const bad of [
      "https://127.0.0.1/x",
      "https://0x7f000001/x",
      "https://2130706433/x",
      "https://[fd00::1]/x",
      "https://metadata/x",
      "https://printer.local/x",
      "https://a.localhost/x",
      "https://fcm.googleapis.com:444/x",
      "ftp://fcm.googleapis.com/x",
      "http://127.0.0.1:8080/x",
      `https://fcm.googleapis.com/${"a".repeat(LIMITS.maxPushEndpointChars)}`,
    ]) {
      expect(endpointAllowed(bad, false), bad).toBe(false);
    }
    expect(endpointAllowed("http://127.0.0.1:8080/x", true)).toBe(true);
    expect(endpointAllowed("http://localhost:8080/x", true)).toBe(false);
  });
});
