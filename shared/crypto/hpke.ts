/**
 * HPKE (RFC 9180) base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM
 * (KEM 0x0020, KDF 0x0001, AEAD 0x0002), through @hpke/core rather than a hand-rolled
 * construction (PROTOCOL.md §3.6). Used to wrap group epoch secrets to members' signed prekeys.
 */

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { assertBytes } from "./bytes";
import { X25519_KEY_BYTES } from "./constants";
import { HpkeOpenError, HpkeSealError } from "./errors";

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
  const s = hpkeSuite();
  try {
    const pk = await s.kem.deserializePublicKey(recipientPublicKey);
    const { ct, enc } = await s.seal({ recipientPublicKey: pk, info }, plaintext, aad);
    return { enc: new Uint8Array(enc), ciphertext: new Uint8Array(ct) };
  } catch (e) {
    // Includes EncapError for a low-order recipient key (RFC 9180 §7.1.4: DH output all-zero).
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
