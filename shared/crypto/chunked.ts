/**
 * Chunked (streaming) authenticated encryption of large messages: Cobblestone-256, the
 * SHA-512 + AES-256-GCM instantiation of c2sp.org/chunked-encryption (PROTOCOL.md §3.12). Used
 * for attachments: each file is encrypted under a fresh random key, in 16 KiB chunks, so a
 * 100 MB file never needs to be held whole, and truncation, reordering, duplication and splicing
 * of chunks are refused (the chunk index is XOR'd into the nonce; the final chunk is the only
 * short one; the 32-byte key commitment is checked before any chunk is opened).
 *
 * Layout: salt (24 B) || commitment (32 B) || AES-256-GCM(chunk 0) || … || AES-256-GCM(final),
 * where every chunk but the final holds exactly 16384 plaintext bytes and the final holds fewer
 * (possibly none). key || base nonce || commitment = HKDF-Expand-SHA-512(prk = input key,
 * info = "c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM" || 0x00 || salt || context, 76).
 * Known answers: Wycheproof c2sp_chunked_encryption_aes_256_gcm_test.json (crypto-chunked tests).
 */

import { hmac } from "@noble/hashes/hmac.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { backend } from "./backend";
import { assertBytes, buf } from "./bytes";
import { constantTimeEqual } from "./compare";
import { AES256_KEY_BYTES, GCM_NONCE_BYTES, GCM_TAG_BYTES } from "./constants";
import { DecryptError, InvalidKeyError, InvalidLengthError } from "./errors";
import { randomBytes } from "./random";

/** Plaintext bytes of every chunk but the final one (c2sp.org/chunked-encryption). */
export const CHUNK_BYTES = 16_384;
/** A full chunk once sealed: plaintext and the 16-byte GCM tag. */
export const SEALED_CHUNK_BYTES = CHUNK_BYTES + GCM_TAG_BYTES;
export const CHUNKED_SALT_BYTES = 24;
export const CHUNKED_COMMITMENT_BYTES = 32;
/** salt || commitment, in front of the first chunk. */
export const CHUNKED_HEADER_BYTES = CHUNKED_SALT_BYTES + CHUNKED_COMMITMENT_BYTES;
/** The spec's bound on the chunk counter (2^38 chunks, 4 PiB). */
export const CHUNKED_MAX_CHUNKS = 2 ** 38;
/** Chunks sealed or opened concurrently: WebCrypto runs them on a thread pool. */
const PARALLEL_CHUNKS = 16;

const INFO_PREFIX = new TextEncoder().encode("c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\0");

/** Ciphertext length of a message of `plaintextLength` bytes. */
export function chunkedCiphertextLength(plaintextLength: number): number {
  if (!Number.isSafeInteger(plaintextLength) || plaintextLength < 0) {
    throw new InvalidLengthError("plaintextLength: expected a byte count");
  }
  const chunks = Math.floor(plaintextLength / CHUNK_BYTES) + 1;
  return CHUNKED_HEADER_BYTES + plaintextLength + chunks * GCM_TAG_BYTES;
}

/**
 * Plaintext length of a ciphertext of `ciphertextLength` bytes; DecryptError when no message
 * encrypts to that length (truncated: a missing header, tag or final short chunk).
 */
export function chunkedPlaintextLength(ciphertextLength: number): number {
  if (!Number.isSafeInteger(ciphertextLength) || ciphertextLength < 0) {
    throw new InvalidLengthError("ciphertextLength: expected a byte count");
  }
  const body = ciphertextLength - CHUNKED_HEADER_BYTES;
  const full = Math.floor(body / SEALED_CHUNK_BYTES);
  const last = body - full * SEALED_CHUNK_BYTES;
  if (body < GCM_TAG_BYTES || last < GCM_TAG_BYTES) {
    throw new DecryptError("chunked: ciphertext truncated");
  }
  return full * CHUNK_BYTES + last - GCM_TAG_BYTES;
}

export interface ChunkedKeys {
  aeadKey: Uint8Array;
  baseNonce: Uint8Array;
  commitment: Uint8Array;
}

