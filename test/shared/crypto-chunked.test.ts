/**
 * Chunked encryption of attachments (shared/crypto/chunked.ts, PROTOCOL.md §3.12): the Wycheproof
 * Cobblestone-256 vectors through runChunkedKats (the same function runs in Chromium, in
 * test/node/crypto-chromium.test.ts), then the refusals Parley relies on, built by hand:
 * truncation at a chunk boundary, reordered, duplicated and spliced chunks, trailing data.
 */
import { describe, expect, it } from "vitest";
import { randomBytes } from "../../shared/crypto";
import {
  CHUNK_BYTES,
  CHUNKED_HEADER_BYTES,
  chunkedCiphertextLength,
  chunkedDecrypt,
  chunkedEncrypt,
  chunkedEncryptStream,
  chunkedPlaintextLength,
  SEALED_CHUNK_BYTES,
} from "../../shared/crypto/chunked";
import vectors from "../vectors/wycheproof_c2sp_chunked_encryption_aes_256_gcm_test.json";
import { runChunkedKats } from "./chunked-kat";

const ctx = new TextEncoder().encode("parley test");

describe("Wycheproof c2sp_chunked_encryption_aes_256_gcm_test.json", () => {
  it("decrypts every valid vector, re-encrypts it exactly, and refuses every invalid one", async () => {
    const report = await runChunkedKats(vectors);
    expect(report.failures).toEqual([]);
    // Every vector was applied (35 in the file: 10 valid, 23 invalid ciphertexts, 2 bad keys).
    expect(report.counts).toEqual({
      valid: 10,
      "invalid:DecryptError": 23,
      "invalid:InvalidLengthError": 2,
    });
  });
});

function splice(ct: Uint8Array, parts: [number, number][]): Uint8Array {
  const out: number[] = [];
  for (const [from, to] of parts) out.push(...ct.subarray(from, to));
  return new Uint8Array(out);
}

describe("chunked encryption refusals", () => {
  const key = randomBytes(32);
  const msg = randomBytes(3 * CHUNK_BYTES + 100);
  const chunk = (i: number): [number, number] => [
    CHUNKED_HEADER_BYTES + i * SEALED_CHUNK_BYTES,
    CHUNKED_HEADER_BYTES + (i + 1) * SEALED_CHUNK_BYTES,
  ];

  it("round-trips, with lengths the formulas predict", async () => {
    const ct = await chunkedEncrypt(key, ctx, msg);
    expect(ct.length).toBe(chunkedCiphertextLength(msg.length));
    expect(chunkedPlaintextLength(ct.length)).toBe(msg.length);
    expect(await chunkedDecrypt(key, ctx, ct)).toEqual(msg);
    const streamed: Uint8Array[] = [];
    async function* odd() {
      for (let off = 0; off < msg.length; off += 1000) yield msg.subarray(off, off + 1000);
    }
    for await (const p of chunkedEncryptStream(key, ctx, odd())) streamed.push(p);
    expect(streamed[0]?.length).toBe(CHUNKED_HEADER_BYTES);
    const again = await chunkedDecrypt(key, ctx, Uint8Array.from(streamed.flatMap((p) => [...p])));
    expect(again).toEqual(msg);
  });

  it("refuses truncation at a chunk boundary, reordering, duplication, splicing and extension", async () => {
    const ct = await chunkedEncrypt(key, ctx, msg);
    const other = await chunkedEncrypt(key, ctx, randomBytes(msg.length));
    const header: [number, number] = [0, CHUNKED_HEADER_BYTES];
    const cases: Record<string, Uint8Array> = {
      truncatedAtBoundary: ct.subarray(0, chunk(2)[1]),
      finalChunkDropped: ct.subarray(0, chunk(3)[0]),
      swapped: splice(ct, [header, chunk(1), chunk(0), chunk(2), [chunk(3)[0], ct.length]]),
      duplicated: splice(ct, [header, chunk(0), chunk(0), chunk(2), [chunk(3)[0], ct.length]]),
      // Same key, another file: its chunks carry the same indices but another salt's key.
      splicedFromAnotherFile: new Uint8Array([
        ...ct.subarray(0, chunk(1)[0]),
        ...other.subarray(chunk(1)[0]),
      ]),
      trailingByte: new Uint8Array([...ct, 0]),
      flippedByte: ct.map((b, i) => (i === chunk(1)[0] + 5 ? b ^ 1 : b)),
      wrongContext: ct,
    };
    for (const [name, bad] of Object.entries(cases)) {
      const context = name === "wrongContext" ? new Uint8Array(0) : ctx;
      await expect(chunkedDecrypt(key, context, bad), name).rejects.toMatchObject({
        name: "DecryptError",
      });
    }
    expect(() => chunkedPlaintextLength(chunk(2)[1])).toThrow(/truncated/);
  });
});
