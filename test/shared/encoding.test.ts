import { describe, expect, it } from "vitest";
import { fromB64u, lp, toB64u } from "../../shared/encoding";

describe("base64url", () => {
  it("round-trips and rejects non-canonical input", () => {
    const b = new Uint8Array([0, 1, 2, 250, 251, 252, 253, 254, 255]);
    expect(fromB64u(toB64u(b))).toEqual(b);
    expect(() => fromB64u("AB=")).toThrow();
    expect(() => fromB64u("AA")).not.toThrow();
    expect(() => fromB64u("AB")).toThrow(); // non-zero trailing bits
    // Outside the alphabet, in a whole 4-character group or in the final partial one.
    for (const bad of [
      "AAA=",
      "AA+A",
      "A/AA",
      "AAAA\u0100AAA",
      "AAAA AA",
      "AAAAAA=",
      "AAAA\u0041\u0300",
    ])
      expect(() => fromB64u(bad), bad).toThrow();
    expect(fromB64u("AAEC_-8")).toEqual(new Uint8Array([0, 1, 2, 255, 239]));
  });
  it("encodes every size and offset as RFC 4648 §5 does, across the native-encoder threshold", () => {
    // A bit-by-bit reference, independent of the encoder's table, native and btoa paths.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const reference = (b: Uint8Array): string => {
      let bits = "";
      for (const x of b) bits += x.toString(2).padStart(8, "0");
      let out = "";
      for (let i = 0; i < bits.length; i += 6)
        out += alphabet[parseInt(bits.slice(i, i + 6).padEnd(6, "0"), 2)];
      return out;
    };
    const backing = new Uint8Array(2100);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 151 + 7) & 0xff;
    for (const size of [0, 1, 2, 3, 1022, 1023, 1024, 1025, 1026, 1088, 1184, 2048]) {
      for (const offset of [0, 1, 5]) {
        // A view into a larger buffer: an encoder must read only the view's bytes.
        const view = backing.subarray(offset, offset + size);
        const text = toB64u(view);
        expect(text).toBe(reference(view));
        expect(fromB64u(text)).toEqual(view);
      }
    }
  });
  it("lp is u32be(length) || bytes per field: UTF-8 for strings, 4 bytes for numbers", () => {
    const te = new TextEncoder();
    const field = (b: Uint8Array) => [
      b.length >>> 24,
      (b.length >>> 16) & 0xff,
      (b.length >>> 8) & 0xff,
      b.length & 0xff,
      ...b,
    ];
    const fields = ["parley/v1/x", "", "zoë", "😀", new Uint8Array([1, 2, 3]), 0, 0xfffffffe];
    const expected = fields.flatMap((f) =>
      field(
        typeof f === "string"
          ? te.encode(f)
          : typeof f === "number"
            ? new Uint8Array([f >>> 24, (f >>> 16) & 0xff, (f >>> 8) & 0xff, f & 0xff])
            : f,
      ),
    );
    expect(lp(...fields)).toEqual(new Uint8Array(expected));
    expect(() => lp(2 ** 32)).toThrow(RangeError);
    expect(() => lp(-1)).toThrow(RangeError);
    expect(() => lp(1.5)).toThrow(RangeError);
  });
  it("lp is unambiguous", () => {
    expect(toB64u(lp("ab", "c"))).not.toEqual(toB64u(lp("a", "bc")));
  });
});
