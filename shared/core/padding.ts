/**
 * Plaintext padding to size buckets (PROTOCOL.md §8.5) so ciphertext length reveals only a coarse
 * size class. Layout: content || 0x80 || 0x00* up to the bucket size (ISO/IEC 7816-4), buckets
 * 64, 128, 256, 512, 1 KiB, 2 KiB, … doubling up to 64 KiB; beyond that, a multiple of 16 KiB.
 */
import { malformed } from "./errors";

export const PAD_BUCKETS = [
  64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
] as const;
const LARGE_STEP = 16384;

export function paddedLength(contentLength: number): number {
  const need = contentLength + 1;
  for (const b of PAD_BUCKETS) if (need <= b) return b;
  return Math.ceil(need / LARGE_STEP) * LARGE_STEP;
}

export function pad(content: Uint8Array): Uint8Array {
  const out = new Uint8Array(paddedLength(content.length));
  out.set(content, 0);
  out[content.length] = 0x80;
  return out;
}

export function unpad(padded: Uint8Array): Uint8Array {
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i--;
  if (i < 0 || padded[i] !== 0x80) throw malformed("padding");
  return padded.slice(0, i);
}
