/// <reference path="./http_ece.d.ts" />
/**
 * A local Web Push service for tests (RFC 8030), on 127.0.0.1: it hands out subscriptions with
 * real P-256 keys, and for every push it receives it VERIFIES the RFC 8292 VAPID header (ES256
 * JWT over aud/exp/sub, signed by the key in `k=`) and DECRYPTS the RFC 8291 aes128gcm body with
 * the subscription's private key and auth secret (`http_ece`, the library Node's `web-push`
 * uses). A push that fails either check is answered 400 and recorded as a failure.
 *
 * Responses can be scripted per subscription (`respond`), to play a push service that rate
 * limits (429), fails (5xx) or has expired the subscription (410).
 *
 * The audience a relay signs for a loopback http endpoint is its https form (worker/relay/
 * push-send.ts): that is what `aud` is checked against.
 */
import {
  createECDH,
  createPublicKey,
  type ECDH,
  randomBytes,
  randomUUID,
  verify,
} from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import * as ece from "http_ece";

export interface TestSubscription {
  id: string;
  endpoint: string;
  keys: { p256dh: string; auth: string };
  ecdh: ECDH;
}

export interface ReceivedPush {
  subscription: string;
  /** The decrypted payload, as text. */
  plaintext: string;
  /** Length of the encrypted body (the push service sees only this). */
  bodyBytes: number;
  ttl: string | null;
  urgency: string | null;
  topic: string | null;
  jwt: { aud: unknown; exp: unknown; sub: unknown };
  vapidKey: string;
}

export interface Scripted {
  status: number;
  retryAfter?: string;
}

export class PushService {
  readonly #server: Server;
  readonly #subs = new Map<string, TestSubscription>();
  readonly #scripts = new Map<string, Scripted[]>();
  /** Pushes that verified and decrypted (answered 201). */
  readonly received: ReceivedPush[] = [];
  /** Every request, in order, with the status it was answered with. */
  readonly attempts: Array<{ subscription: string; status: number }> = [];
  /** Why a request failed verification, if one did. */
  readonly failures: string[] = [];
  port = 0;

  constructor() {
    this.#server = createServer((req, res) => {
      void this.#handle(req, res);
    });
  }

  static async start(): Promise<PushService> {
    const p = new PushService();
    await new Promise<void>((resolve) => p.#server.listen(0, "127.0.0.1", resolve));
    p.port = (p.#server.address() as AddressInfo).port;
    return p;
  }

  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A new subscription, as `PushManager.subscribe` would make one. */
  subscribe(): TestSubscription {
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    const id = randomUUID();
    const sub: TestSubscription = {
      id,
      endpoint: `${this.origin}/push/${id}`,
      keys: {
        p256dh: ecdh.getPublicKey().toString("base64url"),
        auth: randomBytes(16).toString("base64url"),
      },
      ecdh,
    };
    this.#subs.set(id, sub);
    return sub;
  }

  /** The push service forgets `sub`: its next push is answered 410 Gone (RFC 8030 §7.3). */
  expire(sub: TestSubscription): void {
    this.#subs.delete(sub.id);
  }

  /** Answer the next pushes to `sub` with these statuses (then 201 again). */
  respond(sub: TestSubscription, ...answers: Scripted[]): void {
    this.#scripts.set(sub.id, [...(this.#scripts.get(sub.id) ?? []), ...answers]);
  }

  pushesTo(sub: TestSubscription): ReceivedPush[] {
    return this.received.filter((p) => p.subscription === sub.id);
  }

  /**
   * The same service driven over HTTP, for tests that run inside workerd (test/workers): make a
   * subscription, script answers, expire one, read what arrived.
   */
  #control(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const [, , verb, id = ""] = (req.url ?? "").split("/");
    const sub = [...this.#subs.values()].find((x) => x.id === id);
    if (verb === "subscribe") {
      const s = this.subscribe();
      json(res, { id: s.id, endpoint: s.endpoint, keys: s.keys });
      return;
    }
    if (verb === "respond" && sub !== undefined) {
      this.respond(sub, ...(JSON.parse(body.toString("utf8")) as Scripted[]));
      json(res, { ok: true });
      return;
    }
    if (verb === "expire" && sub !== undefined) {
      this.expire(sub);
      json(res, { ok: true });
      return;
    }
    if (verb === "received") {
      json(res, {
        received: this.received.filter((p) => p.subscription === id),
        attempts: this.attempts.filter((a) => a.subscription === id),
        failures: this.failures,
      });
      return;
    }
    res.writeHead(404).end();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    if (req.url?.startsWith("/control/")) return this.#control(req, res, body);
    const m = /^\/push\/([0-9a-f-]+)$/.exec(req.url ?? "");
    const id = m?.[1] ?? "";
    const answer = (status: number, headers: Record<string, string> = {}) => {
      this.attempts.push({ subscription: id, status });
      res.writeHead(status, headers).end();
    };
    const sub = this.#subs.get(id);
    if (req.method !== "POST" || sub === undefined) return answer(m === null ? 404 : 410);
    const script = this.#scripts.get(id)?.shift();
    if (script !== undefined) {
      return answer(
        script.status,
        script.retryAfter === undefined ? {} : { "retry-after": script.retryAfter },
      );
    }
    try {
      const vapid = verifyVapid(req.headers.authorization ?? "", `https://127.0.0.1:${this.port}`);
      if (req.headers["content-encoding"] !== "aes128gcm") throw new Error("content-encoding");
      const plain = ece.decrypt(body, {
        version: "aes128gcm",
        privateKey: sub.ecdh,
        authSecret: sub.keys.auth,
      });
      this.received.push({
        subscription: id,
        plaintext: plain.toString("utf8"),
        bodyBytes: body.length,
        ttl: header(req, "ttl"),
        urgency: header(req, "urgency"),
        topic: header(req, "topic"),
        jwt: vapid.claims,
        vapidKey: vapid.key,
      });
      answer(201, { location: `${this.origin}/message/${randomUUID()}` });
    } catch (e) {
      this.failures.push(e instanceof Error ? e.message : String(e));
      answer(400);
    }
  }
}

function json(res: ServerResponse, value: unknown): void {
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(value));
}

