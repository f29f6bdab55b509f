/**
 * HPKE (RFC 9180) base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM
 * (KEM 0x0020, KDF 0x0001, AEAD 0x0002), through @hpke/core rather than a hand-rolled
 * construction (PROTOCOL.md §3.6). Used to wrap group epoch secrets to members' signed prekeys.
 */

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { gcm } from "@noble/ciphers/aes.js";
import { expand as hkdfExpand, extract as hkdfExtract } from "@noble/hashes/hkdf.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { concatBytes, toB64u, utf8 } from "../encoding";
import { assertBytes, buf } from "./bytes";
import { X25519_KEY_BYTES } from "./constants";
import { HpkeOpenError, HpkeSealError, LowOrderError } from "./errors";
import { x25519, x25519PublicKey } from "./x25519";

export const HPKE_KEM_ID = 0x0020;
export const HPKE_KDF_ID = 0x0001;
export const HPKE_AEAD_ID = 0x0002;
/** Nenc of DHKEM(X25519, HKDF-SHA256) (RFC 9180 §7.1). */
export const HPKE_ENC_BYTES = 32;

let suite: CipherSuite | undefined;

/** The one Parley cipher suite (exported for tests that exercise modes 1–3 and exports). */
export function hpkeSuite(): CipherSuite {
  suite ??= new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Aes256Gcm(),
  });
  return suite;
}

export async function hpkeSeal(
  recipientPublicKey: Uint8Array,
  plaintext: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
): Promise<{ enc: Uint8Array; ciphertext: Uint8Array }> {
  assertBytes("recipientPublicKey", recipientPublicKey, X25519_KEY_BYTES);
  assertBytes("plaintext", plaintext);
  assertBytes("info", info);
  assertBytes("aad", aad);
  try {
    const { enc, dh } = await encapDh(recipientPublicKey);
    return { enc, ciphertext: sealWithDh(dh, enc, recipientPublicKey, plaintext, info, aad) };
  } catch (e) {
    // Includes a low-order recipient key (RFC 9180 §7.1.4: DH output all-zero).
    throw new HpkeSealError("hpke: seal failed", { cause: e });
  }
}

/**
 * Base-mode single-shot seal with a given ephemeral secret (RFC 9180 §5.1.1, §6.1), for
 * known-answer checks against Appendix A (`npm run bench` runs them before timing this path).
 */
export async function hpkeSealWithEphemeral(
  ephemeralSecretKey: Uint8Array,
  recipientPublicKey: Uint8Array,
  plaintext: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
): Promise<{ enc: Uint8Array; ciphertext: Uint8Array }> {
  const enc = await x25519PublicKey(ephemeralSecretKey);
  const dh = await x25519(ephemeralSecretKey, recipientPublicKey);
  return { enc, ciphertext: sealWithDh(dh, enc, recipientPublicKey, plaintext, info, aad) };
}

/*
 * Why seal is written out here while open stays on @hpke/core (docs/PERFORMANCE.md): a group
 * commit seals the epoch secret once per member (§9.2), and @hpke/core spends a dozen WebCrypto
 * round trips per seal (every labeled HKDF step is an HMAC key import plus a sign), which made
 * a 1000-member commit take seconds. Here the ephemeral key pair and the DH stay in WebCrypto
 * (the ephemeral private key never leaves it) and the small labeled HKDF steps and the 32-byte
 * AES-GCM run synchronously on the same noble code the rest of the crypto core uses. Output is
 * byte-for-byte RFC 9180 (checked against Appendix A, and opened by @hpke/core in the tests).
 */
const X25519_ALG = { name: "X25519" } as const;
const HPKE_V1 = utf8("HPKE-v1");
const SUITE_KEM = concatBytes(utf8("KEM"), i2osp2(HPKE_KEM_ID));
const SUITE_HPKE = concatBytes(
  utf8("HPKE"),
  i2osp2(HPKE_KEM_ID),
  i2osp2(HPKE_KDF_ID),
  i2osp2(HPKE_AEAD_ID),
);
const EMPTY = new Uint8Array(0);

function i2osp2(n: number): Uint8Array {
  return new Uint8Array([(n >> 8) & 0xff, n & 0xff]);
}

const labels = new Map<string, Uint8Array>();
function label(suite: Uint8Array, name: string): Uint8Array {
  const id = `${suite.length}:${name}`;
  let l = labels.get(id);
  if (l === undefined) {
    l = concatBytes(HPKE_V1, suite, utf8(name));
    labels.set(id, l);
  }
  return l;
}

