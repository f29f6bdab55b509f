/**
 * 1:1 conversations as steps (PROTOCOL.md §8): starting sessions, sending, receiving, receipts,
 * repair and trust decisions. The crypto is dm.ts's pure transitions; here they are run against
 * the engine state and turned into effects (writes, frames, events) on the step's `Tx`.
 */
import * as v from "valibot";
import { toB64u } from "../../encoding";
import {
  type ClientFrame,
  type DeviceList as DeviceListT,
  type FrameOf,
  PROTOCOL_VERSION,
  type ServerFrame,
} from "../../protocol";
import type { ChatMessage, ConversationId, CoreErrorCode, MessageAction } from "../client-api";
import { b64 } from "../codec";
import {
  contentOf,
  type DmContent,
  type Invite,
  MAX_RECEIPT_IDS,
  type TextContent,
  writtenOf,
} from "../content";
import { isListedDevice } from "../devices";
import {
  beginRepair,
  canSendNow,
  type DmNote,
  type DmRecord,
  type DmResult,
  emptyDm,
  encryptDm,
  enqueue,
  MAX_QUEUE,
  needsPrekeys,
  parseDmRecord,
  type Queued,
  receiveDm,
  startFetching,
  startFromBundle,
  startOnline,
} from "../dm";
import { ENV } from "../envelope";
import { CoreError, isCoreError } from "../errors";
import { classifyIncoming, deviceContentOf, fanoutTargets, isSynced } from "../fanout";
import { DAY } from "../prekeys";
import { KEYS, type OutboxEntry, type SentText, SentTextSchema } from "../store";
import { acceptChange, type Contact, checkKey, markVerified } from "../trust";
import { loadPinnedDevices, seeDeviceList } from "./devices";
import { delivery, error, system, type Tx } from "./effects";
import { trackDmGaps } from "./gaps";
import { nextId } from "./inflight";
import { isOnline } from "./link";
import { dmCtx, loadDm, loadPrekeys, putContact } from "./load";
import { summarizeDm } from "./summaries";

/** A handshake not completed after this long is restarted with an asynchronous start (§8.2.5). */
export const HANDSHAKE_RETRY_MS = 30_000;
/** A sent text the peer never receipted is kept this long for a repair to send again (§8.10). */
export const SENT_KEEP_MS = 30 * DAY;

export const dmId = (peer: string): ConversationId => `dm:${peer}`;

/**
 * One pairwise session (§4.9): with a user that has no device list, the conversation's own
 * record (`dm/<peer>`, `device` absent: the user's current device, §4.7); with one device of a
 * user that has one — a contact's, or another of ours — its own record (`dmd/<peer>/<device>`).
 */
export interface Slot {
  readonly peer: string;
  readonly device?: string | undefined;
}

export const slotKey = (s: Slot): string =>
  s.device === undefined ? KEYS.dm(s.peer) : KEYS.dmDevice(s.peer, s.device);

export async function loadSlot(tx: Tx, s: Slot): Promise<DmRecord> {
  if (s.device === undefined) return loadDm(tx, s.peer);
  const x = await tx.get(slotKey(s));
  return x === undefined ? emptyDm(s.peer) : parseDmRecord(x);
}

/**
 * The identity a slot's session is with: the contact's pin, or for our own devices our own
 * identity key (every device of ours holds it, §4.6), never stored as a contact.
 */
function contactOfSlot(tx: Tx, s: Slot): Contact | undefined {
  if (s.peer !== tx.env.username) return tx.state.contacts.get(s.peer);
  return {
    username: s.peer,
    identityKey: tx.env.identityKey,
    verified: true,
    changedKey: null,
    pinnedAt: 0,
  };
}

/**
 * The sessions one content to `peer` goes through (§4.9 `fanoutTargets`): each device on the
 * peer's accepted list (or its current device when it has none), then our own other devices,
 * which get what is copied (`role` own). Null: this device is not on our own accepted list.
 */
async function fanoutSlots(
  tx: Tx,
  peer: string,
): Promise<Array<{ slot: Slot; role: "peer" | "own" }> | null> {
  const me = tx.env.username;
  const plan = fanoutTargets({
    me,
    myDevice: tx.state.device.id,
    ownList: await loadPinnedDevices(tx, me),
    peer,
    peerList: await loadPinnedDevices(tx, peer),
  });
  if (!plan.ok) return null;
  return plan.targets.map((t) => ({ slot: { peer: t.to, device: t.device }, role: t.role }));
}

/** The summary of a conversation shows the session state of the slot that changed last. */
async function summarizeSlot(tx: Tx, slot: Slot, rec: DmRecord): Promise<void> {
  if (slot.peer === tx.env.username) return;
  if (slot.device === undefined) {
    summarizeDm(tx, rec);
    return;
  }
  const conv = await loadDm(tx, slot.peer);
  summarizeDm(tx, { ...conv, current: rec.current, pending: rec.pending, queue: rec.queue });
}

