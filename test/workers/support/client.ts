/**
 * A test client for the relay inside workerd: opens a WebSocket through the Worker
 * (`SELF.fetch` with an Upgrade header), authenticates with real Ed25519 keys, and awaits frames
 * with timeouts. Every frame it receives is checked with `parseServerFrame`, so a test also fails
 * if the relay ever sends something outside the wire contract.
 */
import { SELF } from "cloudflare:test";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  type IdentityKeyPair,
} from "../../../shared/crypto/ed25519";
import { randomBytes } from "../../../shared/crypto/random";
import { fromB64u, toB64u } from "../../../shared/encoding";
import {
  type ClientFrame,
  type FrameOf,
  PROTOCOL_VERSION,
  parseServerFrame,
  type ServerFrame,
} from "../../../shared/protocol";
import { authTranscript, signedPrekeyTranscript } from "../../../worker/relay/auth";

export const ORIGIN = "http://relay.test";
export const BASE = `${ORIGIN}`;

type S<T extends ServerFrame["t"]> = FrameOf<ServerFrame, T>;

export interface Keys {
  identity: IdentityKeyPair;
  identityKey: string;
}

export async function newKeys(): Promise<Keys> {
  const identity = await generateIdentityKeyPair();
  return { identity, identityKey: toB64u(identity.publicKey) };
}

export async function signedPrekey(keys: Keys, id = 1, key = randomBytes(32)) {
  const sig = await ed25519Sign(keys.identity.privateKey, signedPrekeyTranscript(id, key));
  return { id, key: toB64u(key), sig: toB64u(sig) };
}

export function oneTimePrekeys(from: number, n: number) {
  return Array.from({ length: n }, (_, i) => ({ id: from + i, key: toB64u(randomBytes(32)) }));
}

let hubCounter = 0;
/** A fresh hub name per test keeps tests independent inside one shared object namespace. */
export function freshHub(prefix = "t"): string {
  hubCounter++;
  return `${prefix}-${Date.now().toString(36)}-${hubCounter}`;
}

export class TestClient {
  readonly queue: ServerFrame[] = [];
  readonly invalid: unknown[] = [];
  closed: { code: number; reason: string } | null = null;
  #waiters: Array<() => void> = [];
  hello: S<"hello"> | null = null;
  keys: Keys | null = null;
  username = "";