/**
 * RFC 5869 §2.3 HKDF-Expand with HMAC-SHA-512. The spec uses the 32-byte input key itself as the
 * PRK, shorter than the HashLen the RFC asks of a PRK (which @noble/hashes' expand enforces), so
 * the two-block expansion is written out here; HMAC accepts any key length (RFC 2104 §2).
 */
function hkdfSha512Expand(prk: Uint8Array, info: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let t = new Uint8Array(0);
  for (let i = 1, off = 0; off < length; i++, off += t.length) {
    const block = new Uint8Array(t.length + info.length + 1);
    block.set(t, 0);
    block.set(info, t.length);
    block[block.length - 1] = i;
    t = hmac(sha512, prk, block);
    out.set(t.subarray(0, Math.min(t.length, length - off)), off);
  }
  return out;
}

/** The key derivation of c2sp.org/chunked-encryption (see the module comment). */
export function chunkedDeriveKeys(
  inputKey: Uint8Array,
  salt: Uint8Array,
  context: Uint8Array,
): ChunkedKeys {
  assertBytes("inputKey", inputKey, AES256_KEY_BYTES);
  assertBytes("salt", salt, CHUNKED_SALT_BYTES);
  assertBytes("context", context);
  const info = new Uint8Array(INFO_PREFIX.length + salt.length + context.length);
  info.set(INFO_PREFIX, 0);
  info.set(salt, INFO_PREFIX.length);
  info.set(context, INFO_PREFIX.length + salt.length);
  const okm = hkdfSha512Expand(inputKey, info, AES256_KEY_BYTES + GCM_NONCE_BYTES + 32);
  return {
    aeadKey: okm.slice(0, AES256_KEY_BYTES),
    baseNonce: okm.slice(AES256_KEY_BYTES, AES256_KEY_BYTES + GCM_NONCE_BYTES),
    commitment: okm.slice(AES256_KEY_BYTES + GCM_NONCE_BYTES),
  };
}

/** base nonce XOR the chunk index as a big-endian integer as wide as the nonce. */
export function chunkNonce(baseNonce: Uint8Array, index: number): Uint8Array {
  assertBytes("baseNonce", baseNonce, GCM_NONCE_BYTES);
  if (!Number.isSafeInteger(index) || index < 0 || index >= CHUNKED_MAX_CHUNKS) {
    throw new InvalidLengthError(`index: expected 0..2^38-1, got ${index}`);
  }
  const nonce = baseNonce.slice();
  let rest = index;
  for (let i = GCM_NONCE_BYTES - 1; rest > 0; i--) {
    nonce[i] = (nonce[i] ?? 0) ^ (rest % 256);
    rest = Math.floor(rest / 256);
  }
  return nonce;
}

/**
 * "Raw mode" of the spec: AES-256-GCM over chunks under one derived key and base nonce. The key
 * is imported into WebCrypto once per message (not once per chunk), unless a crypto backend is
 * installed (backend.ts), which then does every chunk.
 */
export class ChunkCipher {
  private constructor(
    private readonly aeadKey: Uint8Array,
    private readonly baseNonce: Uint8Array,
    private readonly subtleKey: CryptoKey | null,
  ) {}

  static async create(aeadKey: Uint8Array, baseNonce: Uint8Array): Promise<ChunkCipher> {
    assertBytes("aeadKey", aeadKey, AES256_KEY_BYTES);
    assertBytes("baseNonce", baseNonce, GCM_NONCE_BYTES);
    const b = backend();
    if (b.aesGcmEncrypt && b.aesGcmDecrypt) return new ChunkCipher(aeadKey, baseNonce, null);
    let key: CryptoKey;
    try {
      key = await crypto.subtle.importKey("raw", buf(aeadKey), { name: "AES-GCM" }, false, [
        "encrypt",
        "decrypt",
      ]);
    } catch (e) {
      throw new InvalidKeyError("aeadKey: rejected by the runtime", { cause: e });
    }
    return new ChunkCipher(aeadKey, baseNonce, key);
  }