/**
 * Persist-then-send (§10.1): the frame goes into the outbox — the `send` kind of the in-flight
 * registry — in the same batch as the state that made it, and is sent after that batch.
 */
export function outboxSend(
  tx: Tx,
  frame: FrameOf<ClientFrame, "send" | "group_send">,
  seq: number,
  meta: { conversationId?: ConversationId; messageId?: string } = {},
): void {
  const key = KEYS.outbox(seq);
  const entry: OutboxEntry = { frame, ...meta };
  tx.put(key, entry);
  tx.state.flights.set(frame.id, { kind: "send", key, ...meta });
  tx.send(frame);
}

/** A `send` of `body` to the slot's peer (and device, §4.7) through the outbox. */
function sendBody(
  tx: Tx,
  slot: Slot,
  body: Uint8Array,
  meta: { conversationId?: ConversationId; messageId?: string } = {},
): void {
  const { id, seq } = nextId(tx);
  const frame = {
    v: PROTOCOL_VERSION,
    t: "send",
    id,
    to: slot.peer,
    ...(slot.device !== undefined ? { device: slot.device } : {}),
    body: toB64u(body),
  } as const;
  outboxSend(tx, frame, seq, meta);
}

/**
 * The optional fields of a text (§8.6.1: reply, disappearing timer; §9.7.3: a closed-group
 * invitation), copied only when present (strict schemas).
 */
export function textExtras(c: {
  reply?: TextContent["reply"];
  exp?: number;
  invite?: Invite | undefined;
}): { reply?: TextContent["reply"]; exp?: number; invite?: Invite } {
  return {
    ...(c.reply !== undefined ? { reply: c.reply } : {}),
    ...(c.exp !== undefined ? { exp: c.exp } : {}),
    ...(c.invite !== undefined ? { invite: c.invite } : {}),
  };
}

/** Keep a sent text until the peer receipts it, for a repair to send again (§8.10). */
function keepSent(tx: Tx, peer: string, c: TextContent | SentText): void {
  // Normalised through the content, so a queued entry's other fields are never stored.
  const value: SentText = writtenOf("t" in c ? c : contentOf(c));
  tx.put(KEYS.sent(peer, c.id), value);
}

/**
 * Our own text or file as the UI shows it: `sending` when this device sends it, `sent` for a copy
 * another device of ours sent (§4.9).
 */
export function announceOutgoing(
  tx: Tx,
  conversationId: ConversationId,
  c: TextContent,
  state: "sending" | "sent" = "sending",
): void {
  tx.emit({
    type: "message",
    message: {
      id: c.id,
      conversationId,
      from: tx.env.username,
      direction: "out",
      text: c.text,
      ...(c.t === "file" ? { file: c.file } : {}),
      sentAt: c.ts,
      at: c.ts,
      delivery: state,
      ...textExtras(c),
    },
  });
}

/** A non-text content of §8.6.1, sent by `from` (or by us, `out`), for the UI to apply. */
export function announceContent(
  tx: Tx,
  conversationId: ConversationId,
  from: string,
  direction: "in" | "out",
  content: MessageAction,
): void {
  tx.emit({ type: "content", conversationId, from, direction, content, at: tx.now });
}

export function announceReceived(
  tx: Tx,
  conversationId: ConversationId,
  from: string,
  c: TextContent,
): void {
  const message: ChatMessage = {
    id: c.id,
    conversationId,
    from,
    direction: "in",
    text: c.text,
    ...(c.t === "file" ? { file: c.file } : {}),
    sentAt: c.ts,
    at: tx.now,
    ...textExtras(c),
  };
  tx.emit({ type: "message", message });
}

// ---------------------------------------------------------------------------------------------
// Sessions

export async function startChat(tx: Tx, username: string): Promise<ConversationId> {
  if (username === tx.env.username) throw new CoreError("malformed", "cannot chat with yourself");
  await ensureSession(tx, accepting(await loadDm(tx, username)));
  return dmId(username);
}

// ---------------------------------------------------------------------------------------------
// Message requests (§7.3.1, §8.11)

/** The user chose to talk to the peer (started the chat, wrote, accepted): a contact. */
export function accepting(rec: DmRecord): DmRecord {
  return rec.contact === "accepted" ? rec : { ...rec, contact: "accept" };
}

/**
 * Tell the relay a contact decision not told yet (§7.3.1): `accept` (or a record from before
 * message requests) becomes `accepted` with one `contact` frame, sent while online only (an
 * offline decision is told with the next step that touches the conversation online). Called
 * once the peer is known to exist (a bundle, a session, a message from it), so a chat started
 * with a name nobody holds is answered by the bundle request alone.
 */
