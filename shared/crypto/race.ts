/**
 * Pick the faster of two implementations of the same primitive by measuring them in place
 * (PROTOCOL.md §3.1): the first calls alternate between the two ways and are timed; after
 * `warmup` untimed and `trials` timed calls per way, the faster way is used for good. Ties (e.g.
 * workerd, where the clock does not advance during a computation) go to the first way.
 * Used by x25519PublicKey and hpkeSeal, whose faster way differs between Node and browsers.
 */
export interface Race<W extends string> {
  /** The way to use for the next call. */
  next(): W;
  /** Record how long a call on `way` took (ignored once settled). */
  record(way: W, ms: number): void;
  /** The chosen way, or null while still measuring. */
  chosen(): W | null;
}

export function race<W extends string>(first: W, second: W, warmup = 3, trials = 8): Race<W> {
  const times = new Map<W, number[]>([
    [first, []],
    [second, []],
  ]);
  const of = (w: W) => times.get(w) ?? [];
  let winner: W | null = null;
  const sum = (xs: number[]) => xs.slice(warmup).reduce((a, b) => a + b, 0);
  return {
    next: () => winner ?? (of(first).length <= of(second).length ? first : second),
    record(way, ms) {
      if (winner !== null) return;
      of(way).push(ms);
      const a = of(first);
      const b = of(second);
      if (a.length >= warmup + trials && b.length >= warmup + trials) {
        winner = sum(a) <= sum(b) ? first : second;
      }
    },
    chosen: () => winner,
  };
}