  /** Seal chunk `index`: a full chunk (CHUNK_BYTES) or the final, shorter one. */
  async seal(index: number, plaintext: Uint8Array): Promise<Uint8Array> {
    assertBytes("plaintext", plaintext);
    if (plaintext.length > CHUNK_BYTES) {
      throw new InvalidLengthError(`plaintext: a chunk holds at most ${CHUNK_BYTES} bytes`);
    }
    const nonce = chunkNonce(this.baseNonce, index);
    const installed = backend().aesGcmEncrypt;
    if (this.subtleKey === null && installed) {
      return installed(this.aeadKey, nonce, plaintext, new Uint8Array(0));
    }
    if (this.subtleKey === null) throw new InvalidKeyError("aeadKey: backend changed");
    const params = { name: "AES-GCM", iv: buf(nonce), tagLength: 128 };
    return new Uint8Array(await crypto.subtle.encrypt(params, this.subtleKey, buf(plaintext)));
  }

  /**
   * Open chunk `index`. A non-final chunk must be exactly SEALED_CHUNK_BYTES and the final one
   * shorter (and at least a tag): that is what refuses truncation at a chunk boundary and
   * extension past the final chunk. DecryptError on any failure.
   */
  async open(index: number, sealed: Uint8Array, final: boolean): Promise<Uint8Array> {
    assertBytes("sealed", sealed);
    const ok = final
      ? sealed.length >= GCM_TAG_BYTES && sealed.length < SEALED_CHUNK_BYTES
      : sealed.length === SEALED_CHUNK_BYTES;
    if (!ok) throw new DecryptError("chunked: ciphertext truncated");
    const nonce = chunkNonce(this.baseNonce, index);
    const installed = backend().aesGcmDecrypt;
    if (this.subtleKey === null && installed) {
      try {
        return await installed(this.aeadKey, nonce, sealed, new Uint8Array(0));
      } catch (e) {
        throw new DecryptError(`chunked: chunk ${index} failed authentication`, { cause: e });
      }
    }
    if (this.subtleKey === null) throw new InvalidKeyError("aeadKey: backend changed");
    const params = { name: "AES-GCM", iv: buf(nonce), tagLength: 128 };
    try {
      return new Uint8Array(await crypto.subtle.decrypt(params, this.subtleKey, buf(sealed)));
    } catch (e) {
      throw new DecryptError(`chunked: chunk ${index} failed authentication`, { cause: e });
    }
  }
}

/** A FIFO of byte pieces: take(n) copies at most once, so re-chunking a stream is linear. */
class ByteQueue {
  private pieces: Uint8Array[] = [];
  private head = 0;
  length = 0;

  push(b: Uint8Array): void {
    if (b.length === 0) return;
    this.pieces.push(b);
    this.length += b.length;
  }

  take(n: number): Uint8Array {
    // Within one piece: a view, no copy (the queue already keeps the source's pieces as they
    // are, so a source must not reuse a buffer it has yielded, view or not).
    const first = this.pieces[0];
    if (first !== undefined && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.pieces.shift();
        this.head = 0;
      }
      this.length -= n;
      return out;
    }
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const p = this.pieces[0];
      if (p === undefined) throw new Error("ByteQueue: underflow");
      const k = Math.min(n - off, p.length - this.head);
      out.set(p.subarray(this.head, this.head + k), off);
      off += k;
      this.head += k;
      if (this.head === p.length) {
        this.pieces.shift();
        this.head = 0;
      }
    }
    this.length -= n;
    return out;
  }
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

/**
 * Encrypt the bytes of `source` (pieces of any size) under `inputKey` (32 random bytes, used
 * for this one message) and `context`. Yields the header, then the sealed chunks in order; holds
 * at most PARALLEL_CHUNKS chunks at a time. `salt` is for known-answer tests only: it must never
 * repeat for an input key, so the default draws it at random.
 */
