/**
 * Web Push from the relay (PROTOCOL.md §7.9): the subscriptions a hub holds, and the one impure
 * step, the HTTP request to a push service. The rules (when, coalescing, retries, which
 * endpoints) are push.ts; the RFC 8291 payload encryption and the RFC 8292 VAPID header are
 * `@block65/webcrypto-web-push` (WebCrypto only, so the same code runs in workerd and Node).
 *
 * Sends happen from the object's alarm, never inside a client's frame: a slow push service
 * delays nobody's messages. Each alarm sends at most MAX_PUSHES_PER_ALARM (a Worker invocation
 * has a bounded number of subrequests) and sets the alarm again for the rest.
 */
import { encryptNotification, vapidHeaders } from "@block65/webcrypto-web-push";
import { fromB64u } from "../../shared/encoding";
import {
  type ClientFrame,
  type ErrorCode,
  type FrameOf,
  LIMITS,
  P256_PUBLIC_KEY_BYTES,
  userOfMember,
} from "../../shared/protocol";
import { deviceAddress } from "./device-lists";
import {
  afterAttempt,
  classify,
  connected,
  endpointAllowed,
  IDLE_PUSH_STATE,
  isDue,
  PUSH_PAYLOAD,
  PUSH_TOPIC,
  PUSH_URGENCY,
  type PushOutcome,
  queued,
} from "./push";
import type { SessionRegistry } from "./session";
import type { PushSubRow, Store } from "./store";

/** Pushes one alarm sends at most; the rest go at the next alarm, set for at once. */
export const MAX_PUSHES_PER_ALARM = 50;
/** A push service that does not answer in this long counts as a failure to retry. */
export const PUSH_TIMEOUT_MS = 10_000;

/** The relay's VAPID identity (RFC 8292 §2, §3.2) and the development endpoint setting. */
export interface PushConfig {
  /** Uncompressed P-256 public key, base64url (65 bytes): the `applicationServerKey`. */
  publicKey: string;
  /** The private scalar `d`, base64url (32 bytes). */
  privateKey: string;
  /** RFC 8292 §2.1 contact: a `mailto:` or `https:` URI. */
  subject: string;
  /** Admit `http://127.0.0.1:<port>` endpoints (the tests' local push service); never in production. */
  allowLoopback: boolean;
}

/** The environment variables push reads (wrangler secrets in production, `.dev.vars` locally). */
export interface PushEnv {
  VAPID_PUBLIC_KEY?: string;
  VAPID_PRIVATE_KEY?: string;
  VAPID_SUBJECT?: string;
  /** "1" admits loopback http endpoints (see PushConfig.allowLoopback). */
  PUSH_ALLOW_LOOPBACK?: string;
}

function b64uOfLength(s: string | undefined, bytes: number): s is string {
  if (s === undefined) return false;
  try {
    return fromB64u(s).length === bytes;
  } catch {
    return false;
  }
}

/** Push settings from the environment, or null (push off) when the VAPID keys are not set. */
export function pushConfigFromEnv(env: PushEnv): PushConfig | null {
  const { VAPID_PUBLIC_KEY: pub, VAPID_PRIVATE_KEY: priv, VAPID_SUBJECT: sub } = env;
  if (!b64uOfLength(pub, P256_PUBLIC_KEY_BYTES) || !b64uOfLength(priv, 32)) return null;
  const subject = sub ?? "";
  if (!/^(mailto:|https:\/\/)\S+$/.test(subject)) return null;
  return {
    publicKey: pub,
    privateKey: priv,
    subject,
    allowLoopback: env.PUSH_ALLOW_LOOPBACK === "1",
  };
}

export interface PushesDeps {
  store: Store;
  sessions: SessionRegistry;
  now(): number;
  wakeAt(at: number): void;
  config: PushConfig | null;
}