export function tellRelay(tx: Tx, rec: DmRecord): DmRecord {
  if ((rec.contact !== undefined && rec.contact !== "accept") || !isOnline(tx.state.link)) {
    return rec;
  }
  const { id } = nextId(tx);
  tx.send({ v: PROTOCOL_VERSION, t: "contact", id, user: rec.peer, state: "accepted" });
  return { ...rec, contact: "accepted" };
}

/** Accept a message request, or unblock (§8.11): the peer becomes a contact. */
export async function acceptContact(tx: Tx, peer: string): Promise<void> {
  const rec = await loadDm(tx, peer);
  if (rec.contact === "accepted") return;
  if (!isOnline(tx.state.link)) throw new CoreError("not_connected", "not connected to the relay");
  const next = tellRelay(tx, { ...rec, contact: "accept" });
  tx.put(KEYS.dm(peer), next);
  summarizeDm(tx, next);
}

/**
 * Block a peer (§8.11): the relay refuses its direct messages to us from now on
 * (`request_limit` to it), and the engine drops unread whatever of it still arrives.
 */
export async function blockContact(tx: Tx, peer: string): Promise<void> {
  if (peer === tx.env.username) throw new CoreError("malformed", "cannot block yourself");
  if (!isOnline(tx.state.link)) throw new CoreError("not_connected", "not connected to the relay");
  const rec = await loadDm(tx, peer);
  const { id } = nextId(tx);
  tx.send({ v: PROTOCOL_VERSION, t: "contact", id, user: peer, state: "blocked" });
  const next: DmRecord = { ...rec, contact: "blocked", queue: [], held: [] };
  tx.put(KEYS.dm(peer), next);
  summarizeDm(tx, next);
}

/**
 * Forget the conversation, but not which handshake inits were answered (§8.2.3): otherwise a
 * relay could replay an old init after the chat was ended and have it answered again.
 */
export async function endChat(tx: Tx, username: string): Promise<void> {
  const rec = await loadDm(tx, username);
  if (rec.seenInits.length > 0) tx.put(KEYS.seenInits(username), rec.seenInits);
  tx.del(KEYS.dm(username));
  await dropDeviceSlots(tx, username);
  tx.state.summaries.delete(dmId(username));
}

/** Forget every per-device session with `peer` (§4.9): the chat ended, or its key changed. */
async function dropDeviceSlots(tx: Tx, peer: string): Promise<void> {
  for (const { key } of await tx.list(KEYS.dmDevicesOf(peer))) tx.del(key);
}

/**
 * Start a handshake if there is no usable session and none under way; persists `rec`. A
 * per-device slot (§4.9) always starts asynchronously, from that device's own bundle (§4.7):
 * presence is the identity's, so an online handshake could not name the device.
 */
export async function ensureSession(
  tx: Tx,
  rec: DmRecord,
  slot: Slot = { peer: rec.peer },
): Promise<void> {
  const peer = rec.peer;
  const s = tx.state;
  const contact = contactOfSlot(tx, slot);
  // An online handshake the peer never answered (it went away, or its engine refused it):
  // fall back to an asynchronous start, which needs nothing from the peer (§8.2.5).
  const stuck =
    rec.current === null &&
    (rec.pending?.kind === "initiating" || rec.pending?.kind === "fetching") &&
    tx.now - rec.pending.at > HANDSHAKE_RETRY_MS;
  if (stuck) rec = { ...rec, pending: null };
  if (rec.current !== null || rec.pending !== null || !isOnline(s.link) || contact?.changedKey) {
    tx.put(slotKey(slot), rec);
    await summarizeSlot(tx, slot, rec);
    return;
  }
  const presenceKey = stuck || slot.device !== undefined ? undefined : s.online.get(peer);
  if (presenceKey !== undefined) {
    // Online: the identity key comes from the pin or, first time, from presence (TOFU, §8.7).
    const check = checkKey(contact ?? null, peer, presenceKey, tx.now);
    if (check.result === "changed") {
      tx.put(KEYS.dm(peer), rec);
      putContact(tx, contact, check.contact);
      s.contacts.set(peer, check.contact);
      summarizeDm(tx, rec);
      return;
    }
    const r = await startOnline(rec, check.contact, dmCtx(tx));
    await applyDm(tx, contact, r);
    return;
  }
  const { id } = nextId(tx);
  const next = startFetching(rec, tx.now);
  tx.put(slotKey(slot), next);
  if (slot.device === undefined) {
    s.flights.set(id, { kind: "fetch", peer });
    tx.send({ v: PROTOCOL_VERSION, t: "fetch_bundle", id, username: peer });
  } else {
    s.flights.set(id, { kind: "fetch", peer, device: slot.device });
    tx.send({ v: PROTOCOL_VERSION, t: "fetch_bundle", id, username: peer, device: slot.device });
  }
  await summarizeSlot(tx, slot, next);
}

