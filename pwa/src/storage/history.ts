/**
 * Message history at rest: one row per message or system line, the entry JSON sealed under the
 * device key with the row key bound as AAD (device-key.ts). Rows are keyed by conversation,
 * sender, direction and id (see rowKey), so a delivery-state update rewrites the same row and
 * nobody else's message can. Read back: decrypt, JSON.parse, valibot —
 * a row failing any step is skipped and counted, never shown.
 *
 * Unsent drafts live in the same store, one row per conversation keyed `draft|<conv>`: sealed the
 * same way (never plaintext at rest, and re-sealed with everything else when the passphrase lock
 * changes the device key, lock.ts), deleted with their conversation, and never read as history.
 */
import * as v from "valibot";
import { fromUtf8, utf8 } from "../../../shared/encoding";
import type { Db } from "./db";
import { open, seal } from "./device-key";
import {
  ConvMeta,
  Draft,
  type HistoryEntry,
  HistoryEntry as HistoryEntrySchema,
  HistoryRow,
} from "./schemas";

const PURPOSE = "history";

/** Draft rows: a prefix no message or system row has (those start with the conversation id). */
const DRAFT_PREFIX = "draft|";
/**
 * The search index (search/index.ts): one row, sealed like every history row, so what search
 * derives from messages is never at rest in the clear either (PROTOCOL.md §12.3).
 */
export const SEARCH_KEY = "search|index";

export function draftKey(conv: string): string {
  return `${DRAFT_PREFIX}${conv}`;
}

/**
 * Messages are keyed by conversation, sender, direction and id (`<conv>|<from>|<in/out>|<id>`):
 * the id is sender-chosen, so another participant re-using it must land in its own row, never
 * overwrite ours. Names and conversation ids cannot contain `|`. System lines keep
 * `<conv>|<id>` (their ids are local).
 */
export function rowKey(entry: HistoryEntry): string {
  return entry.kind === "msg"
    ? `${entry.conversationId}|${entry.from}|${entry.direction}|${entry.id}`
    : `${entry.conversationId}|${entry.id}`;
}

/** Rows written before messages were keyed by sender: still readable (same sealed AAD). */
function legacyRowKey(entry: HistoryEntry): string {
  return `${entry.conversationId}|${entry.id}`;
}

export class HistoryStore {
  /** Rows that failed to decrypt or parse on the last load (tampered or from another device key). */
  rejected = 0;

  constructor(
    private readonly db: Db,
    private readonly key: CryptoKey,
  ) {}

  async put(entry: HistoryEntry): Promise<void> {
    const key = rowKey(entry);
    const box = await seal(this.key, PURPOSE, key, utf8(JSON.stringify(entry)));
    const row: HistoryRow = { key, conv: entry.conversationId, box };
    await this.db.put("history", row);
  }

  /** Every readable entry, grouped by conversation, in time order. */
  async loadAll(): Promise<Map<string, HistoryEntry[]>> {
    this.rejected = 0;
    const rows = await this.db.getAll("history");
    const out = new Map<string, HistoryEntry[]>();
    // One entry per current row key: a legacy row and its newer rewrite are the same message,
    // and the rewrite (current key format) wins.
    const seen = new Map<string, { entry: HistoryEntry; current: boolean }>();
    for (const raw of rows) {
      if (isDraftRow(raw) || isSearchRow(raw)) continue;
      const d = await this.decode(raw);
      if (!d) {
        this.rejected++;
        continue;
      }
      const k = rowKey(d.entry);
      const prev = seen.get(k);
      if (!prev || (!prev.current && d.current)) seen.set(k, d);
    }
    for (const { entry } of seen.values()) {
      const list = out.get(entry.conversationId) ?? [];
      list.push(entry);
      out.set(entry.conversationId, list);
    }
    for (const list of out.values()) list.sort((a, b) => a.at - b.at);
    return out;
  }

  private async decode(raw: unknown): Promise<{ entry: HistoryEntry; current: boolean } | null> {
    const row = v.safeParse(HistoryRow, raw);
    if (!row.success) return null;
    try {
      const pt = await open(this.key, PURPOSE, row.output.key, row.output.box);
      const entry = v.safeParse(HistoryEntrySchema, JSON.parse(fromUtf8(pt)));
      // The row key is authenticated (AAD); the entry inside must agree with it.
      if (!entry.success) return null;
      if (rowKey(entry.output) === row.output.key) return { entry: entry.output, current: true };
      if (legacyRowKey(entry.output) === row.output.key)
        return { entry: entry.output, current: false };
      return null;
    } catch {
      return null;
    }
  }

