/** Token buckets for the relay's per-connection and per-identity frame limits (PROTOCOL.md §7.2). */

export interface BucketConfig {
  /** Tokens added per second (sustained frames per second). */
  ratePerSec: number;
  /** Bucket capacity (largest burst). */
  burst: number;
}

/** Plain data so it can live in memory or be serialised; a full bucket when first seen. */
export interface Bucket {
  tokens: number;
  /** Milliseconds timestamp of the last refill. */
  at: number;
}

export function newBucket(config: BucketConfig, now: number): Bucket {
  return { tokens: config.burst, at: now };
}

/**
 * Refill for the time elapsed since the last call, then try to take one token. Pure: returns the
 * new bucket and whether the frame may pass. A clock that goes backwards (workerd freezes
 * Date.now() within an event, and clocks can be set) never refills and never goes negative.
 */
export function take(
  bucket: Bucket,
  config: BucketConfig,
  now: number,
  cost = 1,
): { ok: boolean; bucket: Bucket } {
  const elapsed = Math.max(0, now - bucket.at);
  const refilled = Math.min(config.burst, bucket.tokens + (elapsed * config.ratePerSec) / 1000);
  const at = Math.max(bucket.at, now);
  if (refilled >= cost) return { ok: true, bucket: { tokens: refilled - cost, at } };
  return { ok: false, bucket: { tokens: refilled, at } };
}

/**
 * Extra tokens a frame that fans out to `recipients` costs beyond the one every frame pays: one
 * per LIMITS.fanoutRecipientsPerToken recipients, so a member of a large group cannot spend the
 * whole object's time on fanout at the plain frame rate (PROTOCOL.md §7.2).
 */
export function fanoutCost(recipients: number, perToken: number): number {
  return Math.floor(Math.max(0, recipients) / perToken);
}

/**
 * Several named buckets (one per identity) with a bound on how many are remembered: an idle
 * bucket that has refilled completely carries no information and is dropped first.
 */
export class BucketMap {
  readonly #buckets = new Map<string, Bucket>();

  constructor(
    readonly config: BucketConfig,
    readonly maxEntries: number,
  ) {}

  take(key: string, now: number, cost = 1): boolean {
    const current = this.#buckets.get(key) ?? newBucket(this.config, now);
    const r = take(current, this.config, now, cost);
    // Re-insert so Map iteration order is least-recently-used first.
    this.#buckets.delete(key);
    this.#buckets.set(key, r.bucket);
    if (this.#buckets.size > this.maxEntries) this.#evict(now);
    return r.ok;
  }

  get size(): number {
    return this.#buckets.size;
  }

  #evict(now: number): void {
    for (const [key, b] of this.#buckets) {
      if (this.#buckets.size <= this.maxEntries) return;
      const full = b.tokens + ((now - b.at) * this.config.ratePerSec) / 1000 >= this.config.burst;
      if (full) this.#buckets.delete(key);
    }
    // Everyone is mid-burst: forget the least recently used anyway; memory is the harder limit.
    for (const key of this.#buckets.keys()) {
      if (this.#buckets.size <= this.maxEntries) return;
      this.#buckets.delete(key);
    }
  }
}
