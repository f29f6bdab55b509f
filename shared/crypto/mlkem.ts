/**
 * ML-KEM-768 (FIPS 203) as small byte-in/byte-out functions (PROTOCOL.md §3.11). Keys are kept as
 * their 64-byte seed d‖z (FIPS 203 §6.1 ML-KEM.KeyGen_internal) and expanded when needed: a seed
 * is 64 bytes on disk instead of the 2400-byte expanded key.
 *
 * The default implementation is @noble/post-quantum (browsers, workerd); an installed backend
 * (backend.ts) may run the same three algorithms faster — Node's runs PQClean's ML-KEM-768 in
 * WebAssembly (node/mlkem-pqclean.ts). Same bytes, same typed errors, on every backend.
 *
 * Every input is checked, so callers get typed errors, never a library message:
 * - a public key of the wrong length or failing the FIPS 203 §7.2 modulus check → InvalidKeyError;
 * - a ciphertext or secret key of the wrong length → InvalidLengthError; an expanded secret key
 *   failing the §7.3 hash check → InvalidKeyError;
 * - a well-formed but wrong ciphertext is NOT an error: decapsulation returns the implicit-rejection
 *   secret (FIPS 203 Algorithm 18), so the caller's AEAD/MAC fails later, as for a wrong DH.
 */
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { toB64u } from "../encoding";
import { backend } from "./backend";
import { InvalidKeyError, InvalidLengthError } from "./errors";
import { sha256 } from "./kdf";
import { randomBytes } from "./random";

export const MLKEM768_SEED_BYTES = 64;
export const MLKEM768_PUBLIC_KEY_BYTES = 1184;
export const MLKEM768_SECRET_KEY_BYTES = 2400;
export const MLKEM768_CIPHERTEXT_BYTES = 1088;
export const MLKEM768_SHARED_SECRET_BYTES = 32;
const MSG_BYTES = 32;
/** ByteEncode_12 of the k = 3 polynomials of ek, then ρ (FIPS 203 §7.2 checks the former). */
const EK_POLY_BYTES = 1152;
const Q = 3329;

function length(name: string, x: Uint8Array, n: number): void {
  if (!(x instanceof Uint8Array) || x.length !== n)
    throw new InvalidLengthError(`${name}: expected ${n} bytes`);
}

export interface MlKemKeyPair {
  publicKey: Uint8Array;
  /** The 2400-byte expanded decapsulation key (FIPS 203 dk = dk_PKE‖ek‖H(ek)‖z). */
  secretKey: Uint8Array;
}

/**
 * FIPS 203 §7.2 encapsulation key check: every 12-bit coefficient of ek's ByteEncode_12 part is
 * < q (ByteEncode_12(ByteDecode_12(ek)) = ek). For backends whose library does not check; noble
 * checks inside encapsulate.
 */
export function mlkemEncapsulationKeyReduced(publicKey: Uint8Array): boolean {
  for (let i = 0; i < EK_POLY_BYTES; i += 3) {
    const b0 = publicKey[i] as number;
    const b1 = publicKey[i + 1] as number;
    const b2 = publicKey[i + 2] as number;
    if ((b0 | ((b1 & 0x0f) << 8)) >= Q || ((b1 >> 4) | (b2 << 4)) >= Q) return false;
  }
  return true;
}

// The default implementation (noble). Arguments are checked by the public functions below.

function nobleKeyPairFromSeed(seed: Uint8Array): MlKemKeyPair {
  const kp = ml_kem768.keygen(seed);
  return { publicKey: kp.publicKey, secretKey: kp.secretKey };
}

function nobleEncapsulate(
  publicKey: Uint8Array,
  m: Uint8Array,
): { ciphertext: Uint8Array; sharedSecret: Uint8Array } {
  try {
    const out = ml_kem768.encapsulate(publicKey, m);
    return { ciphertext: out.cipherText, sharedSecret: out.sharedSecret };
  } catch {
    // The only remaining failure is the §7.2 modulus check (a coefficient ≥ q).
    throw new InvalidKeyError("ML-KEM-768 public key: not reduced modulo q");
  }
}

function nobleDecapsulate(ciphertext: Uint8Array, secretKey: Uint8Array): Uint8Array {
  try {
    return ml_kem768.decapsulate(ciphertext, secretKey);
  } catch {
    // Lengths are checked by the caller: what is left is the §7.3 hash check H(ek) = h inside dk.
    throw new InvalidKeyError("ML-KEM-768 secret key: hash check failed");
  }
}

/** ML-KEM.KeyGen_internal(d, z) for seed = d‖z (64 bytes). Deterministic; never cached. */
export function mlkemKeyPairFromSeed(seed: Uint8Array): MlKemKeyPair {
  length("seed", seed, MLKEM768_SEED_BYTES);
  return (backend().mlkemKeyPairFromSeed ?? nobleKeyPairFromSeed)(seed);
}

