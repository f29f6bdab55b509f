/**
 * HPKE (RFC 9180) base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM
 * (KEM 0x0020, KDF 0x0001, AEAD 0x0002), through @hpke/core rather than a hand-rolled
 * construction (PROTOCOL.md §3.6). Used to wrap group epoch secrets to members' signed prekeys.
 *
 * The construction — labels, LabeledExtract/LabeledExpand, the KEM's Encap/Decap and
 * ExtractAndExpand, the key schedule, nonces, sequence numbers, the sender/recipient contexts —
 * is the library's: `CipherSuite` from @hpke/core and `Dhkem` from @hpke/common, the same classes
 * @hpke/core builds its own DHKEM(X25519) from. What is plugged in, through the library's public
 * interfaces, are the three *primitives* underneath, each routed to Parley's own functions (§3.3
 * –§3.5), which pick the fastest exact implementation for the runtime:
 *
 * - `DhkemPrimitives` for X25519 (generate, derive public, DH) → x25519GenerateKeyPair,
 *   x25519PublicKey, x25519 (all-zero DH output rejected, §3.3, RFC 9180 §7.1.4);
 * - `KdfInterface` HKDF-SHA256 → hkdfSha256Extract / hkdfSha256Expand / hkdfSha256 (RFC 5869);
 * - `AeadInterface` AES-256-GCM → aesGcmEncrypt / aesGcmDecrypt.
 *
 * Why (docs/PERFORMANCE.md): a group commit seals once per member (§9.2.3), and in Node the
 * stock suite spends every one of those seals on about a dozen WebCrypto round trips
 * (generateKey, exportKey ×2, importKey, deriveBits, HKDF importKey + deriveBits ×4, AES
 * importKey + encrypt), each an async hop through the runtime's thread pool and key objects;
 * that, not the arithmetic, was most of a 1000-member commit. In a browser the stock primitives
 * are the fast ones, so hpkeSeal measures both instances of the suite and keeps the faster
 * (`hpkeSuite` below). RFC 9180 Appendix A vectors (all four modes) run through both suite
 * objects, and stock @hpke/core interoperates with each both ways
 * (test/shared/crypto-hpke.test.ts).
 */
import {
  AeadId,
  type AeadInterface,
  DeriveKeyPairError,
  DeserializeError,
  Dhkem,
  type DhkemPrimitives,
  EMPTY,
  HkdfSha256Native,
  InvalidParamError,
  KEM_USAGES,
  KemId,
  LABEL_DKP_PRK,
  LABEL_SK,
  NotSupportedError,
  SerializeError,
  XCryptoKey,
} from "@hpke/common";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256 } from "@hpke/core";
import { aesGcmDecrypt, aesGcmEncrypt } from "./aead";
import { assertBytes } from "./bytes";
import { AES256_KEY_BYTES, SHA256_BYTES, X25519_KEY_BYTES } from "./constants";
import { HpkeOpenError, HpkeSealError } from "./errors";
import { hkdfSha256, hkdfSha256Expand, hkdfSha256Extract } from "./kdf";
import { race } from "./race";
import { x25519, x25519GenerateKeyPair, x25519PublicKey } from "./x25519";

export const HPKE_KEM_ID = 0x0020;
export const HPKE_KDF_ID = 0x0001;
export const HPKE_AEAD_ID = 0x0002;
/** Nenc of DHKEM(X25519, HKDF-SHA256) (RFC 9180 §7.1). */
export const HPKE_ENC_BYTES = 32;
const GCM_NONCE_BYTES = 12;
const GCM_TAG_BYTES = 16;

type Bytesish = ArrayBufferLike | ArrayBufferView;

/** A view of the caller's bytes, no copy (the primitives below never write to their inputs). */
function view(x: Bytesish): Uint8Array {
  return ArrayBuffer.isView(x)
    ? new Uint8Array(x.buffer, x.byteOffset, x.byteLength)
    : new Uint8Array(x);
}

/**
 * An ArrayBuffer holding exactly these bytes. A Uint8Array may be a window on a larger buffer
 * (e.g. a pooled Node Buffer), so its `.buffer` is only returned when it is exactly the bytes.
 */
function exactBuffer(u: Uint8Array): ArrayBuffer {
  if (u.byteOffset === 0 && u.byteLength === u.buffer.byteLength && u.buffer instanceof ArrayBuffer)
    return u.buffer;
  return u.slice().buffer;
}