function header(req: IncomingMessage, name: string): string | null {
  const v = req.headers[name];
  return typeof v === "string" ? v : null;
}

/** RFC 8292 §3: `vapid t=<JWT>, k=<P-256 public key>`; the JWT is ES256 (§2) over aud/exp/sub. */
export function verifyVapid(
  authorization: string,
  audience: string,
): { claims: { aud: unknown; exp: unknown; sub: unknown }; key: string } {
  const m = /^vapid t=([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+), k=([A-Za-z0-9_-]+)$/.exec(
    authorization,
  );
  if (m === null) throw new Error("authorization is not a VAPID header");
  const [token, k] = [m[1] as string, m[2] as string];
  const [h, p, sig] = token.split(".") as [string, string, string];
  const head = JSON.parse(Buffer.from(h, "base64url").toString("utf8")) as Record<string, unknown>;
  if (head.alg !== "ES256") throw new Error("JWT alg is not ES256");
  const raw = Buffer.from(k, "base64url");
  if (raw.length !== 65 || raw[0] !== 4) throw new Error("k is not an uncompressed P-256 key");
  const key = createPublicKey({
    key: {
      kty: "EC",
      crv: "P-256",
      x: raw.subarray(1, 33).toString("base64url"),
      y: raw.subarray(33).toString("base64url"),
    },
    format: "jwk",
  });
  const ok = verify(
    "sha256",
    Buffer.from(`${h}.${p}`),
    { key, dsaEncoding: "ieee-p1363" },
    Buffer.from(sig, "base64url"),
  );
  if (!ok) throw new Error("JWT signature does not verify");
  const claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8")) as Record<
    string,
    unknown
  >;
  if (claims.aud !== audience) throw new Error(`JWT aud ${String(claims.aud)}`);
  const now = Math.floor(Date.now() / 1000);
  // RFC 8292 §2: exp no more than 24 hours ahead.
  if (typeof claims.exp !== "number" || claims.exp <= now || claims.exp > now + 24 * 3600) {
    throw new Error("JWT exp out of range");
  }
  if (typeof claims.sub !== "string" || !/^(mailto:|https:)/.test(claims.sub)) {
    throw new Error("JWT sub is not a contact URI");
  }
  return { claims: { aud: claims.aud, exp: claims.exp, sub: claims.sub }, key: k };
}

/** A VAPID key pair as the relay's environment holds it (scripts/dev-vars.mjs makes the same). */
export function testVapidKeys(): { publicKey: string; privateKey: string } {
  for (;;) {
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    const d = ecdh.getPrivateKey();
    // The JWK `d` is exactly 32 bytes (RFC 7518 §6.2.2.1); a scalar with a zero top byte may
    // come out shorter here: draw again.
    if (d.length !== 32) continue;
    return {
      publicKey: ecdh.getPublicKey().toString("base64url"),
      privateKey: d.toString("base64url"),
    };
  }
}
