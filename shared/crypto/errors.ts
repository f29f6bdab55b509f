/** Typed errors of the crypto core: one class per failure, each with a fixed `name` (PROTOCOL.md §3.9). */

export class CryptoError extends Error {
  override name: string = "CryptoError";
}

/** A key could not be parsed or imported (wrong encoding, not a point, wrong type). */
export class InvalidKeyError extends CryptoError {
  override name = "InvalidKeyError";
}

/** An argument has the wrong byte length; the message names the argument. */
export class InvalidLengthError extends CryptoError {
  override name = "InvalidLengthError";
}

/** X25519 produced the all-zero shared secret: the peer key is of low order (RFC 7748 §6.1). */
export class LowOrderError extends CryptoError {
  override name = "LowOrderError";
}

/** AES-GCM authentication failed: wrong key, nonce, AAD, or altered ciphertext/tag. */
export class DecryptError extends CryptoError {
  override name = "DecryptError";
}

/** HPKE encapsulation or sealing failed (e.g. a low-order recipient key). */
export class HpkeSealError extends CryptoError {
  override name = "HpkeSealError";
}

/** HPKE decapsulation or opening failed: wrong key, info, AAD, enc, or altered ciphertext. */
export class HpkeOpenError extends CryptoError {
  override name = "HpkeOpenError";
}
