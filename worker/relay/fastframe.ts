/**
 * A fast path for parsing the three frames that dominate a busy hub, `send`, `group_send` and
 * `ack` (PROTOCOL.md §5): plain checks instead of the generic schema walk of `parseClientFrame`,
 * which was the largest remaining share of the relay's CPU per group message once storage
 * was out of the delivery path, and 14% of a 1:1 delivery's (docs/PERFORMANCE.md). And one for
 * the frame that dominates between objects on users' routes: a group message's `deliver`, which
 * a group's home hands each member's object (fastGroupDeliver).
 *
 * It only ever *accepts*: for anything it is not sure of (another type, an extra key, a bound
 * crossed, bytes instead of text, …) it returns null and the caller uses `parseClientFrame`, the
 * reference, which also produces the right error. What it accepts, the reference accepts too,
 * with an equal result: test/workers/relay-fastframe.test.ts checks both on known cases and on
 * generated frames (valid ones and near misses).
 */
import {
  CLIENT_ID_RE,
  type ClientFrame,
  DEVICE_ID_BYTES,
  type FrameOf,
  hasDuplicateKeys,
  LIMITS,
  MEMBER_RE,
  NAME_RE,
  type ParseResult,
  PUBLIC_KEY_BYTES,
  parseClientFrame,
  type ServerFrame,
} from "../../shared/protocol";

const MID_RE = /^[0-9]{1,16}$/;
const B64U_RE = /^[A-Za-z0-9_-]*$/;

function b64uValue(c: number): number {
  if (c >= 65 && c <= 90) return c - 65; // A-Z
  if (c >= 97 && c <= 122) return c - 71; // a-z
  if (c >= 48 && c <= 57) return c + 4; // 0-9
  return c === 45 ? 62 : 63; // - or _ (the regex admitted nothing else)
}

/** Canonical base64url (encoding.ts fromB64u accepts it), without decoding it. */
function isCanonicalB64u(s: string): boolean {
  const rem = s.length % 4;
  if (rem === 1 || !B64U_RE.test(s)) return false;
  if (rem === 0) return true;
  // The bits after the last whole byte (4 for 2 trailing characters, 2 for 3) must be zero.
  const last = b64uValue(s.charCodeAt(s.length - 1));
  return (last & (rem === 2 ? 0x0f : 0x03)) === 0;
}

function isName(x: unknown): x is string {
  return (
    typeof x === "string" && x.length >= 1 && x.length <= LIMITS.maxNameLength && NAME_RE.test(x)
  );
}

/** Exactly these own keys, no others (a strict object). */
function hasExactKeys(o: object, keys: readonly string[]): boolean {
  const own = Object.keys(o);
  if (own.length !== keys.length) return false;
  for (const k of keys) if (!Object.hasOwn(o, k)) return false;
  return true;
}

function isClientId(x: unknown): x is string {
  return (
    typeof x === "string" &&
    x.length >= 1 &&
    x.length <= LIMITS.maxClientIdLength &&
    CLIENT_ID_RE.test(x)
  );
}

function isBody(x: unknown): x is string {
  return (
    typeof x === "string" && x.length >= 2 && x.length <= LIMITS.maxBodyChars && isCanonicalB64u(x)
  );
}

/** Base64url characters of a device id (protocol.ts `b64Bytes(DEVICE_ID_BYTES)`). */
const DEVICE_CHARS = Math.ceil((DEVICE_ID_BYTES * 4) / 3);

const GROUP_SEND_KEYS = ["v", "t", "id", "group", "epoch", "body"] as const;
const ACK_KEYS = ["v", "t", "mids"] as const;
const SEND_KEYS = ["v", "t", "id", "to", "body"] as const;
const SEND_DEVICE_KEYS = ["v", "t", "id", "to", "device", "body"] as const;

/** Strings in a parsed JSON value: its object keys and string values, at every depth. */
function stringsIn(x: unknown): number {
  if (typeof x === "string") return 1;
  if (typeof x !== "object" || x === null) return 0;
  let n = 0;
  if (Array.isArray(x)) for (const y of x) n += stringsIn(y);
  else for (const k in x) n += 1 + stringsIn((x as Record<string, unknown>)[k]);
  return n;
}

/**
 * No key given twice in `raw` (a frame has exactly one meaning, PROTOCOL.md §5), where `parsed` is
 * `JSON.parse(raw)`. With no backslash in the text every `"` opens or closes a string, and every
 * string is a key or a value; a repeated key is dropped from `parsed` with its value, so the
 * text then has more strings than `parsed` accounts for. Counting quotes is a few `indexOf`s,
 * where the general check (protocol.ts `hasDuplicateKeys`, used when there is a backslash) keeps
 * a set of keys per object.
 */
function noRepeatedKey(raw: string, parsed: Record<string, unknown>): boolean {
  if (raw.includes("\\")) return !hasDuplicateKeys(raw);
  let quotes = 0;
  for (let i = raw.indexOf('"'); i >= 0; i = raw.indexOf('"', i + 1)) quotes++;
  return quotes === 2 * stringsIn(parsed);
}

/**
 * `raw` as a JSON object, if it is short enough that its UTF-8 size is certainly within
 * maxFrameBytes and parses to an object; else null. Text only: bytes go to the reference.
 */
