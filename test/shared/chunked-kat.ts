/**
 * Cobblestone-256 (c2sp.org/chunked-encryption, SHA-512 + AES-256-GCM) known answers through
 * shared/crypto/chunked.ts, as one function that returns what disagreed, so the same check runs
 * in Node and workerd (crypto-chunked.test.ts) and inside Chromium (test/node/crypto-chromium
 * .test.ts, which bundles this file with shared/crypto). File: Wycheproof
 * c2sp_chunked_encryption_aes_256_gcm_test.json (test/vectors/SOURCES.md); `ct` is zlib-deflated
 * hex (inflated here with DecompressionStream, present in all three runtimes).
 *
 * Applied as the Wycheproof notes ask: whole-message decryption of valid vectors gives msgLength
 * bytes with SHA-512 msgSha512, every invalid one fails with DecryptError (InvalidKeySize with
 * InvalidLengthError); streaming decryption never yields more than the PartialPlaintext prefix;
 * raw mode (aeadKey, baseNonce) re-encrypts a valid message to the exact ciphertext, and with
 * the vector's salt the full encryption reproduces `ct` byte for byte.
 */
import { sha512 } from "@noble/hashes/sha2.js";
import {
  CHUNK_BYTES,
  CHUNKED_HEADER_BYTES,
  ChunkCipher,
  chunkedDecrypt,
  chunkedDecryptStream,
  chunkedEncrypt,
} from "../../shared/crypto/chunked";
import { fromHex, toHex } from "./crypto-util";

export interface ChunkedVectorFile {
  testGroups: {
    aead: string;
    sha: string;
    tests: {
      tcId: number;
      comment: string;
      flags: string[];
      key: string;
      ctx: string;
      ct: string;
      aeadKey?: string;
      baseNonce?: string;
      msgLength?: number;
      msgSha512?: string;
      result: string;
    }[];
  }[];
}

export interface ChunkedKatReport {
  failures: string[];
  counts: Record<string, number>;
}

async function inflate(hex: string): Promise<Uint8Array> {
  const stream = new Blob([fromHex(hex) as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function errorName(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
    return "none";
  } catch (e) {
    return e instanceof Error ? e.name : String(e);
  }
}

async function* pieces(b: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < b.length; off += size) yield b.subarray(off, off + size);
}

export async function runChunkedKats(file: ChunkedVectorFile): Promise<ChunkedKatReport> {
  const failures: string[] = [];
  const counts: Record<string, number> = {};
  const count = (k: string) => {
    counts[k] = (counts[k] ?? 0) + 1;
  };
  for (const g of file.testGroups) {
    if (g.aead !== "AEAD_AES_256_GCM" || g.sha !== "SHA-512") {
      failures.push(`group ${g.aead}/${g.sha}: not Cobblestone-256`);
      continue;
    }
    for (const t of g.tests) {
      const id = `tcId ${t.tcId} (${t.comment})`;
      const key = fromHex(t.key);
      const ctx = fromHex(t.ctx);
      const ct = await inflate(t.ct);
      if (t.result === "valid") {
        count("valid");
        let msg: Uint8Array;
        try {
          msg = await chunkedDecrypt(key, ctx, ct);
        } catch (e) {
          failures.push(`${id}: decrypt threw ${e instanceof Error ? e.name : e}`);
          continue;
        }
        if (msg.length !== t.msgLength || toHex(sha512(msg)) !== t.msgSha512) {
          failures.push(`${id}: wrong plaintext`);
        }
        // Streaming in odd-sized pieces gives the same message.
        const streamed: Uint8Array[] = [];
        for await (const p of chunkedDecryptStream(key, ctx, pieces(ct, 7919))) streamed.push(p);
        if (toHex(sha512(concat(streamed))) !== t.msgSha512) {
          failures.push(`${id}: streamed plaintext differs`);
        }
        // With the vector's salt, encryption is deterministic and must give ct exactly.
        const again = await chunkedEncrypt(key, ctx, msg, ct.subarray(0, 24));
        if (!equal(again, ct)) failures.push(`${id}: re-encryption differs`);
        // Raw mode: the derived key and base nonce seal each chunk to the same bytes.
        if (t.aeadKey !== undefined && t.baseNonce !== undefined) {
          const raw = await ChunkCipher.create(fromHex(t.aeadKey), fromHex(t.baseNonce));
          const body: Uint8Array[] = [];
          for (let i = 0, off = 0; ; i++, off += CHUNK_BYTES) {
            const chunk = msg.subarray(off, Math.min(msg.length, off + CHUNK_BYTES));
            body.push(await raw.seal(i, chunk));
            if (chunk.length < CHUNK_BYTES) break;
          }
          if (!equal(concat(body), ct.subarray(CHUNKED_HEADER_BYTES))) {
            failures.push(`${id}: raw mode differs`);
          }
        }
      } else if (t.result === "invalid") {
        const expected = t.flags.includes("InvalidKeySize") ? "InvalidLengthError" : "DecryptError";
        count(`invalid:${expected}`);
        const whole = await errorName(() => chunkedDecrypt(key, ctx, ct));
        if (whole !== expected) failures.push(`${id}: whole decrypt gave ${whole}`);
        // Streaming: fail in the end, and never yield past the longest valid prefix.
        const out: Uint8Array[] = [];
        const streamed = await errorName(async () => {
          for await (const p of chunkedDecryptStream(key, ctx, pieces(ct, 4096))) out.push(p);
        });
        if (streamed !== expected) failures.push(`${id}: streaming decrypt gave ${streamed}`);
        const prefix = concat(out);
        const limit = t.flags.includes("PartialPlaintext") ? (t.msgLength ?? 0) : 0;
        if (prefix.length > limit) failures.push(`${id}: streamed ${prefix.length} bytes`);
        if (prefix.length > 0 && prefix.length === t.msgLength) {
          if (toHex(sha512(prefix)) !== t.msgSha512) failures.push(`${id}: wrong prefix`);
        }
      } else {
        failures.push(`${id}: unknown result ${t.result}`);
      }
    }
  }
  return { failures, counts };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
