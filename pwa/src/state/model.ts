/**
 * The UI's view of conversations, as plain data plus pure transitions. The store (store.ts)
 * applies these to a Solid `createStore` through `produce`; the node unit tests apply them to
 * plain objects. Engine events (shared/core/client-api.ts) are the only input besides history.
 */
import type {
  ChatMessage,
  ContactInfo,
  ConversationId,
  ConversationSummary,
  DeliveryState,
  GroupAccessSummary,
  ParleyEvent,
  SessionPhase,
  SystemLine,
} from "../../../shared/core/client-api";
import {
  type Applied,
  applyDelete,
  applyEdit,
  applyReaction,
  currentTimer,
  nextExpiry,
  type Refusal,
  sweepExpired,
  timerLineText,
} from "../../../shared/core/messages";
import type { PresenceScope } from "../../../shared/protocol";
import type { HistoryEntry, HistoryMessage, HistorySystem } from "../storage/schemas";
import { type ConversationStatus, conversationStatus } from "./status";

export const BROADCAST = "broadcast";

export interface ConvView {
  id: ConversationId;
  kind: "direct" | "group";
  name: string;
  /** Derived from the facts below and the engine's link state (status.ts). */
  status: ConversationStatus;
  keyChanged: boolean;
  /** Direct chats: how far the session is. */
  session: SessionPhase;
  members: ContactInfo[];
  /** Groups: our epoch, -1 when not a member. */
  epoch: number;
  /** Groups: the epoch authenticator's digits (PROTOCOL.md §9.3), "" when not a member. */
  authenticator: string;
  removalPending: boolean;
  joining: boolean;
  /** Groups: a leave was pressed (perhaps offline) and waits for the relay (PROTOCOL.md §10.1). */
  leaving: boolean;
  entries: HistoryEntry[];
  unread: number;
  lastReadAt: number;
  /** Direct chats: the relay has no user by this name (a `fetch_bundle` was refused). */
  missingUser: boolean;
  /** Who is typing, until when (our clock, ms): shown while in the future (§8.6.1). */
  typing: Record<string, number>;
  /** No notifications (local only). */
  muted: boolean;
  /** Listed under "Archived" (local only). */
  archived: boolean;
  /** Groups with a signed state (PROTOCOL.md §9.7): title, policy, admins; absent: open. */
  access?: GroupAccessSummary;
  /**
   * Direct chats (PROTOCOL.md §8.11): `request` — a message request (they wrote first, we have
   * not written back or accepted); `blocked` — we blocked them. Absent: a contact.
   */
  contact?: "request" | "blocked";
}

export type ConnView =
  | { kind: "idle" }
  | { kind: "connecting" }
  | { kind: "authenticating" }
  | { kind: "online" }
  | { kind: "waiting"; retryAt: number }
  | { kind: "replaced" }
  /** The identity was restored on another device; this one receives nothing (§4.3). */
  | { kind: "retired" }
  /** Another device of ours removed this one from our device list (§4.7): it is closed for good. */
  | { kind: "removed" }
  | { kind: "stopped" };

export interface Me {
  username: string;
  fingerprint: string;
  identityKey: string;
}

export interface ChatState {
  me: Me | null;
  conn: ConnView;
  /** The engine is authenticated with the relay (its last `connection` event was "online"). */
  linkOnline: boolean;
  presence: ContactInfo[];
  /** Who may see us online (PROTOCOL.md §6.3), as the relay reports it; null before it does. */
  presenceScope: PresenceScope | null;
  convs: Record<string, ConvView>;
  selected: ConversationId | null;
}

export function initialChatState(): ChatState {
  return {
    me: null,
    conn: { kind: "idle" },
    linkOnline: false,
    presence: [],
    presenceScope: null,
    convs: {},
    selected: null,
  };
}

export function convIdOf(kind: "direct" | "group", name: string): ConversationId {
  return kind === "direct" ? `dm:${name}` : `group:${name}`;
}

export function parseConvId(id: string): { kind: "direct" | "group"; name: string } | null {
  if (id.startsWith("dm:")) return { kind: "direct", name: id.slice(3) };
  if (id.startsWith("group:")) return { kind: "group", name: id.slice(6) };
  return null;
}

