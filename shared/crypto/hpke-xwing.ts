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
 */
import { KemId, type KemInterface, NotSupportedError, XCryptoKey } from "@hpke/common";
import { CipherSuite } from "@hpke/core";
import { assertBytes } from "./bytes";
import { HpkeOpenError, HpkeSealError } from "./errors";
import { ParleyAes256Gcm, ParleyHkdfSha256 } from "./hpke";
import {
  XWING_CIPHERTEXT_BYTES,
  XWING_ESEED_BYTES,
  XWING_PUBLIC_KEY_BYTES,
  XWING_SEED_BYTES,
  type XWingPrepared,
  xwingDecapsulate,
  xwingDiscard,
  xwingEncapsulate,
  xwingFinish,
  xwingGenerateKeyPair,
  xwingPrepareMany,
} from "./xwing";

export const HPKE_XWING_KEM_ID = 0x647a;
/** Nenc of X-Wing: its ciphertext. */
export const HPKE_XWING_ENC_BYTES = XWING_CIPHERTEXT_BYTES;

type Bytesish = ArrayBufferLike | ArrayBufferView;
const view = (x: Bytesish): Uint8Array =>
  ArrayBuffer.isView(x) ? new Uint8Array(x.buffer, x.byteOffset, x.byteLength) : new Uint8Array(x);
const copyBuffer = (u: Uint8Array): ArrayBuffer => u.slice().buffer;
/** A fresh array's own buffer as is; a view into a larger buffer is copied. */
const ownBuffer = (u: Uint8Array): ArrayBuffer =>
  u.byteOffset === 0 && u.byteLength === u.buffer.byteLength && u.buffer instanceof ArrayBuffer
    ? u.buffer
    : copyBuffer(u);

const ALG = "X-Wing";
const pub = (raw: Uint8Array) => new XCryptoKey(ALG, raw, "public");

/** A recipient key whose encapsulation's ML-KEM half is already done (hpkeSealManyXWing). */
class PreparedKey extends XCryptoKey {
  constructor(readonly prepared: XWingPrepared) {
    super(ALG, prepared.pk, "public");
  }
}
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
    if (params.recipientPublicKey instanceof PreparedKey && params.ekm === undefined) {
      const out = await xwingFinish(params.recipientPublicKey.prepared);
      return { sharedSecret: ownBuffer(out.sharedSecret), enc: ownBuffer(out.ciphertext) };
    }
    let eseed: Uint8Array | undefined;
    if (params.ekm !== undefined) {
      if (!(params.ekm instanceof ArrayBuffer) && !ArrayBuffer.isView(params.ekm))
        throw new NotSupportedError("ekm must be raw bytes");
      eseed = sized(params.ekm, XWING_ESEED_BYTES);
    }
    const out = await xwingEncapsulate(pk, eseed);
    // Both are fresh arrays made for this call: handed over without a copy (~1.2 KB per wrap).
    return { sharedSecret: ownBuffer(out.sharedSecret), enc: ownBuffer(out.ciphertext) };
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

/** SealBase to an X-Wing key: `enc` is the 1120-byte X-Wing ciphertext. */
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
  const s = hpkeXWingSuite();
  try {
    // The key as the KEM's own key object, without deserializePublicKey's defensive copy: it is
    // only read, during this call (a commit seals to 1000 of them).
    const pk = pub(recipientPublicKey);
    const sealed = await s.seal(
      { recipientPublicKey: pk, info, ...(eseed === undefined ? {} : { ekm: eseed }) },
      plaintext,
      aad,
    );
    return { enc: new Uint8Array(sealed.enc), ciphertext: new Uint8Array(sealed.ct) };
  } catch (e) {
    throw new HpkeSealError("hpke: X-Wing seal failed", { cause: e });
  }
}

/**
 * A batch's ML-KEM halves are handed to the backend in chunks of this many: the first chunk's
 * seals start once it is done, while the backend works on the next (a commit's 1000 wraps).
 */
const PREPARE_CHUNK = 32;

/**
 * hpkeSealXWing of one plaintext to many recipients, in input order (a commit's wraps). Every
 * encapsulation's ML-KEM half is requested up front, chunk by chunk (xwingPrepareMany: another
 * thread on a backend that has one), and each seal finishes its own X25519 half and the HPKE key
 * schedule here as its chunk arrives. The same wraps as one hpkeSealXWing per recipient.
 */
export async function hpkeSealManyXWing(
  recipients: ReadonlyArray<{ recipientPublicKey: Uint8Array; info: Uint8Array }>,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Array<{ enc: Uint8Array; ciphertext: Uint8Array }>> {
  for (const r of recipients) {
    assertBytes("recipientPublicKey", r.recipientPublicKey, XWING_PUBLIC_KEY_BYTES);
    assertBytes("info", r.info);
  }
  assertBytes("plaintext", plaintext);
  assertBytes("aad", aad);
  const chunks: Promise<XWingPrepared[]>[] = [];
  for (let i = 0; i < recipients.length; i += PREPARE_CHUNK) {
    const c = xwingPrepareMany(
      recipients.slice(i, i + PREPARE_CHUNK).map((r) => r.recipientPublicKey),
    );
    // Awaited in order below; a later chunk may fail before its turn, which is not unhandled.
    c.catch(() => undefined);
    chunks.push(c);
  }
  const out: Array<{ enc: Uint8Array; ciphertext: Uint8Array }> = [];
  const s = hpkeXWingSuite();
  let k = 0;
  try {
    for (; k < chunks.length; k++) {
      let prepared: XWingPrepared[];
      try {
        prepared = await (chunks[k] as Promise<XWingPrepared[]>);
      } catch (e) {
        throw new HpkeSealError("hpke: X-Wing seal failed", { cause: e });
      }
      for (const [j, p] of prepared.entries()) {
        const r = recipients[k * PREPARE_CHUNK + j] as (typeof recipients)[number];
        try {
          const sealed = await s.seal(
            { recipientPublicKey: new PreparedKey(p), info: r.info },
            plaintext,
            aad,
          );
          out.push({ enc: new Uint8Array(sealed.enc), ciphertext: new Uint8Array(sealed.ct) });
        } catch (e) {
          for (const rest of prepared) xwingDiscard(rest);
          throw new HpkeSealError("hpke: X-Wing seal failed", { cause: e });
        }
      }
    }
  } finally {
    // Chunks not reached (a seal failed): their secrets go as they arrive.
    for (const c of chunks.slice(k + 1))
      c.then(
        (ps) => ps.forEach(xwingDiscard),
        () => undefined,
      );
  }
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