function objectOf(raw: string): Record<string, unknown> | null {
  if (raw.length * 3 > LIMITS.maxFrameBytes) return null;
  let o: unknown;
  try {
    o = JSON.parse(raw);
  } catch {
    return null;
  }
  return typeof o === "object" && o !== null && !Array.isArray(o)
    ? (o as Record<string, unknown>)
    : null;
}

/**
 * A client frame as `parseClientFrame` gives it, the hot frame types by the fast path first
 * (the same result, without the schema walk).
 */
export function parseClientFrameFast(raw: unknown): ParseResult<ClientFrame> {
  const fast = fastClientFrame(raw);
  return fast === null ? parseClientFrame(raw) : { ok: true, frame: fast };
}

/**
 * The frame if `raw` is a well-formed `send`, `group_send` or `ack`, else null (use
 * parseClientFrame).
 */
export function fastClientFrame(
  raw: unknown,
):
  | FrameOf<ClientFrame, "send">
  | FrameOf<ClientFrame, "group_send">
  | FrameOf<ClientFrame, "ack">
  | null {
  if (typeof raw !== "string") return null;
  const r = objectOf(raw);
  if (r === null || !noRepeatedKey(raw, r)) return null;
  if (r.v !== 1) return null;
  if (r.t === "send") {
    const { id, to, device, body } = r;
    if (!hasExactKeys(r, device === undefined ? SEND_KEYS : SEND_DEVICE_KEYS)) return null;
    if (!isClientId(id) || !isName(to) || !isBody(body)) return null;
    if (device === undefined) return { v: 1, t: "send", id, to, body };
    if (typeof device !== "string" || device.length !== DEVICE_CHARS) return null;
    if (!isCanonicalB64u(device)) return null;
    return { v: 1, t: "send", id, to, device, body };
  }
  if (r.t === "group_send") {
    if (!hasExactKeys(r, GROUP_SEND_KEYS)) return null;
    const { id, group, epoch, body } = r;
    if (!isClientId(id) || !isName(group) || !isBody(body)) return null;
    if (typeof epoch !== "number" || !Number.isSafeInteger(epoch) || epoch < 0) return null;
    if (Object.is(epoch, -0)) return null;
    return { v: 1, t: "group_send", id, group, epoch, body };
  }
  if (r.t === "ack") {
    if (!hasExactKeys(r, ACK_KEYS)) return null;
    const mids = r.mids;
    if (!Array.isArray(mids) || mids.length < 1 || mids.length > LIMITS.maxAckIds) return null;
    for (const m of mids) if (typeof m !== "string" || !MID_RE.test(m)) return null;
    return { v: 1, t: "ack", mids: [...(mids as string[])] };
  }
  return null;
}

function isNat(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0 && !Object.is(x, -0);
}

/** A group member's name (protocol.ts MemberName): a username, or a linked device's address. */
function isMember(x: unknown): x is string {
  if (typeof x !== "string" || x.length < 1 || x.length > LIMITS.maxNameLength + 23) return false;
  if (!MEMBER_RE.test(x)) return false;
  const dot = x.indexOf(".");
  return (dot < 0 ? x.length : dot) <= LIMITS.maxNameLength;
}

/** Base64url characters of a public key (protocol.ts `PublicKey`). */
const KEY_CHARS = Math.ceil((PUBLIC_KEY_BYTES * 4) / 3);

const DELIVER_KEYS = ["v", "t", "mid", "from", "fromKey", "ts", "item"] as const;
const GROUP_ITEM_KEYS = ["kind", "group", "epoch", "body"] as const;

/**
 * The frame if `raw` is a well-formed `deliver` of a group message, else null (use
 * parseServerFrame). A member's object takes one from its group's home for every group message
 * on users' routes (Hub.fromHome), where the generic parse was 17% of its CPU per message; the
 * same rules as fastClientFrame: it only ever accepts, and what it accepts the reference accepts
 * with an equal result (test/workers/relay-fastframe.test.ts).
 */
export function fastGroupDeliver(raw: unknown): FrameOf<ServerFrame, "deliver"> | null {
  if (typeof raw !== "string") return null;
  const r = objectOf(raw);
  if (r === null || r.v !== 1 || r.t !== "deliver" || !hasExactKeys(r, DELIVER_KEYS)) return null;
  const { mid, from, fromKey, ts, item } = r;
  if (typeof mid !== "string" || !MID_RE.test(mid) || !isMember(from) || !isNat(ts)) return null;
  if (typeof fromKey !== "string" || fromKey.length !== KEY_CHARS || !isCanonicalB64u(fromKey))
    return null;
  if (typeof item !== "object" || item === null || Array.isArray(item)) return null;
  const it = item as Record<string, unknown>;
  if (it.kind !== "group" || !hasExactKeys(it, GROUP_ITEM_KEYS)) return null;
  const { group, epoch, body } = it;
  if (!isName(group) || !isNat(epoch) || !isBody(body)) return null;
  if (!noRepeatedKey(raw, r)) return null;
  return {
    v: 1,
    t: "deliver",
    mid,
    from,
    fromKey,
    ts,
    item: { kind: "group", group, epoch, body },
  };
}
