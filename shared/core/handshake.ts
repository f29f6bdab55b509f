/**
 * Session establishment (PROTOCOL.md §8.2–§8.3): the online signed-ephemeral handshake and the
 * asynchronous X3DH-style start from a prekey bundle. Small pure functions: bytes and keys in,
 * transcripts, signatures and key material out. Who stores what is decided in dm.ts.
 */
import {
  ed25519Sign,
  ed25519Verify,
  hkdfSha256,
  hkdfSha256Expand,
  hkdfSha256Extract,
  hmacSha256,
  sha256,
  x25519,
} from "../crypto";
import { concatBytes, lp, u32be } from "../encoding";
import { CoreError } from "./errors";

export interface Party {
  name: string;
  identityKey: Uint8Array;
}

/** Associated data of every ratchet message of a session: both identities, initiator first. */
export function sessionAd(hub: string, initiator: Party, responder: Party): Uint8Array {
  return lp(
    "parley/v1/dm-ad",
    hub,
    initiator.name,
    initiator.identityKey,
    responder.name,
    responder.identityKey,
  );
}

/** 16-byte session id: names the session in every message so old sessions can still decrypt. */
export function sessionId(transcriptHash: Uint8Array): Uint8Array {
  return sha256(lp("parley/v1/sid", transcriptHash)).slice(0, 16);
}

// ---------------------------------------------------------------------------------------------
// Online handshake (§8.2)

/**
 * The hybrid handshake (§8.2.6) adds an ML-KEM-768 encapsulation: the initiator's ephemeral KEM
 * key `kemPk` in hs_init, the responder's ciphertext `kemCt` in hs_resp. With them every
 * transcript is under a v2 label and binds them; without them it is the classical v1 one.
 */
export function initTranscript(
  hub: string,
  a: Party,
  b: Party,
  ephA: Uint8Array,
  kemPk: Uint8Array | null = null,
): Uint8Array {
  if (kemPk !== null)
    return lp("parley/v2/hs-init", hub, a.name, a.identityKey, b.name, b.identityKey, ephA, kemPk);
  return lp("parley/v1/hs-init", hub, a.name, a.identityKey, b.name, b.identityKey, ephA);
}

export interface HandshakeKem {
  pk: Uint8Array;
  ct: Uint8Array;
}

export function respTranscript(
  hub: string,
  a: Party,
  b: Party,
  ephA: Uint8Array,
  ephB: Uint8Array,
  kem: HandshakeKem | null = null,
): Uint8Array {
  if (kem !== null) {
    return lp(
      "parley/v2/hs-resp",
      hub,
      a.name,
      a.identityKey,
      b.name,
      b.identityKey,
      ephA,
      kem.pk,
      ephB,
      kem.ct,
    );
  }
  return lp("parley/v1/hs-resp", hub, a.name, a.identityKey, b.name, b.identityKey, ephA, ephB);
}

export function handshakeHash(
  hub: string,
  a: Party,
  b: Party,
  ephA: Uint8Array,
  ephB: Uint8Array,
  sigA: Uint8Array,
  sigB: Uint8Array,
  kem: HandshakeKem | null = null,
): Uint8Array {
  if (kem !== null) {
    return sha256(
      lp(
        "parley/v2/hs",
        hub,
        a.name,
        a.identityKey,
        b.name,
        b.identityKey,
        ephA,
        kem.pk,
        ephB,
        kem.ct,
        sigA,
        sigB,
      ),
    );
  }
  return sha256(
    lp("parley/v1/hs", hub, a.name, a.identityKey, b.name, b.identityKey, ephA, ephB, sigA, sigB),
  );
}

export interface HandshakeKeys {
  /** Root key the Double Ratchet starts from. */
  rootKey: Uint8Array;
  /** Responder → initiator initial chain key (the responder may speak first). */
  chainR2I: Uint8Array;
  /** Key-confirmation MAC keys, one per direction. */
  confirmI2R: Uint8Array;
  confirmR2I: Uint8Array;
}

/**
 * HKDF-SHA256(ikm = X25519(ephA, ephB) [|| ML-KEM shared secret], salt = transcript hash,
 * info = label per key). The hybrid handshake passes `dh || ss` (§8.2.6).
 */
export function handshakeKeys(dh: Uint8Array, th: Uint8Array): HandshakeKeys {
  // Four HKDFs over the same ikm and salt: one RFC 5869 Extract, four Expands (same bytes as
  // four full HKDF calls, fewer HMACs).
  const prk = hkdfSha256Extract(dh, th);
  const k = (label: string) => hkdfSha256Expand(prk, lp(label), 32);
  const keys = {
    rootKey: k("parley/v1/hs-root"),
    chainR2I: k("parley/v1/hs-chain-r2i"),
    confirmI2R: k("parley/v1/hs-confirm-i2r"),
    confirmR2I: k("parley/v1/hs-confirm-r2i"),
  };
  prk.fill(0);
  return keys;
}

