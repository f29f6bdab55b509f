/**
 * HPKE (RFC 9180) base mode with the X-Wing KEM (KEM id 0x647a, draft-connolly-cfrg-xwing-kem
 * §6: Nsecret 32, Nenc 1120, Npk 1216, Nsk 32), HKDF-SHA256 and AES-256-GCM (PROTOCOL.md §3.13).
 * Used for hybrid group wraps (§9.2.3).
 *
 * As in hpke.ts the construction is @hpke/core's `CipherSuite` (key schedule with suite_id =
 * "HPKE" || 0x647a || 0x0001 || 0x0002, nonces, contexts); what is plugged in is a KEM object
 * whose Encap/Decap are X-Wing's (xwing.ts, on Parley's ML-KEM-768 and X25519). X-Wing's shared
 * secret enters the key schedule as is: it is not a DHKEM, so there is no ExtractAndExpand
 * (draft §6).
 *
 * One exception, for speed: SealBase (hpkeSealXWing, a commit's 1000 wraps) runs RFC 9180 §5.1's
 * key schedule and §5.2's single-shot seal directly on Parley's HKDF and AES-GCM, because the
 * library's generic path costs more than the X-Wing encapsulation itself in Node (~70 µs per seal:
 * three Extracts of the same secret, an exporter secret a one-shot seal never uses, a context
 * object with a mutex, async layers and buffer copies). Same bytes: a test seals the same
 * plaintext with a fixed `eseed` both ways and compares, and every seal is opened by the library.
 */
import { KemId, type KemInterface, NotSupportedError, XCryptoKey } from "@hpke/common";
import { CipherSuite } from "@hpke/core";
import { concatBytes, utf8 } from "../encoding";
import { aesGcmEncrypt } from "./aead";
import { assertBytes } from "./bytes";
import { AES256_KEY_BYTES } from "./constants";
import { HpkeOpenError, HpkeSealError } from "./errors";
import { HPKE_AEAD_ID, HPKE_KDF_ID, ParleyAes256Gcm, ParleyHkdfSha256 } from "./hpke";
import { hkdfSha256Expand, hkdfSha256Extract } from "./kdf";
import {
  XWING_CIPHERTEXT_BYTES,
  XWING_ESEED_BYTES,
  XWING_PUBLIC_KEY_BYTES,
  XWING_SEED_BYTES,
  xwingDecapsulate,
  xwingEncapsulate,
  xwingGenerateKeyPair,
} from "./xwing";

export const HPKE_XWING_KEM_ID = 0x647a;
/** Nenc of X-Wing: its ciphertext. */
export const HPKE_XWING_ENC_BYTES = XWING_CIPHERTEXT_BYTES;

type Bytesish = ArrayBufferLike | ArrayBufferView;
const view = (x: Bytesish): Uint8Array =>
  ArrayBuffer.isView(x) ? new Uint8Array(x.buffer, x.byteOffset, x.byteLength) : new Uint8Array(x);
const copyBuffer = (u: Uint8Array): ArrayBuffer => u.slice().buffer;

const ALG = "X-Wing";
const pub = (raw: Uint8Array) => new XCryptoKey(ALG, raw, "public");
const priv = (raw: Uint8Array) => new XCryptoKey(ALG, raw, "private", ["deriveBits"]);

function raw(key: CryptoKey | CryptoKeyPair, type: "public" | "private", n: number): Uint8Array {
  const k = "privateKey" in key ? (type === "private" ? key.privateKey : key.publicKey) : key;
  if (!(k instanceof XCryptoKey) || k.type !== type || k.key.length !== n)
    throw new Error(`not an X-Wing ${type} key`);
  return k.key;
}

function sized(x: Bytesish, n: number): Uint8Array {
  const b = view(x);
  if (b.length !== n) throw new Error(`expected ${n} bytes`);
  return b.slice();
}