/**
 * Expansions of the seeds in use, so one key is expanded once, not once per use: a handshake's
 * KEM key is expanded for hs_init and again to decapsulate the answer, a ratchet KEM key when
 * sent and when its ciphertext arrives, a last-resort prekey for every start that uses it.
 * Small LRU; the seeds are in the owner's state anyway, and a seed its owner deletes is dropped
 * with mlkemForget (a one-time secret must not outlive its deletion in memory, §3.11).
 */
const CACHE_MAX = 16;
const cache = new Map<string, MlKemKeyPair>();

function cacheId(seed: Uint8Array): string {
  return toB64u(sha256(seed));
}

function expanded(seed: Uint8Array): MlKemKeyPair {
  length("seed", seed, MLKEM768_SEED_BYTES);
  const id = cacheId(seed);
  let kp = cache.get(id);
  if (kp !== undefined) cache.delete(id);
  else kp = mlkemKeyPairFromSeed(seed);
  cache.set(id, kp);
  if (cache.size > CACHE_MAX) {
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) drop(oldest);
  }
  return kp;
}

function drop(id: string): void {
  cache.get(id)?.secretKey.fill(0);
  cache.delete(id);
}

/**
 * Drop the expansion of a seed its owner has just deleted (a decapsulated ratchet or handshake
 * KEM key, a used one-time KEM prekey, a retired signed prekey). Costs one expansion if the seed
 * is used again.
 */
export function mlkemForget(seed: Uint8Array): void {
  if (seed.length === MLKEM768_SEED_BYTES) drop(cacheId(seed));
}

/** Whether the cache holds the expansion of `seed` (tests of mlkemForget's callers). */
export function mlkemCached(seed: Uint8Array): boolean {
  return seed.length === MLKEM768_SEED_BYTES && cache.has(cacheId(seed));
}

/** The encapsulation key of a seed (what a prekey publishes). */
export function mlkemPublicKey(seed: Uint8Array): Uint8Array {
  return expanded(seed).publicKey.slice();
}

/**
 * ML-KEM.Encaps(ek) with fresh randomness, or Encaps_internal(ek, m) when `m` (32 bytes) is given
 * — `m` is for known-answer tests only: a reused m makes the shared secret predictable.
 */
export function mlkemEncapsulate(
  publicKey: Uint8Array,
  m?: Uint8Array,
): { ciphertext: Uint8Array; sharedSecret: Uint8Array } {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== MLKEM768_PUBLIC_KEY_BYTES)
    throw new InvalidKeyError("ML-KEM-768 public key: expected 1184 bytes");
  if (m !== undefined) length("m", m, MSG_BYTES);
  // FIPS 203 Algorithm 20: m ← 32 random bytes; drawn here so every backend uses the same CSPRNG.
  return (backend().mlkemEncapsulate ?? nobleEncapsulate)(publicKey, m ?? randomBytes(MSG_BYTES));
}

/**
 * mlkemEncapsulate of many keys, answers in input order, each with its own fresh m (or the given
 * one, known-answer tests only). A backend may run the batch on another thread
 * (`mlkemEncapsulateMany`); the bytes are the same either way.
 */
export async function mlkemEncapsulateMany(
  items: ReadonlyArray<{ publicKey: Uint8Array; m?: Uint8Array }>,
): Promise<Array<{ ciphertext: Uint8Array; sharedSecret: Uint8Array }>> {
  const many = backend().mlkemEncapsulateMany;
  if (many === undefined) return items.map((x) => mlkemEncapsulate(x.publicKey, x.m));
  const todo = items.map((x) => {
    if (!(x.publicKey instanceof Uint8Array) || x.publicKey.length !== MLKEM768_PUBLIC_KEY_BYTES)
      throw new InvalidKeyError("ML-KEM-768 public key: expected 1184 bytes");
    if (x.m !== undefined) length("m", x.m, MSG_BYTES);
    return { publicKey: x.publicKey, m: x.m ?? randomBytes(MSG_BYTES) };
  });
  try {
    return await many(todo);
  } finally {
    // The drawn m are secret (each fixes its shared secret): gone once the batch is done.
    todo.forEach((x, i) => {
      if (items[i]?.m === undefined) x.m.fill(0);
    });
  }
}

/** ML-KEM.Decaps(dk, c) with the 2400-byte expanded key; implicit rejection on a wrong c. */
export function mlkemDecapsulate(ciphertext: Uint8Array, secretKey: Uint8Array): Uint8Array {
  length("ciphertext", ciphertext, MLKEM768_CIPHERTEXT_BYTES);
  length("secretKey", secretKey, MLKEM768_SECRET_KEY_BYTES);
  return (backend().mlkemDecapsulate ?? nobleDecapsulate)(ciphertext, secretKey);
}

/** Decaps with the key a 64-byte seed expands to (how Parley stores its KEM keys). */
export function mlkemDecapsulateSeed(ciphertext: Uint8Array, seed: Uint8Array): Uint8Array {
  length("ciphertext", ciphertext, MLKEM768_CIPHERTEXT_BYTES);
  return mlkemDecapsulate(ciphertext, expanded(seed).secretKey);
}
