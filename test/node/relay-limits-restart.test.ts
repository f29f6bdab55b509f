/**
 * Abuse bounds kept in the relay's storage (SECURITY.md L4, L16) through the real relay on a
 * clock that stands still: an object that hibernates (or is evicted, or restarts) forgets its
 * memory, and must not forget a spent frame bucket or a requester's one-time prekey quota.
 */
import { expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import { connect, disconnect, online, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

function conn(u: TestUser) {
  if (u.conn === null) throw new Error(`${u.name} is offline`);
  return u.conn;
}

/** How often the relay answered `to` with `rate_limited` so far. */
const rateLimited = (relay: NodeRelay, to: string) =>
  relay.log.filter((x) => x.to === to && x.frame.t === "error" && x.frame.code === "rate_limited")
    .length;

it("a spent identity bucket stays spent when the object hibernates and wakes", async () => {
  const relay = new NodeRelay();
  const [alice] = (await online(relay, "alice")) as [TestUser];
  // Not the exact ping text (the runtime answers that one free of charge): every one costs a
  // token of the connection and of the identity (§7.2). One connection's bucket is smaller than
  // the identity's, so two connections spend it.
  const ping = () => conn(alice).fromClient({ t: "ping", v: 1 });
  for (let i = 0; i < LIMITS.connBurst - 10; i++) ping();
  await relay.settle();
  expect(rateLimited(relay, "alice")).toBe(0);
  // A new connection, with the clock still standing.
  relay.disconnect(conn(alice));
  alice.conn = null;
  await relay.settle();
  await connect(alice);
  for (let i = 0; i < LIMITS.connBurst - 10; i++) ping();
  await relay.settle();
  const refused = rateLimited(relay, "alice");
  expect(refused).toBeGreaterThan(0);
  // The clock stands still: nothing refills. The woken object has a fresh connection bucket
  // (it lives in memory only, and refills long before an idle object hibernates), but reads
  // the identity's bucket back from storage.
  await relay.hibernate();
  ping();
  await relay.settle();
  expect(rateLimited(relay, "alice")).toBe(refused + 1);
  // Time refills it as it would have without the restart.
  relay.clock += 1000;
  ping();
  await relay.settle();
  expect(rateLimited(relay, "alice")).toBe(refused + 1);
});

it.each([
  ["the hub's route", false],
  ["users' routes", true],
])("%s: a requester's one-time prekey quota survives the object's restart", async (_, routed) => {
  const relay = new NodeRelay("main", "https://parley.test", null, "everyone", routed);
  const [bob, eve] = (await online(relay, "bob", "eve")) as [TestUser, TestUser];
  expect(relay.oneTimePrekeys("bob")).toBeGreaterThan(LIMITS.oneTimePrekeyBurstPerRequester);
  let n = 0;
  const fetch = async () => {
    const id = `f${++n}`;
    conn(eve).fromClient({ v: 1, t: "fetch_bundle", id, username: "bob" });
    await relay.settle();
    const b = relay.log.find((x) => x.frame.t === "bundle" && x.frame.id === id)?.frame;
    if (b?.t !== "bundle") throw new Error("no bundle");
    return b.oneTimePrekey;
  };
  for (let i = 0; i < LIMITS.oneTimePrekeyBurstPerRequester; i++) {
    expect(await fetch()).not.toBeNull();
  }
  expect(await fetch()).toBeNull();
  await relay.hibernate();
  expect(await fetch()).toBeNull();
  // A reconnect of the requester changes nothing either (the quota is per identity).
  await disconnect(eve);
  await connect(eve);
  expect(await fetch()).toBeNull();
  // One per refill period, as before the restart.
  relay.clock += LIMITS.oneTimePrekeyRefillSec * 1000;
  expect(await fetch()).not.toBeNull();
  expect(await fetch()).toBeNull();
  expect(bob.conn).not.toBeNull();
});
