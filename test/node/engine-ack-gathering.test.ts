/**
 * The engine's runner gathers acknowledgements (PROTOCOL.md §7.3, §10.1): the acks of inputs
 * queued together leave as one `ack` frame once the queue is empty, or once ACK_GATHER are due,
 * so a mailbox drain of n items costs the relay about n / ACK_GATHER acknowledgement events
 * instead of n. Frames reach the engine as the PWA hands them over (not awaiting each one),
 * through the product's relay in the Node harness.
 */
import { expect, it } from "vitest";
import { ACK_GATHER } from "../../shared/core/client";
import {
  connect,
  disconnect,
  errors,
  messages,
  online,
  say,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

/** bob is offline, and his mailbox holds `n` texts from alice, a contact of his. */
async function backlog(n: number) {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await say(alice, "dm:bob", "first"); // the session's handshake goes with it
  await say(bob, "dm:alice", "hi"); // bob answers: alice is his contact, not a message request
  await disconnect(bob);
  const texts = Array.from({ length: n }, (_, i) => `text ${i}`);
  for (const t of texts) await alice.client.sendText("dm:bob", t);
  await relay.settle();
  expect(relay.stored("bob")).toBe(n);
  return { relay, bob, texts };
}

it("a mailbox drain is acknowledged in a few frames, every item once, and nothing comes again", async () => {
  const { relay, bob, texts } = await backlog(100);

  const acks = () =>
    relay.clientLog.flatMap((x) => (x.from === "bob" && x.frame.t === "ack" ? [x.frame.mids] : []));
  const before = acks().length;
  await connect(bob);
  await relay.settle();
  expect(messages(bob, "dm:alice")).toEqual(["first", ...texts]);
  // Every delivered item acknowledged exactly once…
  const drained = acks().slice(before);
  const mids = drained.flat();
  expect(new Set(mids).size).toBe(mids.length);
  const delivered = relay.log.filter((x) => x.to === "bob" && x.frame.t === "deliver");
  expect(mids.length).toBeGreaterThanOrEqual(texts.length);
  // …in frames of up to ACK_GATHER mids, not one frame per item.
  for (const m of drained) expect(m.length).toBeLessThanOrEqual(ACK_GATHER);
  expect(drained.length).toBeLessThanOrEqual(Math.ceil(texts.length / ACK_GATHER) + 3);
  // The relay holds nothing for bob and sends nothing again on his next connection.
  expect(relay.stored("bob")).toBe(0);
  const deliveredBefore = delivered.length;
  await disconnect(bob);
  await connect(bob);
  await relay.settle();
  expect(relay.log.filter((x) => x.to === "bob" && x.frame.t === "deliver").length).toBe(
    deliveredBefore,
  );
  expect(errors(bob)).toEqual([]);
});

it("acknowledgements held when the socket closes go nowhere; their items come again, are acknowledged as replays and shown once", async () => {
  const { relay, bob, texts } = await backlog(10);
  // bob's socket closes while the drain's inputs are queued in his engine (as a phone's
  // connection drops mid-drain): the acknowledgements due then go nowhere.
  const off = bob.client.subscribe((e) => {
    if (e.type === "message" && e.message.text === "text 2" && bob.conn !== null) {
      relay.disconnect(bob.conn);
      bob.conn = null;
    }
  });
  bob.conn = relay.connect(bob.client, bob.name);
  await relay.settle();
  off();
  expect(bob.conn).toBeNull();
  // Something was left unacknowledged by the close…
  const left = relay.stored("bob");
  expect(left).toBeGreaterThan(0);
  await connect(bob);
  await relay.settle();
  // …and came again on the next connection: each text shown once, the relay holds nothing.
  expect(
    relay.log.filter((x) => x.to === "bob" && x.frame.t === "deliver").length,
  ).toBeGreaterThanOrEqual(texts.length + left);
  expect(messages(bob, "dm:alice")).toEqual(["first", ...texts]);
  expect(relay.stored("bob")).toBe(0);
  expect(errors(bob)).toEqual([]);
});
