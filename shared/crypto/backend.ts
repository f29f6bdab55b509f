/**
 * The crypto backend seam (PROTOCOL.md §3.1): the public primitives of shared/crypto check their
 * arguments, then run on the installed backend. The default (nothing installed) is the
 * runtime-neutral WebCrypto/noble code of this folder, which is what browsers and workerd use.
 * A runtime where another implementation of the SAME primitives is faster installs it once at
 * start-up — Node entry points install node/crypto-backend.ts (node:crypto's synchronous API:
 * in Node every WebCrypto call is a thread-pool round trip plus a key import).
 *
 * A backend changes speed only, never results: same bytes for the same inputs, the same typed
 * errors (InvalidKeyError, LowOrderError, DecryptError, CryptoError), and `ed25519Verify` never
 * throws. The known-answer vectors run through every backend (test/shared/crypto-*.test.ts run
 * once per vitest project, test/node/crypto-backend.test.ts compares backends output for output).
 *
 * Contract of each member: arguments are already checked by the public function (types and
 * fixed lengths, the HKDF length range, Parley's refused Ed25519 public keys, the GCM tag
 * minimum), so a backend only computes and maps its runtime's failures to the typed errors.
 */
import type { X25519KeyPair } from "./x25519";

/** One signature to check: ed25519Verify's three arguments. */
export interface Ed25519VerifyItem {
  publicKey: Uint8Array;
  message: Uint8Array;
  signature: Uint8Array;
}

/** SHA-256 over pieces: the same digest as `sha256` of their concatenation. */
export interface Sha256Hasher {
  update(piece: Uint8Array): void;
  digest(): Uint8Array;
}

export interface CryptoBackend {
  /** Shown by the benchmark ("product uses"). */
  readonly name: string;
  /**
   * RFC 7748 X25519; InvalidKeyError if a key is rejected, LowOrderError if the runtime refuses
   * a low-order point. An all-zero result is refused by the public x25519 for every backend.
   */
  x25519(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array | Promise<Uint8Array>;
  /** X25519(secretKey, 9). */
  x25519PublicKey(secretKey: Uint8Array): Uint8Array | Promise<Uint8Array>;
  /** A fresh key pair from the runtime's CSPRNG. */
  x25519GenerateKeyPair(): X25519KeyPair | Promise<X25519KeyPair>;
  /** RFC 8032 Ed25519 with a private CryptoKey (already checked); CryptoError on failure. */
  ed25519Sign(privateKey: CryptoKey, message: Uint8Array): Uint8Array | Promise<Uint8Array>;
  /** RFC 8032 §5.1.7 as OpenSSL/BoringSSL implement it (§3.2); never throws. */
  ed25519Verify(
    publicKey: Uint8Array,
    message: Uint8Array,
    signature: Uint8Array,
  ): boolean | Promise<boolean>;
  /**
   * ed25519Verify of many independent signatures (already checked as ed25519Verify checks
   * them), answers in input order. Optional: a backend whose single verify is synchronous can
   * spread a batch over threads (a roster's signed prekeys, §9.2.3); without it each item goes
   * through ed25519Verify.
   */
  ed25519VerifyMany?(items: ReadonlyArray<Ed25519VerifyItem>): Promise<boolean[]>;
  /** AES-256-GCM, 96-bit nonce, ciphertext || 128-bit tag. */
  aesGcmEncrypt(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
  ): Uint8Array | Promise<Uint8Array>;
  /** DecryptError on any authentication failure. */
  aesGcmDecrypt(
    key: Uint8Array,
    nonce: Uint8Array,
    ciphertext: Uint8Array,
    aad: Uint8Array,
  ): Uint8Array | Promise<Uint8Array>;
  hmacSha256(key: Uint8Array, message: Uint8Array): Uint8Array;
  hkdfSha256(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  sha256(message: Uint8Array): Uint8Array;
  /** Optional: FIPS 202 SHA3-256 (X-Wing's combiner, §3.13); noble's otherwise. */
  sha3_256?(message: Uint8Array): Uint8Array;
  /**
   * Optional: an incremental SHA-256 for long inputs fed in pieces (attachment digests, §3.12),
   * where a native hash is several times faster than noble's.
   */
  sha256Hasher?(): Sha256Hasher;
  /**
   * FIPS 203 ML-KEM-768 (§3.11), optional: KeyGen_internal(d, z) from the 64-byte seed d‖z
   * (already length-checked) → the 1184-byte ek and the 2400-byte dk.
   */
  mlkemKeyPairFromSeed?(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array };
  /**
   * Encaps_internal(ek, m): lengths checked, `m` drawn by the caller; the backend runs the §7.2
   * modulus check (InvalidKeyError).
   */
  mlkemEncapsulate?(
    publicKey: Uint8Array,
    m: Uint8Array,
  ): { ciphertext: Uint8Array; sharedSecret: Uint8Array };
  /**
   * Encaps_internal(ek, m) of many independent items, answers in input order; same checks, same
   * bytes. Optional: a backend can run a commit's encapsulations (one per member, §9.2.3) on
   * another thread while the caller seals; without it each item goes through mlkemEncapsulate.
   */
  mlkemEncapsulateMany?(
    items: ReadonlyArray<{ publicKey: Uint8Array; m: Uint8Array }>,
  ): Promise<Array<{ ciphertext: Uint8Array; sharedSecret: Uint8Array }>>;
  /**
   * Decaps_internal(dk, c) with implicit rejection: lengths checked; the backend runs the §7.3
   * hash check (InvalidKeyError).
   */
  mlkemDecapsulate?(ciphertext: Uint8Array, secretKey: Uint8Array): Uint8Array;
}

const DEFAULT_NAME = "default (WebCrypto + noble)";
const state: { members: Partial<CryptoBackend>; name: string } = {
  members: {},
  name: DEFAULT_NAME,
};

/** Members of the installed backend; a missing member means the default implementation. */
export function backend(): Partial<CryptoBackend> {
  return state.members;
}

/**
 * Install `backend` for every later call of the public primitives (the members it lacks keep
 * the default), or restore the default with `null`. Call it at start-up, before keys exist:
 * caches are per backend.
 */
export function installCryptoBackend(members: Partial<CryptoBackend> | null): void {
  state.members = members === null ? {} : { ...members };
  state.name = members?.name ?? DEFAULT_NAME;
}

/** Name of the installed backend (for reports and tests). */
export function cryptoBackendName(): string {
  return state.name;
}
