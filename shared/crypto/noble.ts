/**
 * Pure-JS twins (@noble/curves) of the WebCrypto-backed primitives, with the same argument
 * checks and errors. Not used on the protocol path: tests run them side by side with WebCrypto
 * on every vector to prove the two agree, and benchmarks compare speed (PROTOCOL.md §3.1).
 */

import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concatBytes } from "../encoding";
import { assertBytes } from "./bytes";
import { constantTimeEqual } from "./compare";
import {
  ED25519_PUBLIC_KEY_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SIGNATURE_BYTES,
  X25519_KEY_BYTES,
} from "./constants";
import { isRefusedEd25519PublicKey } from "./ed25519";
import { LowOrderError } from "./errors";

export {
  hkdfSha256 as nobleHkdfSha256,
  hmacSha256 as nobleHmacSha256,
  sha256 as nobleSha256,
} from "./kdf";

export function nobleEd25519PublicKey(seed: Uint8Array): Uint8Array {
  assertBytes("seed", seed, ED25519_SEED_BYTES);
  return ed25519.getPublicKey(seed);
}

export function nobleEd25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  assertBytes("seed", seed, ED25519_SEED_BYTES);
  assertBytes("message", message);
  return ed25519.sign(message, seed);
}

/**
 * RFC 8032 strict verification: `zip215: false` (canonical encodings, cofactorless equation),
 * which is the rule WebCrypto implements; noble's default ZIP-215 rule is laxer (PROTOCOL.md §3.2).
 * Never throws, like ed25519Verify.
 */
export function nobleEd25519Verify(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (
    !(publicKey instanceof Uint8Array) ||
    !(message instanceof Uint8Array) ||
    !(signature instanceof Uint8Array) ||
    publicKey.length !== ED25519_PUBLIC_KEY_BYTES ||
    signature.length !== ED25519_SIGNATURE_BYTES
  ) {
    return false;
  }
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

/**
 * Parley's verification rule (PROTOCOL.md §3.2) rebuilt on noble's group arithmetic, for
 * runtimes without WebCrypto Ed25519 and to pin the rule: it mirrors what BoringSSL/OpenSSL
 * `ED25519_verify` do (S < L; k = SHA-512(R || A || M) over the bytes as given;
 * R' = [S]B - [k]A encoded and compared byte for byte with R, so a non-canonical R fails),
 * after the refusal of small-order and non-canonical public keys that ed25519Verify applies. Tests prove it equals ed25519Verify on every
 * vector, including the edge cases where noble's own strict mode differs. Never throws.
 */
export function nobleEd25519VerifyParley(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (
    !(publicKey instanceof Uint8Array) ||
    !(message instanceof Uint8Array) ||
    !(signature instanceof Uint8Array) ||
    publicKey.length !== ED25519_PUBLIC_KEY_BYTES ||
    signature.length !== ED25519_SIGNATURE_BYTES ||
    isRefusedEd25519PublicKey(publicKey)
  ) {
    return false;
  }
  const { Point } = ed25519;
  const r = signature.subarray(0, 32);
  const s = bytesToNumberLE(signature.subarray(32));
  if (s >= Point.Fn.ORDER) return false;
  let a: ReturnType<typeof Point.fromBytes>;
  try {
    a = Point.fromBytes(publicKey, false); // strict RFC 8032 §5.1.3 decoding
  } catch {
    return false;
  }
  const k = Point.Fn.create(bytesToNumberLE(sha512(concatBytes(r, publicKey, message))));
  const rCheck = Point.BASE.multiplyUnsafe(s).subtract(a.multiplyUnsafe(k));
  return constantTimeEqual(rCheck.toBytes(), r);
}

export function nobleX25519PublicKey(secretKey: Uint8Array): Uint8Array {
  assertBytes("secretKey", secretKey, X25519_KEY_BYTES);
  return x25519.getPublicKey(secretKey);
}

/** Same contract as x25519(): LowOrderError on an all-zero result (RFC 7748 §6.1). */
export function nobleX25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  assertBytes("secretKey", secretKey, X25519_KEY_BYTES);
  assertBytes("publicKey", publicKey, X25519_KEY_BYTES);
  try {
    return x25519.getSharedSecret(secretKey, publicKey);
  } catch (e) {
    // noble's montgomery ladder throws exactly when the result is all-zero (both inputs are
    // 32 bytes, checked above), which is the low-order case.
    throw new LowOrderError(
      "publicKey: low-order point, shared secret is all-zero (RFC 7748 §6.1)",
      {
        cause: e,
      },
    );
  }
}
