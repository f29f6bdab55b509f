/**
 * ML-KEM-768 (FIPS 203) from @noble/post-quantum, as small byte-in/byte-out functions
 * (PROTOCOL.md §3.8). Keys are kept as their 64-byte seed d‖z (FIPS 203 §6.1 ML-KEM.KeyGen_internal)
 * and expanded when needed: a seed is 64 bytes on disk instead of the 2400-byte expanded key.
 *
 * Every input is checked here, so callers get typed errors, never a library message:
 * - a public key of the wrong length or failing the FIPS 203 §7.2 modulus check → InvalidKeyError;
 * - a ciphertext or secret key of the wrong length → InvalidLengthError; an expanded secret key
 *   failing the §7.3 hash check → InvalidKeyError;
 * - a well-formed but wrong ciphertext is NOT an error: decapsulation returns the implicit-rejection
 *   secret (FIPS 203 Algorithm 18), so the caller's AEAD/MAC fails later, as for a wrong DH.
 */
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { InvalidKeyError, InvalidLengthError } from "./errors";

export const MLKEM768_SEED_BYTES = 64;
export const MLKEM768_PUBLIC_KEY_BYTES = 1184;
export const MLKEM768_SECRET_KEY_BYTES = 2400;
export const MLKEM768_CIPHERTEXT_BYTES = 1088;
export const MLKEM768_SHARED_SECRET_BYTES = 32;
const MSG_BYTES = 32;

function length(name: string, x: Uint8Array, n: number): void {
  if (!(x instanceof Uint8Array) || x.length !== n)
    throw new InvalidLengthError(`${name}: expected ${n} bytes`);
}

export interface MlKemKeyPair {
  publicKey: Uint8Array;
  /** The 2400-byte expanded decapsulation key (FIPS 203 dk = dk_PKE‖ek‖H(ek)‖z). */
  secretKey: Uint8Array;
}

/** ML-KEM.KeyGen_internal(d, z) for seed = d‖z (64 bytes). Deterministic. */
export function mlkemKeyPairFromSeed(seed: Uint8Array): MlKemKeyPair {
  length("seed", seed, MLKEM768_SEED_BYTES);
  const kp = ml_kem768.keygen(seed);
  return { publicKey: kp.publicKey, secretKey: kp.secretKey };
}

/** The encapsulation key of a seed (what a prekey publishes). */
export function mlkemPublicKey(seed: Uint8Array): Uint8Array {
  return mlkemKeyPairFromSeed(seed).publicKey;
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
  let out: { cipherText: Uint8Array; sharedSecret: Uint8Array };
  try {
    out = ml_kem768.encapsulate(publicKey, m);
  } catch {
    // The only remaining failure is the §7.2 modulus check (a coefficient ≥ q).
    throw new InvalidKeyError("ML-KEM-768 public key: not reduced modulo q");
  }
  return { ciphertext: out.cipherText, sharedSecret: out.sharedSecret };
}

/** ML-KEM.Decaps(dk, c) with the 2400-byte expanded key; implicit rejection on a wrong c. */
export function mlkemDecapsulate(ciphertext: Uint8Array, secretKey: Uint8Array): Uint8Array {
  length("ciphertext", ciphertext, MLKEM768_CIPHERTEXT_BYTES);
  length("secretKey", secretKey, MLKEM768_SECRET_KEY_BYTES);
  try {
    return ml_kem768.decapsulate(ciphertext, secretKey);
  } catch {
    // Lengths are checked above: what is left is the §7.3 hash check H(ek) = h inside dk.
    throw new InvalidKeyError("ML-KEM-768 secret key: hash check failed");
  }
}

/** Decaps with the key a 64-byte seed expands to (how Parley stores its KEM prekeys). */
export function mlkemDecapsulateSeed(ciphertext: Uint8Array, seed: Uint8Array): Uint8Array {
  length("ciphertext", ciphertext, MLKEM768_CIPHERTEXT_BYTES);
  const kp = mlkemKeyPairFromSeed(seed);
  try {
    return mlkemDecapsulate(ciphertext, kp.secretKey);
  } finally {
    kp.secretKey.fill(0);
  }
}
