/**
 * X25519 key agreement (RFC 7748) on WebCrypto with raw 32-byte secret keys, so ratchet and
 * prekey state can be serialised (PROTOCOL.md §3.3). The all-zero output is rejected (§6.1).
 * This file is the default backend; an installed backend (backend.ts, e.g. node/crypto-backend.ts
 * in Node) takes over after the argument checks of the public functions.
 */

import { ed25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { toB64u } from "../encoding";
import { backend } from "./backend";
import { assertBytes, buf } from "./bytes";
import { X25519_KEY_BYTES } from "./constants";
import { InvalidKeyError, LowOrderError } from "./errors";
import { sha256 } from "./kdf";
import { race } from "./race";
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

/**
 * Imported private keys and their public keys, by SHA-256 of the secret (the map never holds
 * the secret itself).
 *
 * Why (docs/PERFORMANCE.md): a Double Ratchet secret is used three times — its public key at
 * generation, then one DH on each side of the next ratchet step — and a PKCS#8 import goes
 * through OpenSSL 3's generic DER decoder in Node, which alone costs more than the X25519. So the
 * public key comes from a fixed-base multiplication (below), the private key is imported as a
 * JWK {d, x} (no DER decoding), and the CryptoKey is kept for the next DH with the same secret.
 * Small LRU: CryptoKeys are non-extractable, the ratchet state holds the raw secret anyway, and
 * the bound keeps retired ratchet secrets from accumulating in memory.
 */
const CACHE_MAX = 64;
interface Cached {
  pub: Uint8Array;
  key: CryptoKey | null;
}
const cache = new Map<string, Cached>();

function cacheId(secretKey: Uint8Array): string {
  return toB64u(sha256(secretKey));
}

function remember(id: string, entry: Cached): void {
  cache.delete(id);
  cache.set(id, entry);
  if (cache.size > CACHE_MAX) {
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) cache.delete(oldest);
  }
}

/**
 * Drop what the cache derived from a secret its owner has just retired (a used one-time prekey,
 * a signed prekey past its grace period, a ratchet key after the DH step): a private key the
 * protocol deletes must not stay usable in memory as a cached CryptoKey (PROTOCOL.md §3.3).
 * The cache only saves time, so forgetting a key that is still needed costs one re-import.
 */
export function x25519Forget(secretKey: Uint8Array): void {
  // An empty cache (a backend that derives without it, as Node's) has nothing to forget: skip
  // the hash (each X-Wing encapsulation forgets its ephemeral secret, §3.13).
  if (cache.size > 0 && secretKey.length === X25519_KEY_BYTES) cache.delete(cacheId(secretKey));
}

/** Whether the cache holds anything derived from `secretKey` (tests of x25519Forget's callers). */
export function x25519Cached(secretKey: Uint8Array): boolean {
  return secretKey.length === X25519_KEY_BYTES && cache.has(cacheId(secretKey));
}

async function privateKeyFor(secretKey: Uint8Array): Promise<CryptoKey> {
  const id = cacheId(secretKey);
  const hit = cache.get(id);
  if (hit?.key) {
    remember(id, hit);
    return hit.key;
  }
  if (hit === undefined) {
    // A secret we have not seen (e.g. a stored prekey): derive its public key the chosen way,
    // which also yields the imported key when that way is WebCrypto.
    const entry = await publicFromSecret(secretKey);
    if (entry.key !== null) {
      remember(id, entry);
      return entry.key;
    }
    remember(id, entry);
  }
  const pub = (cache.get(id) as Cached).pub;
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey(
      "jwk",
      { kty: "OKP", crv: "X25519", d: toB64u(secretKey), x: toB64u(pub) },
      X25519,
      false,
      ["deriveBits"],
    );
  } catch (e) {
    throw new InvalidKeyError("secretKey: rejected by the runtime", { cause: e });
  }
  remember(id, { pub, key });
  return key;
}

const LOW_ORDER = "publicKey: low-order point, shared secret is all-zero (RFC 7748 §6.1)";

async function derive(secretKey: Uint8Array, publicKey: Uint8Array): Promise<Uint8Array> {
  return deriveWith(await privateKeyFor(secretKey), publicKey);
}

async function deriveWith(priv: CryptoKey, publicKey: Uint8Array): Promise<Uint8Array> {
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
  return out;
}

function isZero(b: Uint8Array): boolean {
  let acc = 0;
  for (const x of b) acc |= x;
  return acc === 0;
}