/** X-Wing as an HPKE KEM (the interface @hpke/core's CipherSuite drives). */
class ParleyXWing implements KemInterface {
  readonly id = KemId.XWing;
  readonly secretSize = 32;
  readonly encSize = XWING_CIPHERTEXT_BYTES;
  readonly publicKeySize = XWING_PUBLIC_KEY_BYTES;
  readonly privateKeySize = XWING_SEED_BYTES;

  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    return copyBuffer(raw(key, "public", XWING_PUBLIC_KEY_BYTES));
  }
  async deserializePublicKey(key: Bytesish): Promise<CryptoKey> {
    return pub(sized(key, XWING_PUBLIC_KEY_BYTES));
  }
  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    return copyBuffer(raw(key, "private", XWING_SEED_BYTES));
  }
  async deserializePrivateKey(key: Bytesish): Promise<CryptoKey> {
    return priv(sized(key, XWING_SEED_BYTES));
  }
  async importKey(
    format: "raw" | "jwk",
    key: ArrayBuffer | JsonWebKey,
    isPublic = true,
  ): Promise<CryptoKey> {
    if (format !== "raw" || !(key instanceof ArrayBuffer))
      throw new NotSupportedError("only raw X-Wing keys");
    return isPublic ? pub(sized(key, XWING_PUBLIC_KEY_BYTES)) : priv(sized(key, XWING_SEED_BYTES));
  }
  async generateKeyPair(): Promise<CryptoKeyPair> {
    const kp = await xwingGenerateKeyPair();
    return { privateKey: priv(kp.secretKey), publicKey: pub(kp.publicKey) };
  }
  /** Not used by Parley (leaf keys are random seeds); X-Wing's DeriveKeyPair is SHAKE-based. */
  async deriveKeyPair(_ikm: Bytesish): Promise<CryptoKeyPair> {
    throw new NotSupportedError("X-Wing DeriveKeyPair is not used");
  }
  /** `ekm` (64 bytes) makes the encapsulation deterministic: known-answer tests only. */
  async encap(params: {
    recipientPublicKey: CryptoKey;
    ekm?: CryptoKeyPair | Bytesish;
  }): Promise<{ sharedSecret: ArrayBuffer; enc: ArrayBuffer }> {
    const pk = raw(params.recipientPublicKey, "public", XWING_PUBLIC_KEY_BYTES);
    let eseed: Uint8Array | undefined;
    if (params.ekm !== undefined) {
      if (!(params.ekm instanceof ArrayBuffer) && !ArrayBuffer.isView(params.ekm))
        throw new NotSupportedError("ekm must be raw bytes");
      eseed = sized(params.ekm, XWING_ESEED_BYTES);
    }
    const out = await xwingEncapsulate(pk, eseed);
    return { sharedSecret: copyBuffer(out.sharedSecret), enc: copyBuffer(out.ciphertext) };
  }
  async decap(params: {
    recipientKey: CryptoKey | CryptoKeyPair;
    enc: Bytesish;
  }): Promise<ArrayBuffer> {
    const sk = raw(params.recipientKey, "private", XWING_SEED_BYTES);
    return copyBuffer(await xwingDecapsulate(sized(params.enc, XWING_CIPHERTEXT_BYTES), sk));
  }
}

let suite: CipherSuite | undefined;

/**
 * The X-Wing suite: @hpke/core's CipherSuite with the KEM above and Parley's HKDF-SHA256 and
 * AES-256-GCM (hpke.ts). Its own instances: a CipherSuite initialises its KDF object with its
 * suite_id, so a KDF object shared with the classical suite would take this suite's id
 * (0x647a) into every classical seal and open made after it.
 */
export function hpkeXWingSuite(): CipherSuite {
  if (suite === undefined) {
    suite = new CipherSuite({
      kem: new ParleyXWing(),
      kdf: new ParleyHkdfSha256(),
      aead: new ParleyAes256Gcm(),
    });
  }
  return suite;
}

// RFC 9180 §5.1 for this suite: suite_id = "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) ||
// I2OSP(aead_id, 2), every label prefixed with "HPKE-v1" || suite_id.
const LABEL_PREFIX = concatBytes(
  utf8("HPKE-v1"),
  utf8("HPKE"),
  new Uint8Array([
    HPKE_XWING_KEM_ID >> 8,
    HPKE_XWING_KEM_ID & 0xff,
    HPKE_KDF_ID >> 8,
    HPKE_KDF_ID & 0xff,
    HPKE_AEAD_ID >> 8,
    HPKE_AEAD_ID & 0xff,
  ]),
);
const EMPTY = new Uint8Array(0);
const MODE_BASE = 0x00;
/** AES-256-GCM's Nn (RFC 9180 §7.3). */
const AEAD_NONCE_BYTES = 12;

/** LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" || suite_id || label || ikm). */
function labeledExtract(salt: Uint8Array, label: string, ikm: Uint8Array): Uint8Array {
  return hkdfSha256Extract(concatBytes(LABEL_PREFIX, utf8(label), ikm), salt);
}

/** LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L). */
function labeledExpand(prk: Uint8Array, label: string, info: Uint8Array, n: number): Uint8Array {
  const info2 = concatBytes(new Uint8Array([n >> 8, n & 0xff]), LABEL_PREFIX, utf8(label), info);
  return hkdfSha256Expand(prk, info2, n);
}

/** psk_id_hash of the base mode (empty psk_id): a constant of the suite, computed once. */
let pskIdHash: Uint8Array | undefined;

/**
 * RFC 9180 §5.1 KeySchedule for mode_base (psk = psk_id = ""): the AEAD key and base nonce. The
 * exporter secret is not derived: a single-shot seal never exports.
 */
function keyScheduleBase(
  sharedSecret: Uint8Array,
  info: Uint8Array,
): { key: Uint8Array; baseNonce: Uint8Array } {
  pskIdHash ??= labeledExtract(EMPTY, "psk_id_hash", EMPTY);
  const infoHash = labeledExtract(EMPTY, "info_hash", info);
  const context = concatBytes(new Uint8Array([MODE_BASE]), pskIdHash, infoHash);
  const secret = labeledExtract(sharedSecret, "secret", EMPTY);
  const key = labeledExpand(secret, "key", context, AES256_KEY_BYTES);
  const baseNonce = labeledExpand(secret, "base_nonce", context, AEAD_NONCE_BYTES);
  secret.fill(0);
  return { key, baseNonce };
}

/**
 * SealBase to an X-Wing key (RFC 9180 §6.1): `enc` is the 1120-byte X-Wing ciphertext, the
 * ciphertext is AES-256-GCM under the schedule's key with nonce = base_nonce XOR I2OSP(0, 12) =
 * base_nonce (the first and only message of the context).
 */
export async function hpkeSealXWing(
  recipientPublicKey: Uint8Array,
  plaintext: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  eseed?: Uint8Array,
): Promise<{ enc: Uint8Array; ciphertext: Uint8Array }> {
  assertBytes("recipientPublicKey", recipientPublicKey, XWING_PUBLIC_KEY_BYTES);
  assertBytes("plaintext", plaintext);
  assertBytes("info", info);
  assertBytes("aad", aad);
  if (eseed !== undefined) assertBytes("eseed", eseed, XWING_ESEED_BYTES);
  try {
    const { ciphertext: enc, sharedSecret } = await xwingEncapsulate(recipientPublicKey, eseed);
    const { key, baseNonce } = keyScheduleBase(sharedSecret, info);
    sharedSecret.fill(0);
    const ciphertext = await aesGcmEncrypt(key, baseNonce, plaintext, aad);
    key.fill(0);
    return { enc, ciphertext };
  } catch (e) {
    throw new HpkeSealError("hpke: X-Wing seal failed", { cause: e });
  }
}

/** hpkeSealXWing of one plaintext to many recipients, in input order (a commit's wraps). */
export async function hpkeSealManyXWing(
  recipients: ReadonlyArray<{ recipientPublicKey: Uint8Array; info: Uint8Array }>,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Array<{ enc: Uint8Array; ciphertext: Uint8Array }>> {
  const out: Array<{ enc: Uint8Array; ciphertext: Uint8Array }> = [];
  // One at a time: each seal is synchronous ML-KEM work plus a few X25519 calls; interleaving
  // them would only evict X25519 cache entries before their DH runs (as hpkeSealMany explains).
  for (const r of recipients)
    out.push(await hpkeSealXWing(r.recipientPublicKey, plaintext, r.info, aad));
  return out;
}

/** OpenBase with the 32-byte X-Wing seed; HpkeOpenError for any failure. */
export async function hpkeOpenXWing(
  recipientSecretKey: Uint8Array,
  enc: Uint8Array,
  ciphertext: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
): Promise<Uint8Array> {
  assertBytes("recipientSecretKey", recipientSecretKey, XWING_SEED_BYTES);
  assertBytes("enc", enc, XWING_CIPHERTEXT_BYTES);
  assertBytes("ciphertext", ciphertext);
  assertBytes("info", info);
  assertBytes("aad", aad);
  const s = hpkeXWingSuite();
  try {
    const sk = await s.kem.deserializePrivateKey(recipientSecretKey);
    return new Uint8Array(await s.open({ recipientKey: sk, enc, info }, ciphertext, aad));
  } catch (e) {
    throw new HpkeOpenError("hpke: X-Wing open failed", { cause: e });
  }
}
