/**
 * A test client for the relay inside workerd: opens a WebSocket through the Worker
 * (`SELF.fetch` with an Upgrade header), authenticates with real Ed25519 keys, and awaits frames
 * with timeouts. Every frame it receives is checked with `parseServerFrame`, so a test also fails
 * if the relay ever sends something outside the wire contract.
 */
import { SELF } from "cloudflare:test";
import { leafTranscript } from "../../../shared/core/group-schedule";
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

/** `n` leaf keys signed by `keys` for `group` of `hub` (PROTOCOL.md §9.3), ids from `from`. */
export async function signedLeaves(keys: Keys, hub: string, group: string, from: number, n = 2) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const key = randomBytes(32);
    const nonce = randomBytes(16);
    const id = from + i;
    const sig = await ed25519Sign(
      keys.identity.privateKey,
      leafTranscript(hub, group, 0, id, key, nonce),
    );
    out.push({ id, key: toB64u(key), epoch: 0, nonce: toB64u(nonce), sig: toB64u(sig) });
  }
  return out;
}

const ZERO_INTERIM = toB64u(new Uint8Array(32));

let hubCounter = 0;
/** A fresh hub name per test keeps tests independent inside one shared object namespace. */
/** The opaque commit core the relay tests send (the relay never opens it, §7.5). */
export const CORE = "Q09SRQ";
/** A distinct, canonical base64url wrap per member, so a test can tell whose wrap it got. */
export const wrapFor = (name: string) =>
  btoa(`wrap:${name}`).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");

/**
 * A commit frame as a client sends it: `members` the new roster, one wrap per member. `send`
 * adds each wrap's current leaf id and the interim hash (see TestClient.send).
 */
