"use strict";
/**
 * PQClean's ML-KEM-768 (public domain, compiled to WebAssembly in the `pqclean` npm package) driven
 * deterministically: its one import, `PQCLEAN_randombytes`, is answered with the bytes the caller
 * gives (KeyGen's 64-byte d‖z, Encaps' 32-byte m), so what runs is FIPS 203's KeyGen_internal and
 * Encaps_internal. Each call must consume exactly the bytes it was given.
 *
 * Plain CommonJS because two threads load it: the Node backend (node/mlkem-pqclean.ts, which adds
 * FIPS 203's input checks and typed errors) and the backend's crypto thread (crypto-thread.cjs).
 * No input checks here: callers check.
 */
const { readFileSync } = require("node:fs");
const { dirname, join } = require("node:path");

const PK = 1184;
const SK = 2400;
const CT = 1088;
const SS = 32;

/** The bytes the next PQCLEAN_randombytes call must return, exactly once. */
let pending = null;
let instance = null;

function load() {
  const file = join(dirname(require.resolve("pqclean/package.json")), "wasm/gen/pqclean.wasm");
  const compiled = new WebAssembly.Module(readFileSync(file));
  const x = new WebAssembly.Instance(compiled, {
    env: {
      PQCLEAN_randombytes(ptr, n) {
        const want = pending;
        pending = null;
        // Anything else would be randomness we did not choose: refuse rather than guess.
        if (want === null || want.length !== n) throw new Error("ML-KEM: unexpected randomness");
        new Uint8Array(x.memory.buffer, ptr, n).set(want);
      },
    },
    wasi_snapshot_preview1: {
      proc_exit() {
        throw new Error("ML-KEM: the WebAssembly module exited");
      },
    },
  }).exports;
  // Fixed buffers for the one call at a time a synchronous module allows.
  return { x, pk: x.malloc(PK), sk: x.malloc(SK), ct: x.malloc(CT), ss: x.malloc(SS) };
}

function pq() {
  if (instance === null) instance = load();
  return instance;
}

const heap = () => new Uint8Array(pq().x.memory.buffer);

function run(randomness, call) {
  pending = randomness;
  try {
    if (call() !== 0 || pending !== null) throw new Error("ML-KEM: call failed");
  } finally {
    pending = null;
  }
}

/** KeyGen_internal(d, z) from the 64-byte seed d‖z. */
function keypair(seed) {
  const m = pq();
  try {
    run(seed, () => m.x.PQCLEAN_MLKEM768_CLEAN_crypto_kem_keypair(m.pk, m.sk));
    const h = heap();
    return { publicKey: h.slice(m.pk, m.pk + PK), secretKey: h.slice(m.sk, m.sk + SK) };
  } finally {
    heap().fill(0, m.sk, m.sk + SK);
  }
}

/** Encaps_internal(ek, m), writing the ciphertext and shared secret into `out` at `at` (CT ‖ SS). */
function encapsulateInto(publicKey, msg, out, at) {
  const m = pq();
  try {
    heap().set(publicKey, m.pk);
    run(msg, () => m.x.PQCLEAN_MLKEM768_CLEAN_crypto_kem_enc(m.ct, m.ss, m.pk));
    const h = heap();
    out.set(h.subarray(m.ct, m.ct + CT), at);
    out.set(h.subarray(m.ss, m.ss + SS), at + CT);
  } finally {
    heap().fill(0, m.ss, m.ss + SS);
  }
}

/** Decaps with the expanded 2400-byte dk (implicit rejection included). */
function decapsulate(ciphertext, secretKey) {
  const m = pq();
  try {
    const h = heap();
    h.set(ciphertext, m.ct);
    h.set(secretKey, m.sk);
    if (m.x.PQCLEAN_MLKEM768_CLEAN_crypto_kem_dec(m.ss, m.ct, m.sk) !== 0)
      throw new Error("ML-KEM: call failed");
    return heap().slice(m.ss, m.ss + SS);
  } finally {
    const after = heap();
    after.fill(0, m.sk, m.sk + SK);
    after.fill(0, m.ss, m.ss + SS);
  }
}

module.exports = { keypair, encapsulateInto, decapsulate };