  private constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (e) => {
      const r = parseServerFrame(e.data);
      if (r.ok) this.queue.push(r.frame);
      else this.invalid.push(e.data);
      this.#wake();
    });
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
      this.#wake();
    });
  }

  /** `ip`: the CF-Connecting-IP the edge would set (absent: none, as under `wrangler dev`). */
  static async open(hub: string, origin = ORIGIN, ip?: string): Promise<TestClient> {
    const headers: Record<string, string> = { Upgrade: "websocket", Origin: origin };
    if (ip !== undefined) headers["CF-Connecting-IP"] = ip;
    const res = await SELF.fetch(`${BASE}/ws?hub=${hub}`, { headers });
    const ws = res.webSocket;
    if (res.status !== 101 || ws === null) throw new Error(`upgrade failed: ${res.status}`);
    ws.accept();
    const c = new TestClient(ws);
    c.hello = await c.next("hello");
    return c;
  }

  /** Open, authenticate and consume welcome (returned) — presence is left in the queue. */
  static async connect(
    hub: string,
    username: string,
    keys?: Keys,
  ): Promise<{ c: TestClient; welcome: S<"welcome"> }> {
    const c = await TestClient.open(hub);
    const welcome = await c.auth(username, keys ?? (await newKeys()));
    return { c, welcome };
  }

  async authFrame(
    username: string,
    keys: Keys,
    opts: {
      origin?: string;
      hub?: string;
      spk?: Awaited<ReturnType<typeof signedPrekey>>;
      /** Device id (default: derived from the identity key, so one device per identity). */
      device?: string;
      claim?: boolean;
    } = {},
  ): Promise<FrameOf<ClientFrame, "auth">> {
    if (this.hello === null) throw new Error("no hello");
    const spk = opts.spk ?? (await signedPrekey(keys));
    const device = opts.device ?? toB64u(keys.identity.publicKey.slice(0, 16));
    const claim = opts.claim ?? false;
    const msg = authTranscript(
      {
        hub: opts.hub ?? this.hello.hub,
        origin: opts.origin ?? ORIGIN,
        challenge: fromB64u(this.hello.challenge),
      },
      username,
      keys.identity.publicKey,
      { id: spk.id, key: fromB64u(spk.key), sig: fromB64u(spk.sig) },
      { id: fromB64u(device), claim },
    );
    const sig = await ed25519Sign(keys.identity.privateKey, msg);
    return {
      v: PROTOCOL_VERSION,
      t: "auth",
      username,
      identityKey: keys.identityKey,
      signedPrekey: spk,
      device,
      claim,
      sig: toB64u(sig),
    };
  }

  async auth(username: string, keys: Keys): Promise<S<"welcome">> {
    this.keys = keys;
    this.username = username;
    this.send(await this.authFrame(username, keys));
    return this.next("welcome");
  }

  send(frame: ClientFrame | Record<string, unknown>): void {
    this.ws.send(JSON.stringify(frame));
  }

  sendRaw(data: string | ArrayBuffer): void {
    this.ws.send(data);
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  #changed(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  /** The first queued frame of type `t` (removed from the queue), waiting up to `timeoutMs`. */
  async next<T extends ServerFrame["t"]>(
    t: T,
    pred: (f: S<T>) => boolean = () => true,
    timeoutMs = 3000,
  ): Promise<S<T>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.queue.findIndex((f) => f.t === t && pred(f as S<T>));
      if (i >= 0) return this.queue.splice(i, 1)[0] as S<T>;
      if (this.invalid.length > 0)
        throw new Error(`relay sent an invalid frame: ${this.invalid[0]}`);
      const left = deadline - Date.now();
      if (left <= 0 || this.closed !== null) {
        throw new Error(
          `timeout waiting for ${t} (closed=${JSON.stringify(this.closed)}; queue=${this.queue.map((f) => f.t).join(",")})`,
        );
      }
      await this.#changed(Math.min(left, 100));
    }
  }

  /** The error answering the frame with `id` (or the next id-less error). */
  error(id?: string, timeoutMs = 3000): Promise<S<"error">> {
    return this.next("error", (f) => f.id === id, timeoutMs);
  }

  /** Assert no frame of type `t` (matching `pred`) arrives within `ms`. */
  async none<T extends ServerFrame["t"]>(
    t: T,
    ms = 300,
    pred: (f: S<T>) => boolean = () => true,
  ): Promise<void> {
    const hit = () => this.queue.some((f) => f.t === t && pred(f as S<T>));
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (hit()) throw new Error(`unexpected ${t} frame`);
      await this.#changed(Math.max(1, deadline - Date.now()));
    }
    if (hit()) throw new Error(`unexpected ${t} frame`);
  }

  async waitClosed(timeoutMs = 3000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (this.closed === null) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timeout waiting for close");
      await this.#changed(Math.min(left, 100));
    }
    return this.closed;
  }

  /**
   * Take `peer` as a contact (message requests, PROTOCOL.md §7.3.1), so its direct messages get
   * the ordinary mailbox share, not the small one for strangers.
   */
  async accept(peer: string): Promise<void> {
    const id = `contact-${peer}`;
    this.send({ v: 1, t: "contact", id, user: peer, state: "accepted" });
    await this.next("accepted", (f) => f.id === id);
  }

  /**
   * Round trip a ping through the object so every earlier frame has been handled. The key order
   * differs from PING_TEXT on purpose: the runtime's auto-response would answer that one without
   * waiting for frames queued before it.
   */
  async sync(): Promise<void> {
    this.send({ t: "ping", v: 1 });
    await this.next("pong");
  }

  close(): void {
    try {
      this.ws.close(1000, "bye");
    } catch {
      // already closed
    }
  }
}
