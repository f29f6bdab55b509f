/**
 * Application content carried inside every encrypted 1:1 and group message (PROTOCOL.md §8.6):
 * UTF-8 JSON, parsed with a strict schema after decryption (the peer is authenticated but may
 * still be buggy or hostile), then padded (padding.ts) before encryption.
 */
import * as v from "valibot";
import { fromUtf8, utf8 } from "../encoding";
import { CoreError, malformed } from "./errors";
import {
  ContentId,
  DeleteSchema,
  EditSchema,
  ReactSchema,
  ReadSchema,
  TEXT_EXTRAS,
  TimerSchema,
  TypingSchema,
  type UnsupportedContent,
  unsupportedOf,
} from "./message-content";
import { pad, unpad } from "./padding";

export const MAX_TEXT_CHARS = 16_000;
/** Message ids acknowledged by one receipt content at most (§8.6); more go in several receipts. */
export const MAX_RECEIPT_IDS = 100;

/**
 * An invitation to a closed group (§9.7.3), attached to a 1:1 text whose `text` says it in words
 * (what an app that does not know invitations shows): the group, its title when invited, and the
 * inviter's signed add (base64url) that the invitee's `join` carries.
 */
export const InviteSchema = v.strictObject({
  group: v.pipe(v.string(), v.minLength(1), v.maxLength(32), v.regex(/^[a-z0-9][a-z0-9_-]*$/)),
  title: v.pipe(v.string(), v.maxLength(128)),
  auth: v.pipe(v.string(), v.minLength(2), v.maxLength(256), v.regex(/^[A-Za-z0-9_-]+$/)),
  expiry: v.pipe(v.number(), v.integer(), v.minValue(0)),
});
export type Invite = v.InferOutput<typeof InviteSchema>;

const TextSchema = v.strictObject({
  t: v.literal("text"),
  /** Client message id: random, base64url, for dedupe and receipts. */
  id: ContentId,
  /** Sender's clock, ms since the epoch. */
  ts: v.pipe(v.number(), v.integer(), v.minValue(0)),
  text: v.pipe(v.string(), v.maxLength(MAX_TEXT_CHARS)),
  ...TEXT_EXTRAS,
  /** 1:1 only: a closed-group invitation (§9.7.3); `malformed` inside a group message. */
  invite: v.optional(InviteSchema),
});

/** Everyday-messaging contents, in 1:1 and group messages alike (§8.6.1, message-content.ts). */
const MESSAGE_CONTENTS = [
  ReactSchema,
  EditSchema(MAX_TEXT_CHARS),
  DeleteSchema,
  TimerSchema,
  TypingSchema,
] as const;

/** What a group message carries (§9.5): text and the contents of §8.6.1 but `read`. */
export const Content = v.variant("t", [TextSchema, ...MESSAGE_CONTENTS]);
export type Content = v.InferOutput<typeof Content>;
export type TextContent = Extract<Content, { t: "text" }>;

/**
 * What a 1:1 message carries (§8.6): text, or an end-to-end delivery receipt — the ids of `text`
 * contents the receipt's sender decrypted, authenticated by the Double Ratchet unlike the relay's
 * `receipt` frame (§6). A receipt is never receipted, and is `malformed` inside a group message.
 */
export const DmContent = v.variant("t", [
  TextSchema,
  ...MESSAGE_CONTENTS,
  ReadSchema,
  v.strictObject({
    t: v.literal("receipt"),
    ids: v.pipe(v.array(ContentId), v.minLength(1), v.maxLength(MAX_RECEIPT_IDS)),
  }),
  /**
   * Session repair (§8.10): "I could not decrypt some of your messages; this session is new —
   * send again, on it, every text I have not receipted". Never receipted itself.
   */
  v.strictObject({ t: v.literal("retry") }),
]);
export type DmContent = v.InferOutput<typeof DmContent>;
/** What decrypting yields: a content of ours, or one of a newer client's types (§8.6.1). */
export type ReceivedContent = Content | UnsupportedContent;
export type ReceivedDmContent = DmContent | UnsupportedContent;

export function encodeContent(c: DmContent): Uint8Array {
  return pad(utf8(JSON.stringify(c)));
}

/**
 * Room for everything a body adds around the padded content: the largest envelope prefix (a
 * `message_kem` carrying an ML-KEM key and ciphertext, 2291 bytes, §8.1), the ratchet header or
 * group sender fields, the signature and the tag (PROTOCOL.md §7.1).
 */
const BODY_OVERHEAD_BYTES = 2560;

/**
 * Refuse, before anything is encrypted, a text the wire could not carry (§8.6): longer than
 * MAX_TEXT_CHARS (UTF-16 units, as the schema counts), or one whose encoding (JSON escapes of
 * control characters grow 6×) would make a body over `maxBodyChars`. Nothing over the limit may
 * reach the outbox, where it would be refused by the relay or by our own frame parser.
 */
export function checkTextFits(
  c: TextContent | Extract<Content, { t: "edit" }>,
  maxBodyChars: number,
): void {
  if (c.text.length > MAX_TEXT_CHARS) {
    throw new CoreError(
      "too_long",
      `message is ${c.text.length} characters; the limit is ${MAX_TEXT_CHARS}`,
    );
  }
  const bytes = encodeContent(c).length + BODY_OVERHEAD_BYTES;
  if (Math.ceil(bytes / 3) * 4 > maxBodyChars) {
    throw new CoreError("too_long", "message is too large once encoded; split it");
  }
}

/**
 * The one parse of decrypted content. A value failing the schema is `malformed` unless it is an
 * object whose `t` this client does not know: a newer client's content, returned as
 * `unsupported` so it shows as "unsupported message" instead of failing (§8.6.1).
 */
function parseContent<T>(
  schema: v.GenericSchema<unknown, T>,
  padded: Uint8Array,
): T | UnsupportedContent {
  let obj: unknown;
  try {
    obj = JSON.parse(fromUtf8(unpad(padded)));
  } catch {
    throw malformed("content");
  }
  const r = v.safeParse(schema, obj);
  if (r.success) return r.output;
  const unknown = unsupportedOf(obj);
  if (unknown !== null) return unknown;
  throw malformed("content");
}

/** Group message content (§9.5): an invitation only ever travels 1:1 (§9.7.3). */
export function decodeContent(padded: Uint8Array): ReceivedContent {
  const c = parseContent(Content, padded);
  if (c.t === "text" && c.invite !== undefined) throw malformed("content");
  return c;
}

/** 1:1 message content (§8.6). */
export function decodeDmContent(padded: Uint8Array): ReceivedDmContent {
  return parseContent(DmContent, padded);
}
