/**
 * One WebSocket as the relay sees it, and the index of live sessions (PROTOCOL.md §4.1).
 *
 * A Session wraps the socket so the rest of the relay never touches `ws` directly: sending and
 * closing never throw (the peer may already be gone), and the attachment is written through on
 * every state change so it survives hibernation. Counters and rate buckets are memory-only: an
 * object hibernates only after seconds without any event, by which time a bucket has refilled.
 */

import { LIMITS, type ServerFrame } from "../../shared/protocol";
import { type Attachment, type AuthedAttachment, addressOf } from "./attachment";
import type { MailboxKind } from "./mailbox";
import { type Bucket, newBucket, take } from "./ratelimit";

/** One delivery sent on a connection and not yet acknowledged. */
export interface InflightItem {
  mid: number;
  /** A group-log message (acknowledged through the user's cursor), else a mailbox row. */
  group: boolean;
  sender: string;
  /** A mailbox row's kind: what its acknowledgement frees and whether its sender's total counts it. */
  kind?: MailboxKind;
}

export const CONNECTION_BUCKET = { ratePerSec: LIMITS.connRatePerSec, burst: LIMITS.connBurst };

export class Session {
  #att: Attachment;
  bucket: Bucket;
  rateViolations = 0;
  malformed = 0;
  /** Set when the relay closes the socket or the close arrives: no more traffic either way. */
  closed = false;
  /** Handling of this connection's frames, chained so they run in arrival order. */
  tail: Promise<void> = Promise.resolve();
  /**
   * Delivery state of an authenticated connection (delivery.ts), memory only. `inflight` holds
   * the items sent on this connection and not yet acknowledged, in send (= mid) order; null
   * until known (a session restored after hibernation rebuilds it from storage on first use).
   * `sent` is the highest mid sent on this connection (the attachment's `cursor`, written through
   * lazily); `caughtUp` means every item stored for the user so far has been sent, so a new one
   * may be sent at once without reading storage.
   */
  inflight: Map<number, InflightItem> | null = null;
  sent: number;
  caughtUp = false;
  /** Group items acknowledged ahead of an older unacknowledged one, not yet under `through`. */
  ackedAhead: InflightItem[] = [];
  /** Items stored while the window was full and the connection caught up (delivery.ts). */
  queue: Array<{ item: InflightItem; text: string; cost: number }> = [];
  /** The attachment in memory is newer than the one persisted with the socket. */
  dirty = false;

  constructor(
    readonly ws: WebSocket,
    att: Attachment,
    now: number,
  ) {
    this.#att = att;
    this.bucket = newBucket(CONNECTION_BUCKET, now);
    this.sent = att.state === "authed" ? att.cursor : 0;
  }

  get att(): Attachment {
    return this.#att;
  }

  get authed(): AuthedAttachment | null {
    return this.#att.state === "authed" ? this.#att : null;
  }

  /** Replace the attachment and persist it with the socket. */
  save(att: Attachment): void {
    this.#att = att;
    this.dirty = false;
    try {
      this.ws.serializeAttachment(att);
    } catch {
      // The socket is already closed; there is nothing left to persist for.
    }
  }

  /**
   * Replace the attachment in memory only; `flush` persists it. For fields that change with
   * every frame or delivery (last activity, cursor): writing the attachment each time was a
   * visible share of the relay's CPU (docs/PERFORMANCE.md). The owner flushes within a short
   * timer, and a pending timer keeps the object from hibernating (Cloudflare docs, "Lifecycle of
   * a Durable Object": hibernation requires no scheduled setTimeout/setInterval callback), so
   * the attachment is current before the object can sleep (PROTOCOL.md §4.1, §7.8).
   */
  update(att: Attachment): void {
    this.#att = att;
    this.dirty = true;
  }

  /** Persist the attachment if `update` changed it since the last write. */
  flush(): void {
    const a = this.#att;
    if (a.state === "authed") {
      const ahead = this.ackedAhead.map((it) => it.mid);
      const had = a.ahead ?? [];
      const same = ahead.length === had.length && ahead.every((m, i) => m === had[i]);
      if (a.cursor !== this.sent || !same) {
        const { ahead: _old, ...rest } = a;
        this.#att =
          ahead.length > 0 ? { ...rest, cursor: this.sent, ahead } : { ...rest, cursor: this.sent };
      }
    }
    if (this.dirty || this.#att !== a) this.save(this.#att);
  }

  takeToken(now: number): boolean {
    const r = take(this.bucket, CONNECTION_BUCKET, now);
    this.bucket = r.bucket;
    return r.ok;
  }

  send(frame: ServerFrame): boolean {
    return this.sendText(JSON.stringify(frame));
  }

  /** Send an already serialised frame (a fan-out serialises a `deliver` once for everyone). */
  sendText(text: string): boolean {
    if (this.closed) return false;
    try {
      this.ws.send(text);
      return true;
    } catch {
      // A send on a socket that closed under us; its close event cleans up.
      return false;
    }
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.ws.close(code, reason);
    } catch {
      // Already closing: nothing to do.
    }
  }
}

/**
 * Live sessions by socket and, once authenticated, by mailbox address (`addressOf`): the username
 * for an identity's current device, `username.device` for its other linked devices (§4.7). So
 * `online(username)` is the identity's current device, and each device has one live connection;
 * `devicesOf(username)` are all of the identity's routed connections (presence, §6.3).
 */
const NO_SESSIONS: ReadonlySet<Session> = new Set();

export class SessionRegistry {
  readonly #byWs = new Map<WebSocket, Session>();
  readonly #byUser = new Map<string, Session>();
  /** Routed connections per username, current and linked devices alike. */
  readonly #devices = new Map<string, Set<Session>>();

  add(s: Session): void {
    this.#byWs.set(s.ws, s);
    if (!s.closed) this.bind(s);
  }

  get(ws: WebSocket): Session | undefined {
    return this.#byWs.get(ws);
  }

  /** Record that `s` is now authenticated as its attachment says (call after `save`). */
  bind(s: Session): void {
    const a = s.authed;
    if (a === null) return;
    this.#byUser.set(addressOf(a), s);
    let set = this.#devices.get(a.username);
    if (set === undefined) {
      set = new Set();
      this.#devices.set(a.username, set);
    }
    set.add(s);
  }

  remove(s: Session): void {
    this.#byWs.delete(s.ws);
    this.retire(s);
  }

  /** Stop routing to `s` at once, before its close event arrives. */
  retire(s: Session): void {
    const a = s.authed;
    if (a === null) return;
    if (this.#byUser.get(addressOf(a)) === s) this.#byUser.delete(addressOf(a));
    const set = this.#devices.get(a.username);
    if (set?.delete(s) === true && set.size === 0) this.#devices.delete(a.username);
  }

  online(username: string): Session | undefined {
    return this.#byUser.get(username);
  }

  /** Every routed connection of `username`'s devices (none: the identity is offline). */
  devicesOf(username: string): ReadonlySet<Session> {
    return this.#devices.get(username) ?? NO_SESSIONS;
  }

  /** Is any device of `username` connected (§6.3: presence is the identity's)? */
  userOnline(username: string): boolean {
    return this.#devices.has(username);
  }

  onlineCount(): number {
    return this.#byUser.size;
  }

  authedSessions(): Session[] {
    return [...this.#byUser.values()];
  }

  all(): Session[] {
    return [...this.#byWs.values()];
  }
}
