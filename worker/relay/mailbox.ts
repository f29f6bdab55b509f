/**
 * Mailbox rules (PROTOCOL.md §7.3): what an item looks like on the wire, when a mailbox is full,
 * and how many deliveries may be outstanding on one connection.
 *
 * Every routed item is stored before anything is sent (at-least-once; a direct item sent
 * write-behind is answered only once its recipient acknowledged it or it is stored, §7.3): the
 * relay pushes it when the recipient is online and keeps it until the recipient acknowledges its
 * mid. Deliveries on a
 * connection are strictly in mid order, and at most LIMITS.deliverWindow of them are unacknowledged
 * at any time, so a reconnect after a week offline never loads the whole mailbox into memory.
 */
import {
  type DeliverItem,
  type FrameOf,
  LIMITS,
  PROTOCOL_VERSION,
  type ServerFrame,
} from "../../shared/protocol";

/** The three kinds of routed item (PROTOCOL.md §6), as the mailbox bounds tell them apart. */
export type ItemKind = "direct" | "group" | "commit";

/**
 * What a `mailbox` row holds: direct items and commits, one row per recipient. Group messages
 * are stored once, in the group log, not here (store.ts).
 */
export type MailboxKind = Exclude<ItemKind, "group">;

/** One stored item joined with its payload, as the store returns it. */
export interface MailboxRow {
  mid: number;
  sender: string;
  senderKey: string;
  ts: number;
  kind: MailboxKind;
  group: string | null;
  epoch: number | null;
  data: string;
  wrap: string | null;
  /** The sending device (§4.9), when the sender has a device list. */
  senderDevice?: string | null;
}

/** May one more item of `kind` go into a mailbox that holds `count` stored items? */
export function mailboxHasRoom(kind: ItemKind, count: number): boolean {
  // Commits carry the epoch secret a member needs to read anything at all in that group, so
  // they may use the headroom up to the hard bound; chat items stop at the soft bound.
  const bound =
    kind === "commit" ? LIMITS.maxMailboxHardPerRecipient : LIMITS.maxMailboxPerRecipient;
  return count < bound;
}

/**
 * May a sender the recipient has not accepted (and shares no group with) store one more direct item (message
 * requests, PROTOCOL.md §7.3.1)? `fromSender` is what that sender has stored for the recipient;
 * `allRequests` counts what every such sender has (read only when the sender's own share has
 * room, as it costs a pass over the recipient's mailbox).
 */
export function requestHasRoom(fromSender: number, allRequests: () => number): boolean {
  if (fromSender >= LIMITS.maxRequestItemsPerSender) return false;
  return allRequests() < LIMITS.maxRequestItemsPerRecipient;
}

/** What one sender already has stored (direct and group items only, see `senderRoom`). */
export interface SenderHoldings {
  /**
   * Messages stored: each direct item counts one, each group message one however many members
   * hold a copy of it (they share one payload). This is what the sender's storage costs.
   */
  messages: number;
  /** Items (copies) per recipient among `recipients` asked for; absent means none. */
  perRecipient: ReadonlyMap<string, number>;
}

/**
 * Per-sender quotas (PROTOCOL.md §7.3): which of `recipients` may get one more item of `kind`
 * from a sender holding `h`, and whether the sender's message total has room for one more.
 * Without them one identity could fill any mailbox to maxMailboxPerRecipient (refusing everyone
 * else for up to a TTL) or the object's storage. A recipient's share counts copies, so a group
 * message counts for every member it is stored for; the total counts stored messages, so a big
 * group is not silenced after a few messages to offline members (the shares bound its rows).
 * Commits are exempt: they carry the epoch secret members need, so they are not cut to the
 * members with room; they have all-or-nothing bounds of their own (`commitRoom`).
 */
export function senderRoom(
  kind: ItemKind,
  h: SenderHoldings,
  recipients: readonly string[],
): { fits: string[]; totalOk: boolean } {
  if (kind === "commit") return { fits: [...recipients], totalOk: true };
  const fits = recipients.filter(
    (r) => (h.perRecipient.get(r) ?? 0) < LIMITS.maxMailboxPerSenderPerRecipient,
  );
  // Either kind is one new message, stored once (a group message however many copies it has).
  return { fits, totalOk: h.messages < LIMITS.maxMailboxPerSender };
}

/** What one sender already has stored of commits (PROTOCOL.md §7.3). */
export interface CommitHoldings {
  /** Characters of the distinct commit cores still referenced by a mailbox row of the sender. */
  bytes: number;
  /** Commit rows per recipient among those asked for; absent means none. */
  perRecipient: ReadonlyMap<string, number>;
}

/**
 * May a sender holding `h` store one more commit of `coreChars` for every one of `recipients`?
 * All or nothing, as commits are (a member left without its wrap would be locked out of the
 * epoch). Commits are exempt from the message shares (`senderRoom`) but not from bounds: without
 * these one identity committing epoch after epoch into a group its victim is in fills the
 * victim's mailbox with commits alone, and the object's storage with maximal cores.
 */
export function commitRoom(
  h: CommitHoldings,
  recipients: readonly string[],
  coreChars: number,
): boolean {
  if (h.bytes + coreChars > LIMITS.maxCommitBytesPerSender) return false;
  return recipients.every(
    (r) => (h.perRecipient.get(r) ?? 0) < LIMITS.maxCommitsPerSenderPerRecipient,
  );
}

/** How many more items may be sent on a connection that has `inFlight` unacknowledged ones. */
export function windowRoom(inFlight: number): number {
  return Math.max(0, LIMITS.deliverWindow - inFlight);
}

export function expiryOf(ts: number): number {
  return ts + LIMITS.mailboxTtlMs;
}

/** The `deliver` frame for one stored row; throws on a row the store should never hold. */
export function deliverFrame(row: MailboxRow): FrameOf<ServerFrame, "deliver"> {
  let item: DeliverItem;
  switch (row.kind) {
    case "direct":
      item = { kind: "direct", body: row.data };
      break;
    case "commit":
      if (row.group === null || row.epoch === null || row.wrap === null) {
        throw new TypeError("mailbox: commit row");
      }
      item = { kind: "commit", group: row.group, epoch: row.epoch, core: row.data, wrap: row.wrap };
      break;
  }
  return {
    v: PROTOCOL_VERSION,
    t: "deliver",
    mid: String(row.mid),
    from: row.sender,
    fromKey: row.senderKey,
    ...(row.senderDevice !== undefined && row.senderDevice !== null
      ? { fromDevice: row.senderDevice }
      : {}),
    ts: row.ts,
    item,
  };
}

/** Parse acknowledged mids (schema: 1–16 decimal digits) to integers, dropping duplicates. */
export function parseMids(mids: readonly string[]): number[] {
  const out = new Set<number>();
  for (const m of mids) {
    const n = Number(m);
    if (Number.isSafeInteger(n) && n > 0) out.add(n);
  }
  return [...out];
}
