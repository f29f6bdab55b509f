/**
 * Fan-out of 1:1 messages over several devices (PROTOCOL.md §4.9), pure: which `send`s one
 * message becomes (every device on the recipient's accepted list, and every other device on our
 * own), the `sync` content that carries a copy of what we sent or read to our own other devices,
 * how a receiving device classifies what it decrypted (a contact's message, or a sent-sync copy
 * from one of its own devices), deduplication by (author, message id) and the one timeline order
 * every device of a conversation converges to. Device lists themselves are devices.ts.
 */
import * as v from "valibot";
import {
  type DmContent,
  decodeDmContent,
  encodeContent,
  type ReceivedDmContent,
  type SyncContent as SyncContentT,
  SyncSchema,
} from "./content";
import { isListedDevice, type PinnedDevices } from "./devices";

/** One `send` of a fan-out (§4.9): `device` absent means the user's current device (§4.7). */
export interface FanoutTarget {
  readonly to: string;
  readonly device?: string;
  /** `peer`: the recipient's device, gets the content; `own`: ours, gets it wrapped in `sync`. */
  readonly role: "peer" | "own";
}

export type FanoutPlan =
  | { ok: true; targets: FanoutTarget[] }
  /** Our device is not on our own accepted list: it was removed and sends nothing (§4.9). */
  | { ok: false; reason: "removed" };

/**
 * The `send`s of one message from device `myDevice` of `me` to `peer` (§4.9): one per device on
 * the peer's accepted list (ascending id, the list's order), or one to its current device when it
 * has no list; then one per other device on our own accepted list. Only the signed lists count:
 * a device the relay names and the list does not gets nothing, a listed device the relay hides
 * still gets its `send` (the relay then refuses it `unknown_device`, which the sender shows).
 */
export function fanoutTargets(params: {
  me: string;
  myDevice: string;
  ownList: PinnedDevices | null;
  peer: string;
  peerList: PinnedDevices | null;
}): FanoutPlan {
  const { me, myDevice, ownList, peer, peerList } = params;
  if (ownList !== null && !isListedDevice(ownList, myDevice))
    return { ok: false, reason: "removed" };
  const targets: FanoutTarget[] =
    peerList === null
      ? [{ to: peer, role: "peer" }]
      : peerList.list.devices.map((d) => ({ to: peer, device: d.id, role: "peer" as const }));
  if (ownList !== null)
    for (const d of ownList.list.devices)
      if (d.id !== myDevice) targets.push({ to: me, device: d.id, role: "own" });
  return { ok: true, targets };
}

/** `{t:"sync", peer, c}`: content `c` belongs to our conversation with `peer` (§4.9, content.ts). */
export const SyncContent = SyncSchema;
export type SyncContent = SyncContentT;

/** Contents copied to our own devices (§4.9): typing, receipts and session repair are not. */
export type SyncedContent = SyncContent["c"];

/** Whether a content is copied to our own devices (§4.9). */
export function isSynced(c: DmContent): c is SyncedContent {
  return v.is(SyncContent.entries.c, c);
}

/** Padded UTF-8 JSON of a sync content, like every 1:1 content (§8.5, §8.6). */
export function encodeSync(s: SyncContent): Uint8Array {
  return encodeContent(v.parse(SyncContent, s));
}

/** A decrypted content that is either a contact's content or one of our own sync copies. */
export type DeviceContent =
  | { kind: "sync"; sync: SyncContent }
  | { kind: "dm"; content: ReceivedDmContent };

/** Tell a decrypted content apart: a `sync` copy, or anything else. */
export function deviceContentOf(c: ReceivedDmContent): DeviceContent {
  return c.t === "sync" ? { kind: "sync", sync: c } : { kind: "dm", content: c };
}

/**
 * Parse a decrypted, padded plaintext (the one 1:1 content parse, content.ts) and tell a `sync`
 * copy apart. Throws `malformed` for a `sync` that fails its schema: a broken copy is dropped,
 * never shown as something else.
 */
export function decodeDeviceContent(padded: Uint8Array): DeviceContent {
  return deviceContentOf(decodeDmContent(padded));
}

