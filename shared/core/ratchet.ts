/**
 * Double Ratchet (Signal's specification, revision 4) as pure transitions over a serialisable
 * state (PROTOCOL.md §8.4). Every function returns a NEW state and never mutates its input, so a
 * failed decryption (tamper, replay, too far) leaves the caller's state untouched: the caller
 * commits the returned state only on success.
 *
 *   KDF_RK(rk, dh)  = HKDF-SHA256(ikm = dh, salt = rk, info = "parley/v1/dr-rk", 64) → rk' || ck
 *   KDF_CK(ck)      = ck' = HMAC-SHA256(ck, 0x02), mk = HMAC-SHA256(ck, 0x01)
 *   AES-256-GCM key = mk, nonce = 0x00000000 || u64be(n), AAD = lp("parley/v1/dr-msg", ad, prefix, header)
 *   header          = dh (32) || u32be(pn) || u32be(n)  (40 bytes)
 *
 * Sparse KEM step (§8.4.1) on post-quantum sessions: every KEM_STEP_EVERY-th new sending chain
 * carries a fresh ML-KEM-768 public key of ours; the peer's next sending chain carries an
 * encapsulation to it, and the shared secret joins the DH output of that chain's KDF_RK:
 *   KDF_RK(rk, dh || ss). Both ride along in the `message_kem` envelope prefix (authenticated).
 */
import * as v from "valibot";
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  hkdfSha256,
  hmacSha256,
  mlkemDecapsulateSeed,
  mlkemEncapsulate,
  mlkemForget,
  mlkemPublicKey,
  x25519,
  x25519Forget,
  x25519PublicKey,
} from "../crypto";
import { concatBytes, lp, u32be, utf8 } from "../encoding";
import { B64, b64, enc, Key32, Reader, Uint, u64be } from "./codec";
import { CoreError } from "./errors";

/** Furthest a message number may jump ahead within one chain (Signal's MAX_SKIP). */
export const MAX_SKIP = 1000;
/** Skipped message keys kept in total per session; the oldest are evicted first. */
export const MAX_SKIPPED_TOTAL = 2000;
/** Previous receiving ratchet keys remembered, so replays on old chains are named as such. */
const MAX_OLD_DHR = 16;
export const HEADER_BYTES = 40;
/**
 * A fresh KEM key of ours goes out with every this-many-th new sending chain (§8.4.1). A sender's
 * choice: the receiver only answers what arrives. 16 renews the post-quantum secret within 16 of
 * our chains (Signal's SPQR: about every 44 round trips) at a fifth of the ML-KEM work per message
 * that 4 cost (SECURITY.md §2.1).
 */
export const KEM_STEP_EVERY = 16;

/** What a sending chain carries for the KEM step (§8.4.1); base64url in the state. */
export interface KemAttachment {
  pk: Uint8Array | null;
  ct: Uint8Array | null;
}

const KeyPairSchema = v.strictObject({ pub: Key32, priv: Key32 });
const SkippedSchema = v.strictObject({ dh: Key32, n: Uint, mk: Key32 });

export const RatchetStateSchema = v.strictObject({
  /** Associated data bound into every message: both identities (see handshake.ts `sessionAd`). */
  ad: B64,
  dhs: KeyPairSchema,
  dhr: v.nullable(Key32),
  rk: Key32,
  cks: v.nullable(Key32),
  ckr: v.nullable(Key32),
  ns: Uint,
  nr: Uint,
  pn: Uint,
  skipped: v.array(SkippedSchema),
  oldDhr: v.array(Key32),
  /**
   * The sparse KEM step (§8.4.1), present on post-quantum sessions only: our outstanding KEM
   * seed (its public key was sent, no ciphertext for it received yet), the peer's key we will
   * encapsulate to at our next DH step, what the current sending chain carries, and how many
   * sending chains we made.
   */
  kem: v.optional(
    v.strictObject({
      own: v.nullable(v.pipe(B64, v.length(86))),
      peer: v.nullable(B64),
      out: v.strictObject({ pk: v.nullable(B64), ct: v.nullable(B64) }),
      steps: Uint,
    }),
  ),
});
export type RatchetState = v.InferOutput<typeof RatchetStateSchema>;

export interface Header {
  dh: Uint8Array;
  pn: number;
  n: number;
}

export function encodeHeader(h: Header): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  out.set(h.dh, 0);
  out.set(u32be(h.pn), 32);
  out.set(u32be(h.n), 36);
  return out;
}