function labeledExtract(suite: Uint8Array, salt: Uint8Array, name: string, ikm: Uint8Array) {
  return hkdfExtract(nobleSha256, concatBytes(label(suite, name), ikm), salt);
}

function labeledExpand(
  suite: Uint8Array,
  prk: Uint8Array,
  name: string,
  info: Uint8Array,
  length: number,
) {
  return hkdfExpand(
    nobleSha256,
    prk,
    concatBytes(i2osp2(length), label(suite, name), info),
    length,
  );
}

/** psk_id_hash of the default (empty) psk_id: a constant of the suite (§5.1). */
let pskIdHashCache: Uint8Array | undefined;

/** Recipient public keys are the members' signed prekeys: the same few, commit after commit. */
const recipientKeys = new Map<string, CryptoKey>();
const RECIPIENT_KEYS_MAX = 4096;

async function recipientKey(pkR: Uint8Array): Promise<CryptoKey> {
  const id = toB64u(pkR);
  const hit = recipientKeys.get(id);
  if (hit) return hit;
  const key = await crypto.subtle.importKey("raw", buf(pkR), X25519_ALG, false, []);
  recipientKeys.set(id, key);
  if (recipientKeys.size > RECIPIENT_KEYS_MAX) {
    const oldest = recipientKeys.keys().next().value;
    if (oldest !== undefined) recipientKeys.delete(oldest);
  }
  return key;
}

/** DHKEM Encap's key agreement (RFC 9180 §4.1): fresh ephemeral, DH with the recipient. */
async function encapDh(pkR: Uint8Array): Promise<{ enc: Uint8Array; dh: Uint8Array }> {
  const [pair, pub] = await Promise.all([
    crypto.subtle.generateKey(X25519_ALG, false, ["deriveBits"]) as Promise<CryptoKeyPair>,
    recipientKey(pkR),
  ]);
  const [enc, bits] = await Promise.all([
    crypto.subtle.exportKey("raw", pair.publicKey),
    crypto.subtle.deriveBits({ name: "X25519", public: pub }, pair.privateKey, 256),
  ]);
  const dh = new Uint8Array(bits);
  let acc = 0;
  for (const x of dh) acc |= x;
  if (acc === 0) throw new LowOrderError("recipientPublicKey: low-order point");
  return { enc: new Uint8Array(enc as ArrayBuffer), dh };
}

function sealWithDh(
  dh: Uint8Array,
  enc: Uint8Array,
  pkR: Uint8Array,
  plaintext: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  // ExtractAndExpand (§4.1), then KeySchedule for mode_base (§5.1) with the default psk.
  const eaePrk = labeledExtract(SUITE_KEM, EMPTY, "eae_prk", dh);
  const shared = labeledExpand(SUITE_KEM, eaePrk, "shared_secret", concatBytes(enc, pkR), 32);
  pskIdHashCache ??= labeledExtract(SUITE_HPKE, EMPTY, "psk_id_hash", EMPTY);
  const pskIdHash = pskIdHashCache;
  const infoHash = labeledExtract(SUITE_HPKE, EMPTY, "info_hash", info);
  const context = concatBytes(new Uint8Array([0]), pskIdHash, infoHash);
  const secret = labeledExtract(SUITE_HPKE, shared, "secret", EMPTY);
  const key = labeledExpand(SUITE_HPKE, secret, "key", context, 32);
  const nonce = labeledExpand(SUITE_HPKE, secret, "base_nonce", context, 12);
  // Sequence number 0: the nonce is base_nonce itself (§5.2).
  return gcm(key, nonce, aad).encrypt(plaintext);
}

/** Throws HpkeOpenError for any failure: bad enc, wrong key, info or aad, altered ciphertext. */
export async function hpkeOpen(
  recipientSecretKey: Uint8Array,
  enc: Uint8Array,
  ciphertext: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  assertBytes("recipientSecretKey", recipientSecretKey, X25519_KEY_BYTES);
  assertBytes("enc", enc, HPKE_ENC_BYTES);
  assertBytes("ciphertext", ciphertext);
  assertBytes("info", info);
  assertBytes("aad", aad);
  const s = hpkeSuite();
  try {
    const sk = await s.kem.deserializePrivateKey(recipientSecretKey);
    const pt = await s.open({ recipientKey: sk, enc, info }, ciphertext, aad);
    return new Uint8Array(pt);
  } catch (e) {
    throw new HpkeOpenError("hpke: open failed", { cause: e });
  }
}
