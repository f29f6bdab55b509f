/** CSPRNG bytes from WebCrypto, available in workerd, Node and browsers alike. */

import { MAX_RANDOM_CHUNK_BYTES } from "./constants";
import { InvalidLengthError } from "./errors";

export function randomBytes(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidLengthError("n: expected a byte count");
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += MAX_RANDOM_CHUNK_BYTES) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + MAX_RANDOM_CHUNK_BYTES)));
  }
  return out;
}