export function decodeHeader(bytes: Uint8Array): Header {
  const r = new Reader(bytes, "ratchet header");
  const h = { dh: r.bytes(32), pn: r.u32(), n: r.u32() };
  r.end();
  return h;
}

export type Random = (n: number) => Uint8Array;

export async function newX25519(random: Random): Promise<{ pub: string; priv: string }> {
  const priv = random(32);
  return { pub: enc(await x25519PublicKey(priv)), priv: enc(priv) };
}

/** Constant KDF inputs, encoded once (lp() of a string is lp() of its UTF-8 bytes). */
const DR_RK_INFO = lp("parley/v1/dr-rk");
const DR_MSG_LABEL = utf8("parley/v1/dr-msg");

/** KDF_RK; `dhOut` is DH output, or DH output || ML-KEM secret on a KEM step (§8.4.1). */
export function kdfRk(rk: Uint8Array, dhOut: Uint8Array): { rk: Uint8Array; ck: Uint8Array } {
  const out = hkdfSha256(dhOut, rk, DR_RK_INFO, 64);
  return { rk: out.slice(0, 32), ck: out.slice(32) };
}

const ONE = new Uint8Array([1]);
const TWO = new Uint8Array([2]);
export function kdfCk(ck: Uint8Array): { ck: Uint8Array; mk: Uint8Array } {
  return { ck: hmacSha256(ck, TWO), mk: hmacSha256(ck, ONE) };
}

export function counterNonce(n: number): Uint8Array {
  const out = new Uint8Array(12);
  out.set(u64be(n), 4);
  return out;
}

/**
 * The last decoded `ad` (both identities, fixed for a session's life): every message of a
 * session binds it into its AAD, so it is decoded once, not per message. Public data.
 */
let adMemo: { text: string; bytes: Uint8Array } | null = null;

function aad(state: RatchetState, prefix: Uint8Array, header: Uint8Array): Uint8Array {
  if (adMemo === null || adMemo.text !== state.ad) {
    adMemo = { text: state.ad, bytes: b64(state.ad, "ad") };
  }
  return lp(DR_MSG_LABEL, adMemo.bytes, prefix, header);
}

/** Initial state of the party that sends first (Signal's RatchetInitAlice). */
export async function initInitiator(params: {
  rootKey: Uint8Array;
  ad: Uint8Array;
  peerRatchetKey: Uint8Array;
  /** Initial receiving chain for `peerRatchetKey` (online handshake), or null (async start). */
  receiveChain: Uint8Array | null;
  random: Random;
  /** A post-quantum session: run the sparse KEM step (§8.4.1). */
  kemStep?: boolean;
}): Promise<RatchetState> {
  const dhs = await newX25519(params.random);
  const dh = await x25519(b64(dhs.priv, "key"), params.peerRatchetKey);
  const { rk, ck } = kdfRk(params.rootKey, dh);
  return {
    ad: enc(params.ad),
    dhs,
    dhr: enc(params.peerRatchetKey),
    rk: enc(rk),
    cks: enc(ck),
    ckr: params.receiveChain ? enc(params.receiveChain) : null,
    ns: 0,
    nr: 0,
    pn: 0,
    skipped: [],
    oldDhr: [],
    ...(params.kemStep ? { kem: freshKem() } : {}),
  };
}

function freshKem(): NonNullable<RatchetState["kem"]> {
  return { own: null, peer: null, out: { pk: null, ct: null }, steps: 0 };
}

/** The KEM fields the current sending chain must carry (§8.4.1), or null when none. */
export function kemOut(state: RatchetState): KemAttachment | null {
  const o = state.kem?.out;
  if (!o || (o.pk === null && o.ct === null)) return null;
  return {
    pk: o.pk === null ? null : b64(o.pk, "kem pk"),
    ct: o.ct === null ? null : b64(o.ct, "kem ct"),
  };
}

/** Initial state of the responder (Signal's RatchetInitBob): our ratchet key is eph/SPK. */
export function initResponder(params: {
  rootKey: Uint8Array;
  ad: Uint8Array;
  ratchetKeyPair: { pub: string; priv: string };
  /** Initial sending chain (online handshake), or null (async start: wait for a message). */
  sendChain: Uint8Array | null;
  /** A post-quantum session: run the sparse KEM step (§8.4.1). */
  kemStep?: boolean;
}): RatchetState {
  return {
    ad: enc(params.ad),
    dhs: { ...params.ratchetKeyPair },
    dhr: null,
    rk: enc(params.rootKey),
    cks: params.sendChain ? enc(params.sendChain) : null,
    ckr: null,
    ns: 0,
    nr: 0,
    pn: 0,
    skipped: [],
    oldDhr: [],
    ...(params.kemStep ? { kem: freshKem() } : {}),
  };
}

