/**
 * The part of sodium-native's API the Node crypto backend uses (the package ships no types).
 * Both functions throw on a length error or when libsodium returns -1.
 */
declare module "sodium-native" {
  /** crypto_scalarmult (X25519): q = X25519(n, p); throws on a small-order p / all-zero q. */
  function crypto_scalarmult(q: Uint8Array, n: Uint8Array, p: Uint8Array): void;
  /** crypto_scalarmult_base: q = X25519(n, 9). */
  function crypto_scalarmult_base(q: Uint8Array, n: Uint8Array): void;
  const sodium: {
    crypto_scalarmult: typeof crypto_scalarmult;
    crypto_scalarmult_base: typeof crypto_scalarmult_base;
  };
  export default sodium;
}
