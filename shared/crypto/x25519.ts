/**
 * X25519 key agreement (RFC 7748) on WebCrypto with raw 32-byte secret keys, so ratchet and
 * prekey state can be serialised (PROTOCOL.md §3.3). The all-zero output is rejected (§6.1).
 */

import { assertBytes, buf } from "./bytes";
import { X25519_KEY_BYTES } from "./constants";
import { InvalidKeyError, LowOrderError } from "./errors";
import { randomBytes } from "./random";

export interface X25519KeyPair {
  publicKey: Uint8Array;
  /** Raw RFC 7748 scalar (clamped on use, not on storage). */
  secretKey: Uint8Array;
}

const X25519 = { name: "X25519" } as const;

/** RFC 8410 PrivateKeyInfo header for an X25519 private key (AlgId 1.3.101.110). */
const X25519_PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);

/** The base point u = 9 (RFC 7748 §4.1): X25519(k, 9) is k's public key. */
const BASE_POINT = new Uint8Array(X25519_KEY_BYTES);
BASE_POINT[0] = 9;

async function importSecret(secretKey: Uint8Array): Promise<CryptoKey> {
  const pkcs8 = new Uint8Array(X25519_PKCS8_PREFIX.length + X25519_KEY_BYTES);
  pkcs8.set(X25519_PKCS8_PREFIX);
  pkcs8.set(secretKey, X25519_PKCS8_PREFIX.length);
  try {
    return await crypto.subtle.importKey("pkcs8", pkcs8, X25519, false, ["deriveBits"]);
  } catch (e) {
    throw new InvalidKeyError("secretKey: rejected by the runtime", { cause: e });
  } finally {
    pkcs8.fill(0);
  }
}

const LOW_ORDER = "publicKey: low-order point, shared secret is all-zero (RFC 7748 §6.1)";

async function derive(secretKey: Uint8Array, publicKey: Uint8Array): Promise<Uint8Array> {
  const priv = await importSecret(secretKey);
  let pub: CryptoKey;
  try {
    pub = await crypto.subtle.importKey("raw", buf(publicKey), X25519, false, []);
  } catch (e) {
    throw new InvalidKeyError("publicKey: rejected by the runtime", { cause: e });
  }
  let out: Uint8Array;
  try {
    out = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "X25519", public: pub }, priv, X25519_KEY_BYTES * 8),
    );
  } catch (e) {
    // With both keys imported, the only operation-specific failure of X25519 in OpenSSL and
    // BoringSSL (Node, workerd, Chromium) is the all-zero result: WebCrypto §X25519 "deriveBits"
    // step "If secret is the all-zero value, then throw an OperationError". Pinned by the
    // Wycheproof low-order vectors in test/shared/crypto-x25519.test.ts.
    throw new LowOrderError(LOW_ORDER, { cause: e });
  }
  if (isZero(out)) {
    throw new LowOrderError(LOW_ORDER);
  }
  return out;
}

function isZero(b: Uint8Array): boolean {
  let acc = 0;
  for (const x of b) acc |= x;
  return acc === 0;
}

export async function x25519GenerateKeyPair(): Promise<X25519KeyPair> {
  const secretKey = randomBytes(X25519_KEY_BYTES);
  return { publicKey: await x25519PublicKey(secretKey), secretKey };
}

export async function x25519PublicKey(secretKey: Uint8Array): Promise<Uint8Array> {
  assertBytes("secretKey", secretKey, X25519_KEY_BYTES);
  return derive(secretKey, BASE_POINT);
}

/**
 * RFC 7748 X25519(secretKey, publicKey). Throws LowOrderError when the result is all-zero:
 * RFC 7748 §6.1 lets protocols check for it, and Parley must, or a malicious peer could force
 * a known shared secret (PROTOCOL.md §3.3).
 */
export async function x25519(secretKey: Uint8Array, publicKey: Uint8Array): Promise<Uint8Array> {
  assertBytes("secretKey", secretKey, X25519_KEY_BYTES);
  assertBytes("publicKey", publicKey, X25519_KEY_BYTES);
  return derive(secretKey, publicKey);
}
