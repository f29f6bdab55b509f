/**
 * The 1:1 conversation state machine (PROTOCOL.md §8): handshakes, session selection,
 * encryption and decryption, as pure async transitions `(record, input, ctx) → result`.
 * Inputs are never mutated; a transition that throws leaves the caller's record valid, so the
 * engine persists only returned records (decrypt-on-a-copy, commit on success).
 */
import * as v from "valibot";
import { signedPrekeyVersion } from "../auth";
import {
  constantTimeEqual,
  mlkemDecapsulate,
  mlkemEncapsulate,
  mlkemKeyPairFromSeed,
  mlkemPublicKey,
} from "../crypto";
import { concatBytes } from "../encoding";
import type { OneTimeKemPrekey, PqPrekey, SignedPrekey } from "../protocol";
import { B64, b64, enc, Key32, Uint } from "./codec";
import { type DmContent, decodeDmContent, encodeContent, FileRef } from "./content";
import {
  decodeEnvelope,
  ENV,
  type Envelope,
  encodeHsConfirm,
  encodeHsInit,
  encodeHsResp,
  KEM_CT_BYTES,
  messagePrefix,
  type PqFields,
  prekeyPrefix,
} from "./envelope";
import { CoreError } from "./errors";
import {
  confirmMac,
  dh,
  handshakeHash,
  handshakeKeys,
  initTranscript,
  type Party,
  type PqPrekeyRef,
  pqxdhRoot,
  pqxdhTranscript,
  respTranscript,
  sessionAd,
  sessionId,
  verifyOrThrow,
  x3dhHash,
  x3dhRoot,
  x3dhTranscript,
} from "./handshake";
import {
  consumePrekeys,
  findPqPrekeys,
  findPrekeys,
  kemOpkMessage,
  type PrekeyState,
  pqSpkMessage,
} from "./prekeys";
import {
  canSend,
  initInitiator,
  initResponder,
  kemOut,
  newX25519,
  type Random,
  RatchetStateSchema,
  ratchetDecrypt,
  ratchetEncrypt,
} from "./ratchet";
import { type Contact, checkKey } from "./trust";

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

