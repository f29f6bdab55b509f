/**
 * Acknowledged mailbox rows (PROTOCOL.md §7.3, docs/ARCHITECTURE.md "Delivery"): an
 * acknowledgement frees the row at once — it stops counting toward every bound and is never
 * delivered again — and the row itself is deleted by the relay's next
 * flush, so acknowledgements cost no write of their own. Through the product's relay in the Node
 * harness.
 */
import { expect, it } from "vitest";
import { connect, disconnect, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const delivered = (relay: NodeRelay, to: string) =>
  relay.log.filter((x) => x.to === to && x.frame.t === "deliver").length;

it("an acknowledged row stops counting at once, is never delivered again, and is deleted by the flush", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  const receipts = () => relay.log.filter((x) => x.to === "alice" && x.frame.t === "receipt");
  await say(alice, "dm:bob", "first"); // the session's handshake goes with it
  await relay.settle();
  await relay.advance(1000);
  const r0 = receipts().length;
  await say(alice, "dm:bob", "hello");
  await relay.settle();
  expect(messages(bob, "dm:alice")).toEqual(["first", "hello"]);
  // The relay told alice nothing of the acknowledgement (§7.3: delivery is confirmed end to end).
  expect(receipts()).toHaveLength(r0);
  expect(r0).toBe(0);
  // Bob acknowledged it (the engine acks every delivery): nothing is counted for him any more…
  expect(relay.stored("bob")).toBe(0);
  // …while the row waits for the flush (delivery.ts FLUSH_DELAY_MS).
  const rows = () => relay.dumpTables().mailbox?.filter((r) => r.recipient === "bob").length ?? 0;
  expect(rows()).toBe(1);
  // Bob reconnects before the flush: the row is not delivered again.
  const before = delivered(relay, "bob");
  await disconnect(bob);
  await connect(bob);
  await relay.settle();
  expect(delivered(relay, "bob")).toBe(before);
  await relay.advance(1000);
  expect(rows()).toBe(0);
  expect(relay.dumpTables().payloads ?? []).toEqual([]);
});
