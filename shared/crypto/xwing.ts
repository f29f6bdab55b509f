/**
 * X-Wing (draft-connolly-cfrg-xwing-kem, -05 onward): the hybrid KEM of ML-KEM-768 and X25519
 * (PROTOCOL.md §3.13). Not a KEM of its own: the two halves run on Parley's ML-KEM-768
 * (mlkem.ts: noble, or PQClean on the Node backend) and X25519 (x25519.ts: the installed
 * backend), and the draft's combiner joins them:
 *
 *   (d, z, sk_X) = SHAKE256(sk, 96) split 32/32/32          (expandDecapsulationKey)
 *   pk           = ek_M(d, z) || X25519(sk_X, 9)             (1184 + 32 = 1216 bytes)
 *   ct           = ct_M || ct_X                               (1088 + 32 = 1120 bytes)
 *   ss           = SHA3-256(ss_M || ss_X || ct_X || pk_X || "\.//^\")
 *
 * A key is stored as its 32-byte seed `sk`. The draft's vectors run through every backend
 * (test/shared/crypto-xwing.test.ts), and noble's own X-Wing agrees on random inputs.
 *
 * One deliberate difference from the draft: X25519 here refuses an all-zero shared secret
 * (§3.3), so a ciphertext whose X25519 half is a low-order point is an error (LowOrderError),
 * where the draft would return a secret. Honest encapsulations never produce one; a forged one
 * fails either way, here before the AEAD instead of at it.
 */
import { sha3_256, shake256 } from "@noble/hashes/sha3.js";
import { backend } from "./backend";
import { assertBytes } from "./bytes";
import { X25519_KEY_BYTES } from "./constants";
import {
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SEED_BYTES,
  mlkemDecapsulateSeed,
  mlkemEncapsulate,
  mlkemEncapsulateMany,
  mlkemForget,
  mlkemPublicKey,
} from "./mlkem";
import { randomBytes } from "./random";
import { x25519, x25519Forget, x25519PublicKey } from "./x25519";

export const XWING_SEED_BYTES = 32;
export const XWING_PUBLIC_KEY_BYTES = MLKEM768_PUBLIC_KEY_BYTES + X25519_KEY_BYTES;
export const XWING_CIPHERTEXT_BYTES = MLKEM768_CIPHERTEXT_BYTES + X25519_KEY_BYTES;
export const XWING_SHARED_SECRET_BYTES = 32;
/** Randomness of one encapsulation: ML-KEM's m, then the X25519 ephemeral secret. */
export const XWING_ESEED_BYTES = 64;
/** XWingLabel, the 6 ASCII bytes `\.//^\` (draft §5.3). */
const LABEL = new Uint8Array([0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c]);

/** expandDecapsulationKey: the ML-KEM seed d‖z and the X25519 secret a 32-byte seed stands for. */
function expand(sk: Uint8Array): { mlkemSeed: Uint8Array; x25519Secret: Uint8Array } {
  const out = shake256(sk, { dkLen: MLKEM768_SEED_BYTES + X25519_KEY_BYTES });
  return {
    mlkemSeed: out.subarray(0, MLKEM768_SEED_BYTES),
    x25519Secret: out.subarray(MLKEM768_SEED_BYTES),
  };
}

function combine(ssM: Uint8Array, ssX: Uint8Array, ctX: Uint8Array, pkX: Uint8Array): Uint8Array {
  const input = new Uint8Array(32 + 32 + 32 + 32 + LABEL.length);
  input.set(ssM, 0);
  input.set(ssX, 32);
  input.set(ctX, 64);
  input.set(pkX, 96);
  input.set(LABEL, 128);
  return (backend().sha3_256 ?? sha3_256)(input);
}

/** The 1216-byte encapsulation key of a seed (GenerateKeyPairDerand's pk). */
export async function xwingPublicKey(sk: Uint8Array): Promise<Uint8Array> {
  assertBytes("sk", sk, XWING_SEED_BYTES);
  const { mlkemSeed, x25519Secret } = expand(sk);
  const out = new Uint8Array(XWING_PUBLIC_KEY_BYTES);
  out.set(mlkemPublicKey(mlkemSeed), 0);
  out.set(await x25519PublicKey(x25519Secret), MLKEM768_PUBLIC_KEY_BYTES);
  return out;
}

/** A fresh key: its seed and encapsulation key. */
export async function xwingGenerateKeyPair(): Promise<{
  secretKey: Uint8Array;
  publicKey: Uint8Array;
}> {
  const secretKey = randomBytes(XWING_SEED_BYTES);
  return { secretKey, publicKey: await xwingPublicKey(secretKey) };
}

/**
 * Encapsulate to `pk` with fresh randomness, or EncapsulateDerand with a 64-byte `eseed` (for
 * known-answer tests only: a reused eseed makes the secret predictable). InvalidKeyError for a
 * key of the wrong length or whose ML-KEM half fails the FIPS 203 §7.2 check; LowOrderError if
 * the X25519 half is a low-order point.
 */
