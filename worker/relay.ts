/**
 * The hub's Durable Object (PROTOCOL.md §4.1): accepts WebSockets with the hibernation API and
 * stays thin. Every lifecycle handler restores the Session from its (re-validated) attachment
 * and calls into `Hub`, where the protocol logic lives; nothing here decides anything.
 */
import { DurableObject } from "cloudflare:workers";
import * as v from "valibot";
import { randomBytes } from "../shared/crypto/random";
import { toB64u } from "../shared/encoding";
import { CHALLENGE_BYTES, CLOSE, HubName, PING_TEXT, PONG_TEXT } from "../shared/protocol";
import { DEFAULT_HUB } from "./http";
import { addressBucket } from "./relay/admission";
import { Origin, parseAttachment } from "./relay/attachment";
import { DEFAULT_GROUPS, Hub } from "./relay/hub";
import { Session, SessionRegistry } from "./relay/session";
import { Store } from "./relay/store";

export class Relay extends DurableObject {
  readonly #sessions = new SessionRegistry();
  readonly #store: Store;
  readonly #hub: Hub;
  #alarmAt: number | null = null;
  #lastNow = 0;

  constructor(ctx: DurableObjectState, env: unknown) {
    super(ctx, env as never);
    this.#store = new Store(ctx.storage.sql);
    void ctx.blockConcurrencyWhile(async () => {
      this.#store.migrate(DEFAULT_GROUPS, this.#now());
      this.#alarmAt = await ctx.storage.getAlarm();
    });
    // Keep-alives are answered by the runtime without waking the object (PROTOCOL.md §4.5).
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_TEXT, PONG_TEXT));
    this.#hub = new Hub({
      store: this.#store,
      sessions: this.#sessions,
      now: () => this.#now(),
      wakeAt: (at) => this.#wakeAt(at),
      lastAutoPong: (s) => ctx.getWebSocketAutoResponseTimestamp(s.ws)?.getTime() ?? null,
    });
    // After hibernation the sockets are still there; their state comes back from attachments.
    for (const ws of ctx.getWebSockets()) this.#restore(ws);
  }

  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return new Response("Upgrade Required", { status: 426 });
    }
    // The Worker validated both already; the object checks again rather than trust a caller.
    const hub = v.safeParse(HubName, new URL(request.url).searchParams.get("hub") ?? DEFAULT_HUB);
    const origin = v.safeParse(Origin, request.headers.get("Origin"));
    if (!hub.success) return new Response("Bad hub name", { status: 400 });
    if (!origin.success) return new Response("Forbidden", { status: 403 });
    const ip = addressBucket(request.headers.get("CF-Connecting-IP"));
    const admitted = this.#hub.admit(ip);
    if (!admitted.ok) return new Response("Busy", { status: 503 });
    // The pending budget is full of other sources' sockets: the one waiting longest makes room.
    admitted.evict?.close(CLOSE.authTimeout, "auth timeout");

    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server);
    const { att, frame } = this.#hub.hello(
      hub.output,
      origin.output,
      toB64u(randomBytes(CHALLENGE_BYTES)),
      ip,
    );
    const s = new Session(server, att, this.#now());
    s.save(att);
    this.#sessions.add(s);
    s.send(frame);
    return new Response(null, { status: 101, webSocket: client });
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const s = this.#session(ws);
    if (s !== undefined) await this.#hub.message(s, message);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // Always answer the close, or the client sits in CLOSING and reports 1006. Codes 1005/1006
    // are reserved for "none received" and may not be sent back (RFC 6455 §7.4.1).
    const echo = code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000;
    try {
      ws.close(echo, reason.slice(0, 120));
    } catch {
      // Already closed (or the runtime answered for us): expected at teardown, not a failure.
    }
    this.#gone(ws);
  }

  override async webSocketError(ws: WebSocket, _error: unknown): Promise<void> {
    // Transport errors at teardown (peer vanished) are normal; they are not logged as failures.
    this.#gone(ws);
  }

  override async alarm(): Promise<void> {
    this.#alarmAt = null;
    const next = this.#hub.alarm();
    if (next !== null) this.#wakeAt(next);
  }

  #gone(ws: WebSocket): void {
    const s = this.#sessions.get(ws) ?? this.#restore(ws, false);
    if (s !== undefined) this.#hub.closed(s);
  }

  #session(ws: WebSocket): Session | undefined {
    return this.#sessions.get(ws) ?? this.#restore(ws);
  }

  /** Rebuild a session from its attachment; a socket whose state does not parse is closed. */
  #restore(ws: WebSocket, closeIfBad = true): Session | undefined {
    let raw: unknown;
    try {
      raw = ws.deserializeAttachment();
    } catch {
      raw = null;
    }
    const att = parseAttachment(raw);
    if (att === null) {
      if (closeIfBad) {
        try {
          ws.close(CLOSE.policy, "bad state");
        } catch {
          // Already closed.
        }
      }
      return undefined;
    }
    const s = new Session(ws, att, this.#now());
    this.#sessions.add(s);
    return s;
  }

  /** Milliseconds that never go backwards, so mailbox timestamps are ordered like mids. */
  #now(): number {
    this.#lastNow = Math.max(this.#lastNow, Date.now());
    return this.#lastNow;
  }

  #wakeAt(at: number): void {
    if (this.#alarmAt !== null && this.#alarmAt <= at) return;
    this.#alarmAt = at;
    this.ctx.storage.setAlarm(at).catch((e: unknown) => {
      this.#alarmAt = null;
      console.error("relay: setAlarm failed", e instanceof Error ? e.name : typeof e);
    });
  }
}
