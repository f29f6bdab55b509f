/**
 * Group messages (PROTOCOL.md §9.5): per-sender ratcheted chains, a random 96-bit AES-GCM nonce
 * per message, and a per-message Ed25519 signature.
 *
 *   message = 0x01 0x11 u32be(n) || nonce(12) || AES-256-GCM(mk_n, nonce, pad(content), aad) || sig(64)
 *   aad     = lp("parley/v2/group-msg", hub, group, u64(epoch), confirmed[epoch], sender, ik, n, nonce)
 *   sig     = Ed25519(sender, lp("parley/v2/group-sig", hub, group, u64(epoch), confirmed[epoch],
 *                              sender, n, nonce, ct))
 */
import { aesGcmDecrypt, aesGcmEncrypt, ed25519Verify, randomBytes } from "../crypto";
import { concatBytes, lp, u32be } from "../encoding";
import { b64, enc, Reader, u64be } from "./codec";
import { type Content, decodeContent, encodeContent, type ReceivedContent } from "./content";
import { CoreError, malformed } from "./errors";
import type { EpochState, GroupRecord, Receiver } from "./group";
import { kdfCk, MAX_SKIP, type Random } from "./ratchet";

/**
 * Group message type (§9.5). 0x11 carries a random 96-bit AES-GCM nonce per message, so two
 * devices never share a (key, nonce) pair even if they came to hold the same chain (RFC 9420
 * §6.3.1's reuse guard, widened to the whole nonce); the chains themselves differ per leaf key.
 */
export const GROUP_MSG_TYPE = 0x11;
const NONCE = 12;
/** Skipped group message keys kept per group (all senders), oldest evicted first. */
export const MAX_GROUP_SKIPPED = 2000;
const SIG = 64;

/** The AAD and signature input bind the epoch's confirmed transcript hash (§9.3, §9.5). */
function msgAad(
  hub: string,
  group: string,
  ep: EpochState,
  sender: string,
  ik: Uint8Array,
  n: number,
  nonce: Uint8Array,
) {
  const th = b64(ep.transcript, "transcript");
  return lp("parley/v2/group-msg", hub, group, u64be(ep.epoch), th, sender, ik, n, nonce);
}
function sigInput(
  hub: string,
  group: string,
  ep: EpochState,
  sender: string,
  n: number,
  nonce: Uint8Array,
  ct: Uint8Array,
) {
  const th = b64(ep.transcript, "transcript");
  return lp("parley/v2/group-sig", hub, group, u64be(ep.epoch), th, sender, n, nonce, ct);
}

export async function encryptGroup(params: {
  record: GroupRecord;
  hub: string;
  me: { name: string; identityKey: Uint8Array };
  sign(message: Uint8Array): Promise<Uint8Array>;
  content: Content;
  /** Source of the per-message nonce (default: the CSPRNG). */
  random?: Random;
}): Promise<{ record: GroupRecord; body: Uint8Array; epoch: number }> {
  const cur = params.record.current;
  if (params.record.status !== "member" || cur === null)
    throw new CoreError("not_member", "not a member");
  const { ck, mk } = kdfCk(b64(cur.send.ck, "ck"));
  const n = cur.send.n;
  const g = params.record.group;
  const nonce = (params.random ?? randomBytes)(NONCE);
  const ct = await aesGcmEncrypt(
    mk,
    nonce,
    encodeContent(params.content),
    msgAad(params.hub, g, cur, params.me.name, params.me.identityKey, n, nonce),
  );
  const sig = await params.sign(sigInput(params.hub, g, cur, params.me.name, n, nonce, ct));
  const body = concatBytes(new Uint8Array([0x01, GROUP_MSG_TYPE]), u32be(n), nonce, ct, sig);
  const next: EpochState = { ...cur, send: { ck: enc(ck), n: n + 1 }, sent: cur.sent + 1 };
  return { record: { ...params.record, current: next }, body, epoch: cur.epoch };
}

