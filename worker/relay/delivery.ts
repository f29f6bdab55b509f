/**
 * Delivery of stored items to connections (PROTOCOL.md §6.1, §7.3): which item goes out next on
 * which connection, what is in flight, and what acknowledgements free.
 *
 * Every routed item is stored before anything is sent (at-least-once): direct items and commits
 * as one `mailbox` row per recipient, group messages once in the `group_log` with a roster
 * snapshot (store.ts) — except a direct item sent *write-behind* (PROTOCOL.md §7.3): sent to a
 * caught-up connection at once and held in memory (Store.holdItem) until its recipient
 * acknowledges it (never stored) or it is stored (LIMITS.writeBehindMs, a connection of its
 * address closing or starting, a retry); its sender's `accepted` waits for one or the other, so
 * until then the sender's outbox holds it. What this module adds is memory, so that the common
 * case costs a socket send and no storage work:
 *
 * - per connection, the items in flight and whether it is *caught up* (everything stored for
 *   the user has been sent). A new item for a caught-up connection with room in its window is
 *   sent at once, from the frame the sender's handler already built (a group message's frame is
 *   serialised once for all members); only a connection with a backlog reads storage (`drain`).
 * - per user, the group acknowledgement cursor `through` (every group message for the user with
 *   mid <= through is acknowledged) and the user's unacknowledged group messages by sender (for
 *   the mailbox bounds and per-sender shares, §7.3), loaded from storage on first use.
 *
 * A connection whose window is full keeps new items in a bounded in-memory queue (the frames
 * already built), so a busy connection still costs no storage reads while it keeps up.
 *
 * An acknowledgement moves the user's cursor in memory; a group message whose last copy is
 * acknowledged stops counting toward its sender's total at once and is deleted by the next flush
 * (copies are counted in memory per message). Cursors, those deletions and the attachments (last
 * activity, sent cursor, out-of-order acknowledgements) are written within FLUSH_DELAY_MS,
 * batched: losing that window in a crash means some items are delivered again, which clients
 * dedupe (§6.1). A pending timer keeps the object from hibernating (Cloudflare docs, "Lifecycle of
 * a Durable Object"), so memory is flushed, and held items stored, before it can sleep. Nothing
 * accepted is ever lost: a stored item's row is written in the event that answers it, before its
 * `accepted` can leave the object (output gate); a held item is answered only once its recipient
 * acknowledged it, or in the event that stores it.
 *
 * On users' routes a member's object takes a group message from its group's home the same way
 * (sendBehindGroup): sent to the member's caught-up connection at once and held in memory
 * (Store.holdGroupMessage) until acknowledged or stored; the home keeps its copy until then.
 */
import { LIMITS } from "../../shared/protocol";
import { addressOf, MAX_ACKED_AHEAD } from "./attachment";
import type { MailboxKind } from "./mailbox";
import { deliverFrame, type MailboxRow, windowRoom } from "./mailbox";
import type { InflightItem, Session, SessionRegistry } from "./session";
import type { GroupLogRow, Store } from "./store";

/** Longest time acknowledgement cursors and attachments stay in memory only (ms). */
export const FLUSH_DELAY_MS = 200;

/**
 * Retry records (Store.flushSends, PROTOCOL.md §7.3 "Retries") go with every this-many-th flush,
 * so at most about once a second: a device's record is its latest 16 sends rewritten whole, and
 * writing it with every flush was ~8% of the relay's CPU on a busy hub. A crash loses at most
 * the last second of them, which costs a retry a second copy that clients drop as a replay.
 */
export const SENDS_EVERY_FLUSHES = 5;

/**
 * Items a caught-up connection may have waiting in memory behind a full window, and the memory
 * all connections together may hold there: frame text (a group frame is one string shared by
 * all its recipients, so each holds its share of it) plus QUEUE_ENTRY_COST per entry. Past
 * either bound the connection drops its queue and reads from storage when the window opens:
 * memory stays bounded whatever the backlog, and storage stays the source of truth.
 */