// ---------------------------------------------------------------------------------------------
// KDF: HKDF-SHA256 (RFC 5869) on Parley's HMAC/HKDF, behind @hpke/common's HKDF class, which
// keeps the HPKE parts (suite ids, "HPKE-v1" labels, LabeledExtract/LabeledExpand).

export class ParleyHkdfSha256 extends HkdfSha256Native {
  override async extract(salt: Bytesish, ikm: Bytesish): Promise<ArrayBuffer> {
    const s = view(salt);
    checkSalt(s);
    return exactBuffer(hkdfSha256Extract(view(ikm), s));
  }

  override async expand(prk: Bytesish, info: Bytesish, len: number): Promise<ArrayBuffer> {
    return exactBuffer(hkdfSha256Expand(view(prk), view(info), len));
  }

  /** Extract then Expand (RFC 5869 §2): the KEM's shared secret and the key schedule use this. */
  override async extractAndExpand(
    salt: Bytesish,
    ikm: Bytesish,
    info: Bytesish,
    len: number,
  ): Promise<ArrayBuffer> {
    const s = view(salt);
    checkSalt(s);
    return exactBuffer(hkdfSha256(view(ikm), s, view(info), len));
  }
}

/**
 * The library's rule for its HKDF: a salt is empty (RFC 5869 §2.2: HashLen zero bytes) or
 * exactly HashLen bytes.
 */
function checkSalt(salt: Uint8Array): void {
  if (salt.length !== 0 && salt.length !== SHA256_BYTES)
    throw new InvalidParamError("The salt length must be the same as the hashSize");
}

// ---------------------------------------------------------------------------------------------
// KEM primitives: X25519 on Parley's functions, keys carried as @hpke/common's XCryptoKey (raw
// bytes in a CryptoKey-shaped object, as @hpke/common's own Montgomery-curve primitives do).

const X25519_ALG = "X25519";

function rawKey(key: CryptoKey, type: "public" | "private"): Uint8Array {
  if (!(key instanceof XCryptoKey) || key.type !== type || key.key.length !== X25519_KEY_BYTES)
    throw new Error(`not an X25519 ${type} key of this suite`);
  return key.key;
}

/** The key's raw bytes as a fresh buffer; SerializeError (the library's type) if it is not one. */
function serialize(key: CryptoKey, type: "public" | "private"): ArrayBuffer {
  try {
    return rawKey(key, type).slice().buffer;
  } catch (e) {
    throw new SerializeError(e);
  }
}

const publicKey = (raw: Uint8Array) => new XCryptoKey(X25519_ALG, raw, "public");
const privateKey = (raw: Uint8Array) => new XCryptoKey(X25519_ALG, raw, "private", KEM_USAGES);

class ParleyX25519Primitives implements DhkemPrimitives {
  constructor(private readonly hkdf: HkdfSha256Native) {}

  async serializePublicKey(key: CryptoKey): Promise<ArrayBuffer> {
    return serialize(key, "public");
  }

