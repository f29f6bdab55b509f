/** Small byte codecs shared by the core's binary formats (PROTOCOL.md §2, §8.1). */
import * as v from "valibot";
import { EncodingError, fromB64u, toB64u } from "../encoding";
import { malformed } from "./errors";

/** Epochs can exceed 2^32 in principle: 8-byte big-endian, safe-integer range only. */
export function u64be(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError("u64 out of range");
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, Math.floor(n / 2 ** 32), false);
  dv.setUint32(4, n >>> 0, false);
  return out;
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
  u8(): number {
    return this.bytes(1)[0] as number;
  }
  u32(): number {
    const b = this.bytes(4);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, false);
  }
  u64(): number {
    const b = this.bytes(8);
    const dv = new DataView(b.buffer, b.byteOffset, 8);
    const n = dv.getUint32(0, false) * 2 ** 32 + dv.getUint32(4, false);
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