/** Why a device drops what it decrypted (§4.9). */
export type IncomingRefusal =
  /** From a device the sender's accepted list does not name (forged or removed). */
  | "unlisted_device"
  /** A `sync` from a contact: only our own devices copy to us. */
  | "sync_from_peer"
  /** From one of our own devices but not a `sync`: our devices only copy. */
  | "own_not_sync"
  /** A `sync` about our own conversation with ourselves, or claiming to come from this device. */
  | "bad_sync";

export type IncomingDecision =
  | { ok: true; conversation: string; author: string; content: unknown; group?: string }
  | { ok: false; reason: IncomingRefusal };

/**
 * Where a decrypted content from device `fromDevice` of `from` belongs (§4.9). `fromList` is the
 * sender's accepted list (ours when `from` is `me`); null when it has none (a single-device
 * user, whose messages carry no device). A sync copy lands in the conversation with its `peer`,
 * authored by us; anything else in the conversation with the sender.
 */
export function classifyIncoming(params: {
  me: string;
  myDevice: string;
  from: string;
  fromDevice: string | undefined;
  fromList: PinnedDevices | null;
  decoded: DeviceContent;
}): IncomingDecision {
  const { me, myDevice, from, fromDevice, fromList, decoded } = params;
  if (fromList !== null && (fromDevice === undefined || !isListedDevice(fromList, fromDevice)))
    return { ok: false, reason: "unlisted_device" };
  if (from === me) {
    if (fromList === null) return { ok: false, reason: "unlisted_device" };
    if (decoded.kind !== "sync") return { ok: false, reason: "own_not_sync" };
    const { group } = decoded.sync;
    if (group !== undefined) {
      // A group's read state: ours, named as such, and nothing else (§4.9).
      if (decoded.sync.peer !== me || decoded.sync.c.t !== "read" || fromDevice === myDevice)
        return { ok: false, reason: "bad_sync" };
      return { ok: true, conversation: me, author: me, content: decoded.sync.c, group };
    }
    if (decoded.sync.peer === me || fromDevice === myDevice)
      return { ok: false, reason: "bad_sync" };
    return { ok: true, conversation: decoded.sync.peer, author: me, content: decoded.sync.c };
  }
  if (decoded.kind === "sync") return { ok: false, reason: "sync_from_peer" };
  return { ok: true, conversation: from, author: from, content: decoded.content };
}

/** Message ids remembered per conversation for deduplication (§4.9). */
export const MAX_SEEN_IDS = 2000;

/**
 * (author, id) pairs a device has shown in one conversation, oldest first. Each message is sent
 * to every device once per session, but a device may receive the same message twice: a
 * redelivery after a lost `ack` (§7.3), or a sender's resend on repair (§8.10).
 */
export type SeenIds = readonly string[];

function seenKey(author: string, id: string): string {
  return `${author}\n${id}`;
}

/** First sighting of (author, id): the new set; a repeat: null (drop it). Pure. */
export function markSeen(seen: SeenIds, author: string, id: string): SeenIds | null {
  const k = seenKey(author, id);
  if (seen.includes(k)) return null;
  const next = [...seen, k];
  return next.length > MAX_SEEN_IDS ? next.slice(next.length - MAX_SEEN_IDS) : next;
}

/** What orders a conversation's messages on every device alike (§4.9). */
export interface TimelineKey {
  readonly ts: number;
  readonly from: string;
  readonly id: string;
}

/** Total order: sender's `ts`, then author name, then id (UTF-16 code units, as JS compares). */
export function compareTimeline(a: TimelineKey, b: TimelineKey): number {
  if (a.ts !== b.ts) return a.ts - b.ts;
  if (a.from !== b.from) return a.from < b.from ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

/**
 * Where `entry` goes in `timeline` (already in that order): after every entry that sorts before
 * or equal to it. Every device that holds the same messages shows them in the same order,
 * whatever order they arrived in (a sent-sync copy keeps the original `ts` and id).
 */
export function timelineIndex(timeline: readonly TimelineKey[], entry: TimelineKey): number {
  let lo = 0;
  let hi = timeline.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const m = timeline[mid];
    if (m !== undefined && compareTimeline(m, entry) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