/**
 * A message came from a device of `peer` that no list we accepted names (§4.9): ask for the
 * peer's bundle to learn its current list, once per connection, so our replies reach that
 * device too (if the list names it) — the relay's word alone never adds one.
 */
export function learnDevices(tx: Tx, peer: string): void {
  const s = tx.state;
  if (!isOnline(s.link)) return;
  for (const f of s.flights.values()) if (f.kind === "fetch" && f.peer === peer && f.list) return;
  const { id } = nextId(tx);
  s.flights.set(id, { kind: "fetch", peer, list: true });
  tx.send({ v: PROTOCOL_VERSION, t: "fetch_bundle", id, username: peer });
}

export async function onBundle(tx: Tx, f: FrameOf<ServerFrame, "bundle">): Promise<void> {
  const fl = tx.state.flights.get(f.id);
  if (fl?.kind !== "fetch" || fl.peer !== f.username || fl.device !== f.device) return;
  tx.state.flights.delete(f.id);
  const slot: Slot = { peer: f.username, device: fl.device };
  const own = f.username === tx.env.username;
  const before = contactOfSlot(tx, slot);
  // The device list is checked against the identity key we pinned, else the bundle's (§4.6).
  if (f.devices !== undefined)
    await seeDeviceList(
      tx,
      f.username,
      before?.identityKey ?? f.identityKey,
      f.devices,
      own ? null : dmId(f.username),
      // Asked for a group member we never chatted with (§9.1): no conversation to show it in.
      fl.list === true && !own && (await tx.get(KEYS.dm(f.username))) === undefined,
    );
  if (fl.list) return;
  const rec = await loadSlot(tx, slot);
  if (rec.pending?.kind !== "fetching") return;
  const r = await startFromBundle(rec, before ?? null, f, dmCtx(tx), await loadPrekeys(tx));
  await applyDm(tx, before, r, slot);
}

/** The bundle request was refused (e.g. unknown_user): the record stops waiting for it. */
export async function onFetchRefused(tx: Tx, slot: Slot): Promise<void> {
  const rec = await loadSlot(tx, slot);
  const next = { ...rec, pending: null };
  tx.put(slotKey(slot), next);
  await summarizeSlot(tx, slot, next);
}

/**
 * A dm transition (record, contact, prekeys, outgoing bodies, flushed queue) as one set of
 * effects: the writes land in the step's batch, the frames and events follow it (§10.1).
 */
