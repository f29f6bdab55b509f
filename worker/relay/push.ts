/**
 * When the relay sends a Web Push, and to where (PROTOCOL.md §7.9): pure functions of a
 * subscription's state and the time, so the rules are unit-tested without a push service.
 *
 * - Something stored for a device with no live socket marks its subscription *pending*; the
 *   push goes out at once, unless one went out less than `LIMITS.pushMinIntervalMs` ago, in
 *   which case it waits for the end of that interval: a burst of messages is one push.
 * - Every push has the same RFC 8030 §5.4 topic, so a push service holding an undelivered one
 *   replaces it with the newer (a phone that was off gets one wake-up, not a hundred).
 * - 429 and 5xx (and network failures) are retried with exponential backoff, or after the
 *   push service's Retry-After (RFC 8030 §8.4), up to `LIMITS.pushMaxAttempts`; 404 and 410 mean
 *   the subscription is gone (RFC 8030 §7.3): it is deleted. Other refusals drop that one push.
 * - An endpoint is a URL the relay will fetch on a client's word: it must be https on the
 *   default port with a DNS name that is not local (no IP literal, no `localhost`, no
 *   single-label or `.local`/`.internal` name), so a client cannot aim the relay's requests at
 *   internal services (SSRF). Only an explicit development setting admits
 *   `http://127.0.0.1:<port>/…`, for the local push service of the tests.
 */
import { LIMITS } from "../../shared/protocol";

/** RFC 8030 §5.4: up to 32 characters of the base64url alphabet. */
export const PUSH_TOPIC = "parley";
/** RFC 8030 §5.3: a chat message is worth waking a phone for. */
export const PUSH_URGENCY = "high" as const;
/** First retry delay; doubles per attempt up to PUSH_RETRY_MAX_MS. */
export const PUSH_RETRY_BASE_MS = 2000;
export const PUSH_RETRY_MAX_MS = 10 * 60 * 1000;
/**
 * The payload, the same for every push: it tells the service worker to connect and fetch, and
 * nothing else. No sender, no text, no count — the relay has none to give, and the push service
 * (which sees only the RFC 8291 ciphertext, padded to a fixed size) would learn none anyway.
 */
export const PUSH_PAYLOAD = '{"v":1,"t":"wake"}';

/** What the relay remembers per subscription between pushes (persisted, store.ts). */
export interface PushState {
  /** Something was stored for the device since the last successful push. */
  pending: boolean;
  /** When the next attempt may go out (ms); meaningful while pending. */
  dueAt: number;
  /** When the last push was accepted by the push service (ms), 0 if never. */
  lastSentAt: number;
  /** Failed attempts of the pending push so far. */
  attempts: number;
}

export const IDLE_PUSH_STATE: PushState = { pending: false, dueAt: 0, lastSentAt: 0, attempts: 0 };

/** Something was stored for the device while it had no socket: when to push. */
export function queued(st: PushState, now: number): PushState {
  if (st.pending) return st; // already due at its time: this item rides along (coalescing)
  return {
    pending: true,
    dueAt: st.lastSentAt === 0 ? now : Math.max(now, st.lastSentAt + LIMITS.pushMinIntervalMs),
    lastSentAt: st.lastSentAt,
    attempts: 0,
  };
}

/** The device connected: whatever was pending reaches it over the socket, no push needed. */
export function connected(st: PushState): PushState {
  return st.pending ? { ...st, pending: false, attempts: 0 } : st;
}

/** Is a push due now? */
export function isDue(st: PushState, now: number): boolean {
  return st.pending && st.dueAt <= now;
}

/** How the push service answered one attempt. */
export type PushOutcome =
  | { kind: "sent" }
  | { kind: "retry"; retryAfterMs: number | null }
  | { kind: "gone" }
  | { kind: "refused" };

/** Classify a push service response (RFC 8030 §5, §7.3, §8.4). */
export function classify(status: number, retryAfter: string | null, now: number): PushOutcome {
  if (status >= 200 && status < 300) return { kind: "sent" };
  if (status === 404 || status === 410) return { kind: "gone" };
  if (status === 429 || status >= 500) {
    return { kind: "retry", retryAfterMs: parseRetryAfter(retryAfter, now) };
  }
  return { kind: "refused" };
}

/** RFC 9110 §10.2.3: delay-seconds or an HTTP date; anything else is ignored. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (value === null) return null;
  const v = value.trim();
  if (/^[0-9]{1,9}$/.test(v)) return Number(v) * 1000;
  // IMF-fixdate, the one form senders must use (RFC 9110 §5.6.7); Date.parse alone would also
  // take "-1" or "2026" as dates.
  if (!/^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$/.test(v)) {
    return null;
  }
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/**
 * The state after one attempt that started at `sentAt` with `queuedSince` as the subscription's
 * state then; `current` is its state now (more may have been queued while the request was out).
 * Returns null when the subscription must be deleted.
 */
export function afterAttempt(
  current: PushState,
  outcome: PushOutcome,
  sentAt: number,
  now: number,
): PushState | null {
  switch (outcome.kind) {
    case "gone":
      return null;
    case "sent":
      // Items queued during the request are covered by this push: the device connects and
      // fetches everything stored, whatever woke it.
      return { pending: false, dueAt: 0, lastSentAt: sentAt, attempts: 0 };
    case "refused":
      return { ...current, pending: false, attempts: 0 };
    case "retry": {
      const attempts = current.attempts + 1;
      if (attempts >= LIMITS.pushMaxAttempts) return { ...current, pending: false, attempts: 0 };
      const backoff = Math.min(PUSH_RETRY_MAX_MS, PUSH_RETRY_BASE_MS * 2 ** (attempts - 1));
      const wait = Math.min(PUSH_RETRY_MAX_MS, Math.max(backoff, outcome.retryAfterMs ?? 0));
      return { ...current, pending: true, attempts, dueAt: now + wait };
    }
  }
}

/** Is `endpoint` a push resource the relay may send to (see the module comment)? */
export function endpointAllowed(endpoint: string, allowLoopback: boolean): boolean {
  if (endpoint.length > LIMITS.maxPushEndpointChars) return false;
  let u: URL;
  try {
    u = new URL(endpoint);
  } catch {
    return false;
  }
  if (u.username !== "" || u.password !== "" || u.hash !== "") return false;
  if (allowLoopback && u.protocol === "http:" && u.hostname === "127.0.0.1" && u.port !== "") {
    return true;
  }
  if (u.protocol !== "https:" || u.port !== "") return false;
  const host = u.hostname.toLowerCase();
  // IPv6 literals are bracketed; IPv4 literals (in any of the forms URL normalises to dotted
  // quads) end in a number. A public DNS name always ends in a letter-bearing label.
  if (host.startsWith("[") || /^[0-9.]+$/.test(host) || /\.[0-9]+$/.test(host)) return false;
  if (!host.includes(".")) return false;
  const local = ["localhost", "local", "internal", "intranet", "lan", "home", "corp", "test"];
  const tld = host.slice(host.lastIndexOf(".") + 1);
  if (local.includes(tld) || host === "localhost") return false;
  return /^[a-z0-9.-]+$/.test(host);
}
