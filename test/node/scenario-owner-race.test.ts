/**
 * Story (PROTOCOL.md §10.2): a second engine takes over the store exactly between the first
 * engine's owner-generation check and its write-ahead state write. The check is an `expect` op
 * inside the same atomic batch as the write, so the older engine's write is refused
 * (`stale_state`) and nothing of it lands in the store; the newer engine goes on from the state
 * it loaded without any message key being used twice.
 */
import { describe, expect, it } from "vitest";
import type { ParleyClient } from "../../shared/core/client";
import type { StoreOp } from "../../shared/core/client-api";
import { StorePreconditionError } from "../../shared/core/client-api";
import { MemoryStore } from "../../shared/core/store";
import { connect, messages, online, restart, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

/** A MemoryStore that runs `race` (once) in the middle of the next owner check or batch. */
class RacingStore extends MemoryStore {
  race: (() => Promise<void>) | null = null;

  private async runRace(): Promise<void> {
    const r = this.race;
    this.race = null;
    if (r) await r();
  }

  override async get(key: string): Promise<unknown> {
    const value = await super.get(key);
    // The value was read; the takeover happens before the reader acts on it.
    if (key === "meta/owner") await this.runRace();
    return value;
  }

  override async batch(ops: readonly StoreOp[]): Promise<void> {
    await this.runRace();
    return super.batch(ops);
  }

  static async fromDump(json: string): Promise<RacingStore> {
    const s = new RacingStore();
    const rows = await MemoryStore.load(json).list("");
    await s.batch(rows.map(({ key, value }) => ({ op: "put" as const, key, value })));
    return s;
  }
}

describe("owner generation and write in one atomic step (§10.2)", () => {
  it("MemoryStore: a failed `expect` aborts the whole batch", async () => {
    const s = new MemoryStore();
    await s.batch([{ op: "put", key: "meta/owner", value: { gen: 2 } }]);
    await expect(
      s.batch([
        { op: "expect", key: "meta/owner", value: { gen: 1 } },
        { op: "put", key: "dm/bob", value: { x: 1 } },
      ]),
    ).rejects.toBeInstanceOf(StorePreconditionError);
    expect(await s.get("dm/bob")).toBeUndefined();
    await expect(
      s.batch([{ op: "expect", key: "missing", value: { gen: 1 } }]),
    ).rejects.toBeInstanceOf(StorePreconditionError);
    await s.batch([
      { op: "expect", key: "meta/owner", value: { gen: 2 } },
      { op: "expect", key: "missing", value: undefined },
      { op: "put", key: "dm/bob", value: { x: 2 } },
    ]);
    expect(await s.get("dm/bob")).toEqual({ x: 2 });
  });

  it("a takeover between the older engine's check and its write: the write is refused", async () => {
    const relay = new NodeRelay();
    const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await alice.client.startChat("bob");
    await relay.settle();
    await say(alice, "dm:bob", "before");
    // alice's store becomes a racing one (same content), with a fresh engine owning it.
    const store = await RacingStore.fromDump(alice.store.dump());
    await restart(alice, store);
    await connect(alice);
    const older = alice.client;
    const before = store.dump();
    store.race = async () => {
      await restart(alice); // a second tab takes over the SAME store right now
    };
    await expect(older.sendText("dm:bob", "from stale tab")).rejects.toMatchObject({
      code: "stale_state",
    });
    expect(store.race).toBeNull(); // the takeover really happened mid-commit
    // Nothing of the older engine's send reached the store: only the new owner generation.
    const after = new Map(JSON.parse(store.dump()) as [string, unknown][]);
    const was = new Map(JSON.parse(before) as [string, unknown][]);
    expect((after.get("meta/owner") as { gen: number }).gen).toBe(
      (was.get("meta/owner") as { gen: number }).gen + 1,
    );
    after.delete("meta/owner");
    was.delete("meta/owner");
    expect(after).toEqual(was);
    // The new owner continues from the state it loaded; bob reads it (no key reuse, no gap).
    await connect(alice);
    await say(alice, "dm:bob", "from owner");
    expect(messages(bob, "dm:alice")).toEqual(["before", "from owner"]);
  });

  it("two engines starting at once: exactly one owns the store (the later one)", async () => {
    const relay = new NodeRelay();
    const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await alice.client.startChat("bob");
    await relay.settle();
    const store = await RacingStore.fromDump(alice.store.dump());
    await restart(alice, store);
    let inner: ParleyClient | null = null;
    // The second start runs completely while the first has read the owner generation.
    store.race = async () => {
      await restart(alice);
      inner = alice.client;
    };
    await restart(alice);
    const outer = alice.client;
    expect(store.race).toBeNull();
    if (inner === null) throw new Error("the racing start ran");
    expect(outer).not.toBe(inner);
    await expect((inner as ParleyClient).sendText("dm:bob", "loser")).rejects.toMatchObject({
      code: "stale_state",
    });
    await connect(alice);
    await say(alice, "dm:bob", "winner");
    expect(messages(bob, "dm:alice")).toEqual(["winner"]);
  });
});
