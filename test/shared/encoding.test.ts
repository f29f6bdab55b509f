import { describe, expect, it } from "vitest";
import { fromB64u, lp, toB64u } from "../../shared/encoding";

describe("base64url", () => {
  it("round-trips and rejects non-canonical input", () => {
    const b = new Uint8Array([0, 1, 2, 250, 251, 252, 253, 254, 255]);
    expect(fromB64u(toB64u(b))).toEqual(b);
    expect(() => fromB64u("AB=")).toThrow();
    expect(() => fromB64u("AA")).not.toThrow();
    expect(() => fromB64u("AB")).toThrow(); // non-zero trailing bits
  });
  it("lp is unambiguous", () => {
    expect(toB64u(lp("ab", "c"))).not.toEqual(toB64u(lp("a", "bc")));
  });
});
