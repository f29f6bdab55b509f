/**
 * Application content carried inside every encrypted 1:1 and group message (PROTOCOL.md §8.6):
 * UTF-8 JSON, parsed with a strict schema after decryption (the peer is authenticated but may
 * still be buggy or hostile), then padded (padding.ts) before encryption.
 */
import * as v from "valibot";
import { fromUtf8, utf8 } from "../encoding";
import { b64Bytes, b64Max, DeviceList, Name } from "../protocol";
import { CoreError, malformed } from "./errors";
import {
  ContentId,
  DeleteSchema,
  EditSchema,
  type MessageRef as MessageRefT,
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

/** Largest attachment a client sends (§8.6.1): 100 MiB of plaintext. */
export const MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024;
/** Largest inline thumbnail (§8.6.1), in base64url characters (12 KiB of image bytes). */
export const MAX_THUMB_CHARS = 16_384;
export const MAX_FILE_NAME_CHARS = 255;

/**
 * What a message says about one attachment (§8.6.1): where the ciphertext is (`blob`, the
 * relay's unguessable id), the fresh key it was chunk-encrypted under (§3.12), the SHA-256 of
 * the whole ciphertext, and what the file is. All of it travels only inside the end-to-end
 * encrypted content; the relay sees the blob's size and timing, nothing else.
 */
export const FileRef = v.strictObject({
  blob: b64Bytes(32),
  key: b64Bytes(32),
  digest: b64Bytes(32),
  /** Plaintext bytes. */
  size: v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(MAX_ATTACHMENT_BYTES)),
  /** MIME type as the sender's system named it: a hint for display, never trusted to execute. */
  type: v.pipe(v.string(), v.maxLength(127), v.regex(/^(?:[\w.+-]+\/[\w.+-]+)?$/)),
  /** File name without any path; control characters and separators are refused. */
  name: v.pipe(
    v.string(),
    v.minLength(1),
    v.maxLength(MAX_FILE_NAME_CHARS),
    v.check((n) => !/[/\\]/.test(n) && ![...n].some(isControl), "control character or separator"),
  ),
  /** A small preview image (JPEG or WebP bytes), for images only. */
  thumb: v.optional(b64Max(MAX_THUMB_CHARS)),
  width: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65_535))),
  height: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(65_535))),
});
export type FileRef = v.InferOutput<typeof FileRef>;

/** C0 controls and DEL: never part of a name shown or saved (§8.6.1). */
function isControl(ch: string): boolean {
  const c = ch.codePointAt(0) ?? 0;
  return c < 0x20 || c === 0x7f;
}

/** An attachment with an optional caption (§8.6.1); receipted like a text. */
const FileSchema = v.strictObject({
  t: v.literal("file"),
  id: ContentId,
  ts: v.pipe(v.number(), v.integer(), v.minValue(0)),
  text: v.pipe(v.string(), v.maxLength(MAX_TEXT_CHARS)),
  file: FileRef,
  ...TEXT_EXTRAS,
});

/** Everyday-messaging contents, in 1:1 and group messages alike (§8.6.1, message-content.ts). */
const MESSAGE_CONTENTS = [
  ReactSchema,
  EditSchema(MAX_TEXT_CHARS),
  DeleteSchema,
  TimerSchema,
  TypingSchema,
] as const;

/**
 * What a group message carries (§9.5): a text, a file (encrypted once for all members) and the
 * contents of §8.6.1 but `read`.
 */
export const Content = v.variant("t", [TextSchema, FileSchema, ...MESSAGE_CONTENTS]);
export type Content = v.InferOutput<typeof Content>;
/** A message a person wrote (a text, or a file with its caption): queued, sent, receipted, shown. */
export type TextContent = Extract<Content, { t: "text" | "file" }>;

/**
 * A copy for one's own other devices (sent-sync, §4.9): what this device sent to `peer` (text,
 * file, react, edit, delete, timer), shown there as sent by us, or `read` — which of `peer`'s
 * messages we have seen. Typing, receipts and repair belong to one pairwise session and are
 * never copied; a copy is never copied again. Only our own devices may send it (§4.9
 * `classifyIncoming`).
 */
export const SyncSchema = v.strictObject({
  t: v.literal("sync"),
  peer: Name,
  /**
   * Our read state in a group (§4.9): the copy belongs to that group's conversation, `peer` is
   * then our own username and `c` a `read`. Groups have no read receipts: only our devices hear.
   */
  group: v.optional(Name),
  c: v.variant("t", [
    TextSchema,
    FileSchema,
    ReactSchema,
    EditSchema(MAX_TEXT_CHARS),
    DeleteSchema,
    TimerSchema,
    ReadSchema,
  ]),
});
export type SyncContent = v.InferOutput<typeof SyncSchema>;

/**
 * What a 1:1 message carries (§8.6): text, or an end-to-end delivery receipt — the ids of `text`
 * contents the receipt's sender decrypted, authenticated by the Double Ratchet unlike the relay's
 * `receipt` frame (§6). A receipt is never receipted, and is `malformed` inside a group message.
 */
export const DmContent = v.variant("t", [
  TextSchema,
  FileSchema,
  ...MESSAGE_CONTENTS,
  ReadSchema,
  SyncSchema,
  /**
   * Our device list, signed by our identity key (§4.6), carried end to end to a contact when it
   * changes (§4.9), so the contact encrypts to the devices it names — and stops encrypting to a
   * removed one — without waiting for the relay to show it the list.
   */
  v.strictObject({ t: v.literal("devices"), list: DeviceList }),
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

/**
 * A written message as the engine keeps it (queue, sent list): text, the file if any, and the
 * optional fields of §8.6.1 (reply, disappearing timer) and §9.7.3 (an invitation, texts only).
 */
export interface Written {
  id: string;
  ts: number;
  text: string;
  file?: FileRef | undefined;
  reply?: MessageRefT | undefined;
  exp?: number | undefined;
  invite?: Invite | undefined;
}

/** The content that carries a written message: `file` when it has one, else `text` (§8.6). */
export function contentOf(w: Written): TextContent {
  const extras = {
    ...(w.reply !== undefined ? { reply: w.reply } : {}),
    ...(w.exp !== undefined ? { exp: w.exp } : {}),
  };
  if (w.file !== undefined) {
    return { t: "file", id: w.id, ts: w.ts, text: w.text, file: w.file, ...extras };
  }
  return {
    t: "text",
    id: w.id,
    ts: w.ts,
    text: w.text,
    ...extras,
    ...(w.invite !== undefined ? { invite: w.invite } : {}),
  };
}

/** The written message a content carries (inverse of contentOf). */
export function writtenOf(c: TextContent): Written {
  return {
    id: c.id,
    ts: c.ts,
    text: c.text,
    ...(c.t === "file" ? { file: c.file } : {}),
    ...(c.reply !== undefined ? { reply: c.reply } : {}),
    ...(c.exp !== undefined ? { exp: c.exp } : {}),
    ...(c.t === "text" && c.invite !== undefined ? { invite: c.invite } : {}),
  };
}

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
