/**
 * Starting a 1:1 session (PROTOCOL.md §8.2, §8.3): the online handshake's first message, and the
 * asynchronous start from a fetched bundle (X3DH-style, or PQXDH-style with ML-KEM prekeys), as
 * pure async transitions `(record, input, ctx) → result` like the rest of dm.ts.
 */
import { signedPrekeyVersion } from "../auth";
import { mlkemEncapsulate, mlkemPublicKey } from "../crypto";
import type { OneTimeKemPrekey, PqPrekey, SignedPrekey } from "../protocol";
import { b64, enc } from "./codec";
import {
  type DmCtx,
  type DmNote,
  type DmRecord,
  type DmResult,
  type Pending,
  party,
  promote,
  result,
  type Session,
} from "./dm-record";
import { encodeHsInit } from "./envelope";
import { CoreError } from "./errors";
import {
  dh,
  initTranscript,
  type Party,
  type PqPrekeyRef,
  pqxdhRoot,
  pqxdhTranscript,
  sessionAd,
  sessionId,
  verifyOrThrow,
  x3dhHash,
  x3dhRoot,
  x3dhTranscript,
} from "./handshake";
import { kemOpkMessage, type PrekeyState, pqSpkMessage } from "./prekeys";
import { initInitiator, newX25519 } from "./ratchet";
import { type Contact, checkKey } from "./trust";

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
  return initiatorSession(record, check, bundle, ctx, {
    peer,
    spk,
    opk,
    ek,
    transcript,
    sigA,
    root,
  });
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
  return initiatorSession(record, check, bundle, ctx, {
    peer,
    spk,
    opk,
    ek,
    transcript,
    sigA,
    root,
    pq: { idhA: idhA.pub, kemOpkId: kem.oneTimeId, kemCt: enc(encap.ciphertext) },
  });
}

/** What an asynchronous start agreed, classical (§8.3.2) or post-quantum (§8.3.5). */
interface Agreed {
  peer: Party;
  spk: Uint8Array;
  opk: { id: number; key: Uint8Array } | null;
  ek: { pub: string; priv: string };
  transcript: Uint8Array;
  sigA: Uint8Array;
  root: Uint8Array;
  /** The post-quantum fields the first prekey message carries; absent: a classical start. */
  pq?: { idhA: string; kemOpkId: number | null; kemCt: string };
}

/** The initiator's new session from an agreed start: promoted, the pending fetch cleared. */
async function initiatorSession(
  record: DmRecord,
  check: ReturnType<typeof checkKey>,
  bundle: Bundle,
  ctx: DmCtx,
  a: Agreed,
): Promise<DmResult> {
  const pq = a.pq !== undefined;
  const ratchet = await initInitiator({
    rootKey: a.root,
    ad: sessionAd(ctx.hub, ctx.me, a.peer),
    peerRatchetKey: a.spk,
    receiveChain: null,
    random: ctx.random,
    ...(pq ? { kemStep: true } : {}),
  });
  const session: Session = {
    sid: enc(sessionId(x3dhHash(a.transcript, a.sigA))),
    role: "initiator",
    peerIdentityKey: bundle.identityKey,
    confirmed: false,
    prekey: {
      spkId: bundle.signedPrekey.id,
      opkId: a.opk?.id ?? null,
      ekA: a.ek.pub,
      sigA: enc(a.sigA),
      ikB: bundle.identityKey,
      ...(a.pq !== undefined ? { pq: a.pq } : {}),
    },
    pq,
    ratchet,
  };
  const notes: DmNote[] = [{ kind: "session_started", role: "initiator", mode: "async", pq }];
  if (check.result === "pinned") notes.unshift({ kind: "pinned" });
  return result({ ...promote(record, session), pending: null }, check.contact, { notes });
}

export function encapsulate(key: Uint8Array): { ciphertext: Uint8Array; sharedSecret: Uint8Array } {
  try {
    return mlkemEncapsulate(key);
  } catch {
    // A signed key that is not a valid encapsulation key (§3.11): the peer's bug, no session.
    throw new CoreError("malformed", "invalid ML-KEM public key in bundle");
  }
}
