/**
 * Over-long text for the composer: the engine refuses message text longer than MAX_TEXT_CHARS
 * (shared/core/content.ts, counted in UTF-16 code units like `String.length`), so a longer text is
 * offered as several messages. Cuts prefer paragraph, then line, then sentence, then word
 * boundaries, and never fall inside a surrogate pair (which would send two broken characters).
 */
import { MAX_TEXT_CHARS } from "../../../shared/core/content";

export { MAX_TEXT_CHARS };

/** The text as the composer sends it: trailing whitespace is never part of a message. */
export function outgoingText(text: string): string {
  return text.replace(/\s+$/, "");
}

/** One part: `text` is `source.slice(start, end)` without the whitespace at the cut. */
export interface Part {
  text: string;
  start: number;
  end: number;
}

const isHigh = (c: number) => c >= 0xd800 && c <= 0xdbff;

/** Boundaries in order of preference: paragraph, line, sentence end, any whitespace. */
const BOUNDARIES: readonly RegExp[] = [/\n\s*\n/g, /\n/g, /[.!?…。！？]["'’”)\]]*\s/g, /\s/g];

/** Where to cut `s` (from `from`) so the part is at most `max` long; > from always. */
function cutPoint(s: string, from: number, max: number): number {
  const limit = from + max;
  if (limit >= s.length) return s.length;
  const window = s.slice(from, limit + 1);
  // A boundary only counts if the part keeps at least half the room: otherwise a paragraph
  // break near the start would make many tiny messages.
  const half = Math.floor(max / 2);
  for (const re of BOUNDARIES) {
    let best = -1;
    for (const m of window.matchAll(re)) {
      // The cut goes before the boundary's whitespace (a sentence keeps its punctuation).
      const at = (m.index ?? 0) + m[0].trimEnd().length;
      if (at <= max && at >= half) best = at;
    }
    if (best > 0) return from + best;
  }
  // No boundary in reach: a hard cut, moved back one unit rather than split a surrogate pair.
  return isHigh(s.charCodeAt(limit - 1)) ? limit - 1 : limit;
}

/** Split `text` into parts of at most `max` UTF-16 units, in order, none empty. */
export function splitText(text: string, max: number = MAX_TEXT_CHARS): Part[] {
  if (max < 2) throw new RangeError("max must be at least 2");
  const s = outgoingText(text);
  const parts: Part[] = [];
  let i = 0;
  while (i < s.length) {
    // Whitespace left at a cut belongs to neither part.
    while (i < s.length && /\s/.test(s.charAt(i))) i++;
    if (i >= s.length) break;
    const end = cutPoint(s, i, max);
    const piece = s.slice(i, end).replace(/\s+$/, "");
    if (piece.length > 0) parts.push({ text: piece, start: i, end });
    i = end;
  }
  return parts;
}

/** What the composer says about the length of `text`; null while far from the limit. */
export function lengthNote(
  text: string,
  max: number = MAX_TEXT_CHARS,
): { over: boolean; text: string; parts: number } | null {
  const n = outgoingText(text).length;
  const fmt = (x: number) => x.toLocaleString("en-US");
  if (n > max) {
    return {
      over: true,
      text: `${fmt(n)} characters — the limit is ${fmt(max)}.`,
      parts: splitText(text, max).length,
    };
  }
  if (n >= max * 0.9) return { over: false, text: `${fmt(n)} / ${fmt(max)}`, parts: 1 };
  return null;
}
