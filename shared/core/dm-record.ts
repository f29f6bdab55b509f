/**
 * A 1:1 conversation's record (PROTOCOL.md §8, §10.2): its schema, the limits on what it keeps,
 * and the small helpers every 1:1 transition shares (results, notes, session promotion). The
 * transitions themselves are in dm-start.ts (starting a session) and dm.ts (sending, receiving).
 */
import * as v from "valibot";
import { B64, b64, Key32, Uint } from "./codec";
import { DmContent, FileRef, InviteSchema, type ReceivedDmContent } from "./content";
import { KEM_CT_BYTES } from "./envelope";
import { CoreError } from "./errors";
import type { Party } from "./handshake";
import { DisappearMs, MessageRef } from "./message-content";
import type { PrekeyState } from "./prekeys";
import { type Random, RatchetStateSchema } from "./ratchet";
import type { Contact } from "./trust";

/** Receive-only sessions kept after a newer one took over (simultaneous starts, resets). */
export const MAX_PREVIOUS_SESSIONS = 3;
/** Texts queued while no session can send yet. */
export const MAX_QUEUE = 200;
/** Envelopes held while the peer's key change is not accepted, replayed after acceptance. */
export const MAX_HELD = 50;
/**
 * hs_init ephemerals remembered per peer (§8.2.3). Only the peer can make a valid init, one per
 * handshake it starts, so 128 covers far more handshakes than a peer makes with us while its key
 * stays pinned (acceptKeyChange clears it); 16 let a relay replay an old init after a few
 * resets and knock out a handshake in progress. ~5.6 KB of base64 per peer.
 */
export const MAX_SEEN_INITS = 128;

export const CONTACT_DECISIONS = ["request", "accept", "accepted", "blocked"] as const;
export type ContactDecision = (typeof CONTACT_DECISIONS)[number];

const KeyPair = v.strictObject({ pub: Key32, priv: Key32 });

export const SessionSchema = v.strictObject({
  sid: v.pipe(B64, v.length(22)),
  role: v.picklist(["initiator", "responder"]),
  peerIdentityKey: Key32,
  /** The peer has proven it holds this session (a message or confirmation decrypted/verified). */
  confirmed: v.boolean(),
  /** Async initiator: the X3DH fields repeated in every message until the first reply. */
  prekey: v.nullable(
    v.strictObject({
      spkId: Uint,
      opkId: v.nullable(Uint),
      ekA: Key32,
      sigA: B64,
      ikB: Key32,
      /** PQXDH start (§8.3.5): the fields a `prekey_pq` envelope adds. */
      pq: v.optional(
        v.strictObject({
          idhA: Key32,
          kemOpkId: v.nullable(Uint),
          kemCt: v.pipe(B64, v.length(Math.ceil((KEM_CT_BYTES * 4) / 3))),
        }),
      ),
    }),
  ),
  /**
   * Whether the session's key agreement included an ML-KEM-768 secret (§8.3.5). false: a
   * classical session with a peer that publishes no post-quantum keys, shown as such. Absent on
   * sessions stored before this field existed (classical).
   */
  pq: v.optional(v.boolean()),
  ratchet: RatchetStateSchema,
});
export type Session = v.InferOutput<typeof SessionSchema>;

const PendingSchema = v.variant("kind", [
  v.strictObject({ kind: v.literal("fetching"), at: Uint }),
  v.strictObject({
    kind: v.literal("initiating"),
    at: Uint,
    eph: KeyPair,
    /** Seed of the ephemeral ML-KEM key of a hybrid hs_init (§8.2.6); absent: classical init. */
    kem: v.optional(v.pipe(B64, v.length(86))),
    sigA: B64,
    peerIdentityKey: Key32,
  }),
  v.strictObject({
    kind: v.literal("responding"),
    at: Uint,
    confirmKey: Key32,
    th: Key32,
    session: SessionSchema,
  }),
]);
export type Pending = v.InferOutput<typeof PendingSchema>;

/**
 * Something to send once a session can: a text (`text`, with its reply and timer), or another
 * content of §8.6.1 kept whole in `content` (its `text` is then "").
 */
export const QueuedSchema = v.strictObject({
  id: v.string(),
  ts: Uint,
  text: v.string(),
  reply: v.optional(MessageRef),
  exp: v.optional(DisappearMs),
  content: v.optional(DmContent),
  /** A closed-group invitation the text carries (§9.7.3). */
  invite: v.optional(InviteSchema),
  /** The attachment the message carries, if any (§8.6.1). */
  file: v.optional(FileRef),
});
export type Queued = v.InferOutput<typeof QueuedSchema>;

