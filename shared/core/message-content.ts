/**
 * The everyday-messaging content types (PROTOCOL.md §8.6.1): replies and disappearing timers on
 * `text`, and `react`, `edit`, `delete`, `timer`, `typing` (1:1 and groups) and `read` (1:1
 * only). Schemas only; content.ts puts them in the one parse of decrypted content, and
 * messages.ts decides what each does to stored history.
 */
import * as v from "valibot";
import { Name } from "../protocol";

/** A client message id (§8.6): 1–64 base64url characters. */
export const ContentId = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(64),
  v.regex(/^[A-Za-z0-9_-]+$/),
);

const Ms = v.pipe(v.number(), v.integer(), v.minValue(0));

/** Shortest and longest disappearing timer a client accepts (§8.6.1). */
export const DISAPPEAR_MIN_MS = 5_000;
export const DISAPPEAR_MAX_MS = 365 * 24 * 3_600_000;
/** A reaction is one emoji (a ZWJ sequence can be long): at most this many UTF-16 units. */
export const MAX_REACTION_CHARS = 32;
/** Ids named by one `read` content at most (§8.6.1). */
export const MAX_READ_IDS = 100;
/** `delete` for everyone is honoured by receivers within this long of the message's arrival. */
export const DELETE_WINDOW_MS = 24 * 3_600_000;
/** Content types this client cannot read are shown as "unsupported"; their `t` is kept, bounded. */
export const MAX_CONTENT_TYPE_CHARS = 32;

/** A disappearing timer in ms: `DISAPPEAR_MIN_MS` … `DISAPPEAR_MAX_MS`. */
export const DisappearMs = v.pipe(Ms, v.minValue(DISAPPEAR_MIN_MS), v.maxValue(DISAPPEAR_MAX_MS));

/**
 * A message named by another content: its author and its id. Message ids are chosen by their
 * sender, so only the pair names one message (PROTOCOL.md §12.3).
 */
export const MessageRef = v.strictObject({ id: ContentId, from: Name });
export type MessageRef = v.InferOutput<typeof MessageRef>;

/** Optional fields of `text` (§8.6.1): the message it replies to, and its disappearing timer. */
export const TEXT_EXTRAS = {
  reply: v.optional(MessageRef),
  exp: v.optional(DisappearMs),
} as const;

const base = { id: ContentId, ts: Ms } as const;

/** `react`: set (or with `emoji: ""` remove) the sender's one reaction to a message. */
export const ReactSchema = v.strictObject({
  t: v.literal("react"),
  ...base,
  target: MessageRef,
  emoji: v.pipe(v.string(), v.maxLength(MAX_REACTION_CHARS)),
});

/** `edit`: new text for the sender's own message `target` (author = the authenticated sender). */
export const EditSchema = (maxChars: number) =>
  v.strictObject({
    t: v.literal("edit"),
    ...base,
    target: ContentId,
    text: v.pipe(v.string(), v.maxLength(maxChars)),
  });

/** `delete`: delete the sender's own message `target` for everyone. */
export const DeleteSchema = v.strictObject({ t: v.literal("delete"), ...base, target: ContentId });

/** `timer`: the conversation's disappearing timer from now on; 0 turns it off. */
export const TimerSchema = v.strictObject({
  t: v.literal("timer"),
  ...base,
  ms: v.union([v.literal(0), DisappearMs]),
});

/** `typing`: the sender started (`on`) or stopped typing. Never stored, never receipted. */
export const TypingSchema = v.strictObject({ t: v.literal("typing"), on: v.boolean() });

/** `read` (1:1 only): the sender has seen these messages of ours. Never receipted. */
export const ReadSchema = v.strictObject({
  t: v.literal("read"),
  ids: v.pipe(v.array(ContentId), v.minLength(1), v.maxLength(MAX_READ_IDS)),
});

export type ReactContent = v.InferOutput<typeof ReactSchema>;
export type EditContent = v.InferOutput<ReturnType<typeof EditSchema>>;
export type DeleteContent = v.InferOutput<typeof DeleteSchema>;
export type TimerContent = v.InferOutput<typeof TimerSchema>;
export type TypingContent = v.InferOutput<typeof TypingSchema>;
export type ReadContent = v.InferOutput<typeof ReadSchema>;

/**
 * A content of a type this client does not know, from a newer one (§8.6.1): shown as
 * "unsupported message", never a failure. Produced by the parser only, never sent.
 */
export interface UnsupportedContent {
  t: "unsupported";
  /** The unknown type, as sent (bounded by MAX_CONTENT_TYPE_CHARS). */
  type: string;
  /** Its id, when it had a valid one. */
  id?: string;
  ts?: number;
}

/**
 * Every `t` this client reads. A content whose `t` is a string outside this set (and
 * `[a-z0-9_]`, bounded) is unsupported; one with a known `t` that fails its schema is malformed.
 */
export const KNOWN_CONTENT_TYPES: ReadonlySet<string> = new Set([
  "text",
  "receipt",
  "retry",
  "react",
  "edit",
  "delete",
  "timer",
  "typing",
  "read",
  "sync",
  "devices",
]);

/** Recognise a newer client's content (§8.6.1) in a parsed JSON value that failed the schemas. */
export function unsupportedOf(obj: unknown): UnsupportedContent | null {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) return null;
  const rec = obj as Record<string, unknown>;
  const t = rec.t;
  if (typeof t !== "string" || KNOWN_CONTENT_TYPES.has(t)) return null;
  if (t.length === 0 || t.length > MAX_CONTENT_TYPE_CHARS || !/^[a-z0-9_]+$/.test(t)) return null;
  const out: UnsupportedContent = { t: "unsupported", type: t };
  if (v.is(ContentId, rec.id)) out.id = rec.id;
  if (v.is(Ms, rec.ts)) out.ts = rec.ts;
  return out;
}