export const MAX_QUEUED_PER_CONNECTION = 4096;
export const MAX_QUEUED_CHARS = 16 * 1024 * 1024;
const QUEUE_ENTRY_COST = 64;

/**
 * A direct item sent before it is stored (PROTOCOL.md §7.3 "Write-behind"), until its
 * recipient acknowledges it or it is stored. `done` runs once: `stored` says which.
 */
interface Behind {
  address: string;
  at: number;
  /** A group message (sendBehindGroup): stored in the group log, counted as a group copy. */
  group: boolean;
  done(stored: boolean): void;
}

/** Group messages whose outstanding copies are counted in memory (newest kept). */
const MAX_COUNTED_MESSAGES = 100_000;

interface UserState {
  /** Group messages for this user with mid <= through are acknowledged (memory, >= storage). */
  through: number;
  /** Unacknowledged group messages for this user by sender; null until first needed. */
  pending: Map<string, number> | null;
  pendingTotal: number;
}

export interface DeliveriesDeps {
  store: Store;
  sessions: SessionRegistry;
  now(): number;
  /** Queue bounds (default MAX_QUEUED_*); tests lower them to exercise the overflow path. */
  queue?: { perConnection: number; chars: number };
}

/** What an acknowledgement freed. */
export interface AckOutcome {
  /** Mailbox rows deleted (direct items and commits): whose items another object still holds. */
  rows: Array<{ mid: number; sender: string; kind: string }>;
  /** Did it acknowledge anything at all? */
  any: boolean;
}

export class Deliveries {
  readonly #d: DeliveriesDeps;
  readonly #users = new Map<string, UserState>();
  readonly #dirtySessions = new Set<Session>();
  readonly #dirtyThrough = new Set<string>();
  /**
   * Copies not yet acknowledged, per group message stored since the object started. A message
   * whose count reaches zero goes to #done; messages not counted here (older, or forgotten past
   * MAX_COUNTED_MESSAGES) are collected by the exact query (store.gcGroupLog) at flush instead.
   */
  readonly #copies = new Map<number, number>();
  /** Group mids some cursor passed that are not counted in #copies: checked at flush. */
  readonly #uncounted = new Set<number>();
  /**
   * Group messages whose last copy was acknowledged, deleted by the next flush, and how many of
   * them each sender has: until then they are subtracted from the sender's stored total, so a
   * message stops counting (§7.3) the moment its last copy is acknowledged.
   */
  #done: number[] = [];
  readonly #doneBySender = new Map<string, number>();
  /** Memory held by connection queues (see MAX_QUEUED_CHARS). */
  #queuedChars = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  /** Flushes since the retry records were last written (SENDS_EVERY_FLUSHES). */
  #flushesSinceSends = 0;
  /** Held direct items in flight (sendBehind), in mid order, which is the order they came. */
  readonly #behind = new Map<number, Behind>();
  #behindTimer: ReturnType<typeof setTimeout> | null = null;

  readonly #maxQueued: number;
  readonly #maxQueuedChars: number;

  constructor(deps: DeliveriesDeps) {
    this.#d = deps;
    this.#maxQueued = deps.queue?.perConnection ?? MAX_QUEUED_PER_CONNECTION;
    this.#maxQueuedChars = deps.queue?.chars ?? MAX_QUEUED_CHARS;
  }

  // -- per-user state -----------------------------------------------------------------------

  #user(username: string): UserState {
    let st = this.#users.get(username);
    if (st === undefined) {
      st = { through: this.#d.store.groupThrough(username), pending: null, pendingTotal: 0 };
      // Bounded by the users of the hub (maxUsersPerHub); entries are a few numbers each.
      this.#users.set(username, st);
    }
    return st;
  }

  /** Unacknowledged group messages stored for `username`: in total and per sender. */
  groupPending(username: string): { total: number; bySender: ReadonlyMap<string, number> } {
    const st = this.#user(username);
    if (st.pending === null) {
      this.#setPending(username, st, this.#d.store.groupPendingBySender(username, st.through));
    }
    return { total: st.pendingTotal, bySender: st.pending as Map<string, number> };
  }

