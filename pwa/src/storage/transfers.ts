/**
 * Attachment transfers at rest (PROTOCOL.md §12.3, §8.6.1), so that an upload or a download
 * interrupted by a reload (or a crash, or closing the tab) continues when Parley opens again
 * without the user picking the file again.
 *
 * One description row per transfer, keyed `<id>`, sealed under the device key like history (its
 * row key bound as AAD): it holds the file's key, name and caption, so it is never in the clear.
 * Beside it, piece rows keyed `<id>#<n>` hold *ciphertext* only (the chunk-encrypted attachment,
 * §3.12), as Blobs that the browser keeps on disk: for an upload the whole ciphertext, written
 * once after encryption; for a download what has arrived so far, appended piece by piece so a
 * resumed download asks the relay only for the bytes after them (`Range`, §7.10).
 * Plaintext of a file is never written here.
 */
import * as v from "valibot";
import { FileRef } from "../../../shared/core/content";
import { MessageRef } from "../../../shared/core/message-content";
import { fromUtf8, utf8 } from "../../../shared/encoding";
import type { Db } from "./db";
import { open, seal } from "./device-key";
import { ConversationId, Sealed } from "./schemas";

const PURPOSE = "transfer";
/** Ids are local ("up-…", "down-…"); `#` never occurs in one, so piece keys cannot collide. */
const TransferId = v.pipe(v.string(), v.maxLength(64), v.regex(/^(up|down)-[A-Za-z0-9_-]+$/));

const Count = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER));

/** An upload whose ciphertext is ready: everything to ask for a ticket, PUT and send (§7.10). */
export const SavedUpload = v.strictObject({
  kind: v.literal("upload"),
  id: TransferId,
  conversationId: ConversationId,
  caption: v.pipe(v.string(), v.maxLength(16_000)),
  /** The reference minus the blob id, which a fresh ticket gives (tickets work once). */
  file: v.omit(FileRef, ["blob"]),
  /** Ciphertext bytes (the piece rows hold exactly this many). */
  length: Count,
  reply: v.optional(MessageRef),
  at: Count,
});
export type SavedUpload = v.InferOutput<typeof SavedUpload>;

/** A download under way: the message's file, how much ciphertext the piece rows hold. */
export const SavedDownload = v.strictObject({
  kind: v.literal("download"),
  id: TransferId,
  conversationId: ConversationId,
  /** The message (`<from>/<id>`) whose file this is. */
  key: v.pipe(v.string(), v.maxLength(200)),
  file: FileRef,
  received: Count,
  pieces: Count,
  /** The user asked to save it (not only to view it): saved when it completes. */
  save: v.boolean(),
  at: Count,
});
export type SavedDownload = v.InferOutput<typeof SavedDownload>;

const Saved = v.variant("kind", [SavedUpload, SavedDownload]);
export type SavedTransfer = v.InferOutput<typeof Saved>;

const Row = v.strictObject({ box: Sealed });
const PieceRow = v.strictObject({ data: v.instance(Blob) });

const pieceKey = (id: string, n: number) => `${id}#${n.toString().padStart(6, "0")}`;
const piecesOf = (id: string) => IDBKeyRange.bound(`${id}#`, `${id}#\uffff`);

export class TransferStore {
  constructor(
    private readonly db: Db,
    private readonly key: CryptoKey,
  ) {}

  private async sealed(t: SavedTransfer) {
    return { box: await seal(this.key, PURPOSE, t.id, utf8(JSON.stringify(t))) };
  }

  /** A new upload with its whole ciphertext, in one transaction. */
  async putUpload(t: SavedUpload, ciphertext: Blob): Promise<void> {
    const row = await this.sealed(t);
    const tx = this.db.transaction("transfers", "readwrite");
    void tx.store.delete(piecesOf(t.id));
    void tx.store.put({ data: ciphertext }, pieceKey(t.id, 0));
    void tx.store.put(row, t.id);
    await tx.done;
  }

  /** A download's description (no pieces yet, or the count unchanged). */
  async putDownload(t: SavedDownload): Promise<void> {
    const row = await this.sealed(t);
    await this.db.put("transfers", row, t.id);
  }

  /** Append one received piece of a download and its new totals, atomically. */
  async appendPiece(t: SavedDownload, piece: Blob): Promise<void> {
    const row = await this.sealed(t);
    const tx = this.db.transaction("transfers", "readwrite");
    void tx.store.put({ data: piece }, pieceKey(t.id, t.pieces - 1));
    void tx.store.put(row, t.id);
    await tx.done;
  }

  /** The stored ciphertext pieces of a transfer, in order. */
  async pieces(id: string): Promise<Blob[]> {
    const rows = await this.db.getAll("transfers", piecesOf(id));
    const out: Blob[] = [];
    for (const r of rows) {
      const p = v.safeParse(PieceRow, r);
      if (!p.success) throw new Error("a stored transfer piece is damaged");
      out.push(p.output.data);
    }
    return out;
  }

  async remove(id: string): Promise<void> {
    const tx = this.db.transaction("transfers", "readwrite");
    void tx.store.delete(piecesOf(id));
    void tx.store.delete(id);
    await tx.done;
  }

  /**
   * Every readable transfer. One that does not open or parse (another device key, altered) is
   * deleted with its pieces: it cannot be continued, and keeping it would only hold space.
   */
  async loadAll(): Promise<SavedTransfer[]> {
    const tx = this.db.transaction("transfers", "readonly");
    const found: { key: string; value: unknown }[] = [];
    for (let cur = await tx.store.openCursor(); cur; cur = await cur.continue()) {
      const key = String(cur.key);
      if (!key.includes("#")) found.push({ key, value: cur.value });
    }
    await tx.done;
    const out: SavedTransfer[] = [];
    for (const { key, value } of found) {
      const t = await this.decode(key, value);
      if (t === null) await this.remove(key);
      else out.push(t);
    }
    return out;
  }

  private async decode(key: string, value: unknown): Promise<SavedTransfer | null> {
    const row = v.safeParse(Row, value);
    if (!row.success) return null;
    try {
      const pt = await open(this.key, PURPOSE, key, row.output.box);
      const t = v.safeParse(Saved, JSON.parse(fromUtf8(pt)));
      return t.success && t.output.id === key ? t.output : null;
    } catch {
      return null;
    }
  }
}

/**
 * Re-seal every description row from `oldKey` to `newKey` (the passphrase lock changed the device
 * key, lock.ts); pieces are ciphertext under their files' own keys and stay as they are. Rows that
 * no longer open are dropped. Returns the rows to write in the caller's transaction.
 */
export async function resealTransfers(
  db: Db,
  oldKey: CryptoKey,
  newKey: CryptoKey,
): Promise<{ keep: { key: string; value: unknown }[]; drop: string[] }> {
  const keys = (await db.getAllKeys("transfers")).map(String);
  const keep: { key: string; value: unknown }[] = [];
  const drop: string[] = [];
  for (const key of keys) {
    if (key.includes("#")) continue;
    const row = v.safeParse(Row, await db.get("transfers", key));
    try {
      if (!row.success) throw new Error("damaged");
      const pt = await open(oldKey, PURPOSE, key, row.output.box);
      keep.push({ key, value: { box: await seal(newKey, PURPOSE, key, pt) } });
    } catch {
      drop.push(key);
    }
  }
  return { keep, drop };
}
