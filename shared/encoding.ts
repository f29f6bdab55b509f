/** Byte encodings shared by the wire contract and the crypto core (PROTOCOL.md §2). */

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export function utf8(s: string): Uint8Array {
  return textEncoder.encode(s);
}

export function fromUtf8(b: Uint8Array): string {
  return textDecoder.decode(b);
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** Character code → 6-bit value, or -1 outside the base64url alphabet. */
const DECODE = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;
/** Two characters per 12 bits: encoding is the hot path of every stored key and frame. */
const PAIRS: string[] = [];
for (let i = 0; i < 4096; i++) PAIRS.push((ALPHABET[i >> 6] ?? "") + (ALPHABET[i & 63] ?? ""));
/** Above this size a native encoder wins over building the string in JS. */
const TABLE_MAX_BYTES = 1024;

/**
 * The runtime's own base64url encoder where it has one: `Uint8Array.prototype.toBase64`
 * (browsers that ship it), else Node's and workerd's `Buffer`. btoa is the fallback: native in
 * browsers, but in Node 20 a JS loop ~15× slower than Buffer (an ML-KEM key or ciphertext,
 * 1–1.2 KB, took ~55 µs to encode, more than the KEM operation that made it).
 */
type Encoder = (bytes: Uint8Array) => string;
interface Base64Proto {
  toBase64?: (this: Uint8Array, o: { alphabet: string; omitPadding: boolean }) => string;
}
interface BufferLike {
  from(b: ArrayBufferLike, offset: number, length: number): { toString(e: string): string };
}
const nativeEncoder: Encoder | null = (() => {
  const proto = Uint8Array.prototype as Base64Proto;
  const toBase64 = proto.toBase64;
  if (typeof toBase64 === "function")
    return (b) => toBase64.call(b, { alphabet: "base64url", omitPadding: true });
  const B = (globalThis as { Buffer?: BufferLike }).Buffer;
  if (B !== undefined && typeof B.from === "function")
    return (b) => B.from(b.buffer, b.byteOffset, b.byteLength).toString("base64url");
  return null;
})();

/** RFC 4648 §5 base64url without padding: the only binary-to-text encoding on the wire. */
export function toB64u(bytes: Uint8Array): string {
  if (bytes.length > TABLE_MAX_BYTES) {
    if (nativeEncoder !== null) return nativeEncoder(bytes);
    let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  let out = "";
  const full = bytes.length - (bytes.length % 3);
  let i = 0;
  for (; i < full; i += 3) {
    const n =
      ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    out += (PAIRS[n >> 12] as string) + (PAIRS[n & 4095] as string);
  }
  const rest = bytes.length - full;
  if (rest === 1) {
    const n = (bytes[i] as number) << 4;
    out += PAIRS[n] as string;
  } else if (rest === 2) {
    const n = ((bytes[i] as number) << 10) | ((bytes[i + 1] as number) << 2);
    out += (PAIRS[n >> 6] as string) + (ALPHABET[n & 63] as string);
  }
  return out;
}

export class EncodingError extends TypeError {
  override name = "EncodingError";
}

/** The 6-bit value of a base64url character code, or -1. */
function sextet(c: number): number {
  return c < 128 ? (DECODE[c] as number) : -1;
}

/** Strict decoder: rejects padding, non-alphabet characters and non-canonical trailing bits. */
export function fromB64u(s: string): Uint8Array {
  const len = s.length;
  if (len % 4 === 1) throw new EncodingError("invalid base64url");
  const out = new Uint8Array(Math.floor((len * 3) / 4));
  let o = 0;
  // Whole groups of 4 characters → 3 bytes (an ML-KEM key is ~1,600 characters: this loop is
  // ~3× faster than the bit accumulator below, which finishes the last partial group).
  const whole = len - (len % 4);
  let i = 0;
  for (; i < whole; i += 4) {
    const a = sextet(s.charCodeAt(i));
    const b = sextet(s.charCodeAt(i + 1));
    const c = sextet(s.charCodeAt(i + 2));
    const d = sextet(s.charCodeAt(i + 3));
    if ((a | b | c | d) < 0) throw new EncodingError("invalid base64url");
    const n = (a << 18) | (b << 12) | (c << 6) | d;
    out[o++] = n >> 16;
    out[o++] = (n >> 8) & 0xff;
    out[o++] = n & 0xff;
  }
  let acc = 0;
  let bits = 0;
  for (; i < len; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? (DECODE[c] as number) : -1;
    if (v < 0) throw new EncodingError("invalid base64url");
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  // Canonical form only, so one byte string has exactly one wire spelling: the bits left over
  // after the last whole byte (2 or 4 of them) must be zero.
  if ((acc & ((1 << bits) - 1)) !== 0) throw new EncodingError("non-canonical base64url");
  return out;
}

/** Length of the bytes a canonical base64url string of `chars` characters decodes to. */
export function b64uDecodedLength(chars: number): number {
  return Math.floor((chars * 3) / 4);
}

export function u32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError("u32 out of range");
  return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Unambiguous transcript encoding (PROTOCOL.md §2.2): each field as u32be(length) || bytes;
 * strings are UTF-8. Every signature and KDF input in Parley is built with this, so no two
 * different field lists can produce the same bytes.
 */
export function lp(...fields: (Uint8Array | string | number)[]): Uint8Array {
  // One allocation for the result (every transcript, AAD and KDF label goes through here).
  // ASCII strings (labels, names, hub ids: nearly all) and u32s are written in place, without
  // a TextEncoder call or an array of their own; other strings are UTF-8 encoded first.
  const parts: (Uint8Array | string | number)[] = [];
  let len = 0;
  for (const f of fields) {
    if (typeof f === "number") {
      if (!Number.isInteger(f) || f < 0 || f > 0xffffffff) throw new RangeError("u32 out of range");
      parts.push(f);
      len += 8;
    } else if (typeof f === "string" && !isAscii(f)) {
      const b = utf8(f);
      parts.push(b);
      len += 4 + b.length;
    } else {
      parts.push(f);
      len += 4 + f.length;
    }
  }
  const out = new Uint8Array(len);
  let off = 0;
  const u32 = (n: number) => {
    out[off] = n >>> 24;
    out[off + 1] = (n >>> 16) & 0xff;
    out[off + 2] = (n >>> 8) & 0xff;
    out[off + 3] = n & 0xff;
    off += 4;
  };
  for (const p of parts) {
    if (typeof p === "number") {
      u32(4);
      u32(p);
    } else if (typeof p === "string") {
      u32(p.length);
      for (let i = 0; i < p.length; i++) out[off + i] = p.charCodeAt(i);
      off += p.length;
    } else {
      u32(p.length);
      out.set(p, off);
      off += p.length;
    }
  }
  return out;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}