export function confirmMac(
  key: Uint8Array,
  role: "initiator" | "responder",
  th: Uint8Array,
): Uint8Array {
  return hmacSha256(key, lp("parley/v1/hs-confirm", role, th));
}

export async function verifyOrThrow(
  key: Uint8Array,
  message: Uint8Array,
  sig: Uint8Array,
  what: string,
): Promise<void> {
  if (!(await ed25519Verify(key, message, sig))) {
    throw new CoreError("bad_signature", `${what} signature does not verify`);
  }
}

export async function dh(priv: Uint8Array, pub: Uint8Array): Promise<Uint8Array> {
  try {
    return await x25519(priv, pub);
  } catch {
    throw new CoreError("malformed", "invalid X25519 public key");
  }
}

// ---------------------------------------------------------------------------------------------
// Asynchronous start (§8.3)

export interface PrekeyRef {
  spkId: number;
  spk: Uint8Array;
  opk: { id: number; key: Uint8Array } | null;
}

/** The initiator signs this; both sides derive the root key with its hash as salt. */
export function x3dhTranscript(
  hub: string,
  a: Party,
  b: Party,
  pre: PrekeyRef,
  ekA: Uint8Array,
): Uint8Array {
  const none = new Uint8Array(0);
  return lp(
    "parley/v1/x3dh",
    hub,
    a.name,
    a.identityKey,
    b.name,
    b.identityKey,
    pre.spkId,
    pre.spk,
    pre.opk ? u32be(pre.opk.id) : none,
    pre.opk ? pre.opk.key : none,
    ekA,
  );
}

/** SK = HKDF(DH(EK_A, SPK_B) || DH(EK_A, OPK_B)?, salt = SHA-256(transcript || sig), info). */
export function x3dhRoot(
  dh1: Uint8Array,
  dh2: Uint8Array | null,
  transcript: Uint8Array,
  sig: Uint8Array,
): Uint8Array {
  const ikm = dh2 ? concatBytes(dh1, dh2) : dh1;
  return hkdfSha256(ikm, x3dhHash(transcript, sig), lp("parley/v1/x3dh-root"), 32);
}

export function x3dhHash(transcript: Uint8Array, sig: Uint8Array): Uint8Array {
  return sha256(lp(transcript, sig));
}

// ---------------------------------------------------------------------------------------------
// Post-quantum asynchronous start (§8.3.5): PQXDH with identity-DH keys

export interface PqPrekeyRef extends PrekeyRef {
  /** The responder's identity-DH key (X25519, signed in its PQ prekey). */
  idh: Uint8Array;
  /** The KEM prekey encapsulated to: a one-time one (with its id) or the last-resort one. */
  kem: { oneTimeId: number | null; key: Uint8Array };
}

/** T = lp("parley/v2/pqxdh", …): signed by the initiator, hashed into the salt of the root. */
export function pqxdhTranscript(
  hub: string,
  a: Party,
  idhA: Uint8Array,
  b: Party,
  pre: PqPrekeyRef,
  ekA: Uint8Array,
  kemCt: Uint8Array,
): Uint8Array {
  const none = new Uint8Array(0);
  return lp(
    "parley/v2/pqxdh",
    hub,
    a.name,
    a.identityKey,
    idhA,
    b.name,
    b.identityKey,
    pre.idh,
    pre.spkId,
    pre.spk,
    pre.opk ? u32be(pre.opk.id) : none,
    pre.opk ? pre.opk.key : none,
    pre.kem.oneTimeId === null ? none : u32be(pre.kem.oneTimeId),
    pre.kem.key,
    ekA,
    kemCt,
  );
}

/**
 * SK = HKDF(DH1 || DH2 || DH3 || DH4? || SS, salt = SHA-256(lp(T, sig)), lp("parley/v2/pqxdh-root"))
 * with DH1 = DH(IDH_A, SPK_B), DH2 = DH(EK_A, IDH_B), DH3 = DH(EK_A, SPK_B), DH4 = DH(EK_A, OPK_B)
 * and SS the ML-KEM-768 shared secret — Signal's PQXDH order (§8.3.5).
 */
export function pqxdhRoot(
  dhs: { dh1: Uint8Array; dh2: Uint8Array; dh3: Uint8Array; dh4: Uint8Array | null },
  ss: Uint8Array,
  transcript: Uint8Array,
  sig: Uint8Array,
): Uint8Array {
  const parts = [dhs.dh1, dhs.dh2, dhs.dh3, ...(dhs.dh4 ? [dhs.dh4] : []), ss];
  return hkdfSha256(
    concatBytes(...parts),
    x3dhHash(transcript, sig),
    lp("parley/v2/pqxdh-root"),
    32,
  );
}

export { ed25519Sign };
