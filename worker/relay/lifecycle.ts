/**
 * The hub's Durable Object lifecycle (PROTOCOL.md §4.1) without workerd's own classes, so the
 * same code runs in production and in Node tests: the `Relay` object (worker/relay.ts) hands
 * every event here, and the Node harness (test/support/node-relay.ts) drives it over a Node
 * SQLite and in-process sockets. Every handler restores the Session from its (re-validated)
 * attachment and calls into `Hub`, where the protocol logic lives; nothing here decides anything.
 */
import * as v from "valibot";
import { randomBytes } from "../../shared/crypto/random";
import { toB64u } from "../../shared/encoding";
import type { PresenceScope } from "../../shared/protocol";
import { CHALLENGE_BYTES, CLOSE, HubName, Name, Rendezvous } from "../../shared/protocol";
import { DEFAULT_HUB } from "../http";
import { addressBucket } from "./admission";
import { Origin, parseAttachment } from "./attachment";
import type { GroupGateway } from "./group-object";
import { type BlobGateway, DEFAULT_GROUPS, Hub, type PeerGateway } from "./hub";
import { type DirectoryGateway, KeyDirectory } from "./key-directory";
import { LinkStore } from "./links";
import type { PushConfig } from "./push-send";
import { Session, SessionRegistry } from "./session";
import { Store } from "./store";

/** What the relay uses of its object's `DurableObjectState` (the real one satisfies it). */
export interface RelayState {
  readonly storage: {
    readonly sql: Pick<SqlStorage, "exec">;
    getAlarm(): Promise<number | null>;
    setAlarm(scheduledTime: number): Promise<void>;
  };
  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T>;
  acceptWebSocket(ws: WebSocket): void;
  getWebSockets(): WebSocket[];
  getWebSocketAutoResponseTimestamp(ws: WebSocket): Date | null;
}

/** A WebSocket upgrade the object takes: what its socket's `hello` is made from. */
export interface Admitted {
  hub: string;
  origin: string;
  /** Client address bucket (admission.ts). */
  ip: string;
  /** The user whose route this is (`/ws?hub=h&user=name`); absent: the hub's object. */
  user?: string;
  /** The rendezvous whose route this is (`/ws?hub=h&link=r`, a new device's, §4.8.3). */
  link?: string;
}

export class RelayLifecycle {
  readonly #ctx: RelayState;
  readonly #clock: () => number;
  readonly #sessions = new SessionRegistry();
  /** The object's storage; the Node harness reads and (as a failing relay) edits it too. */
  readonly store: Store;
  readonly hub: Hub;
  #alarmAt: number | null = null;
  #lastNow = 0;