export async function* chunkedEncryptStream(
  inputKey: Uint8Array,
  context: Uint8Array,
  source: AsyncIterable<Uint8Array>,
  salt: Uint8Array = randomBytes(CHUNKED_SALT_BYTES),
): AsyncGenerator<Uint8Array> {
  const keys = chunkedDeriveKeys(inputKey, salt, context);
  const cipher = await ChunkCipher.create(keys.aeadKey, keys.baseNonce);
  const header = new Uint8Array(CHUNKED_HEADER_BYTES);
  header.set(salt, 0);
  header.set(keys.commitment, CHUNKED_SALT_BYTES);
  yield header;
  const queue = new ByteQueue();
  let index = 0;
  const sealBatch = async (): Promise<Uint8Array[]> => {
    const batch: Promise<Uint8Array>[] = [];
    while (queue.length >= CHUNK_BYTES && batch.length < PARALLEL_CHUNKS) {
      if (index >= CHUNKED_MAX_CHUNKS - 1) throw new InvalidLengthError("message too long");
      batch.push(cipher.seal(index++, queue.take(CHUNK_BYTES)));
    }
    return Promise.all(batch);
  };
  for await (const piece of source) {
    assertBytes("piece", piece);
    queue.push(piece);
    while (queue.length >= CHUNK_BYTES * PARALLEL_CHUNKS) yield* await sealBatch();
  }
  while (queue.length >= CHUNK_BYTES) yield* await sealBatch();
  // The final chunk is always short, possibly empty: it marks the end of the message.
  yield await cipher.seal(index, queue.take(queue.length));
}

/**
 * Decrypt a ciphertext arriving as pieces of any size. The commitment is checked before any
 * chunk is opened (a wrong key or context fails there); each chunk is authenticated before its
 * plaintext is yielded. A stream may yield a valid prefix and then throw DecryptError
 * (truncation, a modified or reordered chunk, trailing data): the caller must treat the whole
 * message as failed, never the prefix as the message.
 */
export async function* chunkedDecryptStream(
  inputKey: Uint8Array,
  context: Uint8Array,
  source: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  assertBytes("inputKey", inputKey, AES256_KEY_BYTES);
  assertBytes("context", context);
  const queue = new ByteQueue();
  let cipher: ChunkCipher | null = null;
  let index = 0;
  const openHeader = async (): Promise<ChunkCipher> => {
    const header = queue.take(CHUNKED_HEADER_BYTES);
    const salt = header.subarray(0, CHUNKED_SALT_BYTES);
    const keys = chunkedDeriveKeys(inputKey, salt, context);
    if (!constantTimeEqual(keys.commitment, header.subarray(CHUNKED_SALT_BYTES))) {
      throw new DecryptError("chunked: wrong key or context (commitment mismatch)");
    }
    return ChunkCipher.create(keys.aeadKey, keys.baseNonce);
  };
  // A full sealed chunk is known not to be the final one only once a byte after it has arrived.
  const openBatch = async (c: ChunkCipher): Promise<Uint8Array[]> => {
    const batch: Promise<Uint8Array>[] = [];
    while (queue.length > SEALED_CHUNK_BYTES && batch.length < PARALLEL_CHUNKS) {
      if (index >= CHUNKED_MAX_CHUNKS - 1) throw new DecryptError("chunked: too many chunks");
      batch.push(c.open(index++, queue.take(SEALED_CHUNK_BYTES), false));
    }
    return Promise.all(batch);
  };
  for await (const piece of source) {
    assertBytes("piece", piece);
    queue.push(piece);
    if (cipher === null) {
      if (queue.length < CHUNKED_HEADER_BYTES) continue;
      cipher = await openHeader();
    }
    while (queue.length > SEALED_CHUNK_BYTES * PARALLEL_CHUNKS) yield* await openBatch(cipher);
  }
  if (cipher === null) {
    if (queue.length < CHUNKED_HEADER_BYTES) throw new DecryptError("chunked: header truncated");
    cipher = await openHeader();
  }
  while (queue.length > SEALED_CHUNK_BYTES) yield* await openBatch(cipher);
  yield await cipher.open(index, queue.take(queue.length), true);
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const p of source) {
    parts.push(p);
    n += p.length;
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** chunkedEncryptStream over one buffer. */
export function chunkedEncrypt(
  inputKey: Uint8Array,
  context: Uint8Array,
  plaintext: Uint8Array,
  salt?: Uint8Array,
): Promise<Uint8Array> {
  assertBytes("plaintext", plaintext);
  return collect(chunkedEncryptStream(inputKey, context, once(plaintext), salt));
}

/** chunkedDecryptStream over one buffer: the whole message, or DecryptError. */
export function chunkedDecrypt(
  inputKey: Uint8Array,
  context: Uint8Array,
  ciphertext: Uint8Array,
): Promise<Uint8Array> {
  assertBytes("ciphertext", ciphertext);
  return collect(chunkedDecryptStream(inputKey, context, once(ciphertext)));
}
