/**
 * SHA-256, HMAC-SHA256 and HKDF-SHA256 (RFC 5869), synchronous via @noble/hashes: for the small
 * inputs of a ratchet step noble is several times faster than a WebCrypto round trip and needs
 * no await (PROTOCOL.md §3.4). `subtle.ts` has the WebCrypto twins; tests prove they agree.
 */

import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as nobleSha256, sha512 as nobleSha512 } from "@noble/hashes/sha2.js";
import { assertBytes } from "./bytes";
import { HKDF_SHA256_MAX_OUTPUT_BYTES } from "./constants";
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
  return hkdf(nobleSha256, ikm, salt, info, length);
}

export function hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array {
  assertBytes("key", key);
  assertBytes("message", message);
  return hmac(nobleSha256, key, message);
}

export function sha256(message: Uint8Array): Uint8Array {
  assertBytes("message", message);
  return nobleSha256(message);
}

export function sha512(message: Uint8Array): Uint8Array {
  assertBytes("message", message);
  return nobleSha512(message);
}
