/**
 * Black-box integration against a real `wrangler dev` ("Done when"): /health, the 426 on
 * a plain /ws, the app at / with security headers, and several authenticated WebSocket clients over
 * ws and over the self-signed wss — including malformed, unknown and oversize (maxFrameBytes) frames, after which the
 * relay still serves. Needs `npm run build` first (dist/pwa); `npm test` does that.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { ed25519Sign, generateIdentityKeyPair } from "../../shared/crypto/ed25519";
import { randomBytes } from "../../shared/crypto/random";
import { fromB64u, toB64u } from "../../shared/encoding";
import { LIMITS, parseServerFrame, type ServerFrame } from "../../shared/protocol";
import { authTranscript, signedPrekeyTranscript } from "../../worker/relay/auth";
import { httpGet, startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";

type S<T extends ServerFrame["t"]> = Extract<ServerFrame, { t: T }>;

class NodeClient {
  readonly queue: ServerFrame[] = [];
  readonly invalid: string[] = [];
  closed: number | null = null;
  hello: S<"hello"> | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data) => {
      const text = data.toString();
      const r = parseServerFrame(text);
      if (r.ok) this.queue.push(r.frame);
      else this.invalid.push(text);
    });
    ws.on("close", (code) => {
      this.closed = code;
    });
  }

  /** `user`: open that user's route (`&user=`, docs/ARCHITECTURE.md "User objects"). */
  static async open(dev: WranglerDev, hub: string, user?: string): Promise<NodeClient> {
    const origin = new URL(dev.url).origin;
    const route = user === undefined ? "" : `&user=${user}`;
    const ws = new WebSocket(`${dev.wsUrl}?hub=${hub}${route}`, {
      headers: { Origin: origin },
      rejectUnauthorized: false,
      maxPayload: 4 * 1024 * 1024,
    });
    const c = new NodeClient(ws);
    await new Promise<void>((res, rej) => {
      ws.once("open", () => res());
      ws.once("error", rej);
    });
    c.hello = await c.next("hello");
    return c;
  }

  async auth(username: string, origin: string): Promise<S<"welcome">> {
    if (this.hello === null) throw new Error("no hello");
    const id = await generateIdentityKeyPair();
    const spkKey = randomBytes(32);
    const spkSig = await ed25519Sign(id.privateKey, signedPrekeyTranscript(1, spkKey));
    const sig = await ed25519Sign(
      id.privateKey,
      authTranscript(
        { hub: this.hello.hub, origin, challenge: fromB64u(this.hello.challenge) },
        username,
        id.publicKey,
        { id: 1, key: spkKey, sig: spkSig },
        { id: id.publicKey.slice(0, 16), claim: false },
      ),
    );
    this.send({
      v: 1,
      t: "auth",
      username,
      identityKey: toB64u(id.publicKey),
      signedPrekey: { id: 1, key: toB64u(spkKey), sig: toB64u(spkSig) },
      device: toB64u(id.publicKey.slice(0, 16)),
      claim: false,
      sig: toB64u(sig),
    });
    return this.next("welcome");
  }

  send(frame: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(frame));
  }

  async next<T extends ServerFrame["t"]>(
    t: T,
    pred: (f: S<T>) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<S<T>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.queue.findIndex((f) => f.t === t && pred(f as S<T>));
      if (i >= 0) return this.queue.splice(i, 1)[0] as S<T>;
      if (this.invalid.length > 0) throw new Error(`invalid frame from relay: ${this.invalid[0]}`);
      if (Date.now() > deadline || this.closed !== null) {
        throw new Error(`no ${t} (closed=${this.closed}, queue=${this.queue.map((f) => f.t)})`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.ws.close(1000);
  }
}

/**
 * After `b` acknowledged what it got from `a`: a second message still arrives (the window moved
 * on), and `a` hears nothing of the acknowledgement (PROTOCOL.md §7.3: no relay receipt).
 */
async function acknowledgedQuietly(a: NodeClient, b: NodeClient): Promise<void> {
  a.send({ v: 1, t: "send", id: "m2", to: "bob", body: "QWdhaW4" });
  await a.next("accepted", (f) => f.id === "m2");
  const d2 = await b.next("deliver", (f) => f.item.kind === "direct" && f.item.body === "QWdhaW4");
  b.send({ v: 1, t: "ack", mids: [d2.mid] });
  // Round trips on both sockets after the acks: whatever the relay sent for them has arrived.
  b.send({ v: 1, t: "ping" });
  await b.next("pong");
  await new Promise((r) => setTimeout(r, 300));
  a.send({ v: 1, t: "ping" });
  await a.next("pong");
  expect(a.queue.filter((f) => f.t === "receipt")).toEqual([]);
}

const built = existsSync(resolve(import.meta.dirname, "../../dist/pwa/index.html"));
let http: WranglerDev | undefined;
let tls: WranglerDev | undefined;

function expectHeaders(h: Record<string, unknown>, isHttps: boolean) {
  expect(String(h["content-security-policy"])).toContain("script-src 'self'");
  expect(String(h["content-security-policy"])).toContain("frame-ancestors 'none'");
  expect(h["x-content-type-options"]).toBe("nosniff");
  expect(h["referrer-policy"]).toBe("no-referrer");
  expect(h["permissions-policy"]).toBeDefined();
  expect(h["strict-transport-security"] !== undefined).toBe(isHttps);
}

describe.skipIf(!built)("relay under wrangler dev", () => {
  beforeAll(async () => {
    // One after the other: both bundle the Worker and the CPU is shared.
    http = await startWranglerDev({ port: testPort(8790) });
    tls = await startWranglerDev({ port: testPort(8791), https: true });
  }, 240_000);

  afterAll(async () => {
    await http?.stop();
    await tls?.stop();
  }, 30_000);

  for (const which of ["ws", "wss"] as const) {
    const dev = () => {
      const d = which === "ws" ? http : tls;
      if (d === undefined) throw new Error("wrangler dev not started");
      return d;
    };

    it(`${which}: /health is 200 and /ws without upgrade is 426`, async () => {
      expect((await httpGet(`${dev().url}/health`)).status).toBe(200);
      expect((await httpGet(`${dev().url}/ws`)).status).toBe(426);
    });

    it(`${which}: / serves the app with the security headers`, async () => {
      const r = await httpGet(`${dev().url}/`);
      expect(r.status).toBe(200);
      expect(r.body).toContain("<html");
      expectHeaders(r.headers, which === "wss");
    });

    it(`${which}: two clients authenticate and exchange a message; its ack sends the sender nothing`, async () => {
      const hub = `it-${which}-${Date.now().toString(36)}`;
      const origin = new URL(dev().url).origin;
      const a = await NodeClient.open(dev(), hub);
      const b = await NodeClient.open(dev(), hub);
      await a.auth("alice", origin);
      await b.auth("bob", origin);
      // Strangers: each sees only itself (PROTOCOL.md §6.3) until someone writes.
      await a.next("presence", (p) => p.users.length === 1);
      a.send({ v: 1, t: "send", id: "m1", to: "bob", body: "SGVsbG8" });
      const acc = await a.next("accepted", (f) => f.id === "m1");
      // alice wrote to bob: bob sees her online.
      await b.next("presence_delta", (p) => p.online.some((u) => u.username === "alice"));
      const d = await b.next("deliver");
      expect(d).toMatchObject({
        mid: acc.mid,
        from: "alice",
        item: { kind: "direct", body: "SGVsbG8" },
      });
      b.send({ v: 1, t: "ack", mids: [d.mid] });
      await acknowledgedQuietly(a, b);
      a.close();
      b.close();
    });

    it(`${which}: on users' routes, each in its own object, a message and presence cross between them; its ack sends the sender nothing`, async () => {
      const hub = `uo-${which}-${Date.now().toString(36)}`;
      const origin = new URL(dev().url).origin;
      const a = await NodeClient.open(dev(), hub, "alice");
      const b = await NodeClient.open(dev(), hub, "bob");
      await a.auth("alice", origin);
      await b.auth("bob", origin);
      await b.next("presence", (p) => p.users.length === 1);
      a.send({ v: 1, t: "send", id: "m1", to: "bob", body: "SGVsbG8" });
      const acc = await a.next("accepted", (f) => f.id === "m1");
      await b.next("presence_delta", (p) => p.online.some((u) => u.username === "alice"));
      const d = await b.next("deliver");
      expect(d).toMatchObject({ mid: acc.mid, from: "alice", item: { kind: "direct" } });
      b.send({ v: 1, t: "ack", mids: [d.mid] });
      await acknowledgedQuietly(a, b);
      // A user's route takes its own name only.
      const m = await NodeClient.open(dev(), hub, "bob");
      await expect(m.auth("mallory", origin)).rejects.toThrow();
      expect(m.queue.some((f) => f.t === "error" && f.code === "auth_failed")).toBe(true);
      a.close();
      b.close();
    });

    it(`${which}: malformed, unknown and oversize frames get error frames; the relay still serves`, async () => {
      const hub = `bad-${which}-${Date.now().toString(36)}`;
      const origin = new URL(dev().url).origin;
      const a = await NodeClient.open(dev(), hub);
      const b = await NodeClient.open(dev(), hub);
      await a.auth("alice", origin);
      await b.auth("bob", origin);
      a.ws.send("{oops");
      expect((await a.next("error")).code).toBe("bad_frame");
      a.send({ v: 1, t: "teleport", id: "u1" });
      expect((await a.next("error", (e) => e.id === "u1")).code).toBe("unknown_type");
      a.ws.send(
        `{"v":1,"t":"send","id":"big","to":"bob","body":"${"A".repeat(LIMITS.maxFrameBytes)}"}`,
      );
      expect((await a.next("error", (e) => e.code === "too_large")).code).toBe("too_large");
      expect(a.closed).toBeNull();
      a.send({ v: 1, t: "send", id: "ok", to: "bob", body: "QUJD" });
      await a.next("accepted", (f) => f.id === "ok");
      expect((await b.next("deliver")).item).toEqual({ kind: "direct", body: "QUJD" });
      // A third client still gets in.
      const c = await NodeClient.open(dev(), hub);
      await c.auth("carol", origin);
      a.close();
      b.close();
      c.close();
    });
  }

  it("a foreign Origin cannot open a socket", async () => {
    const d = http;
    if (d === undefined) throw new Error("not started");
    const ws = new WebSocket(d.wsUrl, { headers: { Origin: "http://evil.test" } });
    const status = await new Promise<number>((res) => {
      ws.on("unexpected-response", (_req, r) => res(r.statusCode ?? 0));
      ws.on("open", () => res(101));
      ws.on("error", () => undefined);
    });
    expect(status).toBe(403);
  });
});