  /**
   * Load the counters of every user in `usernames` not known yet, in two statements: the first
   * message to a big group after the object starts would otherwise read them one by one.
   */
  preload(usernames: readonly string[]): void {
    const fresh = usernames.filter((u) => !this.#users.has(u));
    if (fresh.length > 0) {
      const throughs = this.#d.store.groupThroughs(fresh);
      for (const u of fresh) {
        this.#users.set(u, { through: throughs.get(u) ?? 0, pending: null, pendingTotal: 0 });
      }
    }
    const unloaded: Array<[string, number]> = [];
    for (const u of usernames) {
      const st = this.#users.get(u);
      if (st !== undefined && st.pending === null) unloaded.push([u, st.through]);
    }
    if (unloaded.length === 0) return;
    const counts = this.#d.store.groupPendingBySenderFor(unloaded);
    for (const [u] of unloaded) {
      const st = this.#users.get(u);
      if (st !== undefined) this.#setPending(u, st, counts.get(u) ?? new Map());
    }
  }

  #setPending(username: string, st: UserState, m: Map<string, number>): void {
    // Messages acknowledged out of order on the live connection are still above the cursor in
    // storage; they are no longer pending.
    const s = this.#d.sessions.online(username);
    for (const it of s?.ackedAhead ?? []) {
      const n = m.get(it.sender) ?? 0;
      if (n > 0) m.set(it.sender, n - 1);
    }
    let total = 0;
    for (const n of m.values()) total += n;
    st.pending = m;
    st.pendingTotal = total;
  }

