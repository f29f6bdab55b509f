/**
 * The composer's over-long text splitter (pwa/src/state/split.ts): every part fits the engine's
 * MAX_TEXT_CHARS, nothing but whitespace at a cut is lost, parts come in order, cuts prefer
 * paragraph / line / sentence / word boundaries, and never split a surrogate pair.
 */
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { lengthNote, MAX_TEXT_CHARS, splitText } from "../../pwa/src/state/split";

const noSpace = (s: string) => s.replace(/\s/g, "");
const loneHighAtEnd = /[\uD800-\uDBFF]$/;
const loneLowAtStart = /^[\uDC00-\uDFFF]/;

describe("splitText", () => {
  test("the limit is the engine's", () => {
    expect(MAX_TEXT_CHARS).toBe(16_000);
  });

  test("short text is one part, trailing whitespace dropped", () => {
    expect(splitText("hello  \n")).toEqual([{ text: "hello", start: 0, end: 5 }]);
    expect(splitText("   ")).toEqual([]);
  });

  test("cuts at a paragraph break before a line, a sentence or a word", () => {
    const p1 = `${"a".repeat(60)}. ${"b".repeat(20)}`;
    const p2 = "c".repeat(10);
    expect(splitText(`${p1}\n\n${p2} and more words here`, 100).map((p) => p.text)).toEqual([
      p1,
      `${p2} and more words here`,
    ]);
    // No paragraph in reach: the last sentence end in the second half of the window.
    const sentences = `${"x".repeat(50)}. ${"y".repeat(30)}! ${"z".repeat(40)}`;
    expect(splitText(sentences, 100).map((p) => p.text)).toEqual([
      `${"x".repeat(50)}. ${"y".repeat(30)}!`,
      "z".repeat(40),
    ]);
    // Only spaces: the last one that fits.
    const words = Array.from({ length: 30 }, (_, i) => `w${i}`).join(" ");
    const parts = splitText(words, 20).map((p) => p.text);
    expect(parts[0]).toBe("w0 w1 w2 w3 w4 w5 w6");
    expect(parts.join(" ")).toBe(words);
  });

  test("a hard cut never splits a surrogate pair", () => {
    const emoji = "😀".repeat(10); // 20 UTF-16 units, no boundary anywhere
    const parts = splitText(emoji, 5);
    for (const p of parts) {
      expect(p.text.length).toBeLessThanOrEqual(5);
      expect(p.text).not.toMatch(loneHighAtEnd);
      expect(p.text).not.toMatch(loneLowAtStart);
    }
    expect(parts.map((p) => p.text).join("")).toBe(emoji);
  });

  test("100 KB of prose: 7 parts within the limit, in order, nothing lost", () => {
    const para = `${"Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(30)}\n\n`;
    let text = "";
    while (text.length < 100_000) text += para;
    const parts = splitText(text);
    expect(parts).toHaveLength(7);
    for (const p of parts) expect(p.text.length).toBeLessThanOrEqual(MAX_TEXT_CHARS);
    expect(noSpace(parts.map((p) => p.text).join(""))).toBe(noSpace(text));
    expect(lengthNote(text)).toEqual({
      over: true,
      text: `${text.trimEnd().length.toLocaleString("en-US")} characters — the limit is 16,000.`,
      parts: 7,
    });
  });

  test("property: parts fit, keep order and content, offsets point into the text", () => {
    const unit = fc.oneof(
      fc.constantFrom(" ", "\n", "\n\n", ". ", "! ", "😀", "é", "\t"),
      fc.string({ minLength: 1, maxLength: 8 }),
    );
    fc.assert(
      fc.property(
        fc.array(unit, { maxLength: 200 }),
        fc.integer({ min: 2, max: 60 }),
        (us, max) => {
          const text = us.join("");
          const parts = splitText(text, max);
          let last = -1;
          for (const p of parts) {
            expect(p.text.length).toBeGreaterThan(0);
            expect(p.text.length).toBeLessThanOrEqual(max);
            expect(p.text).not.toMatch(loneHighAtEnd);
            expect(p.start).toBeGreaterThan(last);
            expect(text.slice(p.start, p.end).trimEnd()).toBe(p.text);
            last = p.start;
          }
          // Only whitespace may be dropped, and only at the cuts.
          expect(noSpace(parts.map((p) => p.text).join(""))).toBe(noSpace(text));
        },
      ),
      { numRuns: 400 },
    );
  });

  test("the length note appears near the limit, and says why sending stops over it", () => {
    expect(lengthNote("a".repeat(14_000))).toBeNull();
    expect(lengthNote("a".repeat(15_000))).toEqual({
      over: false,
      text: "15,000 / 16,000",
      parts: 1,
    });
    expect(lengthNote("a".repeat(16_000))?.over).toBe(false);
    expect(lengthNote("a".repeat(16_001))).toMatchObject({
      over: true,
      text: "16,001 characters — the limit is 16,000.",
      parts: 2,
    });
  });
});
