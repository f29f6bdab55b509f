/** The Parley crypto core: small byte-in/byte-out primitives (PROTOCOL.md §3). */

export { aesGcmDecrypt, aesGcmEncrypt } from "./aead";
export {
  type CryptoBackend,
  cryptoBackendName,
  type Ed25519VerifyItem,
  installCryptoBackend,
  type Sha256Hasher,
} from "./backend";
export {
  CHUNK_BYTES,
  CHUNKED_HEADER_BYTES,
  ChunkCipher,
  chunkedCiphertextLength,
  chunkedDecrypt,
  chunkedDecryptStream,
  chunkedEncrypt,
  chunkedEncryptStream,
  chunkedPlaintextLength,
  SEALED_CHUNK_BYTES,
} from "./chunked";
export { constantTimeEqual, wipe } from "./compare";
export * from "./constants";
export {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  ed25519VerifyMany,
  generateIdentityKeyPair,
  type IdentityKeyPair,
} from "./ed25519";
export {
  CryptoError,
  DecryptError,
  HpkeOpenError,
  HpkeSealError,
  InvalidKeyError,
  InvalidLengthError,
  LowOrderError,
} from "./errors";
export {
  FINGERPRINT_LABEL,
  identityFingerprint,
  type SafetyNumberParty,
  safetyNumber,
  safetyNumberGroups,
} from "./fingerprint";
export {
  HPKE_AEAD_ID,
  HPKE_ENC_BYTES,
  HPKE_KDF_ID,
  HPKE_KEM_ID,
  hpkeOpen,
  hpkeSeal,
  hpkeSealMany,
} from "./hpke";
export {
  HPKE_XWING_ENC_BYTES,
  HPKE_XWING_KEM_ID,
  hpkeOpenXWing,
  hpkeSealManyXWing,
  hpkeSealXWing,
} from "./hpke-xwing";
export {
  hkdfSha256,
  hkdfSha256Expand,
  hkdfSha256Extract,
  hmacSha256,
  sha256,
  sha256Hasher,
  sha512,
} from "./kdf";
export {
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  MLKEM768_SECRET_KEY_BYTES,
  MLKEM768_SEED_BYTES,
  MLKEM768_SHARED_SECRET_BYTES,
  type MlKemKeyPair,
  mlkemCached,
  mlkemDecapsulate,
  mlkemDecapsulateSeed,
  mlkemEncapsulate,
  mlkemEncapsulateMany,
  mlkemEncapsulationKeyReduced,
  mlkemForget,
  mlkemKeyPairFromSeed,
  mlkemPublicKey,
} from "./mlkem";
export { randomBytes } from "./random";
export {
  type X25519KeyPair,
  x25519,
  x25519Cached,
  x25519Forget,
  x25519GenerateKeyPair,
  x25519PublicKey,
} from "./x25519";
export {
  XWING_CIPHERTEXT_BYTES,
  XWING_PUBLIC_KEY_BYTES,
  XWING_SEED_BYTES,
  XWING_SHARED_SECRET_BYTES,
  xwingDecapsulate,
  xwingEncapsulate,
  xwingForget,
  xwingGenerateKeyPair,
  xwingPublicKey,
} from "./xwing";
