/**
 * What the everyday-messaging contents (PROTOCOL.md §8.6.1) do to stored history, as pure
 * functions: edits, deletes, reactions, replies, the disappearing timer and expiry. The relay
 * and other group members are hostile, so every decision is made here on receipt: a message is
 * named by (author, id), and only its author — the authenticated sender of the edit or delete —
 * can change it.
 */
import { DELETE_WINDOW_MS, type MessageRef } from "./message-content";

/** Earlier versions of an edited message kept at most (oldest dropped first). */
export const MAX_EDIT_VERSIONS = 20;

export interface Reaction {
  from: string;
  emoji: string;
}

/** The fields of a stored message these decisions read and write (the PWA's history entry). */
export interface StoredMessage {
  kind: "msg";
  id: string;
  from: string;
  direction: "in" | "out";
  text: string;
  sentAt: number;
  /** Our clock when it arrived (in) or was written (out), ms. */
  at: number;
  reply?: MessageRef;
  /** Disappearing timer, ms: the message is removed `exp` after `at`. */
  exp?: number;
  /** Earlier versions of an edited message, oldest first. */
  edits?: { text: string; at: number }[];
  /** When it was last edited (our clock). */
  editedAt?: number;
  /** Deleted for everyone by its author: no text, no reactions, no versions kept. */
  deleted?: boolean;
  reactions?: Reaction[];
}

/** A system line recording a timer change (the PWA's `sys` entry of kind "timer"). */
export interface TimerLine {
  kind: "sys";
  sysKind: string;
  ms?: number;
  at: number;
}

export type Refusal =
  /** No message with that id (never arrived, expired, or deleted for me). */
  | "not_found"
  /** The message named is someone else's: only its author may edit or delete it. */
  | "not_author"
  /** It was deleted for everyone: nothing more changes it. */
  | "deleted"
  /** Delete for everyone arrived after the window (DELETE_WINDOW_MS of its arrival). */
  | "too_late";

export type Applied<T> = { ok: true; entry: T; index: number } | { ok: false; reason: Refusal };

type Entry = { kind: string; id: string };
const isMsg = <T extends Entry>(e: T): e is T & StoredMessage => e.kind === "msg";

/** The message `ref` names: same author and id. Index into `entries`, or -1. */
export function findMessage(entries: readonly Entry[], ref: MessageRef): number {
  return entries.findIndex((e) => isMsg(e) && e.id === ref.id && e.from === ref.from);
}

/**
 * The author's own message `target`, for an edit or delete sent by `by`. A sender can only name
 * its own messages (lookup by (by, id)); an id that exists only as another sender's message is
 * refused as `not_author`, never applied to it.
 */
function ownTarget<T extends Entry>(
  entries: readonly T[],
  by: string,
  target: string,
): { ok: true; entry: T & StoredMessage; index: number } | { ok: false; reason: Refusal } {
  const index = findMessage(entries, { id: target, from: by });
  if (index < 0) {
    const other = entries.some((e) => isMsg(e) && e.id === target);
    return { ok: false, reason: other ? "not_author" : "not_found" };
  }
  const entry = entries[index] as T & StoredMessage;
  if (entry.deleted === true) return { ok: false, reason: "deleted" };
  return { ok: true, entry, index };
}

/** Apply `by`'s edit of its message `target` (§8.6.1): the old text joins the versions. */
export function applyEdit<T extends Entry>(
  entries: readonly T[],
  edit: { by: string; target: string; text: string; at: number },
): Applied<T & StoredMessage> {
  const t = ownTarget(entries, edit.by, edit.target);
  if (!t.ok) return t;
  const versions = [
    ...(t.entry.edits ?? []),
    { text: t.entry.text, at: t.entry.editedAt ?? t.entry.at },
  ];
  const entry = {
    ...t.entry,
    text: edit.text,
    editedAt: edit.at,
    edits: versions.slice(-MAX_EDIT_VERSIONS),
  };
  return { ok: true, entry, index: t.index };
}

/**
 * Apply `by`'s delete for everyone of its message `target` (§8.6.1), at our time `now`: refused
 * past DELETE_WINDOW_MS after the message reached us (our clock, so a sender cannot backdate it).
 * What is left is a tombstone: text, versions, reactions and any attached file's reference (and
 * with it the file's key) are gone.
 */