export async function applyDm(
  tx: Tx,
  before: Contact | undefined,
  r: DmResult,
  slot: Slot = { peer: r.record.peer },
): Promise<void> {
  const peer = r.record.peer;
  const own = peer === tx.env.username;
  // The contact decision lives in the conversation's record, told to the relay from there.
  let rec = slot.device === undefined ? tellRelay(tx, r.record) : r.record;
  if (!own) putContact(tx, before, r.contact);
  if (r.prekeys) tx.put(KEYS.prekeys, r.prekeys);
  for (const body of r.send) sendBody(tx, slot, body);
  // The peer receipted these: nothing to send again on a repair (§8.10).
  for (const c of r.received) {
    if (c.t === "receipt") for (const id of c.ids) tx.del(KEYS.sent(peer, id));
  }
  // The peer repaired its side onto a new session and could not read some of ours (§8.10):
  // every text it has not receipted goes again, same id and time, on the session it holds.
  const retried = r.received.some((c) => c.t === "retry");
  const resend: SentText[] = retried ? await unreceipted(tx, peer) : [];
  let resent = 0;
  const sendable = canSendNow(rec) && r.contact.changedKey === null;
  if (sendable && rec.repair !== null && !rec.repair.asked) {
    // Our repair's new session can send: ask the peer to send again, first of all (§8.10).
    const enc = await encryptDm(rec, r.contact, { t: "retry" }, dmCtx(tx));
    rec = { ...enc.record, repair: { ...rec.repair, asked: true } };
    sendBody(tx, slot, enc.body);
  }
  if (!sendable && resend.length > 0) {
    // Sending is blocked (a key change awaits the user): they wait in the queue (§8.7).
    const queued = new Set(rec.queue.map((q) => q.id));
    for (const t of resend) {
      if (queued.has(t.id) || rec.queue.length >= MAX_QUEUE) continue;
      rec = enqueue(rec, t);
      resent++;
    }
  }
  if (sendable && (rec.queue.length > 0 || resend.length > 0)) {
    const queued = new Set(rec.queue.map((q) => q.id));
    const texts: Queued[] = [...resend.filter((t) => !queued.has(t.id)), ...rec.queue];
    for (const q of texts) {
      const action = q.content;
      if (action !== undefined) {
        // A queued reaction, edit, delete or timer (§8.6.1): no delivery state, not kept.
        const enc = await encryptDm(rec, r.contact, action, dmCtx(tx));
        rec = enc.record;
        sendBody(tx, slot, enc.body);
        continue;
      }
      const enc = await encryptDm(rec, r.contact, contentOf(q), dmCtx(tx));
      rec = enc.record;
      sendBody(tx, slot, enc.body, { conversationId: dmId(peer), messageId: q.id });
      keepSent(tx, peer, q);
    }
    resent = resend.length;
    rec = { ...rec, queue: [] };
  }
  tx.put(slotKey(slot), rec);
  if (own) {
    // Our own other device: only its copies (sync) count, shown in their conversations (§4.9).
    await applyOwnCopies(tx, slot, r.received);
    return;
  }
  tx.state.contacts.set(peer, r.contact);
  dmNotes(tx, peer, r.notes);
  if (resent > 0) {
    const what = resent === 1 ? "1 message" : `${resent} messages`;
    system(
      tx,
      dmId(peer),
      "resending",
      `${peer} could not read ${what} (a new or restored device); sending again`,
      { username: peer, count: resent },
    );
    for (const t of resend) delivery(tx, dmId(peer), t.id, "sending");
  }
  for (const c of r.received) {
    if (c.t === "retry") continue;
    if (c.t === "sync") {
      // A contact cannot speak for us (§4.9 `sync_from_peer`): the session advanced, nothing shown.
      error(tx, "malformed", `${peer} sent a copy only our own devices may send`, dmId(peer));
      continue;
    }
    if (c.t === "devices") {
      // The contact's own list, end to end (§4.9): checked against its pinned identity key like
      // any list shown to us (§4.6), whoever carried it.
      await seeDeviceList(tx, peer, r.contact.identityKey, c.list, dmId(peer));
      continue;
    }
    if (c.t === "text" || c.t === "file") {
      announceReceived(tx, dmId(peer), peer, c);
      // Acknowledge end to end (§8.6); a receipt is never receipted itself.
      const due = tx.state.receiptsDue;
      due.set(peer, [...(due.get(peer) ?? []), c.id]);
    } else if (c.t === "receipt") {
      // Authenticated by the session: the only source of "delivered" (§6, §8.6).
      for (const id of c.ids) delivery(tx, dmId(peer), id, "delivered");
    } else {
      // Edits, deletes, reactions, timers, typing, read, a newer client's type (§8.6.1): the
      // UI decides what they change (shared/core/messages.ts); none is receipted.
      announceContent(tx, dmId(peer), peer, "in", c);
    }
  }
  if (r.received.length > 0) trackDmGaps(tx, rec, slot.device);
  await summarizeSlot(tx, slot, rec);
}

/**
 * What another device of ours copied to this one (§4.9): each `sync` lands in its conversation as
 * ours — a text or file as sent (with its original id and time), an action as our own — and
 * anything else from our own identity is refused (`own_not_sync`), the session advanced anyway.
 */
async function applyOwnCopies(tx: Tx, slot: Slot, received: DmResult["received"]): Promise<void> {
  const me = tx.env.username;
  const ownList = await loadPinnedDevices(tx, me);
  for (const c of received) {
    if (c.t === "retry") continue;
    const d = classifyIncoming({
      me,
      myDevice: tx.state.device.id,
      from: me,
      fromDevice: slot.device,
      fromList: ownList,
      decoded: deviceContentOf(c),
    });
    if (!d.ok) {
      error(tx, "malformed", `a copy from another device of ours was refused (${d.reason})`);
      continue;
    }
    const conv: ConversationId = d.group !== undefined ? `group:${d.group}` : dmId(d.conversation);
    const copied = c.t === "sync" ? c.c : null;
    if (copied === null) continue;
    if (copied.t === "text" || copied.t === "file") announceOutgoing(tx, conv, copied, "sent");
    else announceContent(tx, conv, me, "out", copied);
  }
}

/**
 * The texts `peer` has not receipted, oldest first, for a repair to send again (§8.10); those
 * older than SENT_KEEP_MS are deleted instead of sent.
 */
async function unreceipted(tx: Tx, peer: string): Promise<SentText[]> {
  const out: SentText[] = [];
  const cutoff = tx.now - SENT_KEEP_MS;
  for (const { key, value } of await tx.list(KEYS.sentOf(peer))) {
    const r = v.safeParse(SentTextSchema, value);
    // A disappearing text whose time is up is gone here too, never sent again (§8.6.1).
    const expired = r.success && r.output.exp !== undefined && r.output.ts + r.output.exp <= tx.now;
    if (r.success && r.output.ts >= cutoff && !expired) out.push(r.output);
    else tx.del(key);
  }
  return out.sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : 1));
}

