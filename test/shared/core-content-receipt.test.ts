/** Content schemas (PROTOCOL.md §8.6): end-to-end receipts are 1:1 only and strictly shaped. */
import { describe, expect, it } from "vitest";
import {
  decodeContent,
  decodeDmContent,
  encodeContent,
  MAX_RECEIPT_IDS,
} from "../../shared/core/content";
import { isCoreError } from "../../shared/core/errors";
import { pad } from "../../shared/core/padding";
import { utf8 } from "../../shared/encoding";

const raw = (x: unknown) => pad(utf8(JSON.stringify(x)));

function code(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (e) {
    return isCoreError(e) ? e.code : "other";
  }
}

describe("receipt content", () => {
  it("round-trips in a 1:1 message", () => {
    const r = { t: "receipt" as const, ids: ["a1", "b_2-c"] };
    expect(decodeDmContent(encodeContent(r))).toEqual(r);
    const t = { t: "text" as const, id: "x", ts: 1, text: "hi" };
    expect(decodeDmContent(encodeContent(t))).toEqual(t);
  });

  it("is malformed inside a group message", () => {
    expect(code(() => decodeContent(encodeContent({ t: "receipt", ids: ["a"] })))).toBe(
      "malformed",
    );
  });

  it("refuses empty, oversized, badly named or extended receipts", () => {
    const many = Array.from({ length: MAX_RECEIPT_IDS + 1 }, (_, i) => `m${i}`);
    for (const bad of [
      { t: "receipt", ids: [] },
      { t: "receipt", ids: many },
      { t: "receipt", ids: ["no spaces"] },
      { t: "receipt", ids: ["x".repeat(65)] },
      { t: "receipt", ids: ["a"], by: "relay" },
      { t: "receipt" },
    ]) {
      expect(code(() => decodeDmContent(raw(bad)))).toBe("malformed");
    }
    expect(code(() => decodeDmContent(raw({ t: "receipt", ids: many.slice(1) })))).toBeNull();
  });
});