export function applyDelete<T extends Entry>(
  entries: readonly T[],
  del: { by: string; target: string },
  now: number,
): Applied<T & StoredMessage> {
  const t = ownTarget(entries, del.by, del.target);
  if (!t.ok) return t;
  if (now - t.entry.at > DELETE_WINDOW_MS) return { ok: false, reason: "too_late" };
  // The file reference goes too: its key is what makes the blob readable (§8.6.1).
  const {
    edits: _e,
    editedAt: _a,
    reactions: _r,
    reply: _q,
    file: _f,
    ...rest
  } = t.entry as T & StoredMessage & { file?: unknown };
  const entry = { ...rest, text: "", deleted: true } as T & StoredMessage;
  return { ok: true, entry, index: t.index };
}

/** Can we still delete our message `m` for everyone at `now`? (The receivers decide, above.) */
export function canDeleteForEveryone(m: StoredMessage, now: number): boolean {
  return m.direction === "out" && m.deleted !== true && now - m.at <= DELETE_WINDOW_MS;
}

/** Set (or, with an empty emoji, remove) `by`'s one reaction to the message `target`. */
export function applyReaction<T extends Entry>(
  entries: readonly T[],
  r: { by: string; target: MessageRef; emoji: string },
): Applied<T & StoredMessage> {
  const index = findMessage(entries, r.target);
  if (index < 0) return { ok: false, reason: "not_found" };
  const m = entries[index] as T & StoredMessage;
  if (m.deleted === true) return { ok: false, reason: "deleted" };
  const others = (m.reactions ?? []).filter((x) => x.from !== r.by);
  const reactions = r.emoji === "" ? others : [...others, { from: r.by, emoji: r.emoji }];
  const { reactions: _old, ...rest } = m;
  const entry = (reactions.length > 0 ? { ...rest, reactions } : rest) as T & StoredMessage;
  return { ok: true, entry, index };
}

/** Reactions grouped for display: emoji, who, in first-seen order. */
export function reactionSummary(m: StoredMessage): { emoji: string; from: string[] }[] {
  const out = new Map<string, string[]>();
  for (const r of m.reactions ?? []) out.set(r.emoji, [...(out.get(r.emoji) ?? []), r.from]);
  return [...out].map(([emoji, from]) => ({ emoji, from }));
}

// ---------------------------------------------------------------------------------------------
// Disappearing messages (§8.6.1)

/** When `m` disappears (ms, our clock), or undefined if it does not. */
export function expiresAt(m: Pick<StoredMessage, "at" | "exp">): number | undefined {
  return m.exp === undefined ? undefined : m.at + m.exp;
}

/**
 * Split history into what stays and what has expired at `now`. Every device runs this on what
 * it stores: an expired message is removed whole (text, versions, reactions, and any key to an
 * attachment inside it), not hidden.
 */
export function sweepExpired<T extends Entry>(
  entries: readonly T[],
  now: number,
): { kept: T[]; expired: T[] } {
  const kept: T[] = [];
  const expired: T[] = [];
  for (const e of entries) {
    const at = isMsg(e) ? expiresAt(e) : undefined;
    if (at !== undefined && at <= now) expired.push(e);
    else kept.push(e);
  }
  return { kept, expired };
}

/** The earliest expiry still ahead in `entries`, to set the next sweep. */
export function nextExpiry(entries: readonly Entry[]): number | undefined {
  let next: number | undefined;
  for (const e of entries) {
    const at = isMsg(e) ? expiresAt(e) : undefined;
    if (at !== undefined && (next === undefined || at < next)) next = at;
  }
  return next;
}

/** The conversation's timer: the last timer line's, or 0 (off). */
export function currentTimer(entries: readonly Entry[]): number {
  for (let i = entries.length - 1; i >= 0; i--) {
    const e = entries[i] as Entry & Partial<TimerLine>;
    if (e?.kind === "sys" && e.sysKind === "timer") return e.ms ?? 0;
  }
  return 0;
}

/** "30 seconds", "5 minutes", "1 hour", "1 day", "4 weeks". */
export function formatDuration(ms: number): string {
  const units: [number, string][] = [
    [7 * 86_400_000, "week"],
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
    [1000, "second"],
  ];
  for (const [size, name] of units) {
    if (ms >= size && ms % size === 0) {
      const n = ms / size;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  const s = Math.round(ms / 1000);
  return `${s} second${s === 1 ? "" : "s"}`;
}

/** The system line for a timer change by `who` (null: us). */
export function timerLineText(who: string | null, ms: number): string {
  const subject = who === null ? "You" : who;
  return ms === 0
    ? `${subject} turned off disappearing messages`
    : `${subject} set messages to disappear after ${formatDuration(ms)}`;
}
