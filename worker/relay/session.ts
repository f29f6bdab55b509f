/**
 * One WebSocket as the relay sees it, and the index of live sessions (PROTOCOL.md §4.1).
 *
 * A Session wraps the socket so the rest of the relay never touches `ws` directly: sending and
 * closing never throw (the peer may already be gone), and the attachment is written through on
 * every state change so it survives hibernation. Counters and rate buckets are memory-only: an
 * object hibernates only after seconds without any event, by which time a bucket has refilled.
 */
import { LIMITS, type ServerFrame } from "../../shared/protocol";
import type { Attachment, AuthedAttachment } from "./attachment";
import { type Bucket, newBucket, take } from "./ratelimit";

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

  constructor(
    readonly ws: WebSocket,
    att: Attachment,
    now: number,
  ) {
    this.#att = att;
    this.bucket = newBucket(CONNECTION_BUCKET, now);
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
    try {
      this.ws.serializeAttachment(att);
    } catch {
      // The socket is already closed; there is nothing left to persist for.
    }
  }

  takeToken(now: number): boolean {
    const r = take(this.bucket, CONNECTION_BUCKET, now);
    this.bucket = r.bucket;
    return r.ok;
  }

  send(frame: ServerFrame): boolean {
    if (this.closed) return false;
    try {
      this.ws.send(JSON.stringify(frame));
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

/** Live sessions by socket and, once authenticated, by username (one per identity). */
export class SessionRegistry {
  readonly #byWs = new Map<WebSocket, Session>();
  readonly #byUser = new Map<string, Session>();

  add(s: Session): void {
    this.#byWs.set(s.ws, s);
    const a = s.authed;
    if (a !== null && !s.closed) this.#byUser.set(a.username, s);
  }

  get(ws: WebSocket): Session | undefined {
    return this.#byWs.get(ws);
  }

  /** Record that `s` is now authenticated as its attachment says (call after `save`). */
  bind(s: Session): void {
    const a = s.authed;
    if (a !== null) this.#byUser.set(a.username, s);
  }

  remove(s: Session): void {
    this.#byWs.delete(s.ws);
    const a = s.authed;
    if (a !== null && this.#byUser.get(a.username) === s) this.#byUser.delete(a.username);
  }

  /** Stop routing to `s` at once, before its close event arrives. */
  retire(s: Session): void {
    const a = s.authed;
    if (a !== null && this.#byUser.get(a.username) === s) this.#byUser.delete(a.username);
  }

  online(username: string): Session | undefined {
    return this.#byUser.get(username);
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
