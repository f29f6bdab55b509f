/**
 * Reconnect delays: exponential backoff with "full jitter" (delay drawn uniformly in
 * [floor, min(cap, base·2^attempt)]) so a relay restart does not bring every client back in the
 * same instant. Pure, so it is unit-tested without timers.
 */
export interface BackoffPolicy {
  baseMs: number;
  capMs: number;
  floorMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 1000, capMs: 30_000, floorMs: 500 };

/**
 * While the page is visible someone is looking at "Reconnecting in N s…": waiting longer than
 * 15 s feels broken, and one visible client retrying every 15 s costs the relay nothing.
 * Hidden pages keep the longer cap (and retry at once when they come back to the front).
 */
export const VISIBLE_BACKOFF: BackoffPolicy = { ...DEFAULT_BACKOFF, capMs: 15_000 };

/** `attempt` counts failed connects since the last success, from 0; `rand` is in [0, 1). */
export function backoffDelay(
  attempt: number,
  rand: number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): number {
  const exp = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  const upper = Math.max(policy.floorMs, exp);
  return Math.round(policy.floorMs + (upper - policy.floorMs) * Math.min(Math.max(rand, 0), 1));
}
