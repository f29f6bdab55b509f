/**
 * Link offers over time (PROTOCOL.md §4.8.3), through the product's relay in the Node harness:
 * an offer outlives the object's hibernation (it is in storage; the waiting socket finds it again
 * through its attachment), and it expires with its socket after LIMITS.linkTtlSec, where an
 * ordinary unauthenticated socket is closed after LIMITS.authTimeoutSec.
 */
import { expect, it } from "vitest";
import { createLinkOffer } from "../../shared/core/linking";
import { CLOSE, LIMITS, type ServerFrame } from "../../shared/protocol";
import { connect, online, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

async function waiting(relay: NodeRelay) {
  const got: ServerFrame[] = [];
  let disconnected = false;
  const conn = relay.connect({
    onConnected: () => undefined,
    onServerFrame: async (f) => {
      got.push(f);
    },
    onDisconnected: () => {
      disconnected = true;
    },
  });
  await relay.settle();
  const pending = await createLinkOffer(relay.hub, "phone");
  conn.fromClient({
    v: 1,
    t: "link_offer",
    id: "o1",
    rendezvous: pending.code.rendezvous,
    offer: pending.offer,
  });
  await relay.settle();
  expect(got.map((f) => f.t)).toEqual(["hello", "accepted"]);
  return { conn, got, pending, gone: () => disconnected };
}

const answersTo = (relay: NodeRelay, user: string) =>
  relay.log.flatMap((x) => (x.to === user ? [x.frame] : []));

it("an offer survives hibernation and its answer reaches the waiting socket", async () => {
  const relay = new NodeRelay();
  const [alice] = (await online(relay, "alice")) as [TestUser];
  const phone = await waiting(relay);
  await relay.hibernate();
  alice.conn?.fromClient({
    v: 1,
    t: "link_fetch",
    id: "f1",
    rendezvous: phone.pending.code.rendezvous,
  });
  await relay.settle();
  const offered = answersTo(relay, "alice").find((f) => f.t === "link_offered");
  expect(offered?.t === "link_offered" && offered.offer).toEqual(phone.pending.offer);
  const answer = { enc: "A".repeat(1494), ciphertext: "AAAA", mac: "A".repeat(43) };
  alice.conn?.fromClient({
    v: 1,
    t: "link_answer",
    id: "a1",
    rendezvous: phone.pending.code.rendezvous,
    answer,
  });
  await relay.settle();
  expect(phone.got.at(-1)).toEqual({
    v: 1,
    t: "link_answered",
    rendezvous: phone.pending.code.rendezvous,
    answer,
  });
});

it("a waiting socket outlives the auth timeout and is closed when its offer expires", async () => {
  const relay = new NodeRelay();
  const [alice] = (await online(relay, "alice")) as [TestUser];
  const phone = await waiting(relay);
  await relay.advance(LIMITS.authTimeoutSec * 1000 + 1000);
  expect(phone.gone()).toBe(false);
  await relay.advance(LIMITS.linkTtlSec * 1000);
  expect(phone.gone()).toBe(true);
  expect(phone.conn.closing?.code).toBe(CLOSE.authTimeout);
  // Ten minutes without a frame: alice's connection went idle (§4.5); she comes back.
  await connect(alice);
  alice.conn?.fromClient({
    v: 1,
    t: "link_fetch",
    id: "f2",
    rendezvous: phone.pending.code.rendezvous,
  });
  await relay.settle();
  const e = answersTo(relay, "alice").find((f) => f.t === "error" && f.id === "f2");
  expect(e?.t === "error" && e.code).toBe("unknown_link");
  expect(relay.dumpTables().link_offers ?? []).toEqual([]);
});
