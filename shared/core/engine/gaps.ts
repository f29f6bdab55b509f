/**
 * Delivery gaps (PROTOCOL.md §8.8, §9.5): a message key skipped over and still unused a grace
 * after the later message that revealed it is reported as one `missing` line per conversation
 * and sender. Keys: "dm:<peer>|<dh>|<n>" or "group:<name>|<epoch>|<sender>|<n>". In memory only.
 */
import { userOfMember } from "../../protocol";
import type { ConversationId } from "../client-api";
import type { DmRecord } from "../dm";
import type { GroupRecord } from "../group";
import { system, type Tx } from "./effects";

/** A skipped message key becomes a `missing` line after this long unused (§8.8, §9.5). */
export const GAP_GRACE_MS = 30_000;

export interface Gap {
  conversationId: ConversationId;
  from: string;
}

/**
 * Note the skipped keys of a 1:1 record's sessions; a key gone from the record was used. With
 * one session per device of the peer (§4.9) each device's record is its own scope
 * ("dm:<peer>#<device>"), so one device's keys never settle another's gaps.
 */
export function trackDmGaps(tx: Tx, rec: DmRecord, device?: string): void {
  const conversationId: ConversationId = `dm:${rec.peer}`;
  const scope = device === undefined ? conversationId : `${conversationId}#${device}`;
  const now = new Set<string>();
  for (const s of [rec.current, ...rec.previous]) {
    for (const k of s?.ratchet.skipped ?? []) now.add(`${scope}|${k.dh}|${k.n}`);
  }
  track(tx, scope, conversationId, now, () => true);
}

/**
 * Same for a group's sender chains. A gap whose epoch the record no longer holds (a second
 * commit dropped it) can never be filled: it is reported at once.
 */
export function trackGroupGaps(tx: Tx, rec: GroupRecord): void {
  const conversationId: ConversationId = `group:${rec.group}`;
  const now = new Set<string>();
  const epochs = new Set<number>();
  for (const ep of [rec.current, rec.previous]) {
    if (ep === null) continue;
    epochs.add(ep.epoch);
    for (const rx of ep.receivers)
      for (const k of rx.skipped) now.add(`${conversationId}|${ep.epoch}|${rx.name}|${k.n}`);
  }
  track(tx, conversationId, conversationId, now, (key) => epochs.has(Number(key.split("|")[1])));
}

function track(
  tx: Tx,
  scope: string,
  conversationId: ConversationId,
  skipped: Set<string>,
  fillable: (key: string) => boolean,
): void {
  const { gaps, seenGaps } = tx.state;
  const lost: string[] = [];
  for (const key of [...gaps.keys()]) {
    if (!key.startsWith(`${scope}|`) || skipped.has(key)) continue;
    if (!fillable(key)) lost.push(key);
    else gaps.delete(key); // its message arrived late (or its key was evicted)
  }
  const fresh: string[] = [];
  for (const key of skipped) {
    if (seenGaps.has(key)) continue;
    seenGaps.add(key);
    // The sender of a skipped key: the peer (1:1) or the chain's owner (group).
    const from = conversationId.startsWith("dm:")
      ? conversationId.slice(3)
      : (key.split("|")[2] ?? "");
    gaps.set(key, { conversationId, from });
    fresh.push(key);
  }
  if (lost.length > 0) reportGaps(tx, lost);
  if (fresh.length > 0) scheduleGapCheck(tx, fresh);
}

/** Decide about `keys` one grace from now; the timer survives a disconnect (§8.8). */
export function scheduleGapCheck(tx: Tx, keys: string[]): void {
  tx.timer(null, GAP_GRACE_MS, { t: "gap_check", keys }, false);
}

/** One `missing` line per conversation and sender for the keys still open. */
export function reportGaps(tx: Tx, keys: readonly string[]): void {
  const counts = new Map<string, { conversationId: ConversationId; from: string; n: number }>();
  for (const key of keys) {
    const g = tx.state.gaps.get(key);
    if (!g) continue;
    tx.state.gaps.delete(key);
    const k = `${g.conversationId}|${g.from}`;
    const c = counts.get(k) ?? { ...g, n: 0 };
    c.n++;
    counts.set(k, c);
  }
  for (const c of counts.values()) {
    const what = c.n === 1 ? "1 message" : `${c.n} messages`;
    // A group sender may be a linked device (§4.7): named as its user, as the person sees it.
    const who = userOfMember(c.from);
    system(tx, c.conversationId, "missing", `${what} from ${who} did not arrive`, {
      username: who,
    });
  }
}
