/**
 * AES-256-GCM with a 96-bit nonce and 128-bit tag (NIST SP 800-38D) (PROTOCOL.md §3.5). Output
 * is ciphertext || tag. Nonce uniqueness is the caller's duty: the message layer derives nonces
 * from counters under per-direction keys.
 *
 * Two paths, one result: WebCrypto for large inputs (native AES-NI, ~10× noble at 64 KiB) and,
 * for inputs up to 256 B, whichever of WebCrypto and @noble/ciphers is faster in this runtime:
 * in Node a WebCrypto round trip (importKey + encrypt promise) costs more than the cipher itself
 * (noble ~5× faster at 100 B), in Chromium it does not (WebCrypto ~3× faster) — see
 * `aesGcmSmallPath` and docs/PERFORMANCE.md. Known-answer tests run both paths on every vector.
 */

import { gcm } from "@noble/ciphers/aes.js";
import { assertBytes, buf } from "./bytes";
import { AES256_KEY_BYTES, GCM_NONCE_BYTES, GCM_TAG_BYTES } from "./constants";
import { DecryptError, InvalidKeyError } from "./errors";

/** Inputs up to this many bytes take the noble path (see the module comment). */
export const AEAD_NOBLE_MAX_BYTES = 256;

async function importAesKey(key: Uint8Array, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  assertBytes("key", key, AES256_KEY_BYTES);
  try {
    return await crypto.subtle.importKey("raw", buf(key), { name: "AES-GCM" }, false, [usage]);
  } catch (e) {
    throw new InvalidKeyError("key: rejected by the runtime", { cause: e });
  }
}

export async function aesGcmEncryptSubtle(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  assertBytes("nonce", nonce, GCM_NONCE_BYTES);
  assertBytes("plaintext", plaintext);
  assertBytes("aad", aad);
  const k = await importAesKey(key, "encrypt");
  const params = { name: "AES-GCM", iv: buf(nonce), additionalData: buf(aad), tagLength: 128 };
  return new Uint8Array(await crypto.subtle.encrypt(params, k, buf(plaintext)));
}

/** Throws DecryptError on any authentication failure; never returns unauthenticated bytes. */
export async function aesGcmDecryptSubtle(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  assertBytes("nonce", nonce, GCM_NONCE_BYTES);
  assertBytes("ciphertext", ciphertext);
  assertBytes("aad", aad);
  if (ciphertext.length < GCM_TAG_BYTES) {
    throw new DecryptError(`ciphertext: shorter than the ${GCM_TAG_BYTES}-byte tag`);
  }
  const k = await importAesKey(key, "decrypt");
  const params = { name: "AES-GCM", iv: buf(nonce), additionalData: buf(aad), tagLength: 128 };
  try {
    return new Uint8Array(await crypto.subtle.decrypt(params, k, buf(ciphertext)));
  } catch (e) {
    throw new DecryptError("aes-gcm: authentication failed", { cause: e });
  }
}

function checkArgs(key: Uint8Array, nonce: Uint8Array, data: Uint8Array, aad: Uint8Array): void {
  assertBytes("key", key, AES256_KEY_BYTES);
  assertBytes("nonce", nonce, GCM_NONCE_BYTES);
  assertBytes("aad", aad);
  assertBytes("data", data);
}

export function aesGcmEncryptNoble(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  checkArgs(key, nonce, plaintext, aad);
  return gcm(key, nonce, aad).encrypt(plaintext);
}

export function aesGcmDecryptNoble(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  checkArgs(key, nonce, ciphertext, aad);
  if (ciphertext.length < GCM_TAG_BYTES) {
    throw new DecryptError(`ciphertext: shorter than the ${GCM_TAG_BYTES}-byte tag`);
  }
  try {
    return gcm(key, nonce, aad).decrypt(ciphertext);
  } catch (e) {
    throw new DecryptError("aes-gcm: authentication failed", { cause: e });
  }
}

/**
 * Which path small inputs (≤ AEAD_NOBLE_MAX_BYTES) take. The crossover depends on the runtime:
 * in Node noble wins ~5× at 100 B, in Chromium (the PWA) WebCrypto wins ~3× (`npm run bench`,
 * docs/PERFORMANCE.md). So the first small calls alternate between the two and time them, and
 * from then on the faster is used. Arguments are checked in noble's order on both paths and both
 * throw the same DecryptError, so the choice never changes a result, only the speed.
 */
type SmallPath = "noble" | "subtle";
const TRIALS = 5;
const trials: Record<SmallPath, number[]> = { noble: [], subtle: [] };
let smallPath: SmallPath | null = null;

/** The path chosen for small inputs once calibration has ended (for the benchmark's report). */
export function aesGcmSmallPath(): SmallPath | null {
  return smallPath;
}

function nextSmallPath(): SmallPath {
  return smallPath ?? (trials.noble.length <= trials.subtle.length ? "noble" : "subtle");
}

function recordSmall(path: SmallPath, t0: number): void {
  if (smallPath !== null) return;
  trials[path].push(performance.now() - t0);
  // The first sample of each path pays one-time set-up (JIT, key tables): skip it.
  if (trials.noble.length > TRIALS && trials.subtle.length > TRIALS) {
    const med = (xs: number[]) =>
      [...xs.slice(1)].sort((a, b) => a - b)[Math.floor(TRIALS / 2)] ?? 0;
    smallPath = med(trials.noble) <= med(trials.subtle) ? "noble" : "subtle";
  }
}

export async function aesGcmEncrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  if (plaintext.length > AEAD_NOBLE_MAX_BYTES)
    return aesGcmEncryptSubtle(key, nonce, plaintext, aad);
  const path = nextSmallPath();
  const t0 = performance.now();
  let out: Uint8Array;
  if (path === "noble") out = aesGcmEncryptNoble(key, nonce, plaintext, aad);
  else {
    checkArgs(key, nonce, plaintext, aad);
    out = await aesGcmEncryptSubtle(key, nonce, plaintext, aad);
  }
  recordSmall(path, t0);
  return out;
}

/** Throws DecryptError on any authentication failure; never returns unauthenticated bytes. */
export async function aesGcmDecrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  if (ciphertext.length > AEAD_NOBLE_MAX_BYTES + GCM_TAG_BYTES) {
    return aesGcmDecryptSubtle(key, nonce, ciphertext, aad);
  }
  const path = nextSmallPath();
  const t0 = performance.now();
  let out: Uint8Array;
  if (path === "noble") out = aesGcmDecryptNoble(key, nonce, ciphertext, aad);
  else {
    checkArgs(key, nonce, ciphertext, aad);
    if (ciphertext.length < GCM_TAG_BYTES) {
      throw new DecryptError(`ciphertext: shorter than the ${GCM_TAG_BYTES}-byte tag`);
    }
    out = await aesGcmDecryptSubtle(key, nonce, ciphertext, aad);
  }
  recordSmall(path, t0);
  return out;
}
