/** Byte encodings shared by the wire contract and the crypto core (PROTOCOL.md §2). */

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

export function utf8(s: string): Uint8Array {
  return textEncoder.encode(s);
}

export function fromUtf8(b: Uint8Array): string {
  return textDecoder.decode(b);
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/** RFC 4648 §5 base64url without padding: the only binary-to-text encoding on the wire. */
export function toB64u(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export class EncodingError extends TypeError {
  override name = "EncodingError";
}

/** Strict decoder: rejects padding, non-alphabet characters and non-canonical trailing bits. */
export function fromB64u(s: string): Uint8Array {
  if (!B64URL.test(s) || s.length % 4 === 1) throw new EncodingError("invalid base64url");
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  // Canonical form only, so one byte string has exactly one wire spelling.
  if (toB64u(out) !== s) throw new EncodingError("non-canonical base64url");
  return out;
}

/** Length of the bytes a canonical base64url string of `chars` characters decodes to. */
export function b64uDecodedLength(chars: number): number {
  return Math.floor((chars * 3) / 4);
}

export function u32be(n: number): Uint8Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError("u32 out of range");
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, false);
  return out;
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
  const parts: Uint8Array[] = [];
  for (const f of fields) {
    const b = typeof f === "string" ? utf8(f) : typeof f === "number" ? u32be(f) : f;
    parts.push(u32be(b.length), b);
  }
  return concatBytes(...parts);
}