export function canSend(state: RatchetState): boolean {
  return state.cks !== null;
}

/** Encrypt one padded plaintext. `prefix` = envelope bytes before the header (authenticated). */
export async function ratchetEncrypt(
  state: RatchetState,
  plaintext: Uint8Array,
  prefix: Uint8Array,
): Promise<{ state: RatchetState; header: Uint8Array; ciphertext: Uint8Array }> {
  if (state.cks === null) throw new CoreError("unknown_session", "no sending chain yet");
  const { ck, mk } = kdfCk(b64(state.cks, "cks"));
  const header = encodeHeader({ dh: b64(state.dhs.pub, "dh"), pn: state.pn, n: state.ns });
  const ciphertext = await aesGcmEncrypt(
    mk,
    counterNonce(state.ns),
    plaintext,
    aad(state, prefix, header),
  );
  return {
    state: { ...cloneState(state), cks: enc(ck), ns: state.ns + 1 },
    header,
    ciphertext,
  };
}

/**
 * A copy whose arrays the caller may push to and splice. Entries are shared: no transition
 * mutates a skipped-key entry or a key pair in place, they are only added, removed or replaced.
 */
function cloneState(s: RatchetState): RatchetState {
  return { ...s, skipped: [...s.skipped], oldDhr: [...s.oldDhr] };
}

/** Store skipped keys of the current receiving chain up to (not including) `until`. */
function skipTo(s: RatchetState, until: number): void {
  if (s.ckr === null || s.dhr === null) return;
  if (until - s.nr > MAX_SKIP) throw new CoreError("too_far", "message too far ahead");
  // Nothing to skip (the in-order case): leave the chain key as it is, no decode/encode.
  if (s.nr >= until) return;
  let ck = b64(s.ckr, "ckr");
  while (s.nr < until) {
    const step = kdfCk(ck);
    s.skipped.push({ dh: s.dhr, n: s.nr, mk: enc(step.mk) });
    ck = step.ck;
    s.nr++;
  }
  s.ckr = enc(ck);
  // Bounded store: evict the oldest keys (those messages are then lost, never mis-decrypted).
  if (s.skipped.length > MAX_SKIPPED_TOTAL)
    s.skipped.splice(0, s.skipped.length - MAX_SKIPPED_TOTAL);
}

/**
 * Decrypt one message. Throws CoreError (replay | too_far | decrypt_failed | malformed) and then
 * the input state is still valid and unchanged; on success returns the advanced state.
 */
export async function ratchetDecrypt(
  state: RatchetState,
  headerBytes: Uint8Array,
  ciphertext: Uint8Array,
  prefix: Uint8Array,
  random: Random,
  /** The KEM fields the message's envelope carried (§8.4.1); they are part of `prefix`. */
  kemIn: KemAttachment | null = null,
): Promise<{ state: RatchetState; plaintext: Uint8Array }> {
  const header = decodeHeader(headerBytes);
  const ad = aad(state, prefix, headerBytes);
  const dhB64 = enc(header.dh);
  const s = cloneState(state);

  const idx = s.skipped.findIndex((k) => k.dh === dhB64 && k.n === header.n);
  if (idx >= 0) {
    const mk = b64((s.skipped[idx] as { mk: string }).mk, "mk");
    const plaintext = await open(mk, header.n, ciphertext, ad);
    s.skipped.splice(idx, 1);
    return { state: s, plaintext };
  }

  if (dhB64 !== s.dhr) {
    if (s.oldDhr.includes(dhB64)) {
      throw new CoreError("replay", "message from a finished chain (replayed or evicted)");
    }
    if (header.pn - s.nr > MAX_SKIP && s.ckr !== null)
      throw new CoreError("too_far", "too many skipped");
    skipTo(s, header.pn);
    // DH ratchet step (Signal §3.5 DHRatchet).
    if (s.dhr !== null) {
      s.oldDhr.push(s.dhr);
      if (s.oldDhr.length > MAX_OLD_DHR) s.oldDhr.shift();
    }
    s.pn = s.ns;
    s.ns = 0;
    s.nr = 0;
    s.dhr = dhB64;
    // The receiving DH and our next ratchet key are independent: run them concurrently (with
    // the default backend the DH is a WebCrypto round trip and the key generation runs here).
    // Randomness is still drawn exactly once.
    const [recvDh, nextDhs] = await Promise.all([
      dhOrFail(b64(s.dhs.priv, "dhs"), header.dh),
      newX25519(random),
    ]);
    const step = s.kem ? kemStep(s.kem, kemIn, random) : null;
    const recv = kdfRk(b64(s.rk, "rk"), step?.ssIn ? concatBytes(recvDh, step.ssIn) : recvDh);
    s.ckr = enc(recv.ck);
    const retired = s.dhs.priv;
    s.dhs = nextDhs;
    const sendDh = await dhOrFail(b64(s.dhs.priv, "dhs"), header.dh);
    const send = kdfRk(recv.rk, step?.ssOut ? concatBytes(sendDh, step.ssOut) : sendDh);
    s.rk = enc(send.rk);
    s.cks = enc(send.ck);
    if (step) s.kem = step.kem;
    // The old ratchet key is gone from the state; it must not stay usable in the DH cache.
    x25519Forget(b64(retired, "dhs"));
  } else if (header.n < s.nr) {
    throw new CoreError("replay", "message number already received");
  }
  if (s.ckr === null) throw new CoreError("unknown_session", "no receiving chain");
  skipTo(s, header.n);
  const { ck, mk } = kdfCk(b64(s.ckr, "ckr"));
  const plaintext = await open(mk, header.n, ciphertext, ad);
  s.ckr = enc(ck);
  s.nr = header.n + 1;
  return { state: s, plaintext };
}