/** One push request: encrypt the fixed payload, sign VAPID, POST. Never throws. */
export async function sendPush(
  sub: Pick<PushSubRow, "endpoint" | "p256dh" | "auth">,
  config: PushConfig,
  now: number,
): Promise<PushOutcome> {
  try {
    const subscription = {
      endpoint: sub.endpoint,
      expirationTime: null,
      keys: { p256dh: sub.p256dh, auth: sub.auth },
    };
    // The library signs only for https push resources (RFC 8030 §2 requires https); the
    // loopback service of the tests gets the audience of its https form (PushConfig).
    const forJwt = sub.endpoint.startsWith("http:")
      ? { ...subscription, endpoint: `https:${sub.endpoint.slice(5)}` }
      : subscription;
    const vapid = {
      subject: config.subject,
      publicKey: config.publicKey,
      privateKey: config.privateKey,
    };
    const { headers } = await vapidHeaders(forJwt, vapid);
    // Padded to the full 4 KiB record (the library's default), so its size says nothing.
    const body = await encryptNotification(subscription, new TextEncoder().encode(PUSH_PAYLOAD));
    const res = await fetch(sub.endpoint, {
      method: "POST",
      headers: {
        authorization: headers.authorization,
        ttl: String(LIMITS.pushTtlSec),
        urgency: PUSH_URGENCY,
        topic: PUSH_TOPIC,
        "content-encoding": "aes128gcm",
        "content-type": "application/octet-stream",
      },
      body,
      // A redirect could lead anywhere: the endpoint rule holds for the URL fetched, only.
      redirect: "manual",
      signal: AbortSignal.timeout(PUSH_TIMEOUT_MS),
    });
    // The body is not needed; release the connection.
    await res.body?.cancel();
    return classify(res.status, res.headers.get("retry-after"), now);
  } catch (e) {
    console.error("relay: push failed", e instanceof Error ? e.name : typeof e);
    return { kind: "retry", retryAfterMs: null };
  }
}

export class Pushes {
  readonly #d: PushesDeps;
  /**
   * Subscriptions by mailbox address (§4.7: the username for the identity's current device,
   * `username.device` for a linked one; the row's `username` column holds it), one per device;
   * null until first use.
   */
  #subs: Map<string, PushSubRow> | null = null;
  /** Addresses whose push request is out now: not sent twice by overlapping alarms. */
  readonly #inflight = new Set<string>();

  constructor(deps: PushesDeps) {
    this.#d = deps;
  }

  get publicKey(): string | null {
    return this.#d.config?.publicKey ?? null;
  }

