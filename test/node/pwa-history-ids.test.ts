/**
 * Message ids are chosen by their sender and visible to every recipient, so another
 * participant re-using an id must not erase or replace someone else's message — neither in the
 * conversation view (model.ts) nor in the sealed history rows at rest (history.ts).
 */
import { describe, expect, test } from "vitest";
import { applyDelivery, initialChatState, upsertEntry } from "../../pwa/src/state/model";
import type { Db } from "../../pwa/src/storage/db";
import { seal } from "../../pwa/src/storage/device-key";
import { HistoryStore, rowKey } from "../../pwa/src/storage/history";
import type { HistoryMessage, HistoryRow } from "../../pwa/src/storage/schemas";
import { utf8 } from "../../shared/encoding";

const G = "group:broadcast" as const;

function msg(over: Partial<HistoryMessage>): HistoryMessage {
  return {
    kind: "msg",
    id: "m1",
    conversationId: G,
    from: "alice",
    direction: "in",
    text: "Meeting moved to 3pm",
    sentAt: 1,
    at: 1,
    ...over,
  };
}

/** The two calls HistoryStore makes on its object store, over a Map. */
function memoryDb(): { db: Db; rows: Map<string, HistoryRow> } {
  const rows = new Map<string, HistoryRow>();
  const db = {
    put: async (_store: string, row: HistoryRow) => {
      rows.set(row.key, row);
    },
    getAll: async () => [...rows.values()],
  } as unknown as Db;
  return { db, rows };
}

async function deviceKey(): Promise<CryptoKey> {
  return crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

describe("message ids cannot be hijacked", () => {
  test("view: mallory re-using alice's id adds her own line, alice's stays", () => {
    const s = initialChatState();
    expect(upsertEntry(s, msg({}), { countUnread: true })).toBe(true);
    expect(
      upsertEntry(s, msg({ from: "mallory", text: "ignore", at: 2 }), { countUnread: true }),
    ).toBe(true);
    // and alice herself cannot rewrite what she said
    expect(upsertEntry(s, msg({ text: "edited", at: 3 }), { countUnread: true })).toBe(false);
    const view = s.convs[G]?.entries.map((e) => (e.kind === "msg" ? `${e.from}: ${e.text}` : ""));
    expect(view).toEqual(["alice: Meeting moved to 3pm", "mallory: ignore"]);
  });

  test("view: a peer re-using the id of our own message neither replaces it nor takes its receipts", () => {
    const s = initialChatState();
    const mine = msg({
      conversationId: "dm:bob",
      from: "me",
      direction: "out",
      delivery: "sending",
    });
    upsertEntry(s, mine, { countUnread: false });
    upsertEntry(s, msg({ conversationId: "dm:bob", from: "bob", text: "overwritten?" }), {
      countUnread: true,
    });
    // our own delivery update still applies to our message (in place)
    expect(upsertEntry(s, { ...mine, delivery: "sent" }, { countUnread: false })).toBe(false);
    expect(applyDelivery(s, "dm:bob", "m1", "delivered")?.from).toBe("me");
    const entries = s.convs["dm:bob"]?.entries ?? [];
    expect(entries.map((e) => (e.kind === "msg" ? [e.from, e.text, e.delivery] : []))).toEqual([
      ["me", "Meeting moved to 3pm", "delivered"],
      ["bob", "overwritten?", undefined],
    ]);
  });

  test("history at rest: rows are per sender, both messages survive a reload", async () => {
    const { db, rows } = memoryDb();
    const h = new HistoryStore(db, await deviceKey());
    await h.put(msg({}));
    await h.put(msg({ from: "mallory", text: "ignore", at: 2 }));
    expect(rows.size).toBe(2);
    const loaded = (await h.loadAll()).get(G) ?? [];
    expect(loaded.map((e) => (e.kind === "msg" ? `${e.from}: ${e.text}` : ""))).toEqual([
      "alice: Meeting moved to 3pm",
      "mallory: ignore",
    ]);
    expect(h.rejected).toBe(0);
  });

  test("history at rest: rows written under the old `<conv>|<id>` key still load, once", async () => {
    const { db, rows } = memoryDb();
    const key = await deviceKey();
    const h = new HistoryStore(db, key);
    const old = msg({ direction: "out", from: "me", delivery: "sent" });
    const legacy = `${G}|${old.id}`;
    rows.set(legacy, {
      key: legacy,
      conv: G,
      box: await seal(key, "history", legacy, utf8(JSON.stringify(old))),
    });
    expect((await h.loadAll()).get(G)).toEqual([old]);
    // a later delivery update writes the current key; the reload shows the message once, updated
    await h.put({ ...old, delivery: "delivered" });
    expect(rows.has(rowKey(old))).toBe(true);
    expect((await h.loadAll()).get(G)).toEqual([{ ...old, delivery: "delivered" }]);
    // a row moved under another key does not open
    const moved = rows.get(legacy) as HistoryRow;
    rows.set("x", { ...moved, key: `${G}|mallory|in|m1` });
    await h.loadAll();
    expect(h.rejected).toBe(1);
  });
});