export async function x25519GenerateKeyPair(): Promise<X25519KeyPair> {
  const installed = backend().x25519GenerateKeyPair;
  if (installed) return installed();
  const secretKey = randomBytes(X25519_KEY_BYTES);
  return { publicKey: await x25519PublicKey(secretKey), secretKey };
}

/**
 * X25519(k, 9), computed as the Montgomery u-coordinate of [k]B on the birationally equivalent
 * Edwards curve (RFC 7748 §4.1: u = (1 + y) / (1 − y)), where noble's fixed-base
 * multiplication with precomputed tables beats both the Montgomery ladder and a WebCrypto
 * key import (docs/PERFORMANCE.md). The scalar is clamped as X25519 clamps it (§5); [k]B only
 * depends on k mod L since B has order L. Known-answer tests pin this to RFC 7748 §6.1.
 */
export async function x25519PublicKey(secretKey: Uint8Array): Promise<Uint8Array> {
  assertBytes("secretKey", secretKey, X25519_KEY_BYTES);
  const installed = backend().x25519PublicKey;
  if (installed) return installed(secretKey);
  const id = cacheId(secretKey);
  const hit = cache.get(id);
  if (hit) return hit.pub.slice();
  const entry = await publicFromSecret(secretKey);
  remember(id, entry);
  return entry.pub.slice();
}

/**
 * Two exact ways to X25519(k, 9), and the runtime decides which is faster (docs/PERFORMANCE.md):
 * in Node a PKCS#8 import costs more than noble's fixed-base multiplication, in Chromium
 * (BoringSSL) the import plus a base-point DH is ~1.5× faster than noble. The first calls
 * alternate between the two and time them; from then on the faster one is used. Both give the
 * same bytes (the known-answer tests pin both), so the choice only changes speed.
 */
type Way = "edwards" | "webcrypto";
/** 3 untimed calls per way (warm-up: noble's table, JIT), then 8 timed calls per way. */
const publicKeyRace = race<Way>("edwards", "webcrypto");

/** The chosen way, once calibration has ended (for the benchmark's report). */
export function x25519PublicKeyPath(): Way | null {
  return publicKeyRace.chosen();
}

async function publicFromSecret(secretKey: Uint8Array): Promise<Cached> {
  const way = publicKeyRace.next();
  const t0 = performance.now();
  let entry: Cached;
  if (way === "edwards") {
    const pub = edwardsBasePublicKey(secretKey);
    // [k]B is the identity only if L divides k: never for a clamped k, but stay exact anyway.
    entry = pub === null ? await viaWebCrypto(secretKey) : { pub, key: null };
  } else entry = await viaWebCrypto(secretKey);
  publicKeyRace.record(way, performance.now() - t0);
  return entry;
}

async function viaWebCrypto(secretKey: Uint8Array): Promise<Cached> {
  const key = await importSecret(secretKey);
  return { pub: await deriveWith(key, BASE_POINT), key };
}

function edwardsBasePublicKey(secretKey: Uint8Array): Uint8Array | null {
  const k = Uint8Array.from(secretKey);
  k[0] = (k[0] as number) & 248;
  k[31] = ((k[31] as number) & 127) | 64;
  const scalar = bytesToNumberLE(k) % ed25519.Point.Fn.ORDER;
  k.fill(0);
  if (scalar === 0n) return null;
  const p = ed25519.Point.BASE.multiply(scalar);
  const Fp = ed25519.Point.Fp;
  const den = Fp.sub(p.Z, p.Y);
  if (Fp.is0(den)) return null;
  return Fp.toBytes(Fp.mul(Fp.add(p.Z, p.Y), Fp.inv(den)));
}

/**
 * RFC 7748 X25519(secretKey, publicKey). Throws LowOrderError when the result is all-zero:
 * RFC 7748 §6.1 lets protocols check for it, and Parley must, or a malicious peer could force
 * a known shared secret (PROTOCOL.md §3.3).
 */
export async function x25519(secretKey: Uint8Array, publicKey: Uint8Array): Promise<Uint8Array> {
  assertBytes("secretKey", secretKey, X25519_KEY_BYTES);
  assertBytes("publicKey", publicKey, X25519_KEY_BYTES);
  const installed = backend().x25519;
  const out = await (installed ? installed(secretKey, publicKey) : derive(secretKey, publicKey));
  // §3.3 / RFC 7748 §6.1: an all-zero shared secret (a low-order public key) is refused here,
  // once, whichever backend computed it.
  if (isZero(out)) throw new LowOrderError(LOW_ORDER);
  return out;
}
