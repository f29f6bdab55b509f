/**
 * The PWA's one IndexedDB database (through `idb`). Five object stores:
 * - `meta`    small named records: the profile (username, hub, identity), the device key, UI prefs;
 * - `engine`  the protocol engine's `ClientStore` (keys are '/'-paths, values JSON-able records);
 * - `history` message history, each record AES-GCM encrypted under the device key;
 * - `convs`   per-conversation UI bookkeeping (last read time), no message content;
 * - `transfers` attachment transfers that must survive a reload (transfers.ts): a sealed
 *   description per transfer and the attachment's *ciphertext* (never its plaintext) in pieces.
 * Nothing read from here is trusted: every reader parses with a valibot schema (schemas.ts).
 */
import { type DBSchema, type IDBPDatabase, openDB } from "idb";

export const DB_NAME = "parley";
/** 2 added `transfers`; a version-1 database is upgraded in place (nothing else changes). */
export const DB_VERSION = 2;

export interface ParleyDB extends DBSchema {
  meta: { key: string; value: unknown };
  engine: { key: string; value: unknown };
  history: { key: string; value: unknown; indexes: { byConv: string } };
  convs: { key: string; value: unknown };
  transfers: { key: string; value: unknown };
}

export type Db = IDBPDatabase<ParleyDB>;

export function openParleyDb(name = DB_NAME): Promise<Db> {
  return openDB<ParleyDB>(name, DB_VERSION, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) {
        db.createObjectStore("meta");
        db.createObjectStore("engine");
        const history = db.createObjectStore("history", { keyPath: "key" });
        history.createIndex("byConv", "conv");
        db.createObjectStore("convs");
      }
      if (oldVersion < 2) db.createObjectStore("transfers");
    },
  });
}
