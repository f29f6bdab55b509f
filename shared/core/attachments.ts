/**
 * Attachments on the client (PROTOCOL.md §8.6.1, §7.10): encrypt a file once under a fresh key
 * (Cobblestone-256 chunks, §3.12), keep the SHA-256 of the ciphertext, and open a downloaded
 * ciphertext again — streaming both ways, so neither the plaintext nor the ciphertext is ever
 * copied whole. Runtime-neutral (browsers, Node): the transport (XHR for upload progress in the
 * PWA, fetch in Node) is the caller's; `fetchResumable` is the download side with byte ranges.
 */
import {
  chunkedCiphertextLength,
  chunkedDecryptStream,
  chunkedEncryptStream,
  randomBytes,
  sha256Hasher,
} from "../crypto";
import { constantTimeEqual } from "../crypto/compare";
import { fromB64u, toB64u, utf8 } from "../encoding";
import { BLOB_HTTP_ERRORS, type BlobHttpError } from "../protocol";
import { type FileRef, MAX_ATTACHMENT_BYTES } from "./content";

/** The chunked-encryption context of every attachment (§3.12): binds the use, not the file. */
export const ATTACHMENT_CONTEXT = utf8("parley/v1/attachment");

export type AttachmentErrorCode =
  /** Over MAX_ATTACHMENT_BYTES (or the relay's blob limit). */
  | "too_large"
  /** The ciphertext failed authentication or its digest: altered in storage or in transit. */
  | "tampered"
  /** The blob is gone (expired, §7.10) or never existed. */
  | "not_found"
  /** Network failure or an unexpected answer, after the retries. */
  | "network"
  /** The user cancelled. */
  | "cancelled"
  /** The relay refused the upload (its code is in `relayCode`). */
  | "refused";

export class AttachmentError extends Error {
  override name = "AttachmentError";
  constructor(
    readonly code: AttachmentErrorCode,
    message: string,
    readonly relayCode?: string,
  ) {
    super(message);
  }
}

export interface EncryptedAttachment {
  /** The fresh input key (32 bytes): goes into the message, nowhere else. */
  key: Uint8Array;
  /** The ciphertext, in pieces (a browser wraps them in one Blob for the upload). */
  parts: Uint8Array[];
  length: number;
  /** SHA-256 of the whole ciphertext. */
  digest: Uint8Array;
}

/** Encrypt the bytes of `source` (`size` in total) under a fresh key. */
export async function encryptAttachment(
  source: AsyncIterable<Uint8Array>,
  size: number,
  onProgress?: (done: number) => void,
): Promise<EncryptedAttachment> {
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_ATTACHMENT_BYTES) {
    throw new AttachmentError("too_large", "The file is larger than 100 MB.");
  }
  const key = randomBytes(32);
  const hash = sha256Hasher();
  const parts: Uint8Array[] = [];
  let length = 0;
  let read = 0;
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const p of source) {
      read += p.length;
      if (read > size) throw new AttachmentError("too_large", "The file grew while it was read.");
      onProgress?.(read);
      yield p;
    }
  }
  for await (const piece of chunkedEncryptStream(key, ATTACHMENT_CONTEXT, counted())) {
    hash.update(piece);
    parts.push(piece);
    length += piece.length;
  }
  if (read !== size || length !== chunkedCiphertextLength(size)) {
    throw new AttachmentError("network", "The file changed while it was read.");
  }
  return { key, parts, length, digest: hash.digest() };
}

/** What goes into the message about an uploaded attachment (§8.6.1). */
export function fileRefOf(
  blob: string,
  enc: EncryptedAttachment,
  meta: {
    size: number;
    type: string;
    name: string;
    thumb?: string;
    width?: number;
    height?: number;
  },
): FileRef {
  return {
    blob,
    key: toB64u(enc.key),
    digest: toB64u(enc.digest),
    size: meta.size,
    type: safeType(meta.type),
    name: safeName(meta.name),
    ...(meta.thumb !== undefined ? { thumb: meta.thumb } : {}),
    ...(meta.width !== undefined && meta.height !== undefined
      ? { width: meta.width, height: meta.height }
      : {}),
  };
}

/** A MIME type the schema accepts, or "" (unknown). */
export function safeType(t: string): string {
  return /^[\w.+-]+\/[\w.+-]+$/.test(t) && t.length <= 127 ? t.toLowerCase() : "";
}

/** A file name the schema accepts: no path, no control characters, at most 255 characters. */
export function safeName(n: string): string {
  const base = n.split(/[/\\]/).pop() ?? "";
  const clean = [...base]
    .filter((ch) => {
      const c = ch.codePointAt(0) ?? 0;
      return c >= 0x20 && c !== 0x7f;
    })
    .join("")
    .slice(0, 255);
  return clean === "" ? "file" : clean;
}