export function emptyConv(id: ConversationId): ConvView {
  const p = parseConvId(id);
  return {
    id,
    kind: p?.kind ?? "direct",
    name: p?.name ?? id,
    status: "offline",
    keyChanged: false,
    session: "none",
    members: [],
    epoch: -1,
    authenticator: "",
    removalPending: false,
    joining: false,
    leaving: false,
    entries: [],
    unread: 0,
    lastReadAt: 0,
    missingUser: false,
    typing: {},
    muted: false,
    archived: false,
  };
}

function ensure(s: ChatState, id: ConversationId): ConvView {
  let c = s.convs[id];
  if (!c) {
    c = emptyConv(id);
    s.convs[id] = c;
  }
  return c;
}

/** Merge an engine summary into the view (mutates the draft). */
export function applySummary(s: ChatState, sum: ConversationSummary): void {
  const c = ensure(s, sum.id);
  c.kind = sum.kind;
  c.name = sum.name;
  c.keyChanged = sum.keyChanged;
  c.session = sum.session ?? "none";
  c.members = sum.members;
  c.epoch = sum.epoch ?? (sum.kind === "direct" ? 0 : -1);
  c.authenticator = sum.authenticator ?? "";
  c.removalPending = sum.removalPending ?? false;
  c.joining = sum.joining ?? false;
  c.leaving = sum.leaving ?? false;
  if (sum.access) c.access = sum.access;
  else delete c.access;
  if (sum.contact) c.contact = sum.contact;
  else delete c.contact;
  c.status = conversationStatus(c, s.linkOnline);
}

/** The engine's link went up or down: every conversation's status is read again. */
export function applyLink(s: ChatState, online: boolean): void {
  s.linkOnline = online;
  for (const c of Object.values(s.convs)) c.status = conversationStatus(c, online);
}

/**
 * The user ended a direct chat's session: the engine forgets it without an event, so the view
 * drops to "no session" itself (the next message starts a new one).
 */
export function applySessionEnded(s: ChatState, id: ConversationId): void {
  const c = s.convs[id];
  if (!c) return;
  c.session = "none";
  c.status = conversationStatus(c, s.linkOnline);
}

export function messageEntry(m: ChatMessage): HistoryMessage {
  const e: HistoryMessage = {
    kind: "msg",
    id: m.id,
    conversationId: m.conversationId,
    from: m.from,
    direction: m.direction,
    text: m.text,
    sentAt: m.sentAt,
    at: m.at,
  };
  if (m.delivery) e.delivery = m.delivery;
  if (m.reply) e.reply = m.reply;
  if (m.exp !== undefined) e.exp = m.exp;
  if (m.invite) e.invite = m.invite;
  if (m.file) e.file = m.file;
  return e;
}

/** A typing indicator is shown this long after the last `typing: on` (§8.6.1). */
export const TYPING_SHOW_MS = 6_000;

export type ContentEvent = Extract<ParleyEvent, { type: "content" }>;

/** What applying a content changed: entries to store again, entries to delete, a refusal. */
export interface ContentOutcome {
  put: HistoryEntry[];
  refused?: Refusal;
}

/**
 * Apply a non-text content (§8.6.1) to the conversation: the decisions are
 * shared/core/messages.ts's (author only, delete window, one reaction per person); this only
 * puts the result in place. Read receipts count only when `readReceipts` is on (they are
 * reciprocal: off means neither sent nor shown).
 */