export async function xwingEncapsulate(
  pk: Uint8Array,
  eseed?: Uint8Array,
): Promise<{ ciphertext: Uint8Array; sharedSecret: Uint8Array }> {
  assertBytes("pk", pk, XWING_PUBLIC_KEY_BYTES);
  if (eseed !== undefined) assertBytes("eseed", eseed, XWING_ESEED_BYTES);
  // One draw for both (FIPS 203's m, then the X25519 ephemeral secret), as EncapsulateDerand reads.
  const e = eseed === undefined ? randomBytes(XWING_ESEED_BYTES) : eseed.slice();
  const kem = mlkemEncapsulate(pk.subarray(0, MLKEM768_PUBLIC_KEY_BYTES), e.subarray(0, 32));
  return xwingFinish({ pk, e, kem });
}

/**
 * An encapsulation whose ML-KEM half is done: the X25519 half and the combiner remain
 * (`xwingFinish`). Holds secrets (`e`, the ML-KEM shared secret): finish or `xwingDiscard` it.
 */
export interface XWingPrepared {
  readonly pk: Uint8Array;
  readonly e: Uint8Array;
  readonly kem: { ciphertext: Uint8Array; sharedSecret: Uint8Array };
}

/**
 * The ML-KEM halves of encapsulations to many keys, as one batch a backend may run on another
 * thread (mlkemEncapsulateMany) while the caller finishes earlier ones — a commit's wraps
 * (§9.2.3). Fresh randomness per key; the same bytes as xwingEncapsulate given the same draws.
 */
export async function xwingPrepareMany(pks: readonly Uint8Array[]): Promise<XWingPrepared[]> {
  for (const pk of pks) assertBytes("pk", pk, XWING_PUBLIC_KEY_BYTES);
  const es = pks.map(() => randomBytes(XWING_ESEED_BYTES));
  try {
    const kems = await mlkemEncapsulateMany(
      pks.map((pk, i) => ({
        publicKey: pk.subarray(0, MLKEM768_PUBLIC_KEY_BYTES),
        m: (es[i] as Uint8Array).subarray(0, 32),
      })),
    );
    return pks.map((pk, i) => ({
      pk,
      e: es[i] as Uint8Array,
      kem: kems[i] as XWingPrepared["kem"],
    }));
  } catch (e) {
    for (const x of es) x.fill(0);
    throw e;
  }
}

/** Wipe a prepared encapsulation that will not be finished. */
export function xwingDiscard(p: XWingPrepared): void {
  p.e.fill(0);
  p.kem.sharedSecret.fill(0);
}

/** The X25519 half and the combiner (draft §5.3); wipes the prepared secrets. */
export async function xwingFinish(
  p: XWingPrepared,
): Promise<{ ciphertext: Uint8Array; sharedSecret: Uint8Array }> {
  const pkX = p.pk.subarray(MLKEM768_PUBLIC_KEY_BYTES);
  const ekX = p.e.subarray(32, 64);
  try {
    const ctX = await x25519PublicKey(ekX);
    const ssX = await x25519(ekX, pkX);
    // The ephemeral secret is used once: it must not stay in the X25519 cache.
    x25519Forget(ekX);
    const ciphertext = new Uint8Array(XWING_CIPHERTEXT_BYTES);
    ciphertext.set(p.kem.ciphertext, 0);
    ciphertext.set(ctX, MLKEM768_CIPHERTEXT_BYTES);
    const sharedSecret = combine(p.kem.sharedSecret, ssX, ctX, pkX);
    ssX.fill(0);
    return { ciphertext, sharedSecret };
  } finally {
    xwingDiscard(p);
  }
}

/**
 * Decapsulate with the 32-byte seed. A well-formed wrong ciphertext gives ML-KEM's
 * implicit-rejection secret, hence a wrong `ss` (the caller's AEAD fails); InvalidLengthError
 * for wrong lengths, LowOrderError for a low-order X25519 half (see the module comment).
 */
export async function xwingDecapsulate(ct: Uint8Array, sk: Uint8Array): Promise<Uint8Array> {
  assertBytes("ct", ct, XWING_CIPHERTEXT_BYTES);
  assertBytes("sk", sk, XWING_SEED_BYTES);
  const { mlkemSeed, x25519Secret } = expand(sk);
  const ctM = ct.subarray(0, MLKEM768_CIPHERTEXT_BYTES);
  const ctX = ct.subarray(MLKEM768_CIPHERTEXT_BYTES);
  const ssM = mlkemDecapsulateSeed(ctM, mlkemSeed);
  const ssX = await x25519(x25519Secret, ctX);
  const pkX = await x25519PublicKey(x25519Secret);
  const ss = combine(ssM, ssX, ctX, pkX);
  ssM.fill(0);
  ssX.fill(0);
  return ss;
}

/** Drop the cached expansions of a seed its owner has deleted (as mlkemForget, §3.11). */
export function xwingForget(sk: Uint8Array): void {
  if (sk.length !== XWING_SEED_BYTES) return;
  const { mlkemSeed, x25519Secret } = expand(sk);
  mlkemForget(mlkemSeed);
  x25519Forget(x25519Secret);
}
