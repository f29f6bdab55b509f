/**
 * Ed25519 identity keys, signing and the one verification rule (PROTOCOL.md §3.2): WebCrypto
 * everywhere, so the relay (workerd) and every client (Chromium, Node) accept exactly the same
 * signatures. Private keys are non-extractable CryptoKeys unless a caller explicitly asks otherwise.
 */

import { fromB64u, toB64u } from "../encoding";
import { backend, type Ed25519VerifyItem } from "./backend";
import { assertBytes, buf, hexConst } from "./bytes";
import { ED25519_PUBLIC_KEY_BYTES, ED25519_SEED_BYTES, ED25519_SIGNATURE_BYTES } from "./constants";
import { CryptoError, InvalidKeyError } from "./errors";

export interface IdentityKeyPair {
  /** Raw 32-byte RFC 8032 public key. */
  publicKey: Uint8Array;
  /** WebCrypto Ed25519 private key (non-extractable by default). */
  privateKey: CryptoKey;
}

const ED25519 = { name: "Ed25519" } as const;

/** RFC 8410 PrivateKeyInfo header for an Ed25519 seed: SEQUENCE { 0, AlgId 1.3.101.112, OCTET STRING { OCTET STRING(32) } }. */
const ED25519_PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
]);

export function ed25519Pkcs8(seed: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(ED25519_PKCS8_PREFIX.length + ED25519_SEED_BYTES);
  out.set(ED25519_PKCS8_PREFIX);
  out.set(seed, ED25519_PKCS8_PREFIX.length);
  return out;
}