/**
 * Decrypt a downloaded ciphertext: yields authenticated plaintext chunk by chunk and checks, at
 * the end, the length and the digest the message promised. Any failure throws AttachmentError
 * `tampered`; a caller keeps nothing of a download that did not finish.
 */
export async function* decryptAttachment(
  ref: FileRef,
  source: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const expected = chunkedCiphertextLength(ref.size);
  const hash = sha256Hasher();
  let length = 0;
  async function* hashed(): AsyncGenerator<Uint8Array> {
    for await (const p of source) {
      length += p.length;
      if (length > expected) throw tampered();
      hash.update(p);
      yield p;
    }
  }
  let plain = 0;
  try {
    for await (const p of chunkedDecryptStream(fromB64u(ref.key), ATTACHMENT_CONTEXT, hashed())) {
      plain += p.length;
      yield p;
    }
  } catch (e) {
    if (e instanceof AttachmentError) throw e;
    throw tampered();
  }
  if (length !== expected || plain !== ref.size) throw tampered();
  if (!constantTimeEqual(hash.digest(), fromB64u(ref.digest))) throw tampered();
}

function tampered(): AttachmentError {
  return new AttachmentError(
    "tampered",
    "This file was altered after it was sent (it failed its integrity check) and was not opened.",
  );
}

/** The typed error of a blob route's JSON answer (§7.10). */
export async function blobResponseError(res: Response): Promise<AttachmentError> {
  let code = "";
  try {
    const j: unknown = await res.json();
    if (typeof j === "object" && j !== null && "error" in j && typeof j.error === "string") {
      code = j.error;
    }
  } catch {
    // Not JSON: keep the status only.
  }
  if (code === "not_found" || res.status === 404) {
    return new AttachmentError("not_found", "This file is no longer on the relay (it expired).");
  }
  if (code === "blob_too_large") {
    return new AttachmentError("too_large", "The file is larger than the relay accepts.", code);
  }
  const known = code in BLOB_HTTP_ERRORS ? BLOB_HTTP_ERRORS[code as BlobHttpError][1] : null;
  return new AttachmentError(
    "refused",
    known ?? `The relay answered ${res.status}.`,
    code || undefined,
  );
}

export interface FetchResumableOptions {
  fetch: typeof fetch;
  /** Total ciphertext bytes expected. */
  length: number;
  /**
   * Ciphertext bytes already held from an earlier attempt (a download resumed after a reload):
   * the first request asks only for the rest, `Range: bytes=start-`. Default 0.
   */
  start?: number;
  signal?: AbortSignal;
  onProgress?: (received: number) => void;
  /** Attempts after a broken connection (each resumes with a byte range). */
  retries?: number;
  /** Wait before attempt n (ms). */
  backoff?: (attempt: number) => number;
}

/**
 * GET a blob as a stream of pieces; when the connection breaks, ask again for the bytes not yet
 * received (`Range: bytes=n-`), so a download resumes where it stopped (§7.10).
 */
export async function* fetchResumable(
  url: string,
  o: FetchResumableOptions,
): AsyncGenerator<Uint8Array> {
  let received = o.start ?? 0;
  if (!Number.isSafeInteger(received) || received < 0 || received > o.length) {
    throw new AttachmentError("network", "The download cannot resume from there.");
  }
  let failures = 0;
  const retries = o.retries ?? 5;
  while (received < o.length) {
    if (o.signal?.aborted) throw new AttachmentError("cancelled", "Download cancelled.");
    let res: Response;
    try {
      res = await o.fetch(url, {
        ...(received > 0 ? { headers: { Range: `bytes=${received}-` } } : {}),
        ...(o.signal !== undefined ? { signal: o.signal } : {}),
      });
    } catch {
      if (o.signal?.aborted) throw new AttachmentError("cancelled", "Download cancelled.");
      if (++failures > retries) throw new AttachmentError("network", "The download failed.");
      await sleep(o.backoff?.(failures) ?? 500 * failures);
      continue;
    }
    if (!(res.status === 200 && received === 0) && !(res.status === 206 && received > 0)) {
      throw await blobResponseError(res);
    }
    const body = res.body;
    if (body === null) throw new AttachmentError("network", "The download failed.");
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.length;
        failures = 0;
        o.onProgress?.(received);
        yield value;
      }
    } catch {
      if (o.signal?.aborted) throw new AttachmentError("cancelled", "Download cancelled.");
      if (++failures > retries) throw new AttachmentError("network", "The download failed.");
      await sleep(o.backoff?.(failures) ?? 500 * failures);
    } finally {
      reader.releaseLock();
    }
    if (received < o.length && failures === 0) {
      // The body ended early without an error: ask for the rest.
      if (++failures > retries) throw new AttachmentError("network", "The download failed.");
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The blob URL for an id, under the relay's origin. */
export function blobUrl(origin: string, blob: string): string {
  return `${origin.replace(/\/$/, "")}/blob/${blob}`;
}