/** A written message waiting for a session: text, and the attachment if any (§8.6.1). */
export const QueuedSchema = v.strictObject({
  id: v.string(),
  ts: Uint,
  text: v.string(),
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
  /** Decrypted contents: texts and end-to-end receipts (§8.6). */
  received: DmContent[];
  notes: DmNote[];
  prekeys?: PrekeyState;
}

const result = (record: DmRecord, contact: Contact, extra: Partial<DmResult> = {}): DmResult => ({
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

function party(name: string, ik: string | Uint8Array): Party {
  return { name, identityKey: typeof ik === "string" ? b64(ik, "identity key") : ik };
}

function promote(record: DmRecord, session: Session): DmRecord {
  const previous = record.current ? [record.current, ...record.previous] : [...record.previous];
  return { ...record, current: session, previous: previous.slice(0, MAX_PREVIOUS_SESSIONS) };
}

function keepAside(record: DmRecord, session: Session): DmRecord {
  return { ...record, previous: [session, ...record.previous].slice(0, MAX_PREVIOUS_SESSIONS) };
}

// ---------------------------------------------------------------------------------------------
// Starting

/** Online start (§8.2.1): send hs_init signed with our identity to a peer we see online. */
export async function startOnline(
  record: DmRecord,
  contact: Contact,
  ctx: DmCtx,
): Promise<DmResult> {
  if (contact.changedKey !== null)
    throw new CoreError("key_changed", "accept the key change first");
  const peer = party(record.peer, contact.identityKey);
  const eph = await newX25519(ctx.random);
  const ephA = b64(eph.pub, "eph");
  // Hybrid (§8.2.6): an ephemeral ML-KEM key the responder encapsulates to.
  const kemSeed = ctx.random(64);
  const kemPk = mlkemPublicKey(kemSeed);
  const sigA = await ctx.sign(initTranscript(ctx.hub, ctx.me, peer, ephA, kemPk));
  const body = encodeHsInit({ ikA: ctx.me.identityKey, ikB: peer.identityKey, ephA, kemPk, sigA });
  const pending: Pending = {
    kind: "initiating",
    at: ctx.now,
    eph,
    kem: enc(kemSeed),
    sigA: enc(sigA),
    peerIdentityKey: contact.identityKey,
  };
  return result({ ...record, pending }, contact, { send: [body] });
}

export function startFetching(record: DmRecord, now: number): DmRecord {
  return { ...record, pending: { kind: "fetching", at: now } };
}

export interface Bundle {
  identityKey: string;
  signedPrekey: SignedPrekey;
  oneTimePrekey: { id: number; key: string } | null;
  pqPrekey?: PqPrekey | null | undefined;
  oneTimeKemPrekey?: OneTimeKemPrekey | null | undefined;
}

/**
 * Asynchronous start (§8.3.2) from a bundle the relay returned. The bundle's identity key must
 * match the pin and its signed prekey must verify under it: a relay substituting either is
 * caught here (key change, or bad_signature) — never a silent new session.
 */
export async function startFromBundle(
  record: DmRecord,
  contact: Contact | null,
  bundle: Bundle,
  ctx: DmCtx,
  /** Our prekeys: the identity-DH key a post-quantum start needs (§8.3.5). */
  ours: PrekeyState | null = null,
): Promise<DmResult> {
  const check = checkKey(contact, record.peer, bundle.identityKey, ctx.now);
  if (check.result === "changed") {
    return result({ ...record, pending: null }, check.contact, {
      notes: [{ kind: "key_changed", newKey: bundle.identityKey }],
    });
  }
  const peer = party(record.peer, bundle.identityKey);
  const spk = b64(bundle.signedPrekey.key, "spk");
  const version = await signedPrekeyVersion(peer.identityKey, bundle.signedPrekey);
  if (version === null)
    throw new CoreError("bad_signature", "signed prekey signature does not verify");
  const opk = bundle.oneTimePrekey
    ? { id: bundle.oneTimePrekey.id, key: b64(bundle.oneTimePrekey.key, "opk") }
    : null;
  if (version === 2) return startPq(record, check, peer, spk, opk, bundle, ctx, ours);
  const ek = await newX25519(ctx.random);
  const ekA = b64(ek.pub, "ek");
  const transcript = x3dhTranscript(
    ctx.hub,
    ctx.me,
    peer,
    { spkId: bundle.signedPrekey.id, spk, opk },
    ekA,
  );
  const sigA = await ctx.sign(transcript);
  const ekPriv = b64(ek.priv, "ek");
  const dh1 = await dh(ekPriv, spk);
  const dh2 = opk ? await dh(ekPriv, opk.key) : null;
  const root = x3dhRoot(dh1, dh2, transcript, sigA);
  const sid = sessionId(x3dhHash(transcript, sigA));
  const ratchet = await initInitiator({
    rootKey: root,
    ad: sessionAd(ctx.hub, ctx.me, peer),
    peerRatchetKey: spk,
    receiveChain: null,
    random: ctx.random,
  });
  const session: Session = {
    sid: enc(sid),
    role: "initiator",
    peerIdentityKey: bundle.identityKey,
    confirmed: false,
    prekey: {
      spkId: bundle.signedPrekey.id,
      opkId: opk?.id ?? null,
      ekA: ek.pub,
      sigA: enc(sigA),
      ikB: bundle.identityKey,
    },
    pq: false,
    ratchet,
  };
  const notes: DmNote[] = [
    { kind: "session_started", role: "initiator", mode: "async", pq: false },
  ];
  if (check.result === "pinned") notes.unshift({ kind: "pinned" });
  return result({ ...promote(record, session), pending: null }, check.contact, { notes });
}

/**
 * PQXDH start (§8.3.5) from a bundle whose signed prekey is signed as v2: its PQ prekey must be
 * there and signed, or the start is refused (`downgrade`) — a relay that strips it is caught,
 * never answered with a weaker session.
 */
async function startPq(
  record: DmRecord,
  check: ReturnType<typeof checkKey>,
  peer: Party,
  spk: Uint8Array,
  opk: { id: number; key: Uint8Array } | null,
  bundle: Bundle,
  ctx: DmCtx,
  ours: PrekeyState | null,
): Promise<DmResult> {
  const pq = bundle.pqPrekey;
  if (pq === undefined || pq === null || pq.spkId !== bundle.signedPrekey.id) {
    throw new CoreError(
      "downgrade",
      `${record.peer}'s post-quantum prekey is missing from the bundle: not starting without it`,
    );
  }
  const idhB = b64(pq.idh, "idh");
  const lastResort = b64(pq.kem, "kem");
  await verifyOrThrow(
    peer.identityKey,
    pqSpkMessage(pq.spkId, spk, idhB, lastResort),
    b64(pq.sig, "pq sig"),
    "post-quantum prekey",
  );
  let kem: PqPrekeyRef["kem"] = { oneTimeId: null, key: lastResort };
  const otk = bundle.oneTimeKemPrekey;
  if (otk !== undefined && otk !== null) {
    const key = b64(otk.key, "kem opk");
    await verifyOrThrow(
      peer.identityKey,
      kemOpkMessage(otk.id, key),
      b64(otk.sig, "kem opk sig"),
      "one-time KEM prekey",
    );
    kem = { oneTimeId: otk.id, key };
  }
  if (ours?.idh === undefined)
    throw new CoreError("no_prekey", "our identity-DH key is missing (prekeys not yet upgraded)");
  const idhA = ours.idh;
  const ek = await newX25519(ctx.random);
  const ekA = b64(ek.pub, "ek");
  const encap = encapsulate(kem.key);
  const pre: PqPrekeyRef = { spkId: bundle.signedPrekey.id, spk, opk, idh: idhB, kem };
  const idhAPub = b64(idhA.pub, "idh");
  const transcript = pqxdhTranscript(ctx.hub, ctx.me, idhAPub, peer, pre, ekA, encap.ciphertext);
  const sigA = await ctx.sign(transcript);
  const ekPriv = b64(ek.priv, "ek");
  const root = pqxdhRoot(
    {
      dh1: await dh(b64(idhA.priv, "idh"), spk),
      dh2: await dh(ekPriv, idhB),
      dh3: await dh(ekPriv, spk),
      dh4: opk ? await dh(ekPriv, opk.key) : null,
    },
    encap.sharedSecret,
    transcript,
    sigA,
  );
  const sid = sessionId(x3dhHash(transcript, sigA));
  const ratchet = await initInitiator({
    rootKey: root,
    ad: sessionAd(ctx.hub, ctx.me, peer),
    peerRatchetKey: spk,
    receiveChain: null,
    random: ctx.random,
    kemStep: true,
  });
  const session: Session = {
    sid: enc(sid),
    role: "initiator",
    peerIdentityKey: bundle.identityKey,
    confirmed: false,
    prekey: {
      spkId: bundle.signedPrekey.id,
      opkId: opk?.id ?? null,
      ekA: ek.pub,
      sigA: enc(sigA),
      ikB: bundle.identityKey,
      pq: { idhA: idhA.pub, kemOpkId: kem.oneTimeId, kemCt: enc(encap.ciphertext) },
    },
    pq: true,
    ratchet,
  };
  const notes: DmNote[] = [{ kind: "session_started", role: "initiator", mode: "async", pq: true }];
  if (check.result === "pinned") notes.unshift({ kind: "pinned" });
  return result({ ...promote(record, session), pending: null }, check.contact, { notes });
}

function encapsulate(key: Uint8Array): { ciphertext: Uint8Array; sharedSecret: Uint8Array } {
  try {
    return mlkemEncapsulate(key);
  } catch {
    // A signed key that is not a valid encapsulation key (§3.11): the peer's bug, no session.
    throw new CoreError("malformed", "invalid ML-KEM public key in bundle");
  }
}

// ---------------------------------------------------------------------------------------------
// Sending

export function canSendNow(record: DmRecord): boolean {
  return record.current !== null && canSend(record.current.ratchet);
}

/** Encrypt one content with the current session (prekey envelope until the peer replied). */
export async function encryptDm(
  record: DmRecord,
  contact: Contact,
  content: DmContent,
  ctx: DmCtx,
): Promise<{ record: DmRecord; body: Uint8Array }> {
  if (contact.changedKey !== null)
    throw new CoreError("key_changed", "accept the key change first");
  const s = record.current;
  if (s === null || !canSend(s.ratchet))
    throw new CoreError("unknown_session", "no session to send on");
  const sid = b64(s.sid, "sid");
  const prefix = s.prekey
    ? prekeyPrefix({
        ikA: ctx.me.identityKey,
        ikB: b64(s.prekey.ikB, "ik"),
        spkId: s.prekey.spkId,
        opkId: s.prekey.opkId,
        ekA: b64(s.prekey.ekA, "ek"),
        sigA: b64(s.prekey.sigA, "sig"),
        sid,
        pq: s.prekey.pq
          ? {
              idhA: b64(s.prekey.pq.idhA, "idh"),
              kemOpkId: s.prekey.pq.kemOpkId,
              kemCt: b64(s.prekey.pq.kemCt, "kem ct"),
            }
          : null,
      })
    : messagePrefix(sid, kemOut(s.ratchet));
  const out = await ratchetEncrypt(s.ratchet, encodeContent(content), prefix);
  const body = new Uint8Array(prefix.length + out.header.length + out.ciphertext.length);
  body.set(prefix, 0);
  body.set(out.header, prefix.length);
  body.set(out.ciphertext, prefix.length + out.header.length);
  return { record: { ...record, current: { ...s, ratchet: out.state } }, body };
}

export function enqueue(record: DmRecord, q: Queued): DmRecord {
  if (record.queue.length >= MAX_QUEUE)
    throw new CoreError("relay_error", "too many queued messages");
  return { ...record, queue: [...record.queue, q] };
}

// ---------------------------------------------------------------------------------------------
// Receiving

/**
 * Process one body from the peer. `fromKey` is the relay's claim of the sender's identity key:
 * a hint only — every handshake message carries the key inside, checked against the pin and
 * proven by a signature.
 */
export async function receiveDm(
  record: DmRecord,
  contact: Contact | null,
  /** Our prekeys; only needed for a `prekey` envelope (null otherwise, see `needsPrekeys`). */
  prekeys: PrekeyState | null,
  body: Uint8Array,
  ctx: DmCtx,
): Promise<DmResult> {
  const env = decodeEnvelope(body);
  switch (env.type) {
    case "hs_init":
      return onInit(record, contact, env, body, ctx);
    case "hs_resp":
      return onResp(record, need(contact), env, ctx);
    case "hs_confirm":
      return onConfirm(record, need(contact), env);
    case "prekey":
      if (prekeys === null) throw new CoreError("no_prekey", "prekey state not supplied");
      return onPrekey(record, contact, prekeys, env, body, ctx);
    case "message":
      return onMessage(record, need(contact), env, ctx);
  }
}

function need(contact: Contact | null): Contact {
  if (contact === null) throw new CoreError("unknown_session", "no session with this sender");
  return contact;
}

/** Pin check for a key carried inside a handshake message; a change holds the body. */
function pinOrHold(
  record: DmRecord,
  contact: Contact | null,
  ik: Uint8Array,
  body: Uint8Array,
  now: number,
): { ok: true; contact: Contact; pinned: boolean } | { ok: false; result: DmResult } {
  const check = checkKey(contact, record.peer, enc(ik), now);
  if (check.result === "changed") {
    const held = [...record.held, enc(body)].slice(-MAX_HELD);
    return {
      ok: false,
      result: result({ ...record, held }, check.contact, {
        notes: contact?.changedKey === enc(ik) ? [] : [{ kind: "key_changed", newKey: enc(ik) }],
      }),
    };
  }
  return { ok: true, contact: check.contact, pinned: check.result === "pinned" };
}

function checkOurs(ik: Uint8Array, ctx: DmCtx): void {
  if (!constantTimeEqual(ik, ctx.me.identityKey)) {
    throw new CoreError("identity_mismatch", "message addressed to a different identity key");
  }
}

async function onInit(
  record: DmRecord,
  contact: Contact | null,
  env: Extract<Envelope, { type: "hs_init" }>,
  body: Uint8Array,
  ctx: DmCtx,
): Promise<DmResult> {
  checkOurs(env.ikB, ctx);
  // At-least-once delivery can hand us the same init twice: answering again would replace the
  // pending handshake the initiator is completing (§8.2.3).
  if (record.seenInits.includes(enc(env.ephA))) {
    throw new CoreError("replay", "handshake init already answered");
  }
  const peer = party(record.peer, env.ikA);
  // The signature first: an unsigned or forged init must not flip the contact to "key changed"
  // (clearing "verified") — only a key that signed this handshake may be shown as new (§8.7).
  await verifyOrThrow(
    env.ikA,
    initTranscript(ctx.hub, peer, ctx.me, env.ephA, env.kemPk),
    env.sigA,
    "handshake init",
  );
  const pin = pinOrHold(record, contact, env.ikA, body, ctx.now);
  if (!pin.ok) return pin.result;
  // Both started at once: the smaller username's init wins; the loser answers it (§8.2.4).
  if (record.pending?.kind === "initiating" && weWin(ctx.me.name, record.peer)) {
    return result(record, pin.contact);
  }
  const eph = await newX25519(ctx.random);
  const ephB = b64(eph.pub, "eph");
  // A hybrid init (§8.2.6) is answered hybrid; a classical one (an older peer) classically,
  // and the session is shown as not post-quantum. A relay cannot turn one into the other: the
  // init is signed by the initiator.
  const encap = env.kemPk === null ? null : encapsulate(env.kemPk);
  const kem = env.kemPk && encap ? { pk: env.kemPk, ct: encap.ciphertext } : null;
  const sigB = await ctx.sign(respTranscript(ctx.hub, peer, ctx.me, env.ephA, ephB, kem));
  const th = handshakeHash(ctx.hub, peer, ctx.me, env.ephA, ephB, env.sigA, sigB, kem);
  const dhOut = await dh(b64(eph.priv, "eph"), env.ephA);
  const keys = handshakeKeys(encap ? concatBytes(dhOut, encap.sharedSecret) : dhOut, th);
  const session: Session = {
    sid: enc(sessionId(th)),
    role: "responder",
    peerIdentityKey: enc(env.ikA),
    confirmed: false,
    prekey: null,
    pq: kem !== null,
    ratchet: initResponder({
      rootKey: keys.rootKey,
      ad: sessionAd(ctx.hub, peer, ctx.me),
      ratchetKeyPair: eph,
      sendChain: keys.chainR2I,
      kemStep: kem !== null,
    }),
  };
  const confirmB = confirmMac(keys.confirmR2I, "responder", th);
  // The current session (if any) keeps working until the initiator confirms this one, so a
  // replayed hs_init cannot knock out a live session.
  const pending: Pending = {
    kind: "responding",
    at: ctx.now,
    confirmKey: enc(keys.confirmI2R),
    th: enc(th),
    session,
  };
  const seenInits = [...record.seenInits, enc(env.ephA)].slice(-MAX_SEEN_INITS);
  return result({ ...record, pending, seenInits }, pin.contact, {
    send: [encodeHsResp({ ephA: env.ephA, ephB, kemCt: kem?.ct ?? null, sigB, confirmB })],
    notes: pin.pinned ? [{ kind: "pinned" }] : [],
  });
}

async function onResp(
  record: DmRecord,
  contact: Contact,
  env: Extract<Envelope, { type: "hs_resp" }>,
  ctx: DmCtx,
): Promise<DmResult> {
  const p = record.pending;
  if (p?.kind !== "initiating" || p.eph.pub !== enc(env.ephA)) {
    // An answer to an init we abandoned (tie-break, retry) or a redelivery: stale, ignore.
    throw new CoreError("replay", "handshake response to no pending init");
  }
  const peer = party(record.peer, p.peerIdentityKey);
  // We sent a hybrid init: only a hybrid response answers it (§8.2.6).
  if ((p.kem === undefined) !== (env.kemCt === null))
    throw new CoreError("malformed", "handshake response of the wrong kind");
  const kemKeys = p.kem === undefined ? null : mlkemKeyPairFromSeed(b64(p.kem, "kem seed"));
  const kem =
    kemKeys !== null && env.kemCt !== null ? { pk: kemKeys.publicKey, ct: env.kemCt } : null;
  await verifyOrThrow(
    peer.identityKey,
    respTranscript(ctx.hub, ctx.me, peer, env.ephA, env.ephB, kem),
    env.sigB,
    "handshake response",
  );
  const th = handshakeHash(
    ctx.hub,
    ctx.me,
    peer,
    env.ephA,
    env.ephB,
    b64(p.sigA, "sig"),
    env.sigB,
    kem,
  );
  const dhOut = await dh(b64(p.eph.priv, "eph"), env.ephB);
  const keys = handshakeKeys(
    kem && kemKeys ? concatBytes(dhOut, mlkemDecapsulate(kem.ct, kemKeys.secretKey)) : dhOut,
    th,
  );
  if (!constantTimeEqual(confirmMac(keys.confirmR2I, "responder", th), env.confirmB)) {
    throw new CoreError("bad_signature", "handshake key confirmation failed");
  }
  const sid = sessionId(th);
  const session: Session = {
    sid: enc(sid),
    role: "initiator",
    peerIdentityKey: p.peerIdentityKey,
    confirmed: true,
    prekey: null,
    pq: kem !== null,
    ratchet: await initInitiator({
      rootKey: keys.rootKey,
      ad: sessionAd(ctx.hub, ctx.me, peer),
      peerRatchetKey: env.ephB,
      receiveChain: keys.chainR2I,
      random: ctx.random,
      kemStep: kem !== null,
    }),
  };
  return result({ ...promote(record, session), pending: null }, contact, {
    send: [encodeHsConfirm({ sid, confirmA: confirmMac(keys.confirmI2R, "initiator", th) })],
    notes: [
      { kind: "session_started", role: "initiator", mode: "online", pq: session.pq ?? false },
    ],
  });
}

function onConfirm(
  record: DmRecord,
  contact: Contact,
  env: Extract<Envelope, { type: "hs_confirm" }>,
): DmResult {
  const p = record.pending;
  if (p?.kind !== "responding" || p.session.sid !== enc(env.sid)) {
    if (findSession(record, enc(env.sid)) !== null)
      throw new CoreError("replay", "handshake already confirmed");
    throw new CoreError("unknown_session", "confirmation for no pending handshake");
  }
  const expected = confirmMac(b64(p.confirmKey, "key"), "initiator", b64(p.th, "th"));
  if (!constantTimeEqual(expected, env.confirmA)) {
    throw new CoreError("bad_signature", "handshake key confirmation failed");
  }
  return result({ ...promote(record, { ...p.session, confirmed: true }), pending: null }, contact, {
    notes: [
      { kind: "session_started", role: "responder", mode: "online", pq: p.session.pq ?? false },
    ],
  });
}

function findSession(
  record: DmRecord,
  sid: string,
): { where: "current" | "pending" | number; session: Session } | null {
  if (record.current?.sid === sid) return { where: "current", session: record.current };
  if (record.pending?.kind === "responding" && record.pending.session.sid === sid) {
    return { where: "pending", session: record.pending.session };
  }
  const i = record.previous.findIndex((s) => s.sid === sid);
  return i >= 0 ? { where: i, session: record.previous[i] as Session } : null;
}

/** Decrypt with a known session and put the advanced session back where it was. */
async function decryptWith(
  record: DmRecord,
  contact: Contact,
  found: { where: "current" | "pending" | number; session: Session },
  prefix: Uint8Array,
  header: Uint8Array,
  ciphertext: Uint8Array,
  ctx: DmCtx,
  kem: { pk: Uint8Array | null; ct: Uint8Array | null } | null = null,
): Promise<DmResult> {
  if (found.where === "pending") {
    // Data on a session whose confirmation we have not seen: the initiator only sends after
    // hs_confirm and the relay keeps per-sender order, so this is out of protocol.
    throw new CoreError("unknown_session", "message before handshake confirmation");
  }
  const out = await ratchetDecrypt(
    found.session.ratchet,
    header,
    ciphertext,
    prefix,
    ctx.random,
    kem,
  );
  const content = decodeDmContent(out.plaintext);
  // A reply proves the peer holds the session: stop repeating the prekey fields (§8.3.2).
  const session: Session = { ...found.session, ratchet: out.state, confirmed: true, prekey: null };
  let next: DmRecord;
  if (found.where === "current") next = { ...record, current: session };
  else if (content.t === "retry") {
    // The peer repaired onto this session and asks us to send again (§8.10): it is the one the
    // peer holds, so it becomes ours for sending too.
    const where = found.where;
    next = promote({ ...record, previous: record.previous.filter((_, i) => i !== where) }, session);
  } else {
    const previous = [...record.previous];
    previous[found.where] = session;
    next = { ...record, previous };
  }
  return result(next, contact, { received: [content] });
}

async function onMessage(
  record: DmRecord,
  contact: Contact,
  env: Extract<Envelope, { type: "message" }>,
  ctx: DmCtx,
): Promise<DmResult> {
  const found = findSession(record, enc(env.sid));
  if (found === null) throw new CoreError("unknown_session", "no session with that id");
  // While a key change waits for the user (§8.7), only sending is blocked: a session made with
  // the still-pinned key keeps decrypting, so a relay (or anyone) that merely *claims* a new key
  // cannot make the real peer's messages vanish (§10.1). A session bound to any other key
  // cannot exist before acceptance, but is refused rather than trusted.
  if (contact.changedKey !== null && found.session.peerIdentityKey !== contact.identityKey)
    throw new CoreError("key_changed", "peer key changed; accept first");
  return decryptWith(record, contact, found, env.prefix, env.header, env.ciphertext, ctx, env.kem);
}

async function onPrekey(
  record: DmRecord,
  contact: Contact | null,
  prekeys: PrekeyState,
  env: Extract<Envelope, { type: "prekey" }>,
  body: Uint8Array,
  ctx: DmCtx,
): Promise<DmResult> {
  checkOurs(env.ikB, ctx);
  // Later messages of an async start repeat the prekey fields: same session id, normal decrypt
  // (the session authenticates them; its key was pinned when it was made).
  const known = findSession(record, enc(env.sid));
  if (known !== null) {
    if (known.session.peerIdentityKey !== enc(env.ikA))
      throw new CoreError("identity_mismatch", "session key differs");
    const pinned = pinOrHold(record, contact, env.ikA, body, ctx.now);
    if (!pinned.ok) return pinned.result;
    return decryptWith(record, pinned.contact, known, env.prefix, env.header, env.ciphertext, ctx);
  }
  if (env.pq !== null) return onPrekeyPq(record, contact, prekeys, env, env.pq, body, ctx);
  const used = findPrekeys(prekeys, env.spkId, env.opkId, env.ekA);
  const peer = party(record.peer, env.ikA);
  const spk = b64(used.spk.pub, "spk");
  const opk =
    used.opk && env.opkId !== null ? { id: env.opkId, key: b64(used.opk.pub, "opk") } : null;
  const transcript = x3dhTranscript(ctx.hub, peer, ctx.me, { spkId: env.spkId, spk, opk }, env.ekA);
  // The signature before the pin, as for an init: a forged body cannot flip "key changed".
  await verifyOrThrow(env.ikA, transcript, env.sigA, "prekey message");
  const pin = pinOrHold(record, contact, env.ikA, body, ctx.now);
  if (!pin.ok) return pin.result;
  if (!constantTimeEqual(sessionId(x3dhHash(transcript, env.sigA)), env.sid)) {
    throw new CoreError("malformed", "session id does not match the transcript");
  }
  const dh1 = await dh(b64(used.spk.priv, "spk"), env.ekA);
  const dh2 = used.opk ? await dh(b64(used.opk.priv, "opk"), env.ekA) : null;
  const ratchet = initResponder({
    rootKey: x3dhRoot(dh1, dh2, transcript, env.sigA),
    ad: sessionAd(ctx.hub, peer, ctx.me),
    ratchetKeyPair: { pub: used.spk.pub, priv: used.spk.priv },
    sendChain: null,
  });
  const out = await ratchetDecrypt(ratchet, env.header, env.ciphertext, env.prefix, ctx.random);
  return acceptPrekeySession(record, pin, prekeys, env, out, false, null, ctx);
}

/** The responder side of a PQXDH start (§8.3.5). */
async function onPrekeyPq(
  record: DmRecord,
  contact: Contact | null,
  prekeys: PrekeyState,
  env: Extract<Envelope, { type: "prekey" }>,
  pq: PqFields,
  body: Uint8Array,
  ctx: DmCtx,
): Promise<DmResult> {
  const used = findPqPrekeys(prekeys, env.spkId, env.opkId, pq.kemOpkId, env.ekA);
  const peer = party(record.peer, env.ikA);
  const spk = b64(used.spk.pub, "spk");
  const opk =
    used.opk && env.opkId !== null ? { id: env.opkId, key: b64(used.opk.pub, "opk") } : null;
  // One expansion of the seed serves the transcript (public key) and the decapsulation.
  const kemKeys = mlkemKeyPairFromSeed(b64(used.kemSeed, "kem seed"));
  const pre: PqPrekeyRef = {
    spkId: env.spkId,
    spk,
    opk,
    idh: b64(used.idh.pub, "idh"),
    kem: { oneTimeId: pq.kemOpkId, key: kemKeys.publicKey },
  };
  const transcript = pqxdhTranscript(ctx.hub, peer, pq.idhA, ctx.me, pre, env.ekA, pq.kemCt);
  // The signature before the pin, as for an init: a forged body cannot flip "key changed".
  await verifyOrThrow(env.ikA, transcript, env.sigA, "prekey message");
  const pin = pinOrHold(record, contact, env.ikA, body, ctx.now);
  if (!pin.ok) return pin.result;
  if (!constantTimeEqual(sessionId(x3dhHash(transcript, env.sigA)), env.sid)) {
    throw new CoreError("malformed", "session id does not match the transcript");
  }
  const spkPriv = b64(used.spk.priv, "spk");
  const root = pqxdhRoot(
    {
      dh1: await dh(spkPriv, pq.idhA),
      dh2: await dh(b64(used.idh.priv, "idh"), env.ekA),
      dh3: await dh(spkPriv, env.ekA),
      dh4: used.opk ? await dh(b64(used.opk.priv, "opk"), env.ekA) : null,
    },
    mlkemDecapsulate(pq.kemCt, kemKeys.secretKey),
    transcript,
    env.sigA,
  );
  const ratchet = initResponder({
    rootKey: root,
    ad: sessionAd(ctx.hub, peer, ctx.me),
    ratchetKeyPair: { pub: used.spk.pub, priv: used.spk.priv },
    sendChain: null,
    kemStep: true,
  });
  const out = await ratchetDecrypt(ratchet, env.header, env.ciphertext, env.prefix, ctx.random);
  return acceptPrekeySession(record, pin, prekeys, env, out, true, pq.kemOpkId, ctx);
}

/** A prekey message decrypted: keep the new session, consume the prekeys (§8.3.3). */
function acceptPrekeySession(
  record: DmRecord,
  pin: { contact: Contact; pinned: boolean },
  prekeys: PrekeyState,
  env: Extract<Envelope, { type: "prekey" }>,
  out: { state: Session["ratchet"]; plaintext: Uint8Array },
  pq: boolean,
  kemOpkId: number | null,
  ctx: DmCtx,
): DmResult {
  const content = decodeDmContent(out.plaintext);
  const session: Session = {
    sid: enc(env.sid),
    role: "responder",
    peerIdentityKey: enc(env.ikA),
    confirmed: true,
    prekey: null,
    pq,
    ratchet: out.state,
  };
  // Simultaneous starts (§8.2.4): if we also started and win the tie-break, keep ours as the
  // sending session and keep theirs receive-only; otherwise theirs becomes current.
  const ourStartPending =
    (record.current !== null && !record.current.confirmed) || record.pending?.kind === "initiating";
  let next: DmRecord;
  // A repair's retry (§8.10) names the session the peer holds: it wins any tie-break.
  if (ourStartPending && weWin(ctx.me.name, record.peer) && content.t !== "retry")
    next = keepAside(record, session);
  else
    next = {
      ...promote(record, session),
      pending: record.pending?.kind === "initiating" ? null : record.pending,
    };
  const notes: DmNote[] = [{ kind: "session_started", role: "responder", mode: "async", pq }];
  if (pin.pinned) notes.unshift({ kind: "pinned" });
  return result(next, pin.contact, {
    received: [content],
    notes,
    prekeys: consumePrekeys(prekeys, env.spkId, env.opkId, env.ekA, kemOpkId),
  });
}

/** Whether `receiveDm` needs the prekey state for this body (a `prekey` envelope). */
export function needsPrekeys(body: Uint8Array): boolean {
  return body.length > 1 && (body[1] === ENV.prekey || body[1] === ENV.prekeyPq);
}

export function parseDmRecord(x: unknown): DmRecord {
  const r = v.safeParse(DmRecordSchema, x);
  if (!r.success) throw new CoreError("malformed", "stored conversation state");
  return r.output;
}
