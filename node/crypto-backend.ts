/**
 * Node backend of the crypto seam (shared/crypto/backend.ts, PROTOCOL.md §3.1): the same
 * primitives on synchronous native code. Why: in Node every WebCrypto call is a libuv thread-pool
 * round trip plus a key import, and an X25519 PKCS#8 import alone goes through OpenSSL 3's
 * generic DER decoder (~10× the DH itself); noble's pure-JS curves are slower still.
 *
 * X25519 and Ed25519 signing run on libsodium (sodium-native: raw 32-byte keys, no imports, ~2–3×
 * OpenSSL 3.0 here); Ed25519 verification on libsodium first and OpenSSL for what libsodium
 * refuses (see `ed25519Verify`: the answer is always OpenSSL's, §3.2's rule); AES-GCM, HMAC and
 * HKDF on node:crypto's one-shot API with cached KeyObjects — the same OpenSSL as Node's
 * WebCrypto, so the same results. The cross-backend test (test/node/crypto-backend.test.ts) and
 * every known-answer vector (Wycheproof, RFC 8032, Taming, ZIP-215) check it.
 *
 * Installed explicitly by Node entry points (bench, soak, the vitest `node` project); browsers
 * and workerd keep the default. Not under shared/: it imports node:*.
 */
import {
  type CipherGCM,
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPublicKey,
  type DecipherGCM,
  KeyObject,
  verify,
} from "node:crypto";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import sodium from "sodium-native";
import {
  type CryptoBackend,
  CryptoError,
  DecryptError,
  type Ed25519VerifyItem,
  InvalidKeyError,
  installCryptoBackend,
  LowOrderError,
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SHARED_SECRET_BYTES,
  randomBytes,
  type Sha256Hasher,
  X25519_KEY_BYTES,
  type X25519KeyPair,
} from "../shared/crypto";
import { cryptoThread } from "./crypto-thread";
import {
  checkEncapsulationKey,
  mlkemDecapsulate,
  mlkemEncapsulate,
  mlkemKeyPairFromSeed,
} from "./mlkem-pqclean";

const LOW_ORDER = "publicKey: low-order point, shared secret is all-zero (RFC 7748 §6.1)";

/** A copy of Node's output as a plain Uint8Array: Buffers of < 4 KiB are views of a shared pool. */
function own(b: Buffer): Uint8Array {
  return new Uint8Array(b);
}

function b64u(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");
}

/** Insertion-ordered Map used as an LRU: a hit moves to the end, the oldest entry is evicted. */
class Lru<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(id: string): V | undefined {
    const v = this.map.get(id);
    if (v !== undefined) {
      this.map.delete(id);
      this.map.set(id, v);
    }
    return v;
  }
  set(id: string, v: V): void {
    this.map.delete(id);
    this.map.set(id, v);
    if (this.map.size > this.max) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// X25519 on libsodium (sodium-native's prebuilt binding)

/**
 * Why libsodium and not node:crypto for X25519: OpenSSL 3.0 has no raw-key API in Node, so every
 * new secret is a JWK import (~40 µs, it derives the public key with the generic ladder) and every
 * peer key another import, cached in LRUs; libsodium takes the 32 raw bytes, and measured on this
 * machine does the fixed-base multiplication in ~16 µs and a DH in ~30 µs (OpenSSL: 40 and
 * 35–47 µs plus the imports). X25519 is the bulk of a session start (§8.2), of a DH ratchet step
 * (§8.4) and of each HPKE wrap of a group commit (§9.2.3). Same function (RFC 7748 §5: clamped
 * scalar, bit 255 of u masked, u reduced mod p) and the same refusals: libsodium refuses the
 * small-order u values and any all-zero result, exactly the inputs whose shared secret is
 * all-zero, which Parley refuses on every backend (§3.3) — the RFC 7748 and Wycheproof vectors
 * and the cross-backend tests run through this path.
 */
function x25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  const out = new Uint8Array(X25519_KEY_BYTES);
  try {
    sodium.crypto_scalarmult(out, secretKey, publicKey);
  } catch (e) {
    // Arguments are checked before any backend runs (lengths, types), so a refusal here is the
    // low-order case: libsodium's small-order list or an all-zero result.
    throw new LowOrderError(LOW_ORDER, { cause: e });
  }
  return out; // an all-zero result is refused by the public x25519 (shared/crypto/x25519.ts)
}

function x25519PublicKey(secretKey: Uint8Array): Uint8Array {
  const out = new Uint8Array(X25519_KEY_BYTES);
  sodium.crypto_scalarmult_base(out, secretKey);
  return out;
}

function x25519GenerateKeyPair(): X25519KeyPair {
  // The secret from the same CSPRNG as every other backend (crypto.getRandomValues).
  const secretKey = randomBytes(X25519_KEY_BYTES);
  return { publicKey: x25519PublicKey(secretKey), secretKey };
}

// ---------------------------------------------------------------------------------------------
// Ed25519

