/**
 * The one module that owns the relay WebSocket. It connects, hands every frame to the engine
 * only after `parseServerFrame` accepted it (the relay is untrusted), keeps the link alive with
 * `ping`, and reconnects with jittered backoff (backoff.ts). The engine itself authenticates
 * (it answers `hello` with `auth`), resyncs on `welcome` and acks deliveries; this module only
 * sequences the socket:
 *
 *   idle → connecting → open (hello/auth in flight) → online (welcome seen)
 *        ↘ waiting (backoff, retryAt) ↗           ↘ stopped (replaced by another connection)
 *
 * Frames other than `auth` that the engine sends before `welcome` are held and flushed right
 * after it (the relay refuses them unauthenticated, PROTOCOL.md §4–§5). The engine's Transport
 * contract is "send only while connected", so anything still held when the socket closes is
 * dropped: after `onDisconnected` the engine owns resending.
 */
import {
  CLOSE,
  type ClientFrame,
  type ErrorCode,
  PROTOCOL_VERSION,
  parseServerFrame,
  type ServerFrame,
} from "../../../shared/protocol";
import { type BackoffPolicy, backoffDelay } from "./backoff";

export type ConnState =
  | { s: "idle" }
  | { s: "connecting"; attempt: number }
  | { s: "open" }
  | { s: "online" }
  | { s: "waiting"; attempt: number; retryAt: number }
  | { s: "stopped"; reason: "replaced" | "retired" | "auth_failed" | "closed" };

export interface ConnectionOptions {
  url: string;
  onOpen(): void;
  onFrame(frame: ServerFrame): void;
  onClose(): void;
  onState(state: ConnState): void;
  /** A frame from the relay failed parsing: never reaches the engine. */
  onBadFrame?(code: ErrorCode): void;
  now?: () => number;
  random?: () => number;
  /** The backoff policy for the next wait, asked each time (it may depend on visibility). */
  backoff?: () => BackoffPolicy;
  /** Send `ping` this often while open (ms). */
  pingEveryMs?: number;
  /** Close and reconnect when nothing arrived for this long (ms). */
  deadAfterMs?: number;
  /** Most frames held before `welcome`; beyond that the oldest are dropped. */
  maxHeld?: number;
  createSocket?: (url: string) => SocketLike;
}

/** WebSocket.readyState OPEN (RFC 6455 API): a constant, so tests can inject a fake socket. */
const OPEN = 1;

/** The parts of a WebSocket this module uses (the browser's, or a test double). */
export interface SocketLike {
  readyState: number;
  onopen: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
  send(data: string): void;
  close(code?: number): void;
}

export class Connection {
  private ws: SocketLike | null = null;
  private state: ConnState = { s: "idle" };
  private attempt = 0;
  private held: string[] = [];
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private lastRx = 0;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly opts: ConnectionOptions) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
  }

  get current(): ConnState {
    return this.state;
  }

  /**
   * Connect: the first time, or again after a stop. After "replaced" this takes the connection
   * back (the user chose "Use here"): the relay keeps the newest connection of an identity.
   */
  start(): void {
    if (this.state.s === "idle" || this.state.s === "stopped") this.connect();
  }

  /** Skip the rest of a backoff wait (network came back, user pressed "retry now"). */
  retryNow(): void {
    if (this.state.s === "waiting") {
      this.clearRetry();
      this.connect();
    }
  }

  /** Close for good (tab lost ownership, user locked the app). */
  stop(): void {
    this.clearRetry();
    this.setState({ s: "stopped", reason: "closed" });
    this.teardown(CLOSE.normal);
  }

  send(frame: ClientFrame): void {
    const text = JSON.stringify(frame);
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return; // engine resends after reconnect
    // `link_offer` is the one other frame a socket may send before it authenticates (§4.8.3).
    if (
      this.state.s === "online" ||
      frame.t === "auth" ||
      frame.t === "ping" ||
      frame.t === "link_offer"
    ) {
      ws.send(text);
      return;
    }
    this.held.push(text);
    const max = this.opts.maxHeld ?? 1000;
    if (this.held.length > max) this.held.splice(0, this.held.length - max);
  }

  private connect(): void {
    this.teardown(CLOSE.normal);
    this.setState({ s: "connecting", attempt: this.attempt });
    let ws: SocketLike;
    try {
      ws = this.opts.createSocket
        ? this.opts.createSocket(this.opts.url)
        : new WebSocket(this.opts.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastRx = this.now();
      this.setState({ s: "open" });
      this.startPing();
      this.opts.onOpen();
    };
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      this.lastRx = this.now();
      const r = parseServerFrame(e.data);
      if (!r.ok) {
        this.opts.onBadFrame?.(r.code);
        return;
      }
      if (r.frame.t === "pong") return;
      if (r.frame.t === "welcome") {
        this.attempt = 0;
        this.setState({ s: "online" });
        // The engine sees welcome first, then everything held behind the handshake goes out.
        this.opts.onFrame(r.frame);
        const held = this.held;
        this.held = [];
        for (const t of held) ws.send(t);
        return;
      }
      this.opts.onFrame(r.frame);
    };
    ws.onclose = (e) => this.closed(ws, e.code);
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  private closed(ws: SocketLike, code: number): void {
    if (this.ws !== ws) return;
    this.ws = null;
    this.held = [];
    this.stopPing();
    this.opts.onClose();
    if (code === CLOSE.replaced) {
      // Another connection of this identity took over (another device or a taken-over tab):
      // reconnecting would just steal it back.
      this.setState({ s: "stopped", reason: "replaced" });
      return;
    }
    if (code === CLOSE.deviceReplaced) {
      // The identity was restored on another device (PROTOCOL.md §4.3): the relay refuses this
      // one until the user claims it back here (`start` after the engine's reclaimDevice).
      this.setState({ s: "stopped", reason: "retired" });
      return;
    }
    // A refused authentication will not fix itself quickly: start further up the backoff.
    if (code === CLOSE.authFailed) this.attempt = Math.max(this.attempt, 4);
    if (this.state.s !== "stopped") this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const delay = backoffDelay(this.attempt, this.random(), this.opts.backoff?.());
    const retryAt = this.now() + delay;
    this.setState({ s: "waiting", attempt: this.attempt, retryAt });
    this.attempt++;
    this.clearRetry();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private startPing(): void {
    this.stopPing();
    const every = this.opts.pingEveryMs ?? 20_000;
    const dead = this.opts.deadAfterMs ?? 50_000;
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws) return;
      if (this.now() - this.lastRx > dead) {
        // Half-open TCP (laptop lid, lost Wi-Fi): no close event may ever come, so treat the
        // socket as closed now (1006 = abnormal closure, RFC 6455 §7.4.1) and reconnect.
        ws.onclose = null;
        ws.close(CLOSE.normal);
        this.closed(ws, 1006);
        return;
      }
      if (ws.readyState === OPEN) ws.send(JSON.stringify({ v: PROTOCOL_VERSION, t: "ping" }));
    }, every);
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private teardown(code: number): void {
    const ws = this.ws;
    this.ws = null;
    this.held = [];
    this.stopPing();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code);
      } catch {
        // already closed
      }
      this.opts.onClose();
    }
  }

  private setState(s: ConnState): void {
    this.state = s;
    this.opts.onState(s);
  }
}