  #pendingAdd(username: string, sender: string, k: number): void {
    const st = this.#users.get(username);
    if (st === undefined || st.pending === null) return; // loaded from storage when needed
    st.pending.set(sender, Math.max(0, (st.pending.get(sender) ?? 0) + k));
    st.pendingTotal = Math.max(0, st.pendingTotal + k);
  }

  /** Group messages were deleted behind the counters' back (expiry): recount when needed. */
  invalidatePending(): void {
    for (const st of this.#users.values()) st.pending = null;
  }

  // -- connections --------------------------------------------------------------------------

  /** A connection just authenticated: nothing sent on it yet; send what is stored. */
  start(s: Session): void {
    // Held items of this address sent on an earlier connection are stored first, so that the
    // new connection's drain, which goes by mid from nothing sent, finds them.
    if (s.authed !== null) this.settleFor(addressOf(s.authed));
    this.#dropQueue(s);
    s.inflight = new Map();
    s.sent = 0;
    s.caughtUp = false;
    s.ackedAhead = [];
    this.drain(s);
  }

  /** The connection is gone: release what it held in memory, and store its held items. */
  closed(s: Session): void {
    if (s.authed !== null) this.settleFor(addressOf(s.authed));
    this.#dropQueue(s);
    s.caughtUp = false;
  }

  #dropQueue(s: Session): void {
    for (const q of s.queue) this.#queuedChars -= q.cost;
    s.queue = [];
  }

  /**
   * Rebuild the in-flight set of a connection restored after hibernation: the items stored for
   * the user that were already sent on it (mid <= its attachment's cursor), in mid order.
   */
  #load(s: Session, username: string): Map<number, InflightItem> {
    if (s.inflight !== null) return s.inflight;
    const now = this.#d.now();
    const window = LIMITS.deliverWindow;
    const st = this.#user(username);
    // Group messages acknowledged out of order before the object slept are not in flight: the
    // attachment remembers them (`ahead`), since the cursor could not move past them.
    const ahead = new Set(s.authed?.ahead ?? []);
    const items: InflightItem[] = [
      ...this.#d.store
        .itemsThrough(username, s.sent, now, window)
        .map((r) => ({ mid: r.mid, group: false, sender: r.sender, kind: r.kind })),
      ...this.#d.store
        .groupItemsFor(username, st.through, s.sent, now, window + ahead.size)
        .map((r) => ({ mid: r.mid, group: true, sender: r.sender })),
    ].sort((x, y) => x.mid - y.mid);
    s.inflight = new Map();
    s.ackedAhead = [];
    for (const it of items) {
      if (it.group && ahead.has(it.mid)) s.ackedAhead.push(it);
      else s.inflight.set(it.mid, it);
    }
    s.caughtUp = false;
    return s.inflight;
  }

  /**
   * Send the user's next stored items in mid order, within the window. Reads storage only when
   * the connection has a backlog: a caught-up connection has nothing stored that it lacks.
   */
  drain(s: Session): void {
    const a = s.authed;
    if (a === null || s.closed) return;
    const inflight = this.#load(s, addressOf(a));
    let room = windowRoom(inflight.size);
    if (room === 0) return;
    if (s.queue.length > 0) {
      // Items that arrived while the window was full, in mid order, kept in memory.
      let k = 0;
      while (k < s.queue.length && k < room) {
        const q = s.queue[k] as { item: InflightItem; text: string; cost: number };
        if (!s.sendText(q.text)) break;
        inflight.set(q.item.mid, q.item);
        s.sent = q.item.mid;
        this.#queuedChars -= q.cost;
        k++;
      }
      s.queue.splice(0, k);
      if (k > 0) this.#touch(s);
      room -= k;
      if (room === 0 || s.queue.length > 0) return;
    }
    if (s.caughtUp) return;
    const { store } = this.#d;
    const now = this.#d.now();
    const st = this.#user(addressOf(a));
    const rows = store.itemsAfter(addressOf(a), s.sent, now, room);
    const logged = store.groupItemsFor(
      addressOf(a),
      Math.max(s.sent, st.through),
      Number.MAX_SAFE_INTEGER,
      now,
      room,
    );
    let i = 0;
    let j = 0;
    let sent = 0;
    let ok = true;
    while (sent < room && (i < rows.length || j < logged.length)) {
      const r = rows[i];
      const g = logged[j];
      let item: InflightItem;
      let text: string;
      if (g === undefined || (r !== undefined && r.mid < g.mid)) {
        const row = r as MailboxRow;
        i++;
        item = { mid: row.mid, group: false, sender: row.sender, kind: row.kind };
        text = JSON.stringify(deliverFrame(row));
      } else {
        j++;
        item = { mid: g.mid, group: true, sender: g.sender };
        text = groupDeliverText(g);
      }
      if (!s.sendText(text)) {
        ok = false;
        break;
      }
      inflight.set(item.mid, item);
      s.sent = item.mid;
      sent++;
    }
    // Caught up only if both sources ran dry before the window did.
    s.caughtUp =
      ok && i === rows.length && j === logged.length && rows.length < room && logged.length < room;
    if (sent > 0) this.#touch(s);
  }

  /**
   * A new item `mid` was stored for `username`: send it now if the connection is caught up and
   * has room (it is then the newest item, so mid order holds), else let the backlog path have it.
   * `share` is the part of `text`'s memory this connection holds if the item has to wait.
   */
  offer(username: string, item: InflightItem, text: string, share = text.length): void {
    const s = this.#d.sessions.online(username);
    if (s === undefined || s.closed) return;
    const inflight = s.inflight;
    if (inflight !== null && s.caughtUp) {
      if (s.queue.length === 0 && inflight.size < LIMITS.deliverWindow) {
        if (s.sendText(text)) {
          inflight.set(item.mid, item);
          s.sent = item.mid;
          this.#touch(s);
        }
        return;
      }
      // Window full: wait in memory for acknowledgements, within bounds; else from storage.
      const cost = share + QUEUE_ENTRY_COST;
      if (s.queue.length < this.#maxQueued && this.#queuedChars + cost <= this.#maxQueuedChars) {
        s.queue.push({ item, text, cost });
        this.#queuedChars += cost;
        return;
      }
      this.#dropQueue(s);
      s.caughtUp = false;
      return;
    }
    this.drain(s);
  }

  // -- write-behind (PROTOCOL.md §7.3) -------------------------------------------------------

  /**
   * Would an item for `address` be sent at once: a caught-up connection with room in its window
   * and nothing waiting? Only then may a direct item be sent before it is stored (sendBehind).
   */
  canSendNow(address: string): boolean {
    const s = this.#d.sessions.online(address);
    return (
      s !== undefined &&
      !s.closed &&
      s.inflight !== null &&
      s.caughtUp &&
      s.queue.length === 0 &&
      s.inflight.size < LIMITS.deliverWindow
    );
  }

  /**
   * Send a held item (Store.holdItem) to `address` now, before it is stored. It is settled
   * once: released when the recipient acknowledges it (`done(false)`), or stored — when
   * LIMITS.writeBehindMs pass first, when a connection of the address closes or starts, or when
   * `settle` is asked (a retry of the send) — and then `done(true)`.
   */
  sendBehind(
    address: string,
    item: InflightItem,
    text: string,
    done: (stored: boolean) => void,
  ): void {
    this.#hold(address, item, text, false, done);
  }

  /**
   * A group message held for the member `address` (Store.holdGroupMessage; users' routes):
   * sent now, before it is stored, and settled as sendBehind's items are. Until then it counts
   * as one of the member's unacknowledged group messages from its sender, as a stored one would.
   */
  sendBehindGroup(
    address: string,
    item: InflightItem,
    text: string,
    done: (stored: boolean) => void,
  ): void {
    this.#pendingAdd(address, item.sender, 1);
    this.#hold(address, item, text, true, done);
  }

  #hold(
    address: string,
    item: InflightItem,
    text: string,
    group: boolean,
    done: (stored: boolean) => void,
  ): void {
    this.#behind.set(item.mid, { address, at: this.#d.now(), group, done });
    this.#behindTimer ??= setTimeout(() => this.#settleDue(), LIMITS.writeBehindMs);
    const s = this.#d.sessions.online(address);
    // A failed send leaves the item to be stored: the connection is going away.
    if (s === undefined || s.inflight === null || !s.sendText(text)) return;
    s.inflight.set(item.mid, item);
    s.sent = item.mid;
    this.#touch(s);
  }

  /** Whether `mid` is held (sent before it is stored, not settled yet). */
  holds(mid: number): boolean {
    return this.#behind.has(mid);
  }

  /** Store the held item `mid` now (a retry of its send came); false if it is not held. */
  settle(mid: number): boolean {
    const b = this.#behind.get(mid);
    if (b === undefined) return false;
    return this.#settle(mid, b);
  }

  /**
   * Store every held item of `address` (one of its connections closed or started, or its user
   * moves to its own object); false if storage refused one (it stays held, for the timer).
   */
  settleFor(address: string): boolean {
    for (const [mid, b] of this.#behind) {
      if (b.address === address && !this.#settle(mid, b)) return false;
    }
    return true;
  }

  #settle(mid: number, b: Behind): boolean {
    try {
      if (!(b.group ? this.#d.store.settleHeldGroup(mid) : this.#d.store.settleHeld(mid))) {
        // Not held by the store (cannot happen while the two are kept in step): never answered,
        // so its sender sends it again on its next connection.
        this.#behind.delete(mid);
        return true;
      }
    } catch (e) {
      // Storage refused: the item stays held and is tried again by the timer; its sender has
      // no answer yet, so nothing is lost if the object dies first (§7.3).
      console.error("relay: settling a held item failed", e instanceof Error ? e.name : typeof e);
      this.#behindTimer ??= setTimeout(() => this.#settleDue(), LIMITS.writeBehindMs);
      return false;
    }
    this.#behind.delete(mid);
    // A stored group message is one copy for the member: its ack deletes it (#advance).
    if (b.group) this.#copies.set(mid, 1);
    b.done(true);
    return true;
  }

  /** The timer: store the held items that waited WRITE_BEHIND_MS, then wait for the next. */
  #settleDue(): void {
    this.#behindTimer = null;
    const now = this.#d.now();
    for (const [mid, b] of this.#behind) {
      if (b.at + LIMITS.writeBehindMs > now) break;
      if (!this.#settle(mid, b)) return;
    }
    const next = this.#behind.values().next();
    if (next.done !== true) {
      const wait = Math.max(1, next.value.at + LIMITS.writeBehindMs - now);
      this.#behindTimer = setTimeout(() => this.#settleDue(), wait);
    }
  }

  /** A group message `mid` from `sender` was stored for `recipients` (frame serialised once). */
  fanout(recipients: readonly string[], mid: number, sender: string, text: string): void {
    this.#copies.set(mid, recipients.length);
    if (this.#copies.size > MAX_COUNTED_MESSAGES) {
      // Forget the oldest count: that message is then collected by the exact query.
      const oldest = this.#copies.keys().next().value;
      if (oldest !== undefined) this.#copies.delete(oldest);
    }
    const share = Math.ceil(text.length / Math.max(1, recipients.length));
    for (const to of recipients) {
      this.#pendingAdd(to, sender, 1);
      this.offer(to, { mid, group: true, sender }, text, share);
    }
  }

  /**
   * Acknowledged mids on `s` (PROTOCOL.md §7.3). A mailbox row sent on this connection stops
   * counting at once and is deleted by the next flush (store.ackLater): a write per flush, not per
   * acknowledgement. An id this connection did not send is left to storage, at once. Group
   * messages in flight move the user's cursor in memory.
   */
  ack(s: Session, mids: readonly number[]): AckOutcome {
    const a = s.authed;
    if (a === null) return { rows: [], any: false };
    const inflight = this.#load(s, addressOf(a));
    const rowMids: number[] = [];
    const later: Array<{ mid: number; sender: string; kind: MailboxKind }> = [];
    let groupAcked = false;
    const released: Array<{ mid: number; sender: string; kind: MailboxKind }> = [];
    for (const mid of mids) {
      const it = inflight.get(mid);
      const held = this.#behind.get(mid);
      if (it !== undefined && held !== undefined) {
        // Held, never stored (§7.3 "Write-behind"): the recipient has it, so nothing is written.
        inflight.delete(mid);
        this.#behind.delete(mid);
        if (it.group) {
          // A group message (users' routes): nothing for the cursor to wait for any more.
          this.#d.store.releaseHeldGroup(mid);
          this.#pendingAdd(addressOf(a), it.sender, -1);
          groupAcked = true;
        } else {
          this.#d.store.releaseHeld(mid);
          released.push({ mid, sender: it.sender, kind: "direct" });
        }
        held.done(false);
        continue;
      }
      if (it !== undefined && !it.group && it.kind !== undefined) {
        inflight.delete(mid);
        later.push({ mid, sender: it.sender, kind: it.kind });
        continue;
      }
      if (it === undefined || !it.group) {
        // An id this connection did not send (or of unknown kind): storage decides.
        if (it !== undefined) inflight.delete(mid);
        rowMids.push(mid);
        continue;
      }
      inflight.delete(mid);
      s.ackedAhead.push(it);
      this.#touch(s);
      this.#pendingAdd(addressOf(a), it.sender, -1);
      groupAcked = true;
    }
    const rows = rowMids.length > 0 ? this.#d.store.ack(addressOf(a), rowMids) : [];
    rows.push(...released);
    if (later.length > 0) {
      rows.push(...this.#d.store.ackLater(addressOf(a), later));
      this.#schedule();
    }
    if (groupAcked) {
      this.#advance(s, addressOf(a), inflight);
      // What the cursor could not pass stays remembered, within a bound: a client that never
      // acknowledges one old item while acknowledging everything after it must not grow this
      // without end. A forgotten entry's item may be delivered again on a later connection, and
      // it is deleted when it expires rather than when its last copy is acknowledged (§7.3).
      // Checked after the cursor moved, so one large in-order ack never forgets anything.
      if (s.ackedAhead.length > MAX_ACKED_AHEAD) {
        s.ackedAhead.splice(0, s.ackedAhead.length - MAX_ACKED_AHEAD);
      }
    }
    return { rows, any: groupAcked || rows.length > 0 };
  }

  /**
   * Move the user's cursor up to just below the oldest group message still in flight on `s`, or
   * to everything sent on `s` if none is: every group message for the user above the cursor and
   * at most `s.sent` was sent on this connection, so the in-flight set is the whole truth.
   */
  #advance(s: Session, username: string, inflight: Map<number, InflightItem>): void {
    let bound = s.sent;
    for (const it of inflight.values()) {
      if (it.group) {
        bound = it.mid - 1;
        break;
      }
    }
    const st = this.#user(username);
    if (bound <= st.through) return;
    st.through = bound;
    const ahead: InflightItem[] = [];
    for (const it of s.ackedAhead) {
      if (it.mid > bound) {
        ahead.push(it);
        continue;
      }
      const left = this.#copies.get(it.mid);
      if (left === undefined) this.#uncounted.add(it.mid);
      else if (left <= 1) {
        this.#copies.delete(it.mid);
        this.#done.push(it.mid);
        this.#doneBySender.set(it.sender, (this.#doneBySender.get(it.sender) ?? 0) + 1);
      } else this.#copies.set(it.mid, left - 1);
    }
    s.ackedAhead = ahead;
    this.#dirtyThrough.add(username);
    this.#touch(s);
  }

  /** Group messages of `sender` fully acknowledged and about to be deleted (see #done). */
  deleting(sender: string): number {
    return this.#doneBySender.get(sender) ?? 0;
  }

  // -- persistence --------------------------------------------------------------------------

  /** The session's attachment changed in memory (activity, cursor): persist it soon. */
  #touch(s: Session): void {
    this.#dirtySessions.add(s);
    this.#schedule();
  }

  /** Something of the store's waits for the next flush (Store.recordSend): run it soon. */
  persistSoon(): void {
    this.#schedule();
  }

  /** Mark `s` as needing its attachment written by the next flush. */
  touch(s: Session): void {
    this.#touch(s);
  }

  #schedule(): void {
    if (this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.flush();
    }, FLUSH_DELAY_MS);
  }

  /**
   * Write the group cursors and the attachments (last activity, sent cursor, acked-ahead mids)
   * that changed, then collect passed messages whose copies were not counted in memory.
   */
  flush(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const { store } = this.#d;
    try {
      const cursors: Array<[string, number]> = [];
      for (const u of this.#dirtyThrough) {
        const st = this.#users.get(u);
        if (st !== undefined) cursors.push([u, st.through]);
      }
      this.#dirtyThrough.clear();
      store.flushAcked();
      if (++this.#flushesSinceSends >= SENDS_EVERY_FLUSHES) {
        this.#flushesSinceSends = 0;
        store.flushSends();
      }
      store.flushHeld();
      store.flushPositions();
      store.saveGroupThroughs(cursors);
      store.deleteGroupMessages(this.#done);
      this.#done = [];
      this.#doneBySender.clear();
      if (this.#uncounted.size > 0) store.gcGroupLog([...this.#uncounted]);
      this.#uncounted.clear();
    } catch (e) {
      // Storage refused: cursors stay in memory and are written with the next change; at worst
      // some messages are delivered again after a restart, which clients dedupe.
      console.error("relay: flush failed", e instanceof Error ? e.name : typeof e);
    }
    for (const s of this.#dirtySessions) s.flush();
    this.#dirtySessions.clear();
    // Retry records left for a later flush keep the timer going until they are written.
    if (store.sendsUnsaved) this.#schedule();
  }
}

/** The `deliver` text of a group message (the same for every recipient). */
export function groupDeliverText(g: GroupLogRow): string {
  return JSON.stringify({
    v: 1,
    t: "deliver",
    mid: String(g.mid),
    from: g.sender,
    fromKey: g.senderKey,
    ts: g.ts,
    item: { kind: "group", group: g.group, epoch: g.epoch, body: g.data },
  });
}
