/**
 * The random pool (PROTOCOL.md §3.8): small draws come from a buffer of getRandomValues output,
 * each byte handed out once and zeroed in the buffer as it is served; larger draws bypass it.
 */
import { describe, expect, it } from "vitest";
import { randomBytes } from "../../shared/crypto";
import { randomPoolState } from "../../shared/crypto/random";

describe("random pool (§3.8)", () => {
  it("zeroes every served byte in the pool at once, and never serves a byte twice", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 600; i++) {
      const out = randomBytes(1 + (i % 64));
      const st = randomPoolState();
      // Everything before `used` has been served: no trace of it (or of `out`) stays.
      expect(st.pool.subarray(0, st.used).every((b) => b === 0)).toBe(true);
      expect(st.used).toBeGreaterThanOrEqual(out.length);
      if (out.length >= 16) {
        const k = Array.from(out, (b) => b.toString(16).padStart(2, "0")).join("");
        expect(seen.has(k)).toBe(false);
        seen.add(k);
      }
    }
  });

  it("larger draws bypass the pool", () => {
    randomBytes(8);
    const before = randomPoolState();
    const big = randomBytes(257);
    expect(big.length).toBe(257);
    const after = randomPoolState();
    expect(after.used).toBe(before.used);
    expect(after.pool).toEqual(before.pool);
  });
});
