/**
 * ML-KEM-768 for the Node backend (PROTOCOL.md §3.1, §3.11): PQClean's portable C implementation
 * (public domain; shipped compiled to WebAssembly in the `pqclean` npm package, whose file we
 * instantiate ourselves). Why: @noble/post-quantum's pure-JS ML-KEM costs ~1–1.5 ms per
 * operation on this machine, PQClean's wasm ~0.15–0.2 ms — and a post-quantum session start
 * runs three of them (§8.2.6, §8.3.5), the ratchet's KEM step three more (§8.4.1).
 *
 * The module is driven deterministically (pqclean-driver.cjs): the caller's seed or m answers its
 * randomness import, so FIPS 203's KeyGen_internal(d, z) and Encaps_internal(ek, m) are what runs —
 * the same bytes as noble, checked by every known-answer vector and the cross-backend test.
 *
 * PQClean does not run FIPS 203's input checks, so they are done here: the §7.2 modulus check of
 * ek before Encaps and the §7.3 hash check of dk before Decaps.
 */
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import {
  CryptoError,
  InvalidKeyError,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_SHARED_SECRET_BYTES,
  mlkemEncapsulationKeyReduced,
} from "../shared/crypto";

/**
 * Loaded at run time, not bundled: the crypto thread loads the same file from beside this module
 * (bench/build.mjs copies both .cjs files next to its bundles).
 */
const driver = createRequire(import.meta.url)(
  "./pqclean-driver.cjs",
) as typeof import("./pqclean-driver.cjs");

/** The driver's failures (a call that did not consume its randomness, a trap) as typed errors. */
function typed<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw e instanceof CryptoError ? e : new CryptoError("ML-KEM: call failed", { cause: e });
  }
}

export function mlkemKeyPairFromSeed(seed: Uint8Array): {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
} {
  return typed(() => driver.keypair(seed));
}

/** FIPS 203 §7.2's input check, which PQClean does not run. */
export function checkEncapsulationKey(publicKey: Uint8Array): void {
  if (!mlkemEncapsulationKeyReduced(publicKey))
    throw new InvalidKeyError("ML-KEM-768 public key: not reduced modulo q");
}

export function mlkemEncapsulate(
  publicKey: Uint8Array,
  msg: Uint8Array,
): { ciphertext: Uint8Array; sharedSecret: Uint8Array } {
  checkEncapsulationKey(publicKey);
  const out = new Uint8Array(MLKEM768_CIPHERTEXT_BYTES + MLKEM768_SHARED_SECRET_BYTES);
  typed(() => driver.encapsulateInto(publicKey, msg, out, 0));
  const r = {
    ciphertext: out.slice(0, MLKEM768_CIPHERTEXT_BYTES),
    sharedSecret: out.slice(MLKEM768_CIPHERTEXT_BYTES),
  };
  out.fill(0);
  return r;
}

/** dk = dk_PKE(1152) ‖ ek(1184) ‖ H(ek)(32) ‖ z(32) (FIPS 203 Algorithm 16). */
const EK_AT = 1152;
const H_AT = EK_AT + 1184;

export function mlkemDecapsulate(ciphertext: Uint8Array, secretKey: Uint8Array): Uint8Array {
  const h = createHash("sha3-256").update(secretKey.subarray(EK_AT, H_AT)).digest();
  if (!h.equals(secretKey.subarray(H_AT, H_AT + 32)))
    throw new InvalidKeyError("ML-KEM-768 secret key: hash check failed");
  return typed(() => driver.decapsulate(ciphertext, secretKey));
}
