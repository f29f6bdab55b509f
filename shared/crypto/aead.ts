/**
 * AES-256-GCM with a 96-bit nonce and 128-bit tag (NIST SP 800-38D) (PROTOCOL.md §3.5). Output
 * is ciphertext || tag. Nonce uniqueness is the caller's duty: the message layer derives nonces
 * from counters under per-direction keys.
 *
 * Two paths, one result: WebCrypto for large inputs (native AES-NI, ~10× noble at 64 KiB) and
 * @noble/ciphers for small ones, where a WebCrypto round trip (importKey + encrypt promise) costs
 * more than the cipher itself (noble ~2× faster at 100 B; crossover measured by `npm run bench`
 * between 256 B and 512 B). Known-answer tests run both paths on every vector.
 * That dispatch is the default backend; an installed backend (backend.ts) takes over after the
 * same argument checks (in Node: node:crypto for every size, faster than both paths here).
 */

import { gcm } from "@noble/ciphers/aes.js";
import { backend } from "./backend";
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

export async function aesGcmEncrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const installed = backend().aesGcmEncrypt;
  if (installed) {
    checkArgs(key, nonce, plaintext, aad);
    return installed(key, nonce, plaintext, aad);
  }
  return plaintext.length <= AEAD_NOBLE_MAX_BYTES
    ? aesGcmEncryptNoble(key, nonce, plaintext, aad)
    : aesGcmEncryptSubtle(key, nonce, plaintext, aad);
}

/** Throws DecryptError on any authentication failure; never returns unauthenticated bytes. */
export async function aesGcmDecrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  const installed = backend().aesGcmDecrypt;
  if (installed) {
    checkArgs(key, nonce, ciphertext, aad);
    if (ciphertext.length < GCM_TAG_BYTES) {
      throw new DecryptError(`ciphertext: shorter than the ${GCM_TAG_BYTES}-byte tag`);
    }
    return installed(key, nonce, ciphertext, aad);
  }
  return ciphertext.length <= AEAD_NOBLE_MAX_BYTES + GCM_TAG_BYTES
    ? aesGcmDecryptNoble(key, nonce, ciphertext, aad)
    : aesGcmDecryptSubtle(key, nonce, ciphertext, aad);
}