export function commitFrame(id: string, group: string, parentEpoch: number, members: string[]) {
  return {
    v: 1,
    t: "commit",
    id,
    group,
    parentEpoch,
    members,
    core: CORE,
    wraps: members.map((to) => ({ to, wrap: wrapFor(to) })),
  };
}

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

  /** The latest relay state of each group seen (welcome and `group` frames). */
  readonly groups = new Map<string, S<"group">["state"]>();
  #sends: Promise<void> = Promise.resolve();
  #leafSeq = 1;

  private constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (e) => {
      const r = parseServerFrame(e.data);
      if (r.ok) {
        this.queue.push(r.frame);
        if (r.frame.t === "group") this.groups.set(r.frame.state.group, r.frame.state);
        if (r.frame.t === "welcome") for (const g of r.frame.groups) this.groups.set(g.group, g);
      } else this.invalid.push(e.data);
      this.#wake();
    });
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
      this.#wake();
    });
  }

  /**
   * `ip`: the CF-Connecting-IP the edge would set (absent: none, as under `wrangler dev`);
   * `user`: open that user's route (`&user=`, docs/ARCHITECTURE.md "User objects"), or a
   * rendezvous's (`&link=`, PROTOCOL.md §4.8.3).
   */
  static async open(
    hub: string,
    origin = ORIGIN,
    ip?: string,
    user?: string | { link: string },
  ): Promise<TestClient> {
    const headers: Record<string, string> = { Upgrade: "websocket", Origin: origin };
    if (ip !== undefined) headers["CF-Connecting-IP"] = ip;
    const route =
      user === undefined ? "" : typeof user === "string" ? `&user=${user}` : `&link=${user.link}`;
    const res = await SELF.fetch(`${BASE}/ws?hub=${hub}${route}`, { headers });
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
    opts: { routed?: boolean } = {},
  ): Promise<{ c: TestClient; welcome: S<"welcome"> }> {
    const c = await TestClient.open(hub, ORIGIN, undefined, opts.routed ? username : undefined);
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

  /**
   * Frames go out in order. A `join` without `leaves` gets fresh signed leaf keys, and a
   * `commit` whose wraps name no `leaf` gets each member's current one from the last group
   * state seen (and a zero `interim`), so relay tests need not build them (PROTOCOL.md §9.3).
   */
  send(frame: ClientFrame | Record<string, unknown>): void {
    this.#sends = this.#sends.then(async () => {
      this.#out(JSON.stringify(await this.#complete(frame as Record<string, unknown>)));
    });
  }

  sendRaw(data: string | ArrayBuffer): void {
    this.#sends = this.#sends.then(() => this.#out(data));
  }

  /**
   * Sends are queued (a frame may wait for its leaf keys to be signed), so one can come due after
   * the relay closed the socket: like a browser's WebSocket, a closed one drops it.
   */
  #out(data: string | ArrayBuffer): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(data);
  }

  async #complete(f: Record<string, unknown>): Promise<Record<string, unknown>> {
    const group = typeof f.group === "string" ? f.group : null;
    if (f.t === "join" && !("leaves" in f) && this.keys && this.hello && group !== null) {
      const leaves = await signedLeaves(this.keys, this.hello.hub, group, this.#leafSeq, 2);
      this.#leafSeq += 2;
      return { ...f, leaves };
    }
    if (f.t === "commit" && Array.isArray(f.wraps) && group !== null) {
      const to = (f.wraps as Array<Record<string, unknown>>).map((w) => String(w.to));
      const known = () => {
        const g = this.groups.get(group);
        const names = new Set(
          [...(g?.members ?? []), ...(g?.pendingJoins ?? [])].map((m) => m.username),
        );
        return g?.epoch === f.parentEpoch && to.every((n) => names.has(n));
      };
      // The state a test commits on (its epoch, its joins) may still be on its way.
      const deadline = Date.now() + 2000;
      while (!known() && Date.now() < deadline) await this.#changed(100);
      const st = this.groups.get(group);
      const heads = new Map(
        [...(st?.members ?? []), ...(st?.pendingJoins ?? [])].map((m) => [m.username, m.leaf.id]),
      );
      const wraps = (f.wraps as Array<Record<string, unknown>>).map((w) =>
        "leaf" in w ? w : { ...w, leaf: heads.get(String(w.to)) ?? 0 },
      );
      return { ...f, wraps, ...("interim" in f ? {} : { interim: ZERO_INTERIM }) };
    }
    return f;
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
          `timeout waiting for ${t} (closed=${JSON.stringify(this.closed)}; queue=${this.queue.map((f) => (f.t === "error" ? `error ${f.code}${f.id === undefined ? "" : ` for ${f.id}`}` : f.t)).join(",")})`,
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

/** A distinct valid body per message (canonical base64url of "m<i>"). */
export const body = (i: number) =>
  btoa(`m${i}`).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");

/** All deliver frames that arrived (removed from the queue), after a round trip. */
export async function delivered(c: TestClient): Promise<S<"deliver">[]> {
  await c.sync();
  const out: S<"deliver">[] = [];
  for (let i = 0; i < c.queue.length; ) {
    const f = c.queue[i];
    if (f?.t === "deliver") {
      out.push(f);
      c.queue.splice(i, 1);
    } else i++;
  }
  return out;
}

export interface Member {
  name: string;
  keys: Keys;
  c: TestClient;
}

/**
 * Connect `names`, put them all in group `g` (the first founds it, the others join, one commit
 * admits them) and acknowledge the commits, so every connection starts with nothing in flight.
 * Returns the members and the group's epoch.
 */
export async function groupOf(
  hub: string,
  names: string[],
): Promise<{ m: Member[]; epoch: number }> {
  const m: Member[] = [];
  for (const name of names) {
    const keys = await newKeys();
    m.push({ name, keys, c: (await TestClient.connect(hub, name, keys)).c });
  }
  const [first, ...rest] = m as [Member, ...Member[]];
  first.c.send({ v: 1, t: "join", id: "j", group: "g" });
  await first.c.next("accepted", (f) => f.id === "j");
  first.c.send(commitFrame("c0", "g", 0, [first.name]));
  await first.c.next("accepted", (f) => f.id === "c0");
  for (const x of rest) {
    x.c.send({ v: 1, t: "join", id: "j", group: "g" });
    await x.c.next("accepted", (f) => f.id === "j");
  }
  if (rest.length > 0) {
    await first.c.next("group", (f) => f.state.pendingJoins.length === rest.length);
    first.c.send(commitFrame("c1", "g", 1, names));
    await first.c.next("accepted", (f) => f.id === "c1");
  }
  for (const x of m) {
    const mids: string[] = [];
    const want = x === first && rest.length > 0 ? 2 : 1;
    for (let i = 0; i < want; i++) mids.push((await x.c.next("deliver")).mid);
    x.c.send({ v: 1, t: "ack", mids });
    await x.c.sync();
  }
  return { m, epoch: rest.length > 0 ? 2 : 1 };
}
