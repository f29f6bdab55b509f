/**
 * Messaging settings (PROTOCOL.md §12.6): send typing indicators (on by default) and read
 * receipts (off by default; reciprocal — off means none are sent and none are shown). Kept in
 * the `meta` store; parsed on read like everything stored.
 */
import * as v from "valibot";
import type { Db } from "./db";

const KEY = "messagePrefs";

export const MessagePrefs = v.strictObject({ typing: v.boolean(), readReceipts: v.boolean() });
export type MessagePrefs = v.InferOutput<typeof MessagePrefs>;

export const DEFAULT_MESSAGE_PREFS: MessagePrefs = { typing: true, readReceipts: false };

export async function readMessagePrefs(db: Db): Promise<MessagePrefs> {
  const r = v.safeParse(MessagePrefs, await db.get("meta", KEY));
  return r.success ? r.output : DEFAULT_MESSAGE_PREFS;
}

export async function writeMessagePrefs(db: Db, p: MessagePrefs): Promise<void> {
  await db.put("meta", p, KEY);
}