/**
 * The KEM half of a DH ratchet step (§8.4.1). In: a ciphertext on the peer's new chain answers
 * our outstanding key (decapsulated, mixed into the receiving chain); a public key on it is kept.
 * Out: if we hold a peer key, our new sending chain encapsulates to it (mixed into the sending
 * chain, ciphertext carried); every KEM_STEP_EVERY-th chain with no key of ours outstanding also
 * carries a fresh public key of ours.
 */
function kemStep(
  kem: NonNullable<RatchetState["kem"]>,
  kemIn: KemAttachment | null,
  random: Random,
): { ssIn: Uint8Array | null; ssOut: Uint8Array | null; kem: NonNullable<RatchetState["kem"]> } {
  let own = kem.own;
  let ssIn: Uint8Array | null = null;
  if (kemIn?.ct) {
    // A ciphertext we did not ask for is out of protocol: the message cannot be ours to open.
    if (own === null) throw new CoreError("decrypt_failed", "unexpected KEM ciphertext");
    const seed = b64(own, "kem seed");
    try {
      ssIn = mlkemDecapsulateSeed(kemIn.ct, seed);
    } catch {
      throw new CoreError("decrypt_failed", "malformed KEM ciphertext");
    }
    // Answered: the key leaves the state, and its expansion the cache (§8.4.1). (If this message
    // then fails to authenticate, the caller keeps the old state and a retry re-expands.)
    mlkemForget(seed);
    own = null;
  }
  let peer = kemIn?.pk ? enc(kemIn.pk) : kem.peer;
  let ssOut: Uint8Array | null = null;
  let ct: string | null = null;
  if (peer !== null) {
    let e: { ciphertext: Uint8Array; sharedSecret: Uint8Array };
    try {
      e = mlkemEncapsulate(b64(peer, "kem pk"));
    } catch {
      throw new CoreError("decrypt_failed", "invalid KEM public key");
    }
    ssOut = e.sharedSecret;
    ct = enc(e.ciphertext);
    peer = null;
  }
  const steps = kem.steps + 1;
  let pk: string | null = null;
  if (own === null && steps % KEM_STEP_EVERY === 0) {
    const seed = random(64);
    own = enc(seed);
    pk = enc(mlkemPublicKey(seed));
  }
  return { ssIn, ssOut, kem: { own, peer, out: { pk, ct }, steps } };
}

/** A low-order or invalid peer ratchet key is an undecryptable message, not a crash. */
async function dhOrFail(priv: Uint8Array, pub: Uint8Array): Promise<Uint8Array> {
  try {
    return await x25519(priv, pub);
  } catch {
    throw new CoreError("decrypt_failed", "invalid ratchet key");
  }
}

async function open(
  mk: Uint8Array,
  n: number,
  ciphertext: Uint8Array,
  ad: Uint8Array,
): Promise<Uint8Array> {
  try {
    return await aesGcmDecrypt(mk, counterNonce(n), ciphertext, ad);
  } catch {
    throw new CoreError("decrypt_failed", "message does not authenticate");
  }
}

export function parseRatchetState(x: unknown): RatchetState {
  const r = v.safeParse(RatchetStateSchema, x);
  if (!r.success) throw new CoreError("malformed", "stored ratchet state");
  return r.output;
}
