/** Byte lengths of every key, nonce, tag and digest the crypto core handles (PROTOCOL.md §3). */

export const ED25519_PUBLIC_KEY_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;
export const ED25519_SEED_BYTES = 32;
export const X25519_KEY_BYTES = 32;
export const AES256_KEY_BYTES = 32;
export const GCM_NONCE_BYTES = 12;
export const GCM_TAG_BYTES = 16;
export const SHA256_BYTES = 32;
export const SHA512_BYTES = 64;
/** RFC 5869 §2.3: L <= 255 * HashLen. */
export const HKDF_SHA256_MAX_OUTPUT_BYTES = 255 * SHA256_BYTES;
/** crypto.getRandomValues refuses more than 65536 bytes per call (WebCrypto §10.1.1). */
export const MAX_RANDOM_CHUNK_BYTES = 65_536;
