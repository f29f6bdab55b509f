"use strict";
/**
 * The Node backend's crypto thread (node/crypto-thread.ts starts it): batches the main thread
 * hands over so that a group commit (PROTOCOL §9.2.3) uses a second core.
 *
 * - `kem`: ML-KEM-768 Encaps_internal(ek, m) per item (pqclean-driver.cjs, the same code the main
 *   thread runs). Input records ek(1184) ‖ m(32), already checked by the caller; answer records
 *   ct(1088) ‖ ss(32). The input is zeroed once read (it holds each m).
 * - `verify`: Ed25519 per item with the same two calls as the backend's `ed25519Verify`:
 *   libsodium first, OpenSSL for what libsodium refuses, so every answer is OpenSSL's (§3.2).
 *   Input records pk(32) ‖ sig(64) ‖ u32be len ‖ message; answer one byte (1 = valid) per item.
 *
 * `kem` jobs go first: the main thread waits for each before sealing its wraps, while a roster's
 * signatures are only needed once the commit is built. One job per turn of the event loop, so a
 * `kem` job that arrives during a long `verify` batch waits for one job, not the whole queue.
 */
const { parentPort } = require("node:worker_threads");
const { createPublicKey, verify } = require("node:crypto");
const sodium = require("sodium-native");
const pqclean = require("./pqclean-driver.cjs");

const EK = 1184;
const M = 32;
const OUT = 1088 + 32;

const kem = [];
const verifies = [];
let scheduled = false;

parentPort.on("message", (job) => {
  (job.kind === "kem" ? kem : verifies).push(job);
  schedule();
});

function schedule() {
  if (scheduled) return;
  scheduled = true;
  setImmediate(step);
}

function step() {
  scheduled = false;
  const job = kem.shift() ?? verifies.shift();
  if (job === undefined) return;
  try {
    const out = job.kind === "kem" ? encapsulate(job) : check(job);
    parentPort.postMessage({ id: job.id, out }, [out.buffer]);
  } catch {
    // The caller redoes the batch on its own thread, where a failure is a typed error.
    parentPort.postMessage({ id: job.id, out: null });
  }
  if (kem.length > 0 || verifies.length > 0) schedule();
}

function encapsulate({ n, buf }) {
  const b = new Uint8Array(buf);
  const out = new Uint8Array(n * OUT);
  try {
    for (let i = 0; i < n; i++) {
      const o = i * (EK + M);
      pqclean.encapsulateInto(b.subarray(o, o + EK), b.subarray(o + EK, o + EK + M), out, i * OUT);
    }
  } finally {
    b.fill(0);
  }
  return out;
}

function check({ n, buf }) {
  const b = new Uint8Array(buf);
  const view = new DataView(buf);
  const ok = new Uint8Array(n);
  for (let i = 0, o = 0; i < n; i++) {
    const pk = b.subarray(o, o + 32);
    const sig = b.subarray(o + 32, o + 96);
    const len = view.getUint32(o + 96);
    const msg = b.subarray(o + 100, o + 100 + len);
    o += 100 + len;
    if (sodium.crypto_sign_verify_detached(sig, msg, pk)) {
      ok[i] = 1;
      continue;
    }
    try {
      const x = Buffer.from(pk).toString("base64url");
      const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
      ok[i] = verify(null, msg, key, sig) ? 1 : 0;
    } catch {
      ok[i] = 0;
    }
  }
  return ok;
}