/**
 * libsodium secret keys (seed || public key) of WebCrypto private keys (identity keys live as
 * CryptoKeys everywhere). The KeyObject twin of a CryptoKey exports its seed whether or not the
 * CryptoKey is extractable: this stays inside the process that already holds the key.
 */
const signers = new WeakMap<CryptoKey, Buffer>();

function signerFor(privateKey: CryptoKey): Buffer {
  let sk = signers.get(privateKey);
  if (sk === undefined) {
    const jwk = KeyObject.from(privateKey).export({ format: "jwk" });
    if (jwk.crv !== "Ed25519" || typeof jwk.d !== "string" || typeof jwk.x !== "string")
      throw new InvalidKeyError("not an Ed25519 private key");
    sk = Buffer.concat([Buffer.from(jwk.d, "base64url"), Buffer.from(jwk.x, "base64url")]);
    if (sk.length !== sodium.crypto_sign_SECRETKEYBYTES)
      throw new InvalidKeyError("not an Ed25519 private key");
    signers.set(privateKey, sk);
  }
  return sk;
}

/** RFC 8032 signing is deterministic: libsodium's signature is OpenSSL's, byte for byte. */
function ed25519Sign(privateKey: CryptoKey, message: Uint8Array): Uint8Array {
  let sk: Buffer;
  try {
    sk = signerFor(privateKey);
  } catch (e) {
    if (e instanceof InvalidKeyError) throw e;
    throw new CryptoError("ed25519 sign failed", { cause: e });
  }
  const sig = new Uint8Array(sodium.crypto_sign_BYTES);
  sodium.crypto_sign_detached(sig, message, sk);
  return sig;
}

/**
 * Verification keys by encoding (contacts, group members): public data. Sized for the largest
 * group (1000 members, §9) with room: a roster's check must not evict its own keys.
 */
const verifiers = new Lru<KeyObject>(4096);

function verifierFor(publicKey: Uint8Array): KeyObject {
  const id = b64u(publicKey);
  let key = verifiers.get(id);
  if (key === undefined) {
    key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: id }, format: "jwk" });
    verifiers.set(id, key);
  }
  return key;
}

function opensslVerify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return verify(null, message, verifierFor(publicKey), signature);
  } catch {
    return false;
  }
}

/**
 * §3.2's rule is OpenSSL's (cofactorless, S < L, the refused keys of step 2 checked before any
 * backend). libsodium's verify (~2× faster here) checks the same equation but refuses more: a
 * small-order R, which the rule accepts when the equation holds (Taming vectors 2 and 3). So
 * whatever libsodium accepts the rule accepts, and only its refusals need OpenSSL's answer — an
 * invalid signature costs both, a valid one only libsodium.
 */
function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (sodium.crypto_sign_verify_detached(signature, message, publicKey)) return true;
  return opensslVerify(publicKey, message, signature);
}

/** Below this many items a batch runs in line: a hop to the crypto thread costs about a few. */
const THREAD_MIN = 8;

function verifyInLine(items: ReadonlyArray<Ed25519VerifyItem>): boolean[] {
  return items.map((x) => ed25519Verify(x.publicKey, x.message, x.signature));
}

/** A roster's signatures on the crypto thread (crypto-thread.ts), the same rule as ed25519Verify. */
async function ed25519VerifyMany(items: ReadonlyArray<Ed25519VerifyItem>): Promise<boolean[]> {
  if (items.length < THREAD_MIN) return verifyInLine(items);
  let size = 0;
  for (const x of items) size += 100 + x.message.length;
  const buf = new Uint8Array(size);
  const view = new DataView(buf.buffer);
  let o = 0;
  for (const x of items) {
    buf.set(x.publicKey, o);
    buf.set(x.signature, o + 32);
    view.setUint32(o + 96, x.message.length);
    buf.set(x.message, o + 100);
    o += 100 + x.message.length;
  }
  const ok = await cryptoThread.run("verify", items.length, buf, () =>
    Uint8Array.from(verifyInLine(items), (x) => (x ? 1 : 0)),
  );
  return Array.from(ok, (x) => x === 1);
}

const KEM_OUT = MLKEM768_CIPHERTEXT_BYTES + MLKEM768_SHARED_SECRET_BYTES;

/**
 * Encaps_internal(ek, m) per item on the crypto thread, answers in input order. The keys are
 * checked here first (FIPS 203 §7.2), so a bad key is the same InvalidKeyError as in line.
 */
