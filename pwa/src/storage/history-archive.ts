/**
 * The history one device brings over when it links another (PROTOCOL.md §4.8.5): the entries of
 * its history (§12.3) since a point the person chose, as one JSON document, encrypted and
 * uploaded like an attachment (§8.6.1) whose reference travels only inside the sealed link
 * transfer. The new device downloads it, checks it — the attachment's digest and AEAD first
 * (shared/core/attachments.ts), then this schema, entry by entry — and writes what passes into its
 * own history, sealed under its own device key. Pure: bytes in, bytes out.
 */
import * as v from "valibot";
import { MAX_ATTACHMENT_BYTES } from "../../../shared/core/content";
import { fromUtf8, utf8 } from "../../../shared/encoding";
import { type HistoryEntry, HistoryEntry as HistoryEntrySchema } from "./schemas";

/** The archive's `type` and `name` in its file reference (shown nowhere; a hint for debugging). */
export const HISTORY_ARCHIVE_TYPE = "application/x-parley-history+json";
export const HISTORY_ARCHIVE_NAME = "history.json";
/** Most entries one archive carries (the newest are kept). */
export const MAX_ARCHIVE_ENTRIES = 100_000;

/** What the person chooses on the existing device: how far back messages come over. */
export type HistoryRange = "none" | "week" | "month" | "all";
export const HISTORY_RANGES: readonly HistoryRange[] = ["none", "week", "month", "all"];

const DAY_MS = 24 * 60 * 60 * 1000;

/** The earliest `at` a range takes, or null for none. */
export function rangeStart(range: HistoryRange, now: number): number | null {
  switch (range) {
    case "none":
      return null;
    case "week":
      return now - 7 * DAY_MS;
    case "month":
      return now - 30 * DAY_MS;
    case "all":
      return 0;
  }
}

export class HistoryArchiveError extends Error {
  override name = "HistoryArchiveError";
  constructor(readonly code: "malformed") {
    super("The history from your other device could not be read.");
  }
}

/**
 * The archive of `entries` from `since` on: messages that already disappeared (their timer ran
 * out) stay behind, an outgoing message still waiting in this device's outbox comes without a
 * delivery state (this device sends it; the new one cannot tell when), and when everything does
 * not fit in `maxBytes` (an attachment's limit) or MAX_ARCHIVE_ENTRIES the newest entries win.
 * Entries come out oldest first. Null when nothing is left: there is no archive to send.
 */
export function buildHistoryArchive(
  entries: Iterable<HistoryEntry>,
  since: number,
  now: number,
  maxBytes: number = MAX_ATTACHMENT_BYTES,
): { bytes: Uint8Array; count: number } | null {
  // Oldest first (a stable sort: entries of one instant keep the order they came in), walked
  // from the newest end.
  const taken = [...entries]
    .filter((e) => e.at >= since && !expired(e, now))
    .sort((a, b) => a.at - b.at);
  const head = utf8('{"v":1,"entries":[').length + utf8("]}").length;
  let size = head;
  const kept: string[] = [];
  for (let i = taken.length - 1; i >= 0; i--) {
    const e = taken[i] as HistoryEntry;
    if (kept.length >= MAX_ARCHIVE_ENTRIES) break;
    const json = JSON.stringify(outbound(e));
    // One comma per entry after the first, UTF-8 bytes of the entry.
    const add = utf8(json).length + (kept.length > 0 ? 1 : 0);
    if (size + add > maxBytes) break;
    size += add;
    kept.push(json);
  }
  if (kept.length === 0) return null;
  kept.reverse();
  return { bytes: utf8(`{"v":1,"entries":[${kept.join(",")}]}`), count: kept.length };
}

function expired(e: HistoryEntry, now: number): boolean {
  return e.kind === "msg" && e.exp !== undefined && e.at + e.exp <= now;
}

function outbound(e: HistoryEntry): HistoryEntry {
  if (e.kind !== "msg" || e.delivery !== "sending") return e;
  const { delivery: _pending, ...rest } = e;
  return rest;
}

const Archive = v.strictObject({
  v: v.literal(1),
  entries: v.pipe(v.array(v.unknown()), v.maxLength(MAX_ARCHIVE_ENTRIES)),
});

/**
 * Read an archive made by another device of `username`. The document must parse as a whole
 * (HistoryArchiveError `malformed` otherwise); an entry that fails the history schema (§12.3),
 * or claims to be our outgoing message while naming someone else as its sender, is skipped and
 * counted in `rejected`, never written.
 */
export function parseHistoryArchive(
  bytes: Uint8Array,
  username: string,
): { entries: HistoryEntry[]; rejected: number } {
  let doc: v.InferOutput<typeof Archive>;
  try {
    doc = v.parse(Archive, JSON.parse(fromUtf8(bytes)));
  } catch {
    throw new HistoryArchiveError("malformed");
  }
  const entries: HistoryEntry[] = [];
  let rejected = 0;
  for (const raw of doc.entries) {
    const e = v.safeParse(HistoryEntrySchema, raw);
    if (
      !e.success ||
      (e.output.kind === "msg" && (e.output.direction === "out") !== (e.output.from === username))
    ) {
      rejected++;
      continue;
    }
    entries.push(e.output);
  }
  return { entries, rejected };
}