export function applyContent(
  s: ChatState,
  ev: ContentEvent,
  opts: { me: string; readReceipts: boolean },
): ContentOutcome {
  const c = ensure(s, ev.conversationId);
  const k = ev.content;
  const replace = (r: Applied<HistoryMessage>): ContentOutcome => {
    if (!r.ok) return { put: [], refused: r.reason };
    c.entries[r.index] = r.entry;
    return { put: [r.entry] };
  };
  switch (k.t) {
    case "edit":
      return replace(
        applyEdit(c.entries, { by: ev.from, target: k.target, text: k.text, at: ev.at }),
      );
    case "delete":
      return replace(applyDelete(c.entries, { by: ev.from, target: k.target }, ev.at));
    case "react":
      return replace(applyReaction(c.entries, { by: ev.from, target: k.target, emoji: k.emoji }));
    case "timer": {
      const line: HistorySystem = {
        kind: "sys",
        id: `timer-${ev.from}-${k.id}`,
        conversationId: ev.conversationId,
        sysKind: "timer",
        text: timerLineText(ev.from === opts.me ? null : ev.from, k.ms),
        ms: k.ms,
        at: ev.at,
      };
      if (ev.from !== opts.me) line.username = ev.from;
      return { put: upsertEntry(s, line, { countUnread: false }) ? [line] : [] };
    }
    case "typing":
      if (ev.direction === "in") {
        if (k.on) c.typing[ev.from] = ev.at + TYPING_SHOW_MS;
        else delete c.typing[ev.from];
      }
      return { put: [] };
    case "read": {
      // Another device of ours read these (a sent-sync copy, PROTOCOL.md §4.9): read here too.
      if (ev.direction === "out") {
        if (ev.from === opts.me) readUpTo(c, k.ids);
        return { put: [] };
      }
      if (!opts.readReceipts) return { put: [] };
      const put: HistoryEntry[] = [];
      for (const id of k.ids) {
        const m = applyDelivery(s, ev.conversationId, id, "read");
        if (m) put.push(m);
      }
      return { put };
    }
    case "unsupported": {
      const e: HistoryMessage = {
        kind: "msg",
        id: k.id ?? `unsupported-${ev.at.toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
        conversationId: ev.conversationId,
        from: ev.from,
        direction: ev.direction,
        text: "",
        sentAt: k.ts ?? ev.at,
        at: ev.at,
        unsupported: k.type,
      };
      return { put: upsertEntry(s, e, { countUnread: true }) ? [e] : [] };
    }
  }
}

/** The incoming messages `ids` and everything before them count as read. */
function readUpTo(c: ConvView, ids: readonly string[]): void {
  const want = new Set(ids);
  let upTo = c.lastReadAt;
  for (const e of c.entries)
    if (e.kind === "msg" && e.direction === "in" && want.has(e.id)) upTo = Math.max(upTo, e.at);
  if (upTo === c.lastReadAt) return;
  c.lastReadAt = upTo;
  c.unread = c.entries.filter(
    (e) => e.kind === "msg" && e.direction === "in" && e.at > upTo,
  ).length;
}

/** Who is typing in `c` at `now` (names, sorted). */
export function typingNow(c: Pick<ConvView, "typing">, now: number): string[] {
  return Object.entries(c.typing)
    .filter(([, until]) => until > now)
    .map(([n]) => n)
    .sort();
}

/** Delete for me: the entry leaves the view (the caller deletes its row). */
export function removeEntry(s: ChatState, conv: ConversationId, entry: HistoryEntry): boolean {
  const c = s.convs[conv];
  if (!c) return false;
  const i = c.entries.findIndex((e) => sameEntry(e, entry));
  if (i < 0) return false;
  c.entries.splice(i, 1);
  return true;
}

/**
 * Remove every message whose disappearing timer ran out at `now` (shared/core/messages.ts), in
 * every conversation; returns them so their rows (and search index entries) go too.
 */
export function expireAll(s: ChatState, now: number): HistoryEntry[] {
  const gone: HistoryEntry[] = [];
  for (const c of Object.values(s.convs)) {
    const { kept, expired } = sweepExpired(c.entries, now);
    if (expired.length === 0) continue;
    c.entries = kept;
    gone.push(...expired);
  }
  return gone;
}

/** The earliest disappearing-message expiry over every conversation. */
export function nextExpiryAll(s: ChatState): number | undefined {
  let next: number | undefined;
  for (const c of Object.values(s.convs)) {
    const at = nextExpiry(c.entries);
    if (at !== undefined && (next === undefined || at < next)) next = at;
  }
  return next;
}

/** The conversation's disappearing timer (ms, 0 = off): the last timer line's. */
export function timerOf(c: ConvView): number {
  return currentTimer(c.entries);
}

let sysSeq = 0;
/** A system line to store and show: the engine's, or one the PWA writes (e.g. session_ended). */
export function systemEntry(
  l: Omit<SystemLine, "kind"> & { kind: HistorySystem["sysKind"] },
): HistorySystem {
  sysSeq = (sysSeq + 1) % 1_000_000;
  const e: HistorySystem = {
    kind: "sys",
    id: `sys-${l.at.toString(36)}-${sysSeq.toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
    conversationId: l.conversationId,
    sysKind: l.kind,
    text: l.text,
    at: l.at,
  };
  if (l.username !== undefined) e.username = l.username;
  if (l.epoch !== undefined) e.epoch = l.epoch;
  if (l.count !== undefined) e.count = l.count;
  return e;
}

/**
 * The same entry? Message ids are chosen by their sender (§8.6) and seen by every recipient, so
 * a message is identified by (sender, direction, id): another participant re-using an id we saw
 * names a different message and must never replace ours or a third party's.
 */
export function sameEntry(a: HistoryEntry, b: HistoryEntry): boolean {
  if (a.id !== b.id || a.kind !== b.kind) return false;
  if (a.kind === "sys" || b.kind === "sys") return true;
  return a.from === b.from && a.direction === b.direction;
}

/**
 * Insert an entry, keeping time order. Returns false when it was already there: our own
 * outgoing message is updated in place (the engine is its only source); an incoming message
 * already seen from that sender is ignored, never replaced (the relay delivers at least once;
 * the engine dedupes, we double-check — and a sender cannot rewrite what it said).
 */
/**
 * Where a new entry goes: after everything received earlier (local time `at`), except that a
 * message its sender wrote earlier but that arrived later (sent again after a session repair,
 * §8.10) goes before that sender's later ones, so one sender's messages read in the order written.
 */
function placeOf(entries: readonly HistoryEntry[], entry: HistoryEntry): number {
  let at = entries.length;
  while (at > 0 && (entries[at - 1]?.at ?? 0) > entry.at) at--;
  if (entry.kind !== "msg" || entry.direction !== "in") return at;
  for (;;) {
    const prev = entries[at - 1];
    if (prev?.kind !== "msg" || prev.direction !== "in" || prev.from !== entry.from) return at;
    if (prev.sentAt <= entry.sentAt) return at;
    at--;
  }
}

export function upsertEntry(
  s: ChatState,
  entry: HistoryEntry,
  opts: { countUnread: boolean },
): boolean {
  const c = ensure(s, entry.conversationId);
  const i = c.entries.findIndex((e) => sameEntry(e, entry));
  if (i >= 0) {
    if (entry.kind === "sys" || entry.direction === "out") c.entries[i] = entry;
    return false;
  }
  c.entries.splice(placeOf(c.entries, entry), 0, entry);
  if (opts.countUnread && entry.kind === "msg" && entry.direction === "in") c.unread++;
  return true;
}

const DELIVERY_RANK: Record<DeliveryState, number> = {
  failed: -1,
  sending: 0,
  sent: 1,
  delivered: 2,
  read: 3,
};

/** Delivery only moves forward (a late "sent" never undoes "delivered"); failed is terminal-ish. */
export function applyDelivery(
  s: ChatState,
  conv: ConversationId,
  messageId: string,
  state: DeliveryState,
): HistoryMessage | null {
  const c = s.convs[conv];
  if (!c) return null;
  // Delivery states are about our own messages only: never touch a peer's with the same id.
  const e = c.entries.find((x) => x.kind === "msg" && x.direction === "out" && x.id === messageId);
  if (e?.kind !== "msg") return null;
  const cur = e.delivery ?? "sending";
  if (state !== "failed" && DELIVERY_RANK[state] <= DELIVERY_RANK[cur]) return null;
  e.delivery = state;
  return { ...e };
}

export function markRead(s: ChatState, conv: ConversationId, now: number): void {
  const c = s.convs[conv];
  if (!c) return;
  c.unread = 0;
  c.lastReadAt = now;
}

/** Rebuild views from stored history (on boot), unread counted against lastReadAt. */
export function loadHistory(
  s: ChatState,
  history: Map<string, HistoryEntry[]>,
  meta: Map<string, { lastReadAt: number }>,
): void {
  for (const [id, entries] of history) {
    const p = parseConvId(id);
    if (!p) continue;
    const c = ensure(s, id as ConversationId);
    // Stored in arrival order; placed exactly as they were when they arrived.
    const placed: HistoryEntry[] = [];
    for (const e of entries) placed.splice(placeOf(placed, e), 0, e);
    c.entries = placed;
    c.lastReadAt = meta.get(id)?.lastReadAt ?? 0;
    c.unread = entries.filter(
      (e) => e.kind === "msg" && e.direction === "in" && e.at > c.lastReadAt,
    ).length;
  }
  for (const [id, m] of meta) {
    const c = s.convs[id];
    if (c) c.lastReadAt = m.lastReadAt;
  }
}

export function lastMessage(c: ConvView): HistoryMessage | undefined {
  for (let i = c.entries.length - 1; i >= 0; i--) {
    const e = c.entries[i];
    if (e?.kind === "msg") return e;
  }
  return undefined;
}

/** Sidebar order: broadcast first, then groups by name; direct chats by latest activity. */
export function sortedConvs(s: ChatState): { groups: ConvView[]; directs: ConvView[] } {
  const all = Object.values(s.convs);
  const groups = all
    .filter((c) => c.kind === "group")
    .sort((a, b) =>
      a.name === BROADCAST ? -1 : b.name === BROADCAST ? 1 : a.name.localeCompare(b.name),
    );
  const activity = (c: ConvView) => c.entries[c.entries.length - 1]?.at ?? 0;
  const directs = all
    .filter((c) => c.kind === "direct")
    .sort((a, b) => activity(b) - activity(a) || a.name.localeCompare(b.name));
  return { groups, directs };
}

/** Groups: are we in it (or on our way in)? Direct chats always count as joined. */
export function isMember(c: Pick<ConvView, "kind" | "epoch" | "joining">): boolean {
  return c.kind === "direct" || c.epoch >= 0 || c.joining;
}

/** Can the user type into this conversation right now? A reason string when not. */
export function sendBlockedReason(c: ConvView): string | null {
  if (c.kind === "direct" && c.missingUser) return `There is no one called “${c.name}” here.`;
  if (c.contact === "blocked") return `You blocked ${c.name}. Unblock them to write.`;
  if (c.status === "key_changed") return "Accept or verify the new safety number first.";
  if (c.kind === "group") {
    if (c.epoch < 0 && !c.joining) return "Join this group to send messages.";
    if (c.joining) return "Joining — waiting for the group key…";
    if (c.removalPending) return "A member left — waiting for the new group key…";
  }
  return null;
}

export interface PersonRow {
  name: string;
  online: boolean;
  verified: boolean;
  /** The pinned key differs from the one now announced: shown with a warning mark. */
  keyChanged: boolean;
  conv: ConvView | undefined;
}

/** The sidebar's people: online people first (alphabetical), then earlier chats, never us. */
export function peopleRows(s: ChatState): PersonRow[] {
  const me = s.me?.username;
  const online = new Set<string>();
  for (const u of s.presence) if (u.username !== me) online.add(u.username);
  const row = (name: string, isOnline: boolean, conv: ConvView | undefined): PersonRow => ({
    name,
    online: isOnline,
    verified: conv?.status === "verified" || (conv?.members[0]?.verified ?? false),
    keyChanged: conv?.status === "key_changed",
    conv,
  });
  const rows = [...online].sort().map((n) => row(n, true, s.convs[convIdOf("direct", n)]));
  for (const c of sortedConvs(s).directs) {
    if (!online.has(c.name) && c.name !== me) rows.push(row(c.name, false, c));
  }
  return rows;
}

/** Unread messages over every conversation (the tab title shows it). */
export function unreadTotal(s: ChatState): number {
  let n = 0;
  for (const c of Object.values(s.convs)) n += c.unread;
  return n;
}
