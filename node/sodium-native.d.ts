/**
 * The part of sodium-native's API the Node crypto backend uses (the package ships no types).
 * The functions throw on a length error or when libsodium returns -1 (verification excepted).
 */
declare module "sodium-native" {
  /** crypto_scalarmult (X25519): q = X25519(n, p); throws on a small-order p / all-zero q. */
  function crypto_scalarmult(q: Uint8Array, n: Uint8Array, p: Uint8Array): void;
  /** crypto_scalarmult_base: q = X25519(n, 9). */
  function crypto_scalarmult_base(q: Uint8Array, n: Uint8Array): void;
  /** crypto_sign_detached (Ed25519): sig = Sign(sk = seed || pk, m). */
  function crypto_sign_detached(sig: Uint8Array, m: Uint8Array, sk: Uint8Array): void;
  /** crypto_sign_verify_detached: true iff libsodium accepts (it refuses more than §3.2). */
  function crypto_sign_verify_detached(sig: Uint8Array, m: Uint8Array, pk: Uint8Array): boolean;
  const sodium: {
    crypto_scalarmult: typeof crypto_scalarmult;
    crypto_scalarmult_base: typeof crypto_scalarmult_base;
    crypto_sign_detached: typeof crypto_sign_detached;
    crypto_sign_verify_detached: typeof crypto_sign_verify_detached;
    crypto_sign_BYTES: number;
    crypto_sign_SECRETKEYBYTES: number;
  };
  export default sodium;
}
