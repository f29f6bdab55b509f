/** Small byte codecs shared by the core's binary formats (PROTOCOL.md §2, §8.1). */
import * as v from "valibot";
import { EncodingError, fromB64u, toB64u } from "../encoding";
import { malformed } from "./errors";

/** Epochs can exceed 2^32 in principle: 8-byte big-endian, safe-integer range only. */
export function u64be(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("u64 out of range");
  const hi = Math.floor(n / 2 ** 32);
  const lo = n >>> 0;
  return new Uint8Array([
    hi >>> 24,
    (hi >>> 16) & 0xff,
    (hi >>> 8) & 0xff,
    hi & 0xff,
    lo >>> 24,
    (lo >>> 16) & 0xff,
    (lo >>> 8) & 0xff,
    lo & 0xff,
  ]);
}

/** Sequential reader over a byte string; every overrun is a typed `malformed` error. */
export class Reader {
  private off = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly what: string,
  ) {}
  bytes(n: number): Uint8Array {
    if (n < 0 || this.off + n > this.buf.length) throw malformed(this.what);
    const out = this.buf.slice(this.off, this.off + n);
    this.off += n;
    return out;
  }
  /** Big-endian unsigned integer of `n` ≤ 4 bytes, read in place (no copy: every header has some). */
  private uint(n: number): number {
    if (this.off + n > this.buf.length) throw malformed(this.what);
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + (this.buf[this.off + i] as number);
    this.off += n;
    return v;
  }
  u8(): number {
    return this.uint(1);
  }
  u32(): number {
    return this.uint(4);
  }
  u64(): number {
    if (this.off + 8 > this.buf.length) throw malformed(this.what);
    const n = this.uint(4) * 2 ** 32 + this.uint(4);
    if (!Number.isSafeInteger(n)) throw malformed(this.what);
    return n;
  }
  /** One lp() field: u32be length then bytes. */
  field(max = 1 << 20): Uint8Array {
    const n = this.u32();
    if (n > max) throw malformed(this.what);
    return this.bytes(n);
  }
  rest(): Uint8Array {
    return this.bytes(this.buf.length - this.off);
  }
  remaining(): number {
    return this.buf.length - this.off;
  }
  end(): void {
    if (this.off !== this.buf.length) throw malformed(this.what);
  }
}

/** Decode base64url from an untrusted place, mapping the error to `malformed`. */
export function b64(s: string, what: string): Uint8Array {
  try {
    return fromB64u(s);
  } catch (e) {
    if (e instanceof EncodingError) throw malformed(what);
    throw e;
  }
}

export const enc = toB64u;

/** Base64url string schema for stored state (any length, canonical). */
export const B64 = v.pipe(
  v.string(),
  v.check((s) => {
    try {
      fromB64u(s);
      return true;
    } catch {
      return false;
    }
  }, "non-canonical base64url"),
);

/** Base64url of exactly n bytes (stored keys). */
export function B64n(n: number) {
  return v.pipe(
    B64,
    v.check((s) => fromB64u(s).length === n, `expected ${n} bytes`),
  );
}

export const Key32 = B64n(32);
export const Uint = v.pipe(
  v.number(),
  v.integer(),
  v.minValue(0),
  v.maxValue(Number.MAX_SAFE_INTEGER),
);