  async deserializePublicKey(key: Bytesish): Promise<CryptoKey> {
    return publicKey(this.#raw(key));
  }

  async serializePrivateKey(key: CryptoKey): Promise<ArrayBuffer> {
    return serialize(key, "private");
  }

  async deserializePrivateKey(key: Bytesish): Promise<CryptoKey> {
    return privateKey(this.#raw(key));
  }

  async importKey(
    format: "raw" | "jwk",
    key: ArrayBuffer | JsonWebKey,
    isPublic: boolean,
  ): Promise<CryptoKey> {
    if (format === "raw" && key instanceof ArrayBuffer) {
      const raw = this.#raw(key);
      return isPublic ? publicKey(raw) : privateKey(raw);
    }
    // JWK import is a library convenience Parley never uses (keys are raw bytes, §3.3).
    throw new DeserializeError(new Error("only raw X25519 keys are supported"));
  }

  async generateKeyPair(): Promise<CryptoKeyPair> {
    try {
      const kp = await x25519GenerateKeyPair();
      return { privateKey: privateKey(kp.secretKey), publicKey: publicKey(kp.publicKey) };
    } catch (e) {
      throw new NotSupportedError(e);
    }
  }

  /** RFC 9180 §7.1.3 DeriveKeyPair for X25519, as @hpke/common's primitives compute it. */
  async deriveKeyPair(ikm: Bytesish): Promise<CryptoKeyPair> {
    try {
      const dkpPrk = await this.hkdf.labeledExtract(EMPTY, LABEL_DKP_PRK, view(ikm));
      const sk = new Uint8Array(
        await this.hkdf.labeledExpand(dkpPrk, LABEL_SK, EMPTY, X25519_KEY_BYTES),
      );
      return { privateKey: privateKey(sk), publicKey: publicKey(await x25519PublicKey(sk)) };
    } catch (e) {
      throw new DeriveKeyPairError(e);
    }
  }

  async derivePublicKey(key: CryptoKey): Promise<CryptoKey> {
    try {
      return publicKey(await x25519PublicKey(rawKey(key, "private")));
    } catch (e) {
      throw new DeserializeError(e);
    }
  }

  /** Throws on an all-zero result (x25519's LowOrderError); Dhkem turns it into Encap/DecapError. */
  async dh(sk: CryptoKey, pk: CryptoKey): Promise<ArrayBuffer> {
    try {
      return exactBuffer(await x25519(rawKey(sk, "private"), rawKey(pk, "public")));
    } catch (e) {
      throw new SerializeError(e);
    }
  }

  #raw(key: Bytesish): Uint8Array {
    const raw = view(key);
    if (raw.length !== X25519_KEY_BYTES)
      throw new DeserializeError(new Error("X25519 keys are 32 bytes"));
    return raw.slice();
  }
}

/** DHKEM(X25519, HKDF-SHA256), KEM 0x0020: @hpke/common's Dhkem over the primitives above. */
class ParleyDhkemX25519 extends Dhkem {
  override readonly id = KemId.DhkemX25519HkdfSha256;
  override readonly secretSize = 32;
  override readonly encSize = HPKE_ENC_BYTES;
  override readonly publicKeySize = X25519_KEY_BYTES;
  override readonly privateKeySize = X25519_KEY_BYTES;
  constructor() {
    // The KEM has its own KDF instance: Dhkem initialises it with the KEM suite_id ("KEM" ||
    // 0x0020), the cipher suite initialises its own with the HPKE suite_id (RFC 9180 §4.1, §5.1).
    const kdf = new ParleyHkdfSha256();
    super(KemId.DhkemX25519HkdfSha256, new ParleyX25519Primitives(kdf), kdf);
  }
}

// ---------------------------------------------------------------------------------------------
// AEAD: AES-256-GCM on Parley's aesGcmEncrypt/aesGcmDecrypt (ciphertext || 16-byte tag, the
// layout RFC 9180 §5.2 Seal/Open expect).

export class ParleyAes256Gcm implements AeadInterface {
  readonly id = AeadId.Aes256Gcm;
  readonly keySize = AES256_KEY_BYTES;
  readonly nonceSize = GCM_NONCE_BYTES;
  readonly tagSize = GCM_TAG_BYTES;

