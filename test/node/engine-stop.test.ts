/**
 * Stopping an engine (ParleyClient.stop, PROTOCOL.md §10.2) before its store is rewritten: the
 * PWA re-keys every stored record when its passphrase lock is turned on or off
 * (pwa/src/storage/lock.ts), and clears the store when a new name is refused. A write of the old
 * instance landing in the middle would be lost (the re-key writes back what it read) or sealed
 * under a key the store no longer uses, so the app stops the engine and waits for it first.
 */
import { expect, it } from "vitest";
import type { StoreOp } from "../../shared/core/client-api";
import { MemoryStore } from "../../shared/core/store";
import { connect, newUser, say, timers } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

/** A MemoryStore whose next batch waits until `release` once `hold` was called. */
class GatedStore extends MemoryStore {
  #gate: Promise<void> | null = null;
  #open: (() => void) | null = null;
  waiting = false;
  hold(): void {
    this.#gate = new Promise((r) => {
      this.#open = r;
    });
  }
  release(): void {
    this.#open?.();
    this.#gate = null;
  }
  override async batch(ops: readonly StoreOp[]): Promise<void> {
    if (this.#gate !== null) {
      this.waiting = true;
      await this.#gate;
      this.waiting = false;
    }
    return super.batch(ops);
  }
}

async function pair(bobStore?: MemoryStore) {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob", bobStore ? { store: bobStore } : {});
  await connect(alice, bob);
  await say(alice, "dm:bob", "first");
  await say(bob, "dm:alice", "hi");
  return { relay, alice, bob };
}

it("a stopped engine writes and sends nothing more: not its timers, not a frame, not a verb", async () => {
  const { relay, alice, bob } = await pair();
  const before = bob.store.dump();
  const sentBefore = relay.clientLog.filter((x) => x.from === "bob").length;
  await bob.client.stop();
  // alice writes: the relay delivers to bob's connection, whose engine is stopped.
  await say(alice, "dm:bob", "after the stop");
  const d = relay.log.filter((x) => x.to === "bob" && x.frame.t === "deliver").at(-1);
  expect(d).toBeDefined();
  if (d !== undefined) await bob.client.onServerFrame(d.frame);
  timers.fire();
  await expect(bob.client.sendText("dm:alice", "from a stopped engine")).rejects.toThrow();
  await relay.settle();
  await bob.client.whenIdle();
  expect(bob.store.dump()).toBe(before);
  expect(relay.clientLog.filter((x) => x.from === "bob").length).toBe(sentBefore);
});

it("stop waits for the write in flight: once it resolves, the store is the caller's", async () => {
  const store = new GatedStore();
  const { relay, bob } = await pair(store);
  store.hold();
  const sending = bob.client.sendText("dm:alice", "in flight").catch(() => "refused");
  for (let i = 0; i < 100 && !store.waiting; i++) await new Promise((r) => setTimeout(r, 5));
  expect(store.waiting).toBe(true);
  let stopped = false;
  const stopping = bob.client.stop().then(() => {
    stopped = true;
  });
  await new Promise((r) => setTimeout(r, 30));
  // The batch is still waiting: stop has not resolved, so nobody may rewrite the store yet.
  expect(stopped).toBe(false);
  store.release();
  await stopping;
  // The message queued before the stop was kept: its write-ahead record is in the store.
  expect(await sending).not.toBe("refused");
  const after = store.dump();
  expect(after).toContain("in flight");
  timers.fire();
  await relay.settle();
  await bob.client.whenIdle();
  expect(store.dump()).toBe(after);
});
