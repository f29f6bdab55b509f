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
 * Refill, then take `cost` whatever is left: a charge known only after the frame passed (a
 * first `join` to a group whose audience its member's object learns from the answer, §7.2).
 * The bucket may go below zero: that debt refuses every frame, `take` of 0 included, until the
 * refill pays it.
 */
export function debit(bucket: Bucket, config: BucketConfig, now: number, cost: number): Bucket {
  const elapsed = Math.max(0, now - bucket.at);
  const refilled = Math.min(config.burst, bucket.tokens + (elapsed * config.ratePerSec) / 1000);
  return { tokens: refilled - cost, at: Math.max(bucket.at, now) };
}

/**
 * Extra tokens a frame that fans out to `recipients` costs beyond the one every frame pays: one
 * per LIMITS.fanoutRecipientsPerToken recipients, so a member of a large group cannot spend the
 * whole object's time on fanout at the plain frame rate (PROTOCOL.md §7.2).
 */
export function fanoutCost(recipients: number, perToken: number): number {
  return Math.floor(Math.max(0, recipients) / perToken);
}

/** When a bucket left at `b` is full again (ms): a stored bucket past it carries nothing. */
export function fullAt(b: Bucket, config: BucketConfig): number {
  return b.at + Math.ceil(((config.burst - b.tokens) * 1000) / config.ratePerSec);
}

/**
 * Where a BucketMap keeps its buckets across the object's restarts and evictions (SECURITY.md
 * L4): `load` a key's stored bucket (null: none, i.e. full), `save` one.
 */
export interface BucketStore {
  load(key: string): Bucket | null;
  save(key: string, bucket: Bucket, fullAt: number): void;
}

/** A bucket in memory and the state last written for it (null: nothing stored, i.e. full). */
interface Held {
  bucket: Bucket;
  saved: Bucket | null;
}

/**
 * Several named buckets (one per identity) with a bound on how many are remembered: an idle
 * bucket that has refilled completely carries no information and is dropped first.
 *
 * With a `BucketStore` the buckets survive the object (SECURITY.md L4): a bucket is written
 * when it has fallen `saveStep` tokens below what is stored for it (the stored state refilled
 * to now), and when it refuses a frame while storage still shows room. So a restart gives a
 * bucket back at most `saveStep` tokens, and a client that never spends `saveStep` tokens
 * faster than they refill costs no write at all.
 */
export class BucketMap {
  readonly #buckets = new Map<string, Held>();

  constructor(
    readonly config: BucketConfig,
    readonly maxEntries: number,
    readonly store: BucketStore | null = null,
    readonly saveStep = 1,
  ) {}

  take(key: string, now: number, cost = 1): boolean {
    return this.#apply(key, now, cost, (b) => take(b, this.config, now, cost));
  }

  /** Take `cost` after the fact, into debt if need be (`debit`). */
  debit(key: string, now: number, cost: number): void {
    this.#apply(key, now, cost, (b) => ({ ok: true, bucket: debit(b, this.config, now, cost) }));
  }

  #apply(
    key: string,
    now: number,
    cost: number,
    step: (b: Bucket) => { ok: boolean; bucket: Bucket },
  ): boolean {
    const held = this.#buckets.get(key) ?? this.#load(key, now);
    const r = step(held.bucket);
    let saved = held.saved;
    if (this.store !== null) {
      const stored = saved === null ? this.config.burst : this.#level(saved, now);
      const fell = r.bucket.tokens <= stored - this.saveStep;
      if (fell || (!r.ok && stored >= cost)) {
        this.store.save(key, r.bucket, fullAt(r.bucket, this.config));
        saved = r.bucket;
      }
    }
    // Re-insert so Map iteration order is least-recently-used first.
    this.#buckets.delete(key);
    this.#buckets.set(key, { bucket: r.bucket, saved });
    if (this.#buckets.size > this.maxEntries) this.#evict(now);
    return r.ok;
  }

  get size(): number {
    return this.#buckets.size;
  }

  #level(b: Bucket, now: number): number {
    return Math.min(
      this.config.burst,
      b.tokens + (Math.max(0, now - b.at) * this.config.ratePerSec) / 1000,
    );
  }

  #load(key: string, now: number): Held {
    const stored = this.store?.load(key) ?? null;
    const held = { bucket: stored ?? newBucket(this.config, now), saved: stored };
    this.#buckets.set(key, held);
    return held;
  }

  #evict(now: number): void {
    for (const [key, h] of this.#buckets) {
      if (this.#buckets.size <= this.maxEntries) return;
      if (this.#level(h.bucket, now) >= this.config.burst) this.#buckets.delete(key);
    }
    // Everyone is mid-burst: forget the least recently used anyway; memory is the harder limit
    // (a stored bucket is read back on its next use).
    for (const key of this.#buckets.keys()) {
      if (this.#buckets.size <= this.maxEntries) return;
      this.#buckets.delete(key);
    }
  }
}