export async function generateIdentityKeyPair(extractable = false): Promise<IdentityKeyPair> {
  const pair = (await crypto.subtle.generateKey(ED25519, extractable, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { publicKey, privateKey: pair.privateKey };
}

/**
 * Deterministic key pair from a 32-byte RFC 8032 seed (used by tests and by key backup/restore).
 * WebCrypto cannot derive a public key from a private one, so the seed is imported once as
 * extractable to read the JWK `x`, then (unless `extractable`) imported again non-extractable.
 */
export async function ed25519KeyPairFromSeed(
  seed: Uint8Array,
  extractable = false,
): Promise<IdentityKeyPair> {
  assertBytes("seed", seed, ED25519_SEED_BYTES);
  const pkcs8 = ed25519Pkcs8(seed);
  try {
    const tmp = await crypto.subtle.importKey("pkcs8", pkcs8, ED25519, true, ["sign"]);
    const jwk = await crypto.subtle.exportKey("jwk", tmp);
    if (typeof jwk.x !== "string")
      throw new InvalidKeyError("seed: runtime returned no public key");
    const publicKey = fromB64u(jwk.x);
    const privateKey = extractable
      ? tmp
      : await crypto.subtle.importKey("pkcs8", pkcs8, ED25519, false, ["sign"]);
    return { publicKey, privateKey };
  } finally {
    pkcs8.fill(0);
  }
}

export async function ed25519Sign(privateKey: CryptoKey, message: Uint8Array): Promise<Uint8Array> {
  if (
    !(privateKey instanceof CryptoKey) ||
    privateKey.type !== "private" ||
    privateKey.algorithm.name !== ED25519.name
  ) {
    throw new InvalidKeyError("privateKey: expected an Ed25519 private CryptoKey");
  }
  assertBytes("message", message);
  const installed = backend().ed25519Sign;
  if (installed) return installed(privateKey, message);
  try {
    return new Uint8Array(await crypto.subtle.sign(ED25519, privateKey, buf(message)));
  } catch (e) {
    throw new CryptoError("ed25519 sign failed", { cause: e });
  }
}

/**
 * y-coordinates (sign bit cleared) of the 8 points of small order, including the non-canonical
 * encodings y = p and y = p + 1; the same list as libsodium's `has_small_order`. A small-order
 * public key A makes [k]A vanish, so a signature (R = small-order, S = 0) verifies for every
 * message (Taming the many EdDSAs, vector 0): such a key proves nothing and is refused.
 */
const SMALL_ORDER_Y = [
  "0000000000000000000000000000000000000000000000000000000000000000", // y = 0 (order 4)
  "0100000000000000000000000000000000000000000000000000000000000000", // y = 1 (identity)
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p - 1 (order 2)
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p ≡ 0
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p + 1 ≡ 1
].map(hexConst);

/** True iff the 32-byte encoding decodes (or would decode) to a point of order 1, 2, 4 or 8. */
export function isSmallOrderEd25519PublicKey(publicKey: Uint8Array): boolean {
  if (publicKey.length !== ED25519_PUBLIC_KEY_BYTES) return false;
  let hit = 0;
  for (const y of SMALL_ORDER_Y) {
    let diff = ((publicKey[31] ?? 0) & 0x7f) ^ (y[31] ?? 0);
    for (let i = 0; i < 31; i++) diff |= (publicKey[i] ?? 0) ^ (y[i] ?? 0);
    hit |= diff === 0 ? 1 : 0;
  }
  return hit === 1;
}

/**
 * True iff y (the encoding with bit 255 cleared, little-endian) is >= p = 2^255 - 19, i.e. not a
 * canonical field element (RFC 8032 §5.1.3 step 1). Libraries differ on whether they reduce such
 * a y or reject it, so Parley rejects it before any library sees it.
 */
export function isNonCanonicalEd25519Encoding(encoding: Uint8Array): boolean {
  if (encoding.length !== ED25519_PUBLIC_KEY_BYTES || ((encoding[31] ?? 0) & 0x7f) !== 0x7f) {
    return false;
  }
  for (let i = 1; i < 31; i++) if (encoding[i] !== 0xff) return false;
  return (encoding[0] ?? 0) >= 0xed;
}

/** Public keys no Parley verifier accepts, whatever the signature (PROTOCOL.md §3.2 step 2). */
export function isRefusedEd25519PublicKey(publicKey: Uint8Array): boolean {
  return isSmallOrderEd25519PublicKey(publicKey) || isNonCanonicalEd25519Encoding(publicKey);
}

/**
 * Imported public keys by their encoding. Why: the same few keys (contacts, group members,
 * committers) verify message after message — every group message is signed (§9.5) — and the
 * import is a separate runtime round trip. Public data only; a small LRU.
 */
const VERIFY_KEYS_MAX = 1024;
const verifyKeys = new Map<string, CryptoKey>();

async function verifyKey(publicKey: Uint8Array): Promise<CryptoKey> {
  const id = toB64u(publicKey);
  const hit = verifyKeys.get(id);
  if (hit) {
    verifyKeys.delete(id);
    verifyKeys.set(id, hit);
    return hit;
  }
  const key = await crypto.subtle.importKey("raw", buf(publicKey), ED25519, false, ["verify"]);
  verifyKeys.set(id, key);
  if (verifyKeys.size > VERIFY_KEYS_MAX) {
    const oldest = verifyKeys.keys().next().value;
    if (oldest !== undefined) verifyKeys.delete(oldest);
  }
  return key;
}

/**
 * Parley's one Ed25519 verification rule (PROTOCOL.md §3.2): the public key must be canonical
 * and not of small order, then RFC 8032 §5.1.7 as implemented by WebCrypto in workerd, Chromium
 * (BoringSSL) and Node (OpenSSL): S < L, the cofactorless equation, R compared by its
 * encoding. Never throws: a malformed key, a wrong-length signature or a non-Uint8Array
 * argument is simply "not a valid signature", so callers cannot forget a catch.
 */
export async function ed25519Verify(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  if (!wellFormed(publicKey, message, signature)) return false;
  const installed = backend().ed25519Verify;
  if (installed) return installed(publicKey, message, signature);
  try {
    return await crypto.subtle.verify(
      ED25519,
      await verifyKey(publicKey),
      buf(signature),
      buf(message),
    );
  } catch {
    return false;
  }
}

/** The argument checks of §3.2 that come before any curve arithmetic. */
function wellFormed(publicKey: unknown, message: unknown, signature: unknown): boolean {
  return (
    publicKey instanceof Uint8Array &&
    message instanceof Uint8Array &&
    signature instanceof Uint8Array &&
    publicKey.length === ED25519_PUBLIC_KEY_BYTES &&
    signature.length === ED25519_SIGNATURE_BYTES &&
    !isRefusedEd25519PublicKey(publicKey)
  );
}

/**
 * ed25519Verify of many independent signatures, answers in input order; same rule, same
 * answers (never throws). Why a batch call: a group commit checks every member's signed prekey
 * (§9.2.3), and a backend whose verify is synchronous (Node's) runs a batch on its thread pool
 * instead of one after another on the main thread.
 */
export async function ed25519VerifyMany(
  items: ReadonlyArray<Ed25519VerifyItem>,
): Promise<boolean[]> {
  const out = items.map((x) => wellFormed(x.publicKey, x.message, x.signature));
  const todo = items.filter((_, i) => out[i]);
  const many = backend().ed25519VerifyMany;
  const answers = many
    ? await many(todo)
    : await Promise.all(todo.map((x) => ed25519Verify(x.publicKey, x.message, x.signature)));
  let k = 0;
  return out.map((ok) => ok && answers[k++] === true);
}