async function mlkemEncapsulateMany(
  items: ReadonlyArray<{ publicKey: Uint8Array; m: Uint8Array }>,
): Promise<Array<{ ciphertext: Uint8Array; sharedSecret: Uint8Array }>> {
  for (const x of items) checkEncapsulationKey(x.publicKey);
  if (items.length < THREAD_MIN) return items.map((x) => mlkemEncapsulate(x.publicKey, x.m));
  const rec = MLKEM768_PUBLIC_KEY_BYTES + 32;
  const buf = new Uint8Array(items.length * rec);
  items.forEach((x, i) => {
    buf.set(x.publicKey, i * rec);
    buf.set(x.m, i * rec + MLKEM768_PUBLIC_KEY_BYTES);
  });
  const out = await cryptoThread.run("kem", items.length, buf, () => {
    const o = new Uint8Array(items.length * KEM_OUT);
    items.forEach((x, i) => {
      const r = mlkemEncapsulate(x.publicKey, x.m);
      o.set(r.ciphertext, i * KEM_OUT);
      o.set(r.sharedSecret, i * KEM_OUT + MLKEM768_CIPHERTEXT_BYTES);
      r.sharedSecret.fill(0);
    });
    return o;
  });
  const answers = items.map((_, i) => ({
    ciphertext: out.slice(i * KEM_OUT, i * KEM_OUT + MLKEM768_CIPHERTEXT_BYTES),
    sharedSecret: out.slice(i * KEM_OUT + MLKEM768_CIPHERTEXT_BYTES, (i + 1) * KEM_OUT),
  }));
  out.fill(0);
  return answers;
}

// ---------------------------------------------------------------------------------------------
// AES-256-GCM, HMAC, HKDF, SHA-256

function aesGcmEncrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  let c: CipherGCM;
  try {
    c = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  } catch (e) {
    throw new InvalidKeyError("key: rejected by the runtime", { cause: e });
  }
  c.setAAD(aad);
  const out = new Uint8Array(plaintext.length + 16);
  out.set(c.update(plaintext), 0);
  const fin = c.final();
  if (fin.length !== 0) out.set(fin, plaintext.length);
  out.set(c.getAuthTag(), plaintext.length);
  return out;
}

function aesGcmDecrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  ciphertext: Uint8Array,
  aad: Uint8Array,
): Uint8Array {
  const n = ciphertext.length - 16;
  let d: DecipherGCM;
  try {
    d = createDecipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
  } catch (e) {
    throw new InvalidKeyError("key: rejected by the runtime", { cause: e });
  }
  try {
    d.setAAD(aad);
    d.setAuthTag(ciphertext.subarray(n));
    const body = d.update(ciphertext.subarray(0, n));
    // final() throws unless the tag authenticates; nothing is returned before that.
    const fin = d.final();
    const out = new Uint8Array(n);
    out.set(body, 0);
    if (fin.length !== 0) out.set(fin, body.length);
    return out;
  } catch (e) {
    throw new DecryptError("aes-gcm: authentication failed", { cause: e });
  }
}

function hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array {
  return own(createHmac("sha256", key).update(message).digest());
}

const ZERO_SALT = new Uint8Array(32);

/**
 * RFC 5869 on createHmac rather than crypto.hkdfSync: hkdfSync refuses `info` longer than
 * 1024 bytes, which RFC 5869 (and the default backend) allow.
 */
function hkdfSha256(
  ikm: Uint8Array,
  salt: Uint8Array,
  info: Uint8Array,
  length: number,
): Uint8Array {
  // RFC 5869 §2.2: an absent salt is HashLen zero bytes.
  const prk = createHmac("sha256", salt.length === 0 ? ZERO_SALT : salt)
    .update(ikm)
    .digest();
  const out = new Uint8Array(length);
  let t: Buffer | null = null;
  const counter = new Uint8Array(1);
  for (let i = 0, off = 0; off < length; i++) {
    counter[0] = i + 1;
    const h = createHmac("sha256", prk);
    if (t !== null) h.update(t);
    t = h.update(info).update(counter).digest();
    out.set(t.subarray(0, Math.min(32, length - off)), off);
    off += 32;
  }
  prk.fill(0);
  return out;
}

/** Below this size noble's SHA-256 is faster than a native Hash object (measured in Node 20). */
const NATIVE_SHA256_MIN_BYTES = 256;

function sha256(message: Uint8Array): Uint8Array {
  if (message.length < NATIVE_SHA256_MIN_BYTES) return nobleSha256(message);
  return own(createHash("sha256").update(message).digest());
}

function sha256Hasher(): Sha256Hasher {
  const h = createHash("sha256");
  return {
    update(piece) {
      h.update(piece);
    },
    digest: () => own(h.digest()),
  };
}

export const nodeCryptoBackend: CryptoBackend = {
  name: "Node backend (X25519: libsodium; ML-KEM-768: PQClean wasm; Ed25519, AES-GCM, HMAC, HKDF: node:crypto)",
  x25519,
  x25519PublicKey,
  x25519GenerateKeyPair,
  ed25519Sign,
  ed25519Verify,
  ed25519VerifyMany,
  aesGcmEncrypt,
  aesGcmDecrypt,
  hmacSha256,
  hkdfSha256,
  sha256,
  sha256Hasher,
  sha3_256: (message: Uint8Array) => own(createHash("sha3-256").update(message).digest()),
  mlkemKeyPairFromSeed,
  mlkemEncapsulate,
  mlkemEncapsulateMany,
  mlkemDecapsulate,
};

/** Make every shared/crypto primitive in this process run on node:crypto. */
export function installNodeCryptoBackend(): void {
  installCryptoBackend(nodeCryptoBackend);
}
