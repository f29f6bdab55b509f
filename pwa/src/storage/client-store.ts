/**
 * The engine's `ClientStore` (shared/core/client-api.ts) on IndexedDB, sealed at rest: each value
 * is JSON, encrypted under the device key with its store key bound as AAD (device-key.ts, purpose
 * "engine"), so ratchet state, pins and queued texts are ciphertext on disk like the history.
 * `batch` seals everything first and then writes in ONE readwrite transaction (an IndexedDB
 * transaction commits as soon as it waits on anything else), so the engine's write-ahead
 * persistence of ratchet state (PROTOCOL.md §10) stays atomic. A value that fails to open or
 * parse reads back as a `StorageError`; the engine then parses what it gets with its own schemas.
 * An `expect` precondition is checked inside that same transaction (see `batch`).
 */
import * as v from "valibot";
import {
  type ClientStore,
  type StoreOp,
  StorePreconditionError,
} from "../../../shared/core/client-api";
import { jsonEqual } from "../../../shared/core/store";
import { fromUtf8, utf8 } from "../../../shared/encoding";
import type { Db } from "./db";
import { open, StorageError, seal } from "./device-key";
import { Sealed } from "./schemas";

/** Highest BMP code point: every key that starts with `prefix` sorts below prefix + this. */
const PREFIX_END = "\uffff";
const PURPOSE = "engine";

export class IdbClientStore implements ClientStore {
  constructor(
    private readonly db: Db,
    private readonly key: CryptoKey,
  ) {}

  private async unseal(storeKey: string, raw: unknown): Promise<unknown> {
    const box = v.safeParse(Sealed, raw);
    if (!box.success) throw new StorageError(`engine record ${storeKey} is not a sealed box`);
    const pt = await open(this.key, PURPOSE, storeKey, box.output);
    try {
      return JSON.parse(fromUtf8(pt));
    } catch {
      throw new StorageError(`engine record ${storeKey} is not JSON`);
    }
  }

  async get(key: string): Promise<unknown> {
    const raw = await this.db.get("engine", key);
    return raw === undefined ? undefined : this.unseal(key, raw);
  }

  async list(prefix: string): Promise<Array<{ key: string; value: unknown }>> {
    const range = IDBKeyRange.bound(prefix, prefix + PREFIX_END, false, false);
    const tx = this.db.transaction("engine", "readonly");
    const rows: Array<{ key: string; value: unknown }> = [];
    for (let cur = await tx.store.openCursor(range); cur; cur = await cur.continue()) {
      rows.push({ key: cur.key, value: cur.value });
    }
    await tx.done;
    return Promise.all(
      rows.map(async (r) => ({ key: r.key, value: await this.unseal(r.key, r.value) })),
    );
  }

  async batch(ops: readonly StoreOp[]): Promise<void> {
    if (ops.length === 0) return;
    // Preconditions (`expect`): values are sealed, and opening a box (WebCrypto) cannot happen
    // inside the transaction (it would commit while waiting). So open and compare the stored box
    // first, then, inside the readwrite transaction, require the very same box to still be
    // there: every write seals with a fresh IV, so an unchanged box means an unchanged value.
    const expected: Array<{ key: string; raw: unknown }> = [];
    for (const op of ops) {
      if (op.op !== "expect") continue;
      const raw = await this.db.get("engine", op.key);
      const value = raw === undefined ? undefined : await this.unseal(op.key, raw);
      if (!jsonEqual(value, op.value)) throw new StorePreconditionError(op.key);
      expected.push({ key: op.key, raw });
    }
    const writes = ops.filter((op) => op.op !== "expect");
    const sealed = await Promise.all(
      writes.map(async (op) =>
        op.op === "put"
          ? {
              key: op.key,
              box: await seal(this.key, PURPOSE, op.key, utf8(JSON.stringify(op.value))),
            }
          : { key: op.key, box: null },
      ),
    );
    const tx = this.db.transaction("engine", "readwrite");
    // Read + compare + write in ONE transaction (§10.2): a concurrent batch either committed
    // before (we see its new box and abort) or waits for ours.
    for (const e of expected) {
      if (!sameBox(await tx.store.get(e.key), e.raw)) {
        tx.abort();
        await tx.done.catch(() => undefined);
        throw new StorePreconditionError(e.key);
      }
    }
    for (const s of sealed) {
      if (s.box) void tx.store.put(s.box, s.key);
      else void tx.store.delete(s.key);
    }
    // Resolves only when the whole transaction committed; any failed request aborts all of it.
    await tx.done;
  }
}

/** Byte-identical sealed boxes (or both absent). */
function sameBox(a: unknown, b: unknown): boolean {
  if (a === undefined || b === undefined) return a === b;
  const x = v.safeParse(Sealed, a);
  const y = v.safeParse(Sealed, b);
  return (
    x.success &&
    y.success &&
    bytesEqual(x.output.iv, y.output.iv) &&
    bytesEqual(x.output.ct, y.output.ct)
  );
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