  /**
   * `clock` is wall-clock milliseconds (`Date.now` in production); `directory` the hub's key
   * directory object (key-directory.ts); `groups` its group objects (group-object.ts); `push` the Web Push settings
   * (push-send.ts pushConfigFromEnv), null when push is off; `presenceDefault` the hub's
   * default presence scope (presence.ts presenceDefaults; PROTOCOL.md §6.3).
   */
  constructor(
    ctx: RelayState,
    clock: () => number,
    directory: DirectoryGateway,
    groups: GroupGateway,
    push: PushConfig | null = null,
    blobs: BlobGateway | null = null,
    presenceDefault: (hub: string) => PresenceScope = () => "contacts",
    peers: PeerGateway | null = null,
  ) {
    this.#ctx = ctx;
    this.#clock = clock;
    this.store = new Store(ctx.storage.sql);
    const links = new LinkStore(ctx.storage.sql);
    // A user's object keeps its user's prekeys (key-directory.ts); made at first use, after the
    // migration, so the hub's object and a group's home never create those tables.
    let ownKeys: KeyDirectory | null = null;
    void ctx.blockConcurrencyWhile(async () => {
      this.store.migrate(DEFAULT_GROUPS, this.#now());
      this.#alarmAt = await ctx.storage.getAlarm();
    });
    this.hub = new Hub({
      store: this.store,
      sessions: this.#sessions,
      now: () => this.#now(),
      wakeAt: (at) => this.#wakeAt(at),
      lastAutoPong: (s) => ctx.getWebSocketAutoResponseTimestamp(s.ws)?.getTime() ?? null,
      push,
      blobs,
      presenceDefault,
      directory,
      // Its prekey tables have the names a hub's object once kept (store.ts #dropLegacy): each
      // is marked current as it is made, so no later start drops it.
      ownKeys: () =>
        (ownKeys ??= new KeyDirectory(ctx.storage.sql, (t) => this.store.keepAsCurrent(t))),
      groups,
      links,
      peers,
    });
    // After hibernation the sockets are still there; their state comes back from attachments.
    for (const ws of ctx.getWebSockets()) this.#restore(ws);
  }

  /** Check a WebSocket upgrade request: the HTTP refusal, or what to accept its socket with. */
  admit(request: Request): Response | Admitted {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return new Response("Upgrade Required", { status: 426 });
    }
    // The Worker validated both already; the object checks again rather than trust a caller.
    const params = new URL(request.url).searchParams;
    const hub = v.safeParse(HubName, params.get("hub") ?? DEFAULT_HUB);
    const origin = v.safeParse(Origin, request.headers.get("Origin"));
    if (!hub.success) return new Response("Bad hub name", { status: 400 });
    const user = params.has("user") ? v.safeParse(Name, params.get("user")) : null;
    if (user !== null && !user.success) return new Response("Bad user name", { status: 400 });
    const link = params.has("link") ? v.safeParse(Rendezvous, params.get("link")) : null;
    if (link !== null && (!link.success || user !== null))
      return new Response("Bad link route", { status: 400 });
    if (!origin.success) return new Response("Forbidden", { status: 403 });
    const ip = addressBucket(request.headers.get("CF-Connecting-IP"));
    const admitted = this.hub.admit(ip);
    if (!admitted.ok) return new Response("Busy", { status: 503 });
    // The pending budget is full of other sources' sockets: the one waiting longest makes room.
    admitted.evict?.close(CLOSE.authTimeout, "auth timeout");
    return {
      hub: hub.output,
      origin: origin.output,
      ip,
      ...(user !== null ? { user: user.output } : {}),
      ...(link !== null ? { link: link.output } : {}),
    };
  }

  /** Take the server end of an admitted socket and send its `hello`. */
  accept(ws: WebSocket, a: Admitted): void {
    this.#ctx.acceptWebSocket(ws);
    const { att, frame } = this.hub.hello(
      a.hub,
      a.origin,
      toB64u(randomBytes(CHALLENGE_BYTES)),
      a.ip,
      a.user,
      a.link,
    );
    const s = new Session(ws, att, this.#now());
    s.save(att);
    this.#sessions.add(s);
    s.send(frame);
  }

  async message(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const s = this.#sessions.get(ws) ?? this.#restore(ws);
    if (s !== undefined) await this.hub.message(s, message);
  }

  closed(ws: WebSocket, code: number, reason: string): void {
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

  errored(ws: WebSocket): void {
    // Transport errors at teardown (peer vanished) are normal; they are not logged as failures.
    this.#gone(ws);
  }

  /** The alarm: periodic duties, then the Web Pushes that are due (PROTOCOL.md §7.9). */
  async alarm(): Promise<void> {
    this.#alarmAt = null;
    const next = this.hub.alarm();
    if (next !== null) this.#wakeAt(next);
    await this.hub.sendPushes();
  }

  #gone(ws: WebSocket): void {
    const s = this.#sessions.get(ws) ?? this.#restore(ws, false);
    if (s !== undefined) this.hub.closed(s);
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
    this.#lastNow = Math.max(this.#lastNow, this.#clock());
    return this.#lastNow;
  }

  #wakeAt(at: number): void {
    if (this.#alarmAt !== null && this.#alarmAt <= at) return;
    this.#alarmAt = at;
    this.#ctx.storage.setAlarm(at).catch((e: unknown) => {
      this.#alarmAt = null;
      console.error("relay: setAlarm failed", e instanceof Error ? e.name : typeof e);
    });
  }
}
