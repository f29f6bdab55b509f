/**
 * CSPRNG bytes from WebCrypto, available in workerd, Node and browsers alike.
 *
 * Small requests are served from a per-process pool refilled by one getRandomValues call: in
 * Node each call costs ~7 µs whatever its size (4 KiB as much as 32 bytes), and a session start
 * draws 6–7 small values (ephemeral keys, a KEM seed or message, ids), a DH ratchet step one or
 * two. The bytes are the same CSPRNG output, handed out once each: a served range is wiped from
 * the pool at once, so no secret derived from it stays in the pool after it is drawn.
 *
 * Post-compromise security (PROTOCOL.md §3.8): the pool holds up to 4 KiB of future randomness,
 * but the runtime's CSPRNG already keeps its generator state in this process (OpenSSL's DRBG in
 * Node reseeds after thousands of requests or minutes, BoringSSL's in Chromium likewise), so a
 * memory snapshot that reveals the pool reveals at least as much of the future output without it.
 */

import { MAX_RANDOM_CHUNK_BYTES } from "./constants";
import { InvalidLengthError } from "./errors";

/** One refill: 4 KiB, about a hundred 32-byte draws per getRandomValues call. */
const POOL_BYTES = 4096;
/** Larger requests (attachment keys and nonces are small; bulk test data is not) go direct. */
const POOLED_MAX_BYTES = 256;

const pool = new Uint8Array(POOL_BYTES);
/** Bytes of `pool` before this offset have been handed out (and wiped). */
let used = POOL_BYTES;

export function randomBytes(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidLengthError("n: expected a byte count");
  const out = new Uint8Array(n);
  if (n <= POOLED_MAX_BYTES) {
    if (used + n > POOL_BYTES) {
      crypto.getRandomValues(pool);
      used = 0;
    }
    const end = used + n;
    out.set(pool.subarray(used, end));
    pool.fill(0, used, end);
    used = end;
    return out;
  }
  for (let off = 0; off < n; off += MAX_RANDOM_CHUNK_BYTES) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + MAX_RANDOM_CHUNK_BYTES)));
  }
  return out;
}

/**
 * The pool as it is now, read-only, for the test of PROTOCOL.md §3.8's claims (every byte before
 * `used` was handed out once and is zero; requests over POOLED_MAX_BYTES do not touch it).
 */
export function randomPoolState(): { readonly pool: Uint8Array; readonly used: number } {
  return { pool: pool.slice(), used };
}