  createEncryptionContext(key: Bytesish) {
    // A private copy: the key schedule's buffer is the library's.
    const k = view(key).slice();
    return {
      seal: async (iv: Bytesish, data: Bytesish, aad: Bytesish): Promise<ArrayBuffer> =>
        exactBuffer(await aesGcmEncrypt(k, view(iv), view(data), view(aad))),
      open: async (iv: Bytesish, data: Bytesish, aad: Bytesish): Promise<ArrayBuffer> =>
        exactBuffer(await aesGcmDecrypt(k, view(iv), view(data), view(aad))),
    };
  }
}

/**
 * The two instances of the one Parley suite (§3.6), same construction, different primitives
 * underneath (see the module comment):
 *
 * - "parley": the library's Dhkem / CipherSuite over Parley's X25519, HKDF and AES-GCM, i.e. over
 *   the installed crypto backend (in Node, node:crypto's synchronous calls: ~4× the stock suite);
 * - "webcrypto": @hpke/core's own DHKEM(X25519) and AES-256-GCM on WebCrypto, with the key
 *   schedule's HKDF on Parley's HKDF — where WebCrypto is the fast path (a browser: Chromium's
 *   native X25519 keygen + DH beats the raw-key imports Parley's X25519 functions need, ~2×).
 *
 * Both are RFC 9180 exactly (Appendix A vectors run through each, test/shared/crypto-hpke.test.ts)
 * and interoperate: the choice changes speed, never bytes on the wire beyond the random `enc`.
 */
export type HpkeSuiteName = "parley" | "webcrypto";

const suites: Partial<Record<HpkeSuiteName, CipherSuite>> = {};

/** One of the two suite instances (exported for the vectors, interop tests and the bench). */
export function hpkeSuite(name: HpkeSuiteName = "parley"): CipherSuite {
  let s = suites[name];
  if (s === undefined) {
    s =
      name === "parley"
        ? new CipherSuite({
            kem: new ParleyDhkemX25519(),
            kdf: new ParleyHkdfSha256(),
            aead: new ParleyAes256Gcm(),
          })
        : new CipherSuite({
            kem: new DhkemX25519HkdfSha256(),
            kdf: new ParleyHkdfSha256(),
            aead: new Aes256Gcm(),
          });
    suites[name] = s;
  }
  return s;
}

/**
 * Which suite seals, decided by measuring (as x25519PublicKey chooses its way, §3.1): the first
 * seals alternate between the two and are timed, then the faster is used for good. A group
 * commit makes a thousand seals in one go, so this settles within the first commit. Where the
 * clock does not advance during a computation (workerd) the tie goes to "parley".
 */
const sealRace = race<HpkeSuiteName>("parley", "webcrypto");

/** The suite hpkeSeal settled on, or null while it is still measuring (for the bench's report). */
export function hpkeSealSuite(): HpkeSuiteName | null {
  return sealRace.chosen();
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
  const name = sealRace.next();
  const s = hpkeSuite(name);
  const t0 = performance.now();
  let out: { enc: Uint8Array; ciphertext: Uint8Array };
  try {
    const pk = await s.kem.deserializePublicKey(recipientPublicKey);
    const sealed = await s.seal({ recipientPublicKey: pk, info }, plaintext, aad);
    out = { enc: new Uint8Array(sealed.enc), ciphertext: new Uint8Array(sealed.ct) };
  } catch (e) {
    // Includes a low-order recipient key (RFC 9180 §7.1.4: DH output all-zero).
    throw new HpkeSealError("hpke: seal failed", { cause: e });
  }
  sealRace.record(name, performance.now() - t0);
  return out;
}

/**
 * hpkeSeal of one plaintext to many recipients (a group commit's wraps, §9.2.3), results in
 * input order; the first failure rejects. Each seal is an independent single-shot SealBase with
 * its own ephemeral key, exactly as hpkeSeal. Concurrency follows the suite: the "webcrypto"
 * instance's primitives run off the main thread, so all seals are issued at once (Chromium then
 * keeps its crypto threads busy: ~2× a window of 8 at 200 members); Parley's primitives are
 * synchronous underneath, and a thousand interleaved seals would push every ephemeral key out of
 * the X25519 key cache before its DH runs, so those go a few at a time.
 */
export async function hpkeSealMany(
  recipients: ReadonlyArray<{ recipientPublicKey: Uint8Array; info: Uint8Array }>,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Promise<Array<{ enc: Uint8Array; ciphertext: Uint8Array }>> {
  const seal = (r: { recipientPublicKey: Uint8Array; info: Uint8Array }) =>
    hpkeSeal(r.recipientPublicKey, plaintext, r.info, aad);
  if (sealRace.chosen() === "webcrypto") return Promise.all(recipients.map(seal));
  return mapWindowed(recipients, SEAL_WINDOW, seal);
}

/** Seals in flight at once on Parley's primitives (see hpkeSealMany). */
const SEAL_WINDOW = 8;

/** `Promise.all(xs.map(f))` with at most `window` calls of `f` pending; results in input order. */
async function mapWindowed<T, R>(
  xs: readonly T[],
  window: number,
  f: (x: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(xs.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < xs.length && !failed) {
      const i = next++;
      try {
        out[i] = await f(xs[i] as T);
      } catch (e) {
        failed = true; // the first failure rejects the whole map; stop starting new calls
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, xs.length) }, worker));
  return out;
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
  // One open per commit received: the suite that seals fastest here opens too.
  const s = hpkeSuite(sealRace.chosen() ?? "parley");
  try {
    const sk = await s.kem.deserializePrivateKey(recipientSecretKey);
    const pt = await s.open({ recipientKey: sk, enc, info }, ciphertext, aad);
    return new Uint8Array(pt);
  } catch (e) {
    throw new HpkeOpenError("hpke: open failed", { cause: e });
  }
}