/** Decrypt a group message from `sender`; signature first, so forgeries never touch state. */
export async function decryptGroup(params: {
  record: GroupRecord;
  hub: string;
  sender: string;
  epoch: number;
  body: Uint8Array;
}): Promise<{ record: GroupRecord; content: ReceivedContent }> {
  const { record, hub, sender, epoch } = params;
  const which =
    record.current?.epoch === epoch
      ? "current"
      : record.previous?.epoch === epoch
        ? "previous"
        : null;
  const ep = which === null ? null : record[which];
  if (ep === null || record.status !== "member")
    throw new CoreError("stale_epoch", "no keys for that epoch");
  const r = new Reader(params.body, "group message");
  if (r.u8() !== 0x01) throw malformed("group message header");
  const type = r.u8();
  if (type !== GROUP_MSG_TYPE) throw malformed("group message header");
  const n = r.u32();
  if (r.remaining() < NONCE + 16 + SIG) throw malformed("group message");
  const nonce = r.bytes(NONCE);
  const ct = r.bytes(r.remaining() - SIG);
  const sig = r.bytes(SIG);
  const member = findByName(ep.roster, sender);
  const rxAt = indexByName(ep.receivers, sender);
  const rx = ep.receivers[rxAt];
  if (!member || !rx) throw new CoreError("not_member", "sender is not in the epoch's roster");
  // The previous epoch stays readable only for members who are still in the group (§9.5): the
  // relay delivers in order, so a departed member's last messages arrive before the commit
  // that removed it; anything later under its name is injection after removal.
  if (which === "previous" && (!record.current || !findByName(record.current.roster, sender))) {
    throw new CoreError("not_member", "sender left the group; its old epoch is closed");
  }
  const ik = b64(member.ik, "ik");
  if (!(await ed25519Verify(ik, sigInput(hub, record.group, ep, sender, n, nonce, ct), sig))) {
    throw new CoreError("bad_signature", "group message signature does not verify");
  }
  const aad = msgAad(hub, record.group, ep, sender, ik, n, nonce);
  let next: Receiver;
  let mk: Uint8Array;
  let skipSeq = ep.skipSeq;
  const skippedIdx = rx.skipped.findIndex((s) => s.n === n);
  if (skippedIdx >= 0) {
    mk = b64((rx.skipped[skippedIdx] as { mk: string }).mk, "mk");
    next = { ...rx, skipped: rx.skipped.filter((_, i) => i !== skippedIdx) };
  } else {
    if (n < rx.n) throw new CoreError("replay", "group message counter already used");
    if (n - rx.n > MAX_SKIP) throw new CoreError("too_far", "group message too far ahead");
    let ck = b64(rx.ck, "ck");
    const skipped = [...rx.skipped];
    for (let i = rx.n; i < n; i++) {
      const s = kdfCk(ck);
      skipped.push({ n: i, mk: enc(s.mk), seq: skipSeq++ });
      ck = s.ck;
    }
    const s = kdfCk(ck);
    mk = s.mk;
    next = { ...rx, ck: enc(s.ck), n: n + 1, skipped };
  }
  let pt: Uint8Array;
  try {
    pt = await aesGcmDecrypt(mk, nonce, ct, aad);
  } catch {
    throw new CoreError("decrypt_failed", "group message does not authenticate");
  }
  const content = decodeContent(pt);
  let receivers = ep.receivers.slice();
  receivers[rxAt] = next;
  // Bound the skipped keys across all senders of the epoch, the oldest evicted first (§9.5): a
  // per-receiver share would let one sender's burst of losses evict another's recent keys, and
  // in a large group leave each sender only a couple of keys.
  let total = 0;
  for (const x of receivers) total += x.skipped.length;
  if (total > MAX_GROUP_SKIPPED) {
    receivers = evictOldestSkipped(receivers, total - MAX_GROUP_SKIPPED);
  } else {
    // Same names at the same positions: the new array inherits the old one's index.
    const idx = nameIndexes.get(ep.receivers);
    if (idx !== undefined) nameIndexes.set(receivers, idx);
  }
  const epoch2: EpochState = { ...ep, receivers, skipSeq };
  return { record: { ...record, [which as string]: epoch2 }, content };
}

/** Drop the `count` skipped keys with the lowest `seq` (no seq: oldest of all), §9.5. */
function evictOldestSkipped(receivers: Receiver[], count: number): Receiver[] {
  const all: { r: number; seq: number; n: number }[] = [];
  receivers.forEach((x, r) => {
    for (const s of x.skipped) all.push({ r, seq: s.seq, n: s.n });
  });
  all.sort((a, b) => a.seq - b.seq || a.n - b.n);
  const drop = new Map<number, Set<number>>();
  for (const e of all.slice(0, count)) {
    const set = drop.get(e.r) ?? new Set<number>();
    set.add(e.n);
    drop.set(e.r, set);
  }
  return receivers.map((x, r) => {
    const set = drop.get(r);
    return set === undefined ? x : { ...x, skipped: x.skipped.filter((s) => !set.has(s.n)) };
  });
}

// Per-message lookups in a large group (§9.5). A group message names its sender; finding that
// sender's roster entry and chain by linear scans (and rebuilding the chains with a closure per
// entry) made the cost of receiving one message grow with the roster (it must stay flat, docs/PERFORMANCE.md).
// Stored epochs are never mutated (every update returns new arrays), so an index built once per
// array stays valid; each hit is still checked against the entry itself, and a miss falls back
// to the scan, so a stale or absent index can only cost time, never pick the wrong member.

const nameIndexes = new WeakMap<readonly { name: string }[], Map<string, number>>();

function indexByName(xs: readonly { name: string }[], name: string): number {
  let idx = nameIndexes.get(xs);
  if (idx === undefined) {
    idx = new Map();
    // First occurrence wins, as with Array.prototype.find.
    for (let i = xs.length - 1; i >= 0; i--) idx.set((xs[i] as { name: string }).name, i);
    nameIndexes.set(xs, idx);
  }
  const i = idx.get(name);
  if (i !== undefined && xs[i]?.name === name) return i;
  return xs.findIndex((x) => x.name === name);
}

function findByName<T extends { name: string }>(xs: readonly T[], name: string): T | undefined {
  return xs[indexByName(xs, name)];
}