  #all(): Map<string, PushSubRow> {
    if (this.#subs === null) {
      this.#subs = new Map(this.#d.store.pushSubs().map((r) => [r.username, r]));
    }
    return this.#subs;
  }

  /** The subscription the relay holds for the device at `address`, if any. */
  subscription(address: string): PushSubRow | null {
    return this.#all().get(address) ?? null;
  }

  /** `push_subscribe` from the device at `address`: null, or why it was refused. */
  subscribe(
    address: string,
    device: string,
    frame: FrameOf<ClientFrame, "push_subscribe">,
  ): ErrorCode | null {
    const config = this.#d.config;
    if (config === null) return "push_unavailable";
    if (frame.vapidKey !== config.publicKey) return "push_key_changed";
    if (!endpointAllowed(frame.endpoint, config.allowLoopback)) return "push_endpoint";
    const row: PushSubRow = {
      username: address,
      device,
      endpoint: frame.endpoint,
      p256dh: frame.keys.p256dh,
      auth: frame.keys.auth,
      state: this.#all().get(address)?.state ?? IDLE_PUSH_STATE,
    };
    this.#d.store.putPushSub(row, this.#d.now());
    this.#all().set(address, row);
    return null;
  }

  /**
   * A subscription the hub's object held for a device of a user this object takes over
   * (`Hub.handOver`, §4.1). One the device made here already is newer and stays; the push state
   * starts idle (what was pending there is the hub's object's to send). Checked as at
   * `subscribe`, as the endpoint is fetched from here now.
   */
  adopt(sub: PushSubRow): void {
    const config = this.#d.config;
    if (config === null || !endpointAllowed(sub.endpoint, config.allowLoopback)) return;
    if (this.#all().has(sub.username)) return;
    const row: PushSubRow = { ...sub, state: IDLE_PUSH_STATE };
    this.#d.store.putPushSub(row, this.#d.now());
    this.#all().set(sub.username, row);
  }

  /** Forget the subscription of the device at `address`: unsubscribed, or the device removed. */
  forget(address: string): void {
    if (!this.#all().has(address)) return;
    this.#d.store.deletePushSub(address, null);
    this.#all().delete(address);
  }

  /** The subscriptions of `username`'s devices: its own address and its linked devices' (§4.7). */
  subscriptionsOf(username: string): PushSubRow[] {
    return [...this.#all().values()].filter((s) => userOfMember(s.username) === username);
  }

  /** The name went to another identity: every device's subscription goes. */
  forgetUser(username: string): void {
    for (const address of [...this.#all().keys()]) {
      if (userOfMember(address) === username) this.forget(address);
    }
  }

  /**
   * `username`'s current device is now `device` (a restore claimed the identity, or a listed
   * device took the place of one the list dropped, §4.7): the previous current device's
   * subscription goes, and one `device` held as a linked device no longer names its address.
   */
  deviceChanged(username: string, device: string): void {
    const sub = this.#all().get(username);
    if (sub !== undefined && sub.device !== device) this.forget(username);
    this.forget(deviceAddress(username, device));
  }

  /** The device at `address` connected: nothing to push for what it will now fetch. */
  connected(address: string): void {
    const sub = this.#all().get(address);
    if (sub === undefined || !sub.state.pending) return;
    this.#setState(sub, connected(sub.state));
  }

  /** Items were stored for `recipients`: mark a push for each one with no live socket. */
  queued(recipients: readonly string[], now: number): void {
    const subs = this.#all();
    if (subs.size === 0) return;
    for (const to of recipients) {
      const sub = subs.get(to);
      if (sub === undefined || sub.state.pending) continue;
      const s = this.#d.sessions.online(to);
      if (s !== undefined && !s.closed) continue;
      this.#setState(sub, queued(sub.state, now));
      this.#d.wakeAt(sub.state.dueAt);
    }
  }

  /** When the next push is due, or null. */
  nextDue(): number | null {
    let next: number | null = null;
    for (const sub of this.#all().values()) {
      if (!sub.state.pending || this.#inflight.has(sub.username)) continue;
      next = next === null ? sub.state.dueAt : Math.min(next, sub.state.dueAt);
    }
    return next;
  }

  /** Send every push that is due (at most MAX_PUSHES_PER_ALARM), then set the alarm again. */
  async sendDue(): Promise<void> {
    const config = this.#d.config;
    const now = this.#d.now();
    const due = [...this.#all().values()]
      .filter((s) => isDue(s.state, now) && !this.#inflight.has(s.username))
      .slice(0, MAX_PUSHES_PER_ALARM);
    if (config === null) {
      // Keys were removed from the environment: nothing can be sent, nothing stays pending.
      for (const sub of due) this.#setState(sub, { ...sub.state, pending: false });
      return;
    }
    await Promise.all(due.map((sub) => this.#attempt(sub, config, now)));
    const next = this.nextDue();
    if (next !== null) this.#d.wakeAt(next);
  }

  async #attempt(sub: PushSubRow, config: PushConfig, sentAt: number): Promise<void> {
    this.#inflight.add(sub.username);
    const outcome = await sendPush(sub, config, sentAt);
    this.#inflight.delete(sub.username);
    // Re-read: the subscription may have been replaced or removed while the request was out.
    const current = this.#all().get(sub.username);
    if (current === undefined || current.endpoint !== sub.endpoint) return;
    const next = afterAttempt(current.state, outcome, sentAt, this.#d.now());
    if (next === null) this.forget(sub.username);
    else this.#setState(current, next);
  }

  #setState(sub: PushSubRow, st: typeof sub.state): void {
    sub.state = st;
    this.#d.store.savePushState(sub.username, sub.device, st);
  }
}
