/**
 * The engine's `ClientStore` (shared/core/client-api.ts) on IndexedDB: one object store, keys are
 * '/'-paths, `batch` is one readwrite transaction so the engine's write-ahead persistence of
 * ratchet state (PROTOCOL.md §10) is atomic. The engine parses everything it reads back.
 */
import type { ClientStore, StoreOp } from "../../../shared/core/client-api";
import type { Db } from "./db";

/** Highest BMP code point: every key that starts with `prefix` sorts below prefix + this. */
const PREFIX_END = "\uffff";

export class IdbClientStore implements ClientStore {
  constructor(private readonly db: Db) {}

  get(key: string): Promise<unknown> {
    return this.db.get("engine", key);
  }

  async list(prefix: string): Promise<Array<{ key: string; value: unknown }>> {
    const range = IDBKeyRange.bound(prefix, prefix + PREFIX_END, false, false);
    const tx = this.db.transaction("engine", "readonly");
    const out: Array<{ key: string; value: unknown }> = [];
    for (let cur = await tx.store.openCursor(range); cur; cur = await cur.continue()) {
      out.push({ key: cur.key, value: cur.value });
    }
    await tx.done;
    return out;
  }

  async batch(ops: readonly StoreOp[]): Promise<void> {
    if (ops.length === 0) return;
    const tx = this.db.transaction("engine", "readwrite");
    for (const op of ops) {
      if (op.op === "put") void tx.store.put(op.value, op.key);
      else void tx.store.delete(op.key);
    }
    // Resolves only when the whole transaction committed; any failed request aborts all of it.
    await tx.done;
  }
}
