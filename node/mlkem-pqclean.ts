/**
 * ML-KEM-768 for the Node backend (PROTOCOL.md §3.1, §3.11): PQClean's portable C implementation
 * (public domain; shipped compiled to WebAssembly in the `pqclean` npm package, whose file we
 * instantiate ourselves). Why: @noble/post-quantum's pure-JS ML-KEM costs ~1–1.5 ms per
 * operation on this machine, PQClean's wasm ~0.15–0.2 ms — and a post-quantum session start
 * runs three of them (§8.2.6, §8.3.5), the ratchet's KEM step three more (§8.4.1).
 *
 * PQClean's exported API draws its randomness through the one import the module declares,
 * `PQCLEAN_randombytes`: KeyGen asks for 64 bytes (d‖z), Encaps for 32 (m). We answer that import
 * with the caller's seed or m, so the deterministic FIPS 203 algorithms KeyGen_internal(d, z) and
 * Encaps_internal(ek, m) are what runs — the same bytes as noble, checked by every known-answer
 * vector and the cross-backend test. Each call must consume exactly the bytes it was given.
 *
 * PQClean does not run FIPS 203's input checks, so they are done here: the §7.2 modulus check of
 * ek before Encaps and the §7.3 hash check of dk before Decaps.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import {
  CryptoError,
  InvalidKeyError,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SECRET_KEY_BYTES,
  MLKEM768_SHARED_SECRET_BYTES,
  mlkemEncapsulationKeyReduced,
} from "../shared/crypto";

interface Exports {
  memory: WebAssembly.Memory;
  malloc(n: number): number;
  free(p: number): void;
  PQCLEAN_MLKEM768_CLEAN_crypto_kem_keypair(pk: number, sk: number): number;
  PQCLEAN_MLKEM768_CLEAN_crypto_kem_enc(ct: number, ss: number, pk: number): number;
  PQCLEAN_MLKEM768_CLEAN_crypto_kem_dec(ss: number, ct: number, sk: number): number;
}

/** The bytes the next PQCLEAN_randombytes call must return, exactly once. */
let pending: Uint8Array | null = null;

function randombytes(ptr: number, n: number): void {
  const want = pending;
  pending = null;
  // Anything else would be randomness we did not choose: refuse rather than guess.
  if (want === null || want.length !== n) throw new CryptoError("ML-KEM: unexpected randomness");
  new Uint8Array(wasm().memory.buffer, ptr, n).set(want);
}

let instance: { x: Exports; pk: number; sk: number; ct: number; ss: number } | null = null;

function load() {
  const require = createRequire(import.meta.url);
  const file = join(dirname(require.resolve("pqclean/package.json")), "wasm/gen/pqclean.wasm");
  const compiled = new WebAssembly.Module(readFileSync(file));
  const x = new WebAssembly.Instance(compiled, {
    env: { PQCLEAN_randombytes: randombytes },
    wasi_snapshot_preview1: {
      proc_exit: () => {
        throw new CryptoError("ML-KEM: the WebAssembly module exited");
      },
    },
  }).exports as unknown as Exports;
  // Fixed buffers for the one call at a time a synchronous module allows.
  return {
    x,
    pk: x.malloc(MLKEM768_PUBLIC_KEY_BYTES),
    sk: x.malloc(MLKEM768_SECRET_KEY_BYTES),
    ct: x.malloc(MLKEM768_CIPHERTEXT_BYTES),
    ss: x.malloc(MLKEM768_SHARED_SECRET_BYTES),
  };
}

function wasm(): Exports {
  return pq().x;
}

function pq() {
  if (instance === null) instance = load();
  return instance;
}

function heap(): Uint8Array {
  return new Uint8Array(wasm().memory.buffer);
}

function run(randomness: Uint8Array, call: () => number): void {
  pending = randomness;
  try {
    if (call() !== 0 || pending !== null) throw new CryptoError("ML-KEM: call failed");
  } finally {
    pending = null;
  }
}

export function mlkemKeyPairFromSeed(seed: Uint8Array): {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
} {
  const m = pq();
  try {
    run(seed, () => m.x.PQCLEAN_MLKEM768_CLEAN_crypto_kem_keypair(m.pk, m.sk));
    const h = heap();
    return {
      publicKey: h.slice(m.pk, m.pk + MLKEM768_PUBLIC_KEY_BYTES),
      secretKey: h.slice(m.sk, m.sk + MLKEM768_SECRET_KEY_BYTES),
    };
  } finally {
    heap().fill(0, m.sk, m.sk + MLKEM768_SECRET_KEY_BYTES);
  }
}

export function mlkemEncapsulate(
  publicKey: Uint8Array,
  msg: Uint8Array,
): { ciphertext: Uint8Array; sharedSecret: Uint8Array } {
  if (!mlkemEncapsulationKeyReduced(publicKey))
    throw new InvalidKeyError("ML-KEM-768 public key: not reduced modulo q");
  const m = pq();
  try {
    heap().set(publicKey, m.pk);
    run(msg, () => m.x.PQCLEAN_MLKEM768_CLEAN_crypto_kem_enc(m.ct, m.ss, m.pk));
    const h = heap();
    return {
      ciphertext: h.slice(m.ct, m.ct + MLKEM768_CIPHERTEXT_BYTES),
      sharedSecret: h.slice(m.ss, m.ss + MLKEM768_SHARED_SECRET_BYTES),
    };
  } finally {
    heap().fill(0, m.ss, m.ss + MLKEM768_SHARED_SECRET_BYTES);
  }
}

/** dk = dk_PKE(1152) ‖ ek(1184) ‖ H(ek)(32) ‖ z(32) (FIPS 203 Algorithm 16). */
const EK_AT = 1152;
const H_AT = EK_AT + MLKEM768_PUBLIC_KEY_BYTES;

export function mlkemDecapsulate(ciphertext: Uint8Array, secretKey: Uint8Array): Uint8Array {
  const h = createHash("sha3-256").update(secretKey.subarray(EK_AT, H_AT)).digest();
  if (!h.equals(secretKey.subarray(H_AT, H_AT + 32)))
    throw new InvalidKeyError("ML-KEM-768 secret key: hash check failed");
  const m = pq();
  try {
    const heapNow = heap();
    heapNow.set(ciphertext, m.ct);
    heapNow.set(secretKey, m.sk);
    if (m.x.PQCLEAN_MLKEM768_CLEAN_crypto_kem_dec(m.ss, m.ct, m.sk) !== 0)
      throw new CryptoError("ML-KEM: call failed");
    return heap().slice(m.ss, m.ss + MLKEM768_SHARED_SECRET_BYTES);
  } finally {
    const after = heap();
    after.fill(0, m.sk, m.sk + MLKEM768_SECRET_KEY_BYTES);
    after.fill(0, m.ss, m.ss + MLKEM768_SHARED_SECRET_BYTES);
  }
}
