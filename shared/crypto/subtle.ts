/**
 * WebCrypto twins of the hash-based primitives that the core computes with @noble/hashes
 * (kdf.ts). Same contracts, async. Tests prove both agree; benchmarks compare speed (PROTOCOL.md §3.1).
 */

import { assertBytes, buf } from "./bytes";
import { assertHkdfLength } from "./kdf";

export async function subtleHkdfSha256(
  ikm: Uint8Array,
  salt: Uint8Array,
  info: Uint8Array,
  length: number,
): Promise<Uint8Array> {
  assertBytes("ikm", ikm);
  assertBytes("salt", salt);
  assertBytes("info", info);
  assertHkdfLength(length);
  const key = await crypto.subtle.importKey("raw", buf(ikm), "HKDF", false, ["deriveBits"]);
  const params = { name: "HKDF", hash: "SHA-256", salt: buf(salt), info: buf(info) };
  return new Uint8Array(await crypto.subtle.deriveBits(params, key, length * 8));
}

export async function subtleHmacSha256(key: Uint8Array, message: Uint8Array): Promise<Uint8Array> {
  assertBytes("key", key);
  assertBytes("message", message);
  // WebCrypto rejects a zero-length HMAC key, RFC 2104 allows it: pad to one block of zeros,
  // which RFC 2104 §2 defines to be the same key.
  const k = key.length === 0 ? new Uint8Array(64) : buf(key);
  const imported = await crypto.subtle.importKey(
    "raw",
    k,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return new Uint8Array(await crypto.subtle.sign("HMAC", imported, buf(message)));
}

export async function subtleSha256(message: Uint8Array): Promise<Uint8Array> {
  assertBytes("message", message);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf(message)));
}
