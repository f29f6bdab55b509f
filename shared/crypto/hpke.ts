/**
 * HPKE (RFC 9180) base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM
 * (KEM 0x0020, KDF 0x0001, AEAD 0x0002), through @hpke/core rather than a hand-rolled
 * construction (PROTOCOL.md §3.6). Used to wrap group epoch secrets to members' signed prekeys.
 *
 * One deviation from @hpke/core's defaults, for speed and through its public KDF interface: the
 * suite's key-schedule KDF computes HMAC-SHA256 with @noble/hashes instead of a WebCrypto
 * importKey + sign round trip per step (a group commit seals once per member, §9.2, and those
 * round trips dominated a 1000-member commit). The HPKE construction itself — labels, key
 * schedule, nonces, KEM — stays the library's, and RFC 9180 Appendix A vectors run through this
 * exact suite object (test/shared/crypto-hpke.test.ts).
 */
import { HkdfSha256Native } from "@hpke/common";
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256 } from "@hpke/core";
import { expand as hkdfExpand } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { assertBytes, buf } from "./bytes";
import { SHA256_BYTES, X25519_KEY_BYTES } from "./constants";
import { HpkeOpenError, HpkeSealError } from "./errors";

export const HPKE_KEM_ID = 0x0020;
export const HPKE_KDF_ID = 0x0001;
export const HPKE_AEAD_ID = 0x0002;
/** Nenc of DHKEM(X25519, HKDF-SHA256) (RFC 9180 §7.1). */
export const HPKE_ENC_BYTES = 32;

const toAb = (b: Uint8Array): ArrayBuffer => buf(b).slice().buffer;

/** RFC 5869 Extract/Expand on noble, behind @hpke/common's HKDF-SHA256 class (same labels). */
class NobleHkdfSha256 extends HkdfSha256Native {
  override async extract(salt: ArrayBuffer, ikm: ArrayBuffer): Promise<ArrayBuffer> {
    // RFC 5869 §2.2: an absent salt is HashLen zero bytes.
    const s = salt.byteLength === 0 ? new Uint8Array(SHA256_BYTES) : new Uint8Array(salt);
    return toAb(hmac(nobleSha256, s, new Uint8Array(ikm)));
  }
  override async expand(prk: ArrayBuffer, info: ArrayBuffer, len: number): Promise<ArrayBuffer> {
    return toAb(hkdfExpand(nobleSha256, new Uint8Array(prk), new Uint8Array(info), len));
  }
}

let suite: CipherSuite | undefined;

/** The one Parley cipher suite (exported for tests that exercise modes 1–3 and exports). */
export function hpkeSuite(): CipherSuite {
  suite ??= new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new NobleHkdfSha256(),
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
  const s = hpkeSuite();
  try {
    const pk = await s.kem.deserializePublicKey(toAb(recipientPublicKey));
    const out = await s.seal(
      { recipientPublicKey: pk, info: toAb(info) },
      toAb(plaintext),
      toAb(aad),
    );
    return { enc: new Uint8Array(out.enc), ciphertext: new Uint8Array(out.ct) };
  } catch (e) {
    // Includes a low-order recipient key (RFC 9180 §7.1.4: DH output all-zero).
    throw new HpkeSealError("hpke: seal failed", { cause: e });
  }
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
