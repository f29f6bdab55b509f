/**
 * Application content carried inside every encrypted 1:1 and group message (PROTOCOL.md §8.6):
 * UTF-8 JSON, parsed with a strict schema after decryption (the peer is authenticated but may
 * still be buggy or hostile), then padded (padding.ts) before encryption.
 */
import * as v from "valibot";
import { fromUtf8, utf8 } from "../encoding";
import { malformed } from "./errors";
import { pad, unpad } from "./padding";

export const MAX_TEXT_CHARS = 16_000;

export const Content = v.variant("t", [
  v.strictObject({
    t: v.literal("text"),
    /** Client message id: random, base64url, for dedupe and receipts. */
    id: v.pipe(v.string(), v.minLength(1), v.maxLength(64), v.regex(/^[A-Za-z0-9_-]+$/)),
    /** Sender's clock, ms since the epoch. */
    ts: v.pipe(v.number(), v.integer(), v.minValue(0)),
    text: v.pipe(v.string(), v.maxLength(MAX_TEXT_CHARS)),
  }),
]);
export type Content = v.InferOutput<typeof Content>;

export function encodeContent(c: Content): Uint8Array {
  return pad(utf8(JSON.stringify(c)));
}

export function decodeContent(padded: Uint8Array): Content {
  let obj: unknown;
  try {
    obj = JSON.parse(fromUtf8(unpad(padded)));
  } catch {
    throw malformed("content");
  }
  const r = v.safeParse(Content, obj);
  if (!r.success) throw malformed("content");
  return r.output;
}
