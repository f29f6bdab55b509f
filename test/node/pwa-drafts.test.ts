/**
 * Drafts at rest (pwa/src/storage/history.ts): sealed under the device key in the history store
 * like messages, never plaintext, bound to their conversation, invisible to the history reader,
 * and an empty draft deletes its row. Runs on a small in-memory stand-in for the idb database.
 */
import { beforeAll, describe, expect, test } from "vitest";
import type { Db } from "../../pwa/src/storage/db";
import { draftKey, HistoryStore } from "../../pwa/src/storage/history";
import type { HistoryRow } from "../../pwa/src/storage/schemas";

/** The few idb calls HistoryStore makes, over a Map keyed like the real `history` store. */
function memoryDb() {
  const rows = new Map<string, HistoryRow>();
  const inRange = (k: string, r?: { lower: string; upper: string }) =>
    r === undefined || (k >= r.lower && k <= r.upper);
  const db = {
    put: async (_store: "history", row: HistoryRow) => {
      rows.set(row.key, structuredClone(row));
    },
    delete: async (_store: "history", key: string) => {
      rows.delete(key);
    },
    getAll: async (_store: "history", range?: { lower: string; upper: string }) =>
      [...rows.entries()]
        .filter(([k]) => inRange(k, range))
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([, v]) => structuredClone(v)),
  };
  return { db: db as unknown as Db, rows };
}

beforeAll(() => {
  // Node has no IndexedDB: the one IDBKeyRange call is a lower/upper pair here.
  (globalThis as { IDBKeyRange?: unknown }).IDBKeyRange ??= {
    bound: (lower: string, upper: string) => ({ lower, upper }),
  };
});

const key = () =>
  crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);

describe("drafts", () => {
  test("round-trip per conversation; sealed; not history; empty deletes", async () => {
    const { db, rows } = memoryDb();
    const h = new HistoryStore(db, await key());
    const secret = "draft canary: the meeting moved to noon";
    await h.putDraft("dm:bob", secret, 1);
    await h.putDraft("group:club", "for the club", 2);
    expect(await h.loadDrafts()).toEqual(
      new Map([
        ["dm:bob", secret],
        ["group:club", "for the club"],
      ]),
    );
    // Ciphertext only: the plaintext appears nowhere in the stored rows.
    const raw = rows.get(draftKey("dm:bob"));
    expect(raw?.conv).toBe("dm:bob");
    expect(new TextDecoder().decode(raw?.box.ct)).not.toContain("canary");
    expect(
      JSON.stringify([...rows.values()], (_k, v) => (v instanceof Uint8Array ? [...v] : v)),
    ).not.toContain("canary");
    // The history reader skips draft rows without counting them as damaged.
    expect((await h.loadAll()).size).toBe(0);
    expect(h.rejected).toBe(0);
    await h.putDraft("dm:bob", "", 3);
    expect(rows.has(draftKey("dm:bob"))).toBe(false);
    expect([...(await h.loadDrafts()).keys()]).toEqual(["group:club"]);
  });

  test("a draft moved to another conversation's row, or sealed by another key, is dropped", async () => {
    const { db, rows } = memoryDb();
    const h = new HistoryStore(db, await key());
    await h.putDraft("dm:bob", "to bob", 1);
    const row = rows.get(draftKey("dm:bob"));
    if (!row) throw new Error("no row");
    rows.set(draftKey("dm:eve"), { ...row, key: draftKey("dm:eve"), conv: "dm:eve" });
    expect(await h.loadDrafts()).toEqual(new Map([["dm:bob", "to bob"]]));
    const other = new HistoryStore(db, await key());
    expect((await other.loadDrafts()).size).toBe(0);
  });
});