  /**
   * Delete one entry's row (delete for me, a disappearing message's expiry), and the row an
   * earlier version may have written for it.
   */
  async remove(entry: HistoryEntry): Promise<void> {
    const tx = this.db.transaction("history", "readwrite");
    void tx.store.delete(rowKey(entry));
    if (legacyRowKey(entry) !== rowKey(entry)) void tx.store.delete(legacyRowKey(entry));
    await tx.done;
  }

  /** Seal and store the search index (its JSON text); null deletes it. */
  async putSearchIndex(json: string | null): Promise<void> {
    if (json === null) {
      await this.db.delete("history", SEARCH_KEY);
      return;
    }
    const box = await seal(this.key, PURPOSE, SEARCH_KEY, utf8(json));
    const row: HistoryRow = { key: SEARCH_KEY, conv: "search", box };
    await this.db.put("history", row);
  }

  /** The stored search index's JSON text, or null (none, or it no longer opens). */
  async getSearchIndex(): Promise<string | null> {
    const row = v.safeParse(HistoryRow, await this.db.get("history", SEARCH_KEY));
    if (!row.success || row.output.key !== SEARCH_KEY) return null;
    try {
      return fromUtf8(await open(this.key, PURPOSE, SEARCH_KEY, row.output.box));
    } catch {
      return null;
    }
  }

  async deleteConversation(conv: string): Promise<void> {
    const tx = this.db.transaction("history", "readwrite");
    const keys = await tx.store.index("byConv").getAllKeys(conv);
    for (const k of keys) void tx.store.delete(k);
    await tx.done;
  }

  /** Keep `text` as the draft of `conv`; an empty draft deletes the row. */
  async putDraft(conv: string, text: string, now: number): Promise<void> {
    const key = draftKey(conv);
    if (text.length === 0) {
      await this.db.delete("history", key);
      return;
    }
    const draft: Draft = {
      kind: "draft",
      conversationId: conv as Draft["conversationId"],
      text,
      at: now,
    };
    const box = await seal(this.key, PURPOSE, key, utf8(JSON.stringify(draft)));
    const row: HistoryRow = { key, conv, box };
    await this.db.put("history", row);
  }

  /** Every readable draft by conversation id; unreadable ones are skipped (a draft is no record). */
  async loadDrafts(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const rows = await this.db.getAll(
      "history",
      IDBKeyRange.bound(DRAFT_PREFIX, `${DRAFT_PREFIX}\uffff`),
    );
    for (const raw of rows) {
      const row = v.safeParse(HistoryRow, raw);
      if (!row.success) continue;
      try {
        const pt = await open(this.key, PURPOSE, row.output.key, row.output.box);
        const d = v.safeParse(Draft, JSON.parse(fromUtf8(pt)));
        if (d.success && draftKey(d.output.conversationId) === row.output.key) {
          out.set(d.output.conversationId, d.output.text);
        }
      } catch {
        // Sealed under another key or altered: drop it silently rather than show it.
      }
    }
    return out;
  }

  async convMeta(): Promise<Map<string, ConvMeta>> {
    const tx = this.db.transaction("convs", "readonly");
    const out = new Map<string, ConvMeta>();
    for (let cur = await tx.store.openCursor(); cur; cur = await cur.continue()) {
      const m = v.safeParse(ConvMeta, cur.value);
      if (m.success) out.set(String(cur.key), m.output);
    }
    await tx.done;
    return out;
  }

  async putConvMeta(conv: string, meta: ConvMeta): Promise<void> {
    await this.db.put("convs", meta, conv);
  }
}

function isSearchRow(raw: unknown): boolean {
  return typeof raw === "object" && raw !== null && "key" in raw && raw.key === SEARCH_KEY;
}

function isDraftRow(raw: unknown): boolean {
  return (
    typeof raw === "object" &&
    raw !== null &&
    "key" in raw &&
    typeof raw.key === "string" &&
    raw.key.startsWith(DRAFT_PREFIX)
  );
}
