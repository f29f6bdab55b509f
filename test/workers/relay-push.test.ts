/**
 * Web Push from the relay inside workerd (PROTOCOL.md §7.9): the Worker's /push/vapid route, the
 * `push_subscribe` frame, and the Durable Object's alarm sending to the tests' local push service
 * (test/support/push-service.ts, started by the project's global setup), which verifies every
 * request's VAPID JWT and decrypts its RFC 8291 payload.
 */
import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import { PUSH_PAYLOAD } from "../../worker/relay/push";
import { freshHub, newKeys, TestClient } from "./support/client";
import { control, newSubscription, received, until } from "./support/push-service";
import { countTable } from "./support/relay-store";

/** A new subscription of the local push service, registered for `c`'s device (§7.9). */
async function subscribed(c: TestClient): Promise<Awaited<ReturnType<typeof newSubscription>>> {
  const sub = await newSubscription();
  c.send({
    v: 1,
    t: "push_subscribe",
    id: "p1",
    endpoint: sub.endpoint,
    keys: sub.keys,
    vapidKey: env.VAPID_PUBLIC_KEY,
  });
  expect(await c.next("accepted")).toMatchObject({ id: "p1" });
  return sub;
}

async function setup() {
  const hub = freshHub("push");
  const alice = await TestClient.connect(hub, "alice");
  const bob = await TestClient.connect(hub, "bob");
  const sub = await subscribed(bob.c);
  // alice is bob's contact: her messages are not message requests (§7.3.1).
  await bob.c.accept("alice");
  bob.c.close();
  await alice.c.sync();
  return { hub, alice: alice.c, sub };
}

let n = 0;
function sendToBob(c: TestClient): void {
  c.send({ v: 1, t: "send", id: `m${++n}`, to: "bob", body: "AAAA" });
}

/**
 * `from` writes to bob, offline: the one push the service then received for subscription `id`,
 * from the alarm of `object` (the object holding bob's mailbox).
 */
async function pushedOnce(object: string, from: TestClient, id: string) {
  sendToBob(from);
  await from.next("accepted");
  await until(object, async () => (await received(id)).received.length > 0, "the push");
  const r = await received(id);
  expect(r.failures).toEqual([]);
  expect(r.received).toHaveLength(1);
  return r.received[0];
}

describe("relay Web Push (workerd)", () => {
  it("GET /push/vapid returns the relay's VAPID public key, uncached", async () => {
    const res = await SELF.fetch("http://relay.test/push/vapid");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(await res.json()).toEqual({ key: env.VAPID_PUBLIC_KEY });
  });

  it("an item for an offline device sends one verified, encrypted push with nothing readable", async () => {
    const { hub, alice, sub } = await setup();
    const push = await pushedOnce(hub, alice, sub.id);
    expect(push).toMatchObject({
      plaintext: PUSH_PAYLOAD,
      vapidKey: env.VAPID_PUBLIC_KEY,
      topic: "parley",
      ttl: "86400",
    });
    expect(push?.plaintext).not.toMatch(/alice|bob/);
    alice.close();
  });

  it("coalesces 100 messages into a handful of pushes", async () => {
    const { hub, alice, sub } = await setup();
    for (let i = 0; i < 100; i++) sendToBob(alice);
    for (let i = 0; i < 100; i++) await alice.next("accepted");
    await until(hub, async () => (await received(sub.id)).received.length > 0, "the push");
    const count = (await received(sub.id)).received.length;
    expect(count).toBeGreaterThanOrEqual(1);
    expect(count).toBeLessThanOrEqual(3);
    alice.close();
  });

  it("410 from the push service deletes the subscription", async () => {
    const { hub, alice, sub } = await setup();
    expect(await countTable(hub, "push_subs")).toBe(1);
    await control(`expire/${sub.id}`, {});
    sendToBob(alice);
    await alice.next("accepted");
    await until(hub, async () => (await countTable(hub, "push_subs")) === 0, "the deletion");
    expect((await received(sub.id)).attempts.map((a) => a.status)).toEqual([410]);
    alice.close();
  });

  it("5xx is retried until the push service accepts", async () => {
    const { hub, alice, sub } = await setup();
    await control(`respond/${sub.id}`, [{ status: 500 }]);
    sendToBob(alice);
    await alice.next("accepted");
    await until(hub, async () => (await received(sub.id)).received.length > 0, "the retry");
    expect((await received(sub.id)).attempts.map((a) => a.status)).toEqual([500, 201]);
    alice.close();
  });

  it("a restore that claims the identity on another device ends the old device's subscription", async () => {
    const hub = freshHub("push");
    const keys = await newKeys();
    const device = (n: number) => toB64u(new Uint8Array(16).fill(n));
    const laptop = await TestClient.open(hub);
    laptop.send(await laptop.authFrame("bob", keys, { device: device(1), claim: true }));
    await laptop.next("welcome");
    await subscribed(laptop);
    expect(await countTable(hub, "push_subs")).toBe(1);
    const phone = await TestClient.open(hub);
    phone.send(await phone.authFrame("bob", keys, { device: device(2), claim: true }));
    await phone.next("welcome");
    expect(await countTable(hub, "push_subs")).toBe(0);
    phone.close();
  });

  it("a subscription made on the hub's route moves with its user to the user's object, which pushes from then on", async () => {
    const hub = freshHub("push");
    const keys = { alice: await newKeys(), bob: await newKeys() };
    const a0 = (await TestClient.connect(hub, "alice", keys.alice)).c;
    const b0 = (await TestClient.connect(hub, "bob", keys.bob)).c;
    a0.close();
    const sub = await subscribed(b0);
    await b0.accept("alice");
    b0.close();
    // bob's app updates: its first authentication on his route takes him over (§4.1).
    const routed = { routed: true };
    const bob = (await TestClient.connect(hub, "bob", keys.bob, routed)).c;
    const own = `${hub}/u/bob`;
    expect(await countTable(own, "push_subs")).toBe(1);
    bob.close();
    const alice = (await TestClient.connect(hub, "alice", keys.alice, routed)).c;
    expect((await pushedOnce(own, alice, sub.id))?.plaintext).toBe(PUSH_PAYLOAD);
    alice.close();
  });

  it("push_unsubscribe deletes the device's subscription", async () => {
    const hub = freshHub("push");
    const bob = await TestClient.connect(hub, "bob");
    await subscribed(bob.c);
    bob.c.send({ v: 1, t: "push_unsubscribe", id: "p2" });
    expect(await bob.c.next("accepted")).toMatchObject({ id: "p2" });
    expect(await countTable(hub, "push_subs")).toBe(0);
    bob.c.close();
  });

  it("refuses a private endpoint", async () => {
    const hub = freshHub("push");
    const bob = await TestClient.connect(hub, "bob");
    const sub = await newSubscription();
    bob.c.send({
      v: 1,
      t: "push_subscribe",
      id: "p1",
      endpoint: "https://192.168.1.1/push",
      keys: sub.keys,
      vapidKey: env.VAPID_PUBLIC_KEY,
    });
    expect(await bob.c.next("error")).toMatchObject({ id: "p1", code: "push_endpoint" });
    bob.c.close();
  });
});
