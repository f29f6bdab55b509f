/** Argument checks and buffer plumbing shared by the crypto modules (not re-exported). */

import { InvalidLengthError } from "./errors";

/** Throws InvalidLengthError naming `name` unless `value` is a Uint8Array of exactly `length` bytes. */
export function assertBytes(name: string, value: Uint8Array, length?: number): void {
  if (!(value instanceof Uint8Array)) {
    throw new InvalidLengthError(`${name}: expected Uint8Array`);
  }
  if (length !== undefined && value.length !== length) {
    throw new InvalidLengthError(`${name}: expected ${length} bytes, got ${value.length}`);
  }
}

/**
 * WebCrypto's TypeScript signatures want an ArrayBuffer-backed view; callers may hand us views of
 * a SharedArrayBuffer (or a Node Buffer pool). Copy only when needed.
 */
export function buf(b: Uint8Array): Uint8Array<ArrayBuffer> {
  return b.buffer instanceof ArrayBuffer ? (b as Uint8Array<ArrayBuffer>) : new Uint8Array(b);
}

/** Decodes a hex constant written in this codebase (not for untrusted input). */
export function hexConst(h: string): Uint8Array {
  const out = new Uint8Array(h.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}
