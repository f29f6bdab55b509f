/**
 * Attachments on the client (shared/core/attachments.ts, PROTOCOL.md §8.6.1): encryption under a
 * fresh key with the ciphertext digest, decryption that refuses any altered, truncated or
 * extended ciphertext with `tampered`, the strict FileRef schema, and downloads that resume
 * with byte ranges after a broken connection.
 */
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import {
  AttachmentError,
  decryptAttachment,
  encryptAttachment,
  fetchResumable,
  fileRefOf,
  safeName,
} from "../../shared/core/attachments";
import { DmContent, FileRef, MAX_ATTACHMENT_BYTES } from "../../shared/core/content";
import { chunkedCiphertextLength, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";

async function* pieces(b: Uint8Array, size = 10_000): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < b.length; off += size) yield b.subarray(off, off + size);
}

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

async function open(ref: FileRef, ct: Uint8Array): Promise<Uint8Array> {
  const out: Uint8Array[] = [];
  for await (const p of decryptAttachment(ref, pieces(ct, 7777))) out.push(p);
  return join(out);
}

const BLOB = toB64u(randomBytes(32));

describe("attachment encryption", () => {
  it("round-trips; every file gets a fresh key; the ciphertext holds neither plaintext nor name", async () => {
    const data = randomBytes(200_000);
    const a = await encryptAttachment(pieces(data), data.length);
    const b = await encryptAttachment(pieces(data), data.length);
    expect(a.key).not.toEqual(b.key);
    expect(a.length).toBe(chunkedCiphertextLength(data.length));
    const ref = fileRefOf(BLOB, a, { size: data.length, type: "image/png", name: "cat.png" });
    expect(v.is(FileRef, ref)).toBe(true);
    const ct = join(a.parts);
    expect(await open(ref, ct)).toEqual(data);
    expect(contains(ct, data.subarray(0, 16))).toBe(false);
    expect(contains(ct, new TextEncoder().encode("cat.png"))).toBe(false);
  });

  it("refuses a flipped byte, a truncation, an extension and a wrong digest as `tampered`", async () => {
    const data = randomBytes(50_000);
    const a = await encryptAttachment(pieces(data), data.length);
    const ref = fileRefOf(BLOB, a, { size: data.length, type: "", name: "x.bin" });
    const ct = join(a.parts);
    const flipped = ct.slice();
    flipped[30_000] = (flipped[30_000] ?? 0) ^ 0x01;
    const cases = {
      flipped,
      truncated: ct.subarray(0, ct.length - 1),
      extended: join([ct, new Uint8Array(1)]),
      wrongDigest: ct,
    };
    for (const [name, bad] of Object.entries(cases)) {
      const r = name === "wrongDigest" ? { ...ref, digest: "A".repeat(43) } : ref;
      await expect(open(r, bad), name).rejects.toMatchObject({ code: "tampered" });
    }
  });

  it("refuses a file over 100 MB before reading it", async () => {
    await expect(
      encryptAttachment(pieces(new Uint8Array(1)), MAX_ATTACHMENT_BYTES + 1),
    ).rejects.toMatchObject({
      code: "too_large",
    });
  });
});

describe("FileRef schema (§8.6.1)", () => {
  const ok = {
    blob: BLOB,
    key: "A".repeat(43),
    digest: "A".repeat(43),
    size: 10,
    type: "text/plain",
    name: "notes.txt",
  };
  it("accepts a well-formed reference and refuses anything else", () => {
    expect(v.is(FileRef, ok)).toBe(true);
    const bad: Record<string, unknown>[] = [
      { ...ok, extra: 1 },
      { ...ok, name: "../etc/passwd" },
      { ...ok, name: "a\u0000b" },
      { ...ok, name: "" },
      { ...ok, name: "n".repeat(256) },
      { ...ok, size: MAX_ATTACHMENT_BYTES + 1 },
      { ...ok, size: -1 },
      { ...ok, type: "text/html; charset=utf-8" },
      { ...ok, key: "A".repeat(42) },
      { ...ok, thumb: "A".repeat(16_385) },
    ];
    for (const b of bad) expect(v.is(FileRef, b), JSON.stringify(b).slice(0, 80)).toBe(false);
    expect(v.is(DmContent, { t: "file", id: "m1", ts: 1, text: "", file: ok })).toBe(true);
  });

  it("makes any local file name safe to send", () => {
    expect(safeName("C:\\Users\\me\\photo.jpg")).toBe("photo.jpg");
    expect(safeName("a\u0007b")).toBe("ab");
    expect(safeName("")).toBe("file");
    expect(v.is(FileRef, { ...ok, name: safeName("x".repeat(300)) })).toBe(true);
  });
});

describe("resumable download", () => {
  it("asks for the missing range after a broken connection and yields every byte once", async () => {
    const data = randomBytes(100_000);
    const ranges: string[] = [];
    let calls = 0;
    const fakeFetch = (async (_url: string, init?: RequestInit) => {
      calls++;
      const range = new Headers(init?.headers).get("Range");
      ranges.push(range ?? "");
      const start = range === null ? 0 : Number(/bytes=(\d+)-/.exec(range)?.[1]);
      const rest = data.subarray(start);
      // The first two answers break after 30 000 bytes.
      const cut = calls <= 2 ? 30_000 : rest.length;
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(ctl) {
          if (!sent) {
            sent = true;
            ctl.enqueue(rest.slice(0, cut));
          } else if (cut < rest.length) ctl.error(new Error("connection reset"));
          else ctl.close();
        },
      });
      return new Response(body, { status: range === null ? 200 : 206 });
    }) as typeof fetch;
    const out: Uint8Array[] = [];
    for await (const p of fetchResumable("http://relay/blob/x", {
      fetch: fakeFetch,
      length: data.length,
      backoff: () => 0,
    }))
      out.push(p);
    expect(join(out)).toEqual(data);
    expect(ranges).toEqual(["", "bytes=30000-", "bytes=60000-"]);
  });

  it("resumes from bytes already held (after a reload): the first request is a range", async () => {
    const data = randomBytes(50_000);
    const ranges: string[] = [];
    const fakeFetch = (async (_url: string, init?: RequestInit) => {
      const range = new Headers(init?.headers).get("Range");
      ranges.push(range ?? "");
      const start = range === null ? 0 : Number(/bytes=(\d+)-/.exec(range)?.[1]);
      return new Response(data.slice(start), { status: range === null ? 200 : 206 });
    }) as typeof fetch;
    const out: Uint8Array[] = [data.slice(0, 20_000)];
    for await (const p of fetchResumable("http://relay/blob/x", {
      fetch: fakeFetch,
      length: data.length,
      start: 20_000,
    }))
      out.push(p);
    expect(join(out)).toEqual(data);
    expect(ranges).toEqual(["bytes=20000-"]);
    // A start past the end is refused, not sent.
    const bad = async () => {
      for await (const _ of fetchResumable("http://relay/blob/x", {
        fetch: fakeFetch,
        length: 10,
        start: 11,
      })) {
        // nothing
      }
    };
    await expect(bad()).rejects.toMatchObject({ code: "network" });
  });

  it("gives not_found for an expired blob", async () => {
    const gone = (async () =>
      Response.json({ error: "not_found" }, { status: 404 })) as unknown as typeof fetch;
    const run = async () => {
      for await (const _ of fetchResumable("http://relay/blob/x", { fetch: gone, length: 10 })) {
        // nothing arrives
      }
    };
    await expect(run()).rejects.toBeInstanceOf(AttachmentError);
    await expect(run()).rejects.toMatchObject({ code: "not_found" });
  });
});
