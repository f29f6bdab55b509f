/**
 * SHA-256, HMAC-SHA256 and HKDF-SHA256 (RFC 5869), synchronous via @noble/hashes: for the small
 * inputs of a ratchet step noble is several times faster than a WebCrypto round trip and needs
 * no await (PROTOCOL.md §3.4). `subtle.ts` has the WebCrypto twins; tests prove they agree.
 */

import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as nobleSha256, sha512 as nobleSha512 } from "@noble/hashes/sha2.js";
import { backend, type Sha256Hasher } from "./backend";
import { assertBytes } from "./bytes";
import { HKDF_SHA256_MAX_OUTPUT_BYTES, SHA256_BYTES } from "./constants";
import { InvalidLengthError } from "./errors";

export function assertHkdfLength(length: number): void {
  if (!Number.isInteger(length) || length < 1 || length > HKDF_SHA256_MAX_OUTPUT_BYTES) {
    throw new InvalidLengthError(`length: expected 1..${HKDF_SHA256_MAX_OUTPUT_BYTES} bytes`);
  }
}

/** RFC 5869 extract-then-expand. An empty salt means HashLen zero bytes (RFC 5869 §2.2). */
export function hkdfSha256(
  ikm: Uint8Array,
  salt: Uint8Array,
  info: Uint8Array,
  length: number,
): Uint8Array {
  assertBytes("ikm", ikm);
  assertBytes("salt", salt);
  assertBytes("info", info);
  assertHkdfLength(length);
  const installed = backend().hkdfSha256;
  return installed
    ? installed(ikm, salt, info, length)
    : hkdf(nobleSha256, ikm, salt, info, length);
}

/**
 * RFC 5869 §2.2 HKDF-Extract: PRK = HMAC-SHA256(salt, IKM), an empty salt meaning HashLen zero
 * bytes. With hkdfSha256Expand it splits hkdfSha256 — hkdfSha256(ikm, salt, info, L) =
 * hkdfSha256Expand(hkdfSha256Extract(ikm, salt), info, L), the RFC's own definition — so
 * several keys derived from the same IKM and salt (the handshake keys, PROTOCOL.md §8.2) share
 * one extraction instead of repeating it per key. Same bytes; tests pin the equality.
 */
export function hkdfSha256Extract(ikm: Uint8Array, salt: Uint8Array): Uint8Array {
  assertBytes("ikm", ikm);
  assertBytes("salt", salt);
  return hmacSha256(salt.length === 0 ? new Uint8Array(SHA256_BYTES) : salt, ikm);
}

/** RFC 5869 §2.3 HKDF-Expand from a 32-byte PRK (see hkdfSha256Extract). */
export function hkdfSha256Expand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  assertBytes("prk", prk, SHA256_BYTES);
  assertBytes("info", info);
  assertHkdfLength(length);
  const out = new Uint8Array(length);
  const block = new Uint8Array(SHA256_BYTES + info.length + 1);
  block.set(info, SHA256_BYTES);
  let t: Uint8Array = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++, off += SHA256_BYTES) {
    // T(i) = HMAC(PRK, T(i-1) || info || i); T(0) is empty.
    let input: Uint8Array;
    if (i === 1) {
      input = block.subarray(SHA256_BYTES);
    } else {
      block.set(t, 0);
      input = block;
    }
    input[input.length - 1] = i;
    t = hmacSha256(prk, input);
    out.set(t.subarray(0, Math.min(SHA256_BYTES, length - off)), off);
  }
  block.fill(0);
  return out;
}

export function hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array {
  assertBytes("key", key);
  assertBytes("message", message);
  const installed = backend().hmacSha256;
  return installed ? installed(key, message) : hmac(nobleSha256, key, message);
}

export function sha256(message: Uint8Array): Uint8Array {
  assertBytes("message", message);
  const installed = backend().sha256;
  return installed ? installed(message) : nobleSha256(message);
}

/** An incremental SHA-256 (the backend's when it has one, else noble's). */
export function sha256Hasher(): Sha256Hasher {
  const installed = backend().sha256Hasher;
  const h: Sha256Hasher = installed ? installed() : nobleSha256.create();
  return {
    update(piece) {
      assertBytes("piece", piece);
      h.update(piece);
    },
    digest: () => h.digest(),
  };
}

export function sha512(message: Uint8Array): Uint8Array {
  assertBytes("message", message);
  return nobleSha512(message);
}