export const DmRecordSchema = v.strictObject({
  peer: v.string(),
  current: v.nullable(SessionSchema),
  previous: v.array(SessionSchema),
  pending: v.nullable(PendingSchema),
  queue: v.array(QueuedSchema),
  /** Bodies (base64url) received while the peer's key change awaits acceptance. */
  held: v.array(v.string()),
  /** Ephemerals of hs_init messages already answered (a redelivered init is not re-answered). */
  seenInits: v.array(Key32),
  /**
   * Session repair under way (§8.10): a message from the peer could not be decrypted, so a new
   * session is being made; `asked` once the `retry` content went out on it.
   */
  repair: v.nullable(v.strictObject({ at: Uint, asked: v.boolean() })),
  /**
   * Message requests (PROTOCOL.md §7.3.1, §8.11): the user's decision about the peer.
   * `request` — the peer wrote first and the user has neither written back nor accepted;
   * `accept` — the user did (started the chat, wrote, accepted) and the relay is still to be
   * told; `accepted` — the relay was told (`contact`); `blocked` — the relay was told to refuse
   * the peer, whose messages are dropped unread. Absent: a conversation from before message
   * requests, taken as `accept`.
   */
  contact: v.optional(v.picklist(CONTACT_DECISIONS)),
});
export type DmRecord = v.InferOutput<typeof DmRecordSchema>;

export function emptyDm(peer: string): DmRecord {
  return {
    peer,
    current: null,
    previous: [],
    pending: null,
    queue: [],
    held: [],
    seenInits: [],
    repair: null,
  };
}

/** At most one session repair per peer in this long (§8.10): a flood of bad bodies costs one. */
export const REPAIR_INTERVAL_MS = 60_000;

/**
 * Failures that mean "we do not hold the session or prekey this peer wrote with" (§8.10): our
 * state was lost or replaced (a restore on a new device). Repaired, not just dropped. A body that
 * fails to authenticate on a session we hold (`decrypt_failed`) is altered, not a lost state: it
 * is dropped with no state change.
 */
export const REPAIRABLE: ReadonlySet<string> = new Set(["unknown_session", "no_prekey"]);

/**
 * Begin a session repair (§8.10), or null while one began less than REPAIR_INTERVAL_MS ago. The
 * current session stops being used for sending (kept receive-only among `previous`): the peer
 * cannot read it, or it would not be sending on another. A handshake in progress for the peer's
 * side (`responding`) is kept; our own half-done starts are dropped and begun again.
 */
export function beginRepair(record: DmRecord, now: number): DmRecord | null {
  if (record.repair !== null && now - record.repair.at < REPAIR_INTERVAL_MS) return null;
  const previous = record.current ? [record.current, ...record.previous] : [...record.previous];
  return {
    ...record,
    current: null,
    previous: previous.slice(0, MAX_PREVIOUS_SESSIONS),
    pending: record.pending?.kind === "responding" ? record.pending : null,
    repair: { at: now, asked: false },
  };
}

export interface DmCtx {
  hub: string;
  me: Party;
  sign(message: Uint8Array): Promise<Uint8Array>;
  random: Random;
  now: number;
}

export type DmNote =
  | {
      kind: "session_started";
      role: "initiator" | "responder";
      mode: "online" | "async";
      /** false: classical only (the peer publishes no post-quantum keys), shown (§8.3.5). */
      pq: boolean;
    }
  | { kind: "key_changed"; newKey: string }
  | { kind: "pinned" };

export interface DmResult {
  record: DmRecord;
  contact: Contact;
  /** Bodies to send to the peer, in order. */
  send: Uint8Array[];
  /** Decrypted contents, in order. */
  /** Decrypted contents: texts, end-to-end receipts, §8.6.1 contents, unsupported ones. */
  received: ReceivedDmContent[];
  notes: DmNote[];
  prekeys?: PrekeyState;
}

export const result = (
  record: DmRecord,
  contact: Contact,
  extra: Partial<DmResult> = {},
): DmResult => ({
  record,
  contact,
  send: [],
  received: [],
  notes: [],
  ...extra,
});

/** Deterministic tie-break for simultaneous starts (§8.2.4): the smaller username's handshake wins. */
export function weWin(me: string, peer: string): boolean {
  return me < peer;
}

export function party(name: string, ik: string | Uint8Array): Party {
  return { name, identityKey: typeof ik === "string" ? b64(ik, "identity key") : ik };
}

export function promote(record: DmRecord, session: Session): DmRecord {
  const previous = record.current ? [record.current, ...record.previous] : [...record.previous];
  return { ...record, current: session, previous: previous.slice(0, MAX_PREVIOUS_SESSIONS) };
}

export function keepAside(record: DmRecord, session: Session): DmRecord {
  return { ...record, previous: [session, ...record.previous].slice(0, MAX_PREVIOUS_SESSIONS) };
}

export function parseDmRecord(x: unknown): DmRecord {
  const r = v.safeParse(DmRecordSchema, x);
  if (!r.success) throw new CoreError("malformed", "stored conversation state");
  return r.output;
}