function dmNotes(tx: Tx, peer: string, notes: DmNote[]): void {
  const id = dmId(peer);
  for (const n of notes) {
    if (n.kind === "session_started") {
      system(tx, id, "session_started", `Secure session with ${peer} established (${n.mode})`, {
        username: peer,
      });
      if (!n.pq) {
        system(
          tx,
          id,
          "not_post_quantum",
          `This session with ${peer} is not post-quantum: ${peer}'s app publishes no post-quantum keys`,
          { username: peer },
        );
      }
    } else if (n.kind === "key_changed") {
      system(
        tx,
        id,
        "key_changed",
        `${peer}'s safety number changed; sending is blocked until you accept`,
        { username: peer },
      );
    }
  }
}

/**
 * Send the due end-to-end receipts (§8.6): one `receipt` content per peer (chunked at
 * MAX_RECEIPT_IDS), through the ratchet and the outbox like any message, with no delivery
 * state of its own. Best effort: without a usable session the ids are dropped (the sender then
 * keeps showing "sent", never a false "delivered").
 */
export async function flushReceipts(tx: Tx): Promise<void> {
  const due = [...tx.state.receiptsDue.entries()];
  tx.state.receiptsDue.clear();
  for (const [peer, ids] of due) {
    const contact = tx.state.contacts.get(peer);
    if (!contact || contact.changedKey) continue;
    // To every device of the author (§4.9): each learns of delivery on its own.
    for (const { slot, role } of (await fanoutSlots(tx, peer)) ?? []) {
      if (role !== "peer") continue;
      let rec = await loadSlot(tx, slot);
      if (!canSendNow(rec)) continue;
      for (let i = 0; i < ids.length; i += MAX_RECEIPT_IDS) {
        const content: DmContent = { t: "receipt", ids: ids.slice(i, i + MAX_RECEIPT_IDS) };
        const enc = await encryptDm(rec, contact, content, dmCtx(tx));
        rec = enc.record;
        sendBody(tx, slot, enc.body);
      }
      tx.put(slotKey(slot), rec);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sending and receiving

/**
 * Send a text or a §8.6.1 content to `peer`. Without a usable session a text, reaction, edit,
 * delete or timer waits in the queue; typing and read are only worth anything now, so they are
 * dropped instead (false).
 */
export async function sendDm(
  tx: Tx,
  peer: string,
  content: Exclude<DmContent, { t: "receipt" | "retry" | "sync" | "devices" }>,
  /** `peers: false`: only our own devices get it (a `read` with read receipts off). */
  opts: { peers: boolean } = { peers: true },
): Promise<boolean> {
  const contact = tx.state.contacts.get(peer);
  const ephemeral = content.t === "typing" || content.t === "read";
  if (contact?.changedKey) {
    if (ephemeral) return false;
    throw new CoreError("key_changed", `${peer}'s key changed; accept it first`);
  }
  const stored = await loadDm(tx, peer);
  // Typing and read states are not sent to someone the user has not accepted (§8.11); anything
  // the user writes accepts them.
  if (ephemeral && (stored.contact === "request" || stored.contact === "blocked")) return false;
  const rec = ephemeral ? stored : accepting(stored);
  const announce = () => {
    if (content.t === "text" || content.t === "file") announceOutgoing(tx, dmId(peer), content);
    else announceContent(tx, dmId(peer), tx.env.username, "out", content);
  };
  const slots = await fanoutSlots(tx, peer);
  if (slots === null)
    throw new CoreError("relay_error", "this device was removed from your account");
  const only = slots[0];
  if (!opts.peers) {
    if (!ephemeral) throw new CoreError("malformed", "only a read state skips the peer");
  } else if (slots.length === 1 && only !== undefined && only.slot.device === undefined)
    return sendOnSlot(tx, contact, rec, content, only.slot, announce);
  // Fan-out (§4.9): the conversation's record keeps the decision; each device its session.
  tx.put(KEYS.dm(peer), tellRelay(tx, rec));
  announce();
  let sent = false;
  let first = true;
  for (const { slot, role } of slots) {
    let c: DmContent;
    if (role === "peer" && !opts.peers) continue;
    if (role === "peer") c = content;
    else if (isSynced(content)) c = { t: "sync", peer, c: content };
    else continue;
    const withMeta = role === "peer" && first;
    if (role === "peer") first = false;
    sent =
      (await sendOnSlot(tx, contactOfSlot(tx, slot), await loadSlot(tx, slot), c, slot, null, {
        delivery: withMeta,
        peer,
      })) || sent;
  }
  if (content.t === "text" || content.t === "file") keepSent(tx, peer, content);
  return sent || !ephemeral;
}

/**
 * Our read state in a group to our own other devices (§4.9): a `sync` copy naming the group, on
 * each own device's session (queued until it starts). Nobody else hears of it: groups have no
 * read receipts. Without other devices, nothing is sent.
 */
export async function syncGroupRead(tx: Tx, group: string, ids: string[]): Promise<void> {
  const me = tx.env.username;
  const own = await loadPinnedDevices(tx, me);
  if (own === null) return;
  const content: DmContent = { t: "sync", peer: me, group, c: { t: "read", ids } };
  for (const d of own.list.devices) {
    if (d.id === tx.state.device.id) continue;
    const slot: Slot = { peer: me, device: d.id };
    await sendOnSlot(tx, contactOfSlot(tx, slot), await loadSlot(tx, slot), content, slot, null, {
      delivery: false,
      peer: me,
    });
  }
}

/**
 * Tell every contact we have a live session with that our device list changed (§4.9): the
 * signed list, end to end, on each session that can send now — none is started for it (a
 * contact without one learns the list from its next bundle, or a message naming a device).
 */
export async function announceDevices(tx: Tx, list: DeviceListT): Promise<void> {
  const me = tx.env.username;
  for (const { key } of await tx.list("dm/")) {
    const peer = key.slice("dm/".length);
    const contact = tx.state.contacts.get(peer);
    if (peer === me || contact === undefined || contact.changedKey) continue;
    const conv = await loadDm(tx, peer);
    if (conv.contact === "request" || conv.contact === "blocked") continue;
    for (const { slot, role } of (await fanoutSlots(tx, peer)) ?? []) {
      if (role !== "peer") continue;
      const rec = await loadSlot(tx, slot);
      if (!canSendNow(rec)) continue;
      const enc = await encryptDm(rec, contact, { t: "devices", list }, dmCtx(tx));
      tx.put(slotKey(slot), enc.record);
      sendBody(tx, slot, enc.body);
    }
  }
}

/**
 * One content on one pairwise session: encrypted and sent now if the session can, else queued
 * (texts and actions) while the session is started, or dropped (typing, read: only worth
 * anything now). `announce` (the legacy single-session path) shows it once.
 */
async function sendOnSlot(
  tx: Tx,
  contact: Contact | undefined,
  rec: DmRecord,
  content: DmContent,
  slot: Slot,
  announce: (() => void) | null,
  opts: { delivery: boolean; peer: string } = { delivery: true, peer: slot.peer },
): Promise<boolean> {
  const conversationId = dmId(opts.peer);
  const meta = (id: string) => (opts.delivery ? { conversationId, messageId: id } : {});
  if (contact && canSendNow(rec)) {
    const enc = await encryptDm(rec, contact, content, dmCtx(tx));
    tx.put(slotKey(slot), slot.device === undefined ? tellRelay(tx, enc.record) : enc.record);
    announce?.();
    if (content.t === "text") {
      sendBody(tx, slot, enc.body, meta(content.id));
      if (announce !== null) keepSent(tx, slot.peer, content);
    } else sendBody(tx, slot, enc.body);
    return true;
  }
  // A read state is worth something to the peer only now; our own devices keep it (§4.9).
  if (content.t === "typing" || content.t === "read") return false;
  if (content.t === "receipt" || content.t === "retry" || content.t === "devices") return false;
  const queued = enqueue(
    rec,
    content.t === "text" || content.t === "file"
      ? writtenOf(content)
      : {
          id: "id" in content ? content.id : toB64u(tx.env.random(12)),
          ts: "ts" in content ? content.ts : tx.now,
          text: "",
          content,
        },
  );
  announce?.();
  await ensureSession(tx, queued, slot);
  return true;
}

export async function onDirect(
  tx: Tx,
  from: string,
  body: Uint8Array,
  fromDevice?: string,
): Promise<void> {
  const me = tx.env.username;
  // Our own identity writes only from another device of ours, named by the relay (§4.9).
  if (from === me && (fromDevice === undefined || fromDevice === tx.state.device.id))
    throw new CoreError("malformed", "direct message from ourselves");
  const known = (await tx.get(KEYS.dm(from))) !== undefined;
  const loaded = await loadDm(tx, from);
  // Someone we have no conversation with wrote first: a message request, until the user writes
  // back or accepts (§8.11). A blocked peer's messages are dropped unread.
  const conv = known || from === me ? loaded : { ...loaded, contact: "request" as const };
  if (conv.contact === "blocked") return;
  const list = await loadPinnedDevices(tx, from);
  if (fromDevice !== undefined && list !== null && !isListedDevice(list, fromDevice))
    // §4.9 rule 1: a device the sender's accepted list does not name (forged by the relay, or
    // removed): nothing from it is read.
    throw refusedDevice(from);
  if (fromDevice !== undefined && list === null) {
    if (from === me) throw refusedDevice(from);
    // The sender has a list we have not seen: learn it so our replies reach its devices.
    learnDevices(tx, from);
  }
  const slot: Slot = { peer: from, device: fromDevice };
  let rec = fromDevice === undefined ? conv : await loadSlot(tx, slot);
  let adopted = false;
  if (
    fromDevice !== undefined &&
    from !== me &&
    (await tx.get(slotKey(slot))) === undefined &&
    continuesLegacy(conv, body)
  ) {
    // The peer's device that holds the session (or answers the handshake) we made with the
    // peer's current device before we knew its list continues on it: the session, the handshake
    // under way and what waits for it move to that device's slot (moved, never copied — two
    // copies of one ratchet would reuse its keys).
    rec = {
      ...emptyDm(from),
      current: conv.current,
      previous: conv.previous,
      pending: conv.pending,
      queue: conv.queue,
      seenInits: conv.seenInits,
    };
    adopted = true;
  }
  const before = contactOfSlot(tx, slot);
  // The prekey state (hundreds of keys) is parsed only for the message that needs it.
  const prekeys = needsPrekeys(body) ? await loadPrekeys(tx) : null;
  const r = await receiveDm(rec, before ?? null, prekeys, body, dmCtx(tx));
  const moved = { current: null, previous: [], pending: null, queue: [] };
  if (adopted || (fromDevice !== undefined && from !== me && !known))
    tx.put(KEYS.dm(from), { ...conv, ...(adopted ? moved : {}) });
  await applyDm(tx, before, r, slot);
}

/**
 * Does `body` continue what the conversation's own record holds — a ratchet message on its
 * session, or the answer to its handshake under way (§8.2) — rather than start afresh?
 */
function continuesLegacy(conv: DmRecord, body: Uint8Array): boolean {
  const t = body.length > 1 ? body[1] : -1;
  if (t === ENV.message || t === ENV.messageKem)
    return conv.current !== null || conv.previous.length > 0;
  if (t === ENV.hsResp || t === ENV.hsRespPq) return conv.pending?.kind === "initiating";
  if (t === ENV.hsConfirm) return conv.pending?.kind === "responding";
  return false;
}

function refusedDevice(from: string): CoreError {
  return new CoreError("malformed", `a message from a device ${from}'s device list does not name`);
}

/**
 * A direct body from `peer` we cannot decrypt for want of the session it was made on (§8.10):
 * our state was lost or replaced (a restore on a new device) or is older than the peer's.
 * Make a new session and, on it, ask the peer to send again what we have not receipted — at
 * most once per REPAIR_INTERVAL_MS; a failure inside that window is covered by the same ask.
 */
export async function repair(
  tx: Tx,
  peer: string,
  code: CoreErrorCode,
  device?: string,
): Promise<void> {
  const slot: Slot = { peer, device };
  const next = beginRepair(await loadSlot(tx, slot), tx.now);
  if (next === null) return;
  system(
    tx,
    dmId(peer),
    "repairing",
    `A message from ${peer} could not be read (${code}); making a new secure session and asking ${peer} to send it again`,
    { username: peer },
  );
  await ensureSession(tx, next, slot);
}

// ---------------------------------------------------------------------------------------------
// Trust (§8.7)

export async function acceptKeyChange(tx: Tx, username: string): Promise<boolean> {
  const c = tx.state.contacts.get(username);
  if (!c?.changedKey) return false;
  const next = acceptChange(c, tx.now);
  const rec = await loadDm(tx, username);
  // Sessions made with the old key are dropped; the held envelopes (made for the new key) are
  // processed now, and queued texts go out under a fresh handshake.
  const fresh: DmRecord = {
    ...rec,
    current: null,
    previous: [],
    pending: null,
    held: [],
    seenInits: [],
  };
  tx.put(KEYS.contact(username), next);
  tx.put(KEYS.dm(username), fresh);
  // Per-device sessions were made with the old key too (§4.9).
  await dropDeviceSlots(tx, username);
  tx.state.contacts.set(username, next);
  system(tx, dmId(username), "key_accepted", `You accepted ${username}'s new key`, { username });
  let cur = fresh;
  for (const body of rec.held) {
    try {
      const r = await receiveDm(cur, next, await loadPrekeys(tx), b64(body, "held"), dmCtx(tx));
      await applyDm(tx, next, r);
      cur = await loadDm(tx, username);
    } catch (e) {
      if (isCoreError(e)) error(tx, e.code, e.message, dmId(username));
    }
  }
  await ensureSession(tx, await loadDm(tx, username));
  return true;
}

export async function markContactVerified(tx: Tx, username: string): Promise<void> {
  const c = tx.state.contacts.get(username);
  if (!c) throw new CoreError("unknown_session", "no pinned key for that user");
  if (c.changedKey) throw new CoreError("key_changed", "accept the key change first");
  const next = markVerified(c);
  tx.put(KEYS.contact(username), next);
  tx.state.contacts.set(username, next);
  system(tx, dmId(username), "verified", `You marked ${username} as verified`, { username });
  summarizeDm(tx, await loadDm(tx, username));
}
