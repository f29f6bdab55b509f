/**
 * Our signed prekey and one-time prekeys (PROTOCOL.md §8.3.1): generation, rotation on a schedule
 * with a grace period for the old secret, replenishment, and one-shot consumption with a replay
 * cache of initiator ephemerals. Pure transitions over a serialisable record.
 */
import * as v from "valibot";
import { signedPrekeyTranscriptV2 } from "../auth";
import type { IdentityKeyPair } from "../crypto";
import { ed25519Sign, mlkemForget, mlkemPublicKey, x25519Forget } from "../crypto";
import { lp } from "../encoding";
import type { OneTimeKemPrekey, OneTimePrekey, PqPrekey, SignedPrekey } from "../protocol";
import { B64, b64, enc, Key32, Uint } from "./codec";
import { CoreError } from "./errors";
import { newX25519, type Random } from "./ratchet";

export const DAY = 24 * 60 * 60 * 1000;
/**
 * Initiator ephemerals remembered per signed prekey (replay cache, §8.3.3). Entries of a live SPK
 * are never evicted (an evicted entry would let a relay replay that first message as a new
 * session); instead, once an SPK has this many, further prekey messages on it are refused with
 * `prekey_limit` and the SPK is rotated at the next maintenance. The cache of an SPK is dropped
 * together with its secret after the grace period, when its messages cannot be opened at all.
 */
export const MAX_SEEN_EPHEMERALS = 5000;

/** A 64-byte ML-KEM-768 seed d‖z (§3.11), base64url. */
const Seed64 = v.pipe(B64, v.length(86));
/** One-time KEM prekey secrets kept (oldest dropped), as for X25519 OPKs (§8.3.1). */
export const MAX_KEM_OPK_SECRETS = 200;

const SpkSchema = v.strictObject({
  id: Uint,
  pub: Key32,
  priv: Key32,
  sig: v.string(),
  createdAt: Uint,
  /**
   * Post-quantum signed prekey (§8.3.5): the last-resort ML-KEM seed and the signature of the PQ
   * prekey. Present exactly when `sig` is under the v2 label; absent on records made before.
   */
  kem: v.optional(Seed64),
  pqSig: v.optional(v.string()),
});
const KeyPairSchema = v.strictObject({ pub: Key32, priv: Key32 });
export const PrekeyStateSchema = v.strictObject({
  spk: SpkSchema,
  /** Replaced signed prekeys still accepted until `retiredAt + grace`. */
  oldSpks: v.array(
    v.strictObject({
      id: Uint,
      pub: Key32,
      priv: Key32,
      retiredAt: Uint,
      kem: v.optional(Seed64),
    }),
  ),
  opks: v.array(v.strictObject({ id: Uint, pub: Key32, priv: Key32 })),
  nextOpkId: Uint,
  /** The identity-DH key (§8.3.5): long-lived X25519, published signed in the PQ prekey. */
  idh: v.optional(KeyPairSchema),
  /** One-time ML-KEM prekey seeds (§8.3.5). */
  kopks: v.optional(v.array(v.strictObject({ id: Uint, seed: Seed64 }))),
  nextKopkId: v.optional(Uint),
  /**
   * base64url of ek_a values already used with each signed prekey id ("spkId:ek"), at most
   * MAX_SEEN_EPHEMERALS per live SPK, pruned when that SPK's secret is deleted.
   */
  seen: v.array(v.string()),
});
export type PrekeyState = v.InferOutput<typeof PrekeyStateSchema>;

/** The signed-prekey signature: Ed25519(IK, lp("parley/v1/spk", id, key)) (protocol.ts §3.2). */
export function spkMessage(id: number, key: Uint8Array): Uint8Array {
  return lp("parley/v1/spk", id, key);
}

/** What the PQ prekey signature covers (§8.3.5). */
export function pqSpkMessage(
  spkId: number,
  spk: Uint8Array,
  idh: Uint8Array,
  kem: Uint8Array,
): Uint8Array {
  return lp("parley/v2/pq-spk", spkId, spk, idh, kem);
}

/** What a one-time KEM prekey's signature covers (§8.3.5). */
export function kemOpkMessage(id: number, key: Uint8Array): Uint8Array {
  return lp("parley/v2/kem-opk", id, key);
}

/** A v2 signed prekey (§8.3.5): X25519 signed under the v2 label, plus its last-resort KEM key. */
async function makeSpk(
  identity: IdentityKeyPair,
  idhPub: string,
  id: number,
  now: number,
  random: Random,
) {
  const kp = await newX25519(random);
  const spk = b64(kp.pub, "spk");
  const kem = random(64);
  const [sig, pqSig] = await Promise.all([
    ed25519Sign(identity.privateKey, signedPrekeyTranscriptV2(id, spk)),
    ed25519Sign(
      identity.privateKey,
      pqSpkMessage(id, spk, b64(idhPub, "idh"), mlkemPublicKey(kem)),
    ),
  ]);
  return {
    id,
    pub: kp.pub,
    priv: kp.priv,
    sig: enc(sig),
    createdAt: now,
    kem: enc(kem),
    pqSig: enc(pqSig),
  };
}

/** A random non-zero u32: where a new device's id sequences start (§8.3.1). */
function randomId(random: Random): number {
  const b = random(4);
  const n =
    ((b[0] as number) << 24) |
    ((b[1] as number) << 16) |
    ((b[2] as number) << 8) |
    (b[3] as number);
  return n >>> 0 || 1;
}

/**
 * Fresh prekey state. Ids start at random points: after an identity is imported on a new device
 * the relay may still hold public prekeys of the old one under small ids, and a bundle must never
 * pair an id with a key whose secret we do not hold.
 */
export async function initialPrekeys(
  identity: IdentityKeyPair,
  now: number,
  random: Random,
): Promise<PrekeyState> {
  const idh = await newX25519(random);
  return {
    spk: await makeSpk(identity, idh.pub, randomId(random), now, random),
    oldSpks: [],
    opks: [],
    nextOpkId: randomId(random),
    idh,
    kopks: [],
    nextKopkId: randomId(random),
    seen: [],
  };
}

export function publicSpk(s: PrekeyState): SignedPrekey {
  return { id: s.spk.id, key: s.spk.pub, sig: s.spk.sig };
}

/** The PQ prekey to publish with the signed prekey (§8.3.5); null for a v1 record. */
export function publicPq(s: PrekeyState): PqPrekey | null {
  if (s.spk.kem === undefined || s.spk.pqSig === undefined || s.idh === undefined) return null;
  return {
    spkId: s.spk.id,
    idh: s.idh.pub,
    kem: enc(mlkemPublicKey(b64(s.spk.kem, "kem seed"))),
    sig: s.spk.pqSig,
  };
}

/** Replay-cache entries recorded for signed prekey `spkId`. */
export function seenCount(s: PrekeyState, spkId: number): number {
  const p = `${spkId}:`;
  return s.seen.reduce((a, e) => (e.startsWith(p) ? a + 1 : a), 0);
}

/**
 * Rotate when due, or early when the current SPK's replay cache is full (§8.3.3); drop old
 * secrets past the grace period, with their replay caches. Returns `rotated` to trigger upload.
 */
export async function maintainSpk(
  s: PrekeyState,
  identity: IdentityKeyPair,
  now: number,
  random: Random,
  rotateMs: number,
  graceMs: number,
): Promise<{ state: PrekeyState; rotated: boolean }> {
  const oldSpks = s.oldSpks.filter((o) => now - o.retiredAt < graceMs);
  // Secrets past their grace period are deleted: drop what the DH cache derived from them too.
  for (const o of s.oldSpks) {
    if (oldSpks.includes(o)) continue;
    x25519Forget(b64(o.priv, "spk"));
    if (o.kem !== undefined) mlkemForget(b64(o.kem, "kem seed"));
  }
  // A record made before post-quantum prekeys (§8.3.5) rotates at once into a v2 signed prekey.
  const pq = s.spk.kem !== undefined && s.idh !== undefined;
  if (pq && now - s.spk.createdAt < rotateMs && seenCount(s, s.spk.id) < MAX_SEEN_EPHEMERALS) {
    return { state: { ...s, oldSpks, seen: pruneSeen(s.seen, s.spk.id, oldSpks) }, rotated: false };
  }
  const idh = s.idh ?? (await newX25519(random));
  const id = (s.spk.id + 1) >>> 0 || 1;
  const retired = {
    id: s.spk.id,
    pub: s.spk.pub,
    priv: s.spk.priv,
    retiredAt: now,
    ...(s.spk.kem === undefined ? {} : { kem: s.spk.kem }),
  };
  const next = [...oldSpks, retired];
  return {
    state: {
      ...s,
      idh,
      kopks: s.kopks ?? [],
      nextKopkId: s.nextKopkId ?? randomId(random),
      spk: await makeSpk(identity, idh.pub, id, now, random),
      oldSpks: next,
      seen: pruneSeen(s.seen, id, next),
    },
    rotated: true,
  };
}

function pruneSeen(seen: string[], spkId: number, old: { id: number }[]): string[] {
  const live = new Set([spkId, ...old.map((o) => o.id)]);
  return seen.filter((e) => live.has(Number(e.split(":")[0])));
}

/** Make `count` new one-time prekeys; returns the public halves to upload. */
export async function addOneTimePrekeys(
  s: PrekeyState,
  count: number,
  random: Random,
): Promise<{ state: PrekeyState; upload: OneTimePrekey[] }> {
  const opks = [...s.opks];
  const upload: OneTimePrekey[] = [];
  let id = s.nextOpkId;
  for (let i = 0; i < count; i++) {
    const kp = await newX25519(random);
    opks.push({ id, ...kp });
    upload.push({ id, key: kp.pub });
    id = (id + 1) >>> 0 || 1;
  }
  return { state: { ...s, opks, nextOpkId: id }, upload };
}

/**
 * Make `count` one-time ML-KEM prekeys (§8.3.5), each signed; returns the public halves to
 * upload. Keeps at most MAX_KEM_OPK_SECRETS secrets (oldest dropped). Needs a v2 record.
 */
export async function addOneTimeKemPrekeys(
  s: PrekeyState,
  count: number,
  identity: IdentityKeyPair,
  random: Random,
): Promise<{ state: PrekeyState; upload: OneTimeKemPrekey[] }> {
  if (s.kopks === undefined || s.nextKopkId === undefined) return { state: s, upload: [] };
  const kopks = [...s.kopks];
  const made: { id: number; seed: Uint8Array; key: Uint8Array }[] = [];
  let id = s.nextKopkId;
  for (let i = 0; i < count; i++) {
    const seed = random(64);
    made.push({ id, seed, key: mlkemPublicKey(seed) });
    kopks.push({ id, seed: enc(seed) });
    id = (id + 1) >>> 0 || 1;
  }
  const sigs = await Promise.all(
    made.map((k) => ed25519Sign(identity.privateKey, kemOpkMessage(k.id, k.key))),
  );
  const upload = made.map((k, i) => ({
    id: k.id,
    key: enc(k.key),
    sig: enc(sigs[i] as Uint8Array),
  }));
  return {
    state: { ...s, kopks: kopks.slice(-MAX_KEM_OPK_SECRETS), nextKopkId: id },
    upload,
  };
}

export interface UsedPrekeys {
  spk: { pub: string; priv: string };
  opk: { pub: string; priv: string } | null;
}

/**
 * Look up the secrets a prekey message names; throws no_prekey / replay / prekey_limit. Does not
 * consume.
 */
export function findPrekeys(
  s: PrekeyState,
  spkId: number,
  opkId: number | null,
  ekA: Uint8Array,
): UsedPrekeys {
  const spk = s.spk.id === spkId ? s.spk : s.oldSpks.find((o) => o.id === spkId);
  if (!spk) throw new CoreError("no_prekey", "unknown or expired signed prekey");
  if (s.seen.includes(`${spkId}:${enc(ekA)}`))
    throw new CoreError("replay", "prekey message already used");
  if (seenCount(s, spkId) >= MAX_SEEN_EPHEMERALS)
    throw new CoreError("prekey_limit", "too many new sessions on this signed prekey");
  if (opkId === null) return { spk, opk: null };
  const opk = s.opks.find((o) => o.id === opkId);
  // A replayed prekey message was caught by `seen` above; an OPK we do not hold is an error the
  // user must see (e.g. a key of a previous device the relay still handed out).
  if (!opk) throw new CoreError("no_prekey", "one-time prekey unknown or already used");
  return { spk, opk };
}

export interface UsedPqPrekeys extends UsedPrekeys {
  idh: { pub: string; priv: string };
  /** The KEM seed to decapsulate with: the one-time key's, or the SPK's last-resort one. */
  kemSeed: string;
}

/**
 * The secrets a post-quantum prekey message names (§8.3.5): those of findPrekeys, the identity-DH
 * key, and the one-time KEM prekey `kemOpkId` or else the SPK's last-resort KEM key. Throws
 * no_prekey when any is missing. Does not consume.
 */
export function findPqPrekeys(
  s: PrekeyState,
  spkId: number,
  opkId: number | null,
  kemOpkId: number | null,
  ekA: Uint8Array,
): UsedPqPrekeys {
  const used = findPrekeys(s, spkId, opkId, ekA);
  const spk = s.spk.id === spkId ? s.spk : s.oldSpks.find((o) => o.id === spkId);
  if (s.idh === undefined || spk?.kem === undefined)
    throw new CoreError("no_prekey", "signed prekey has no post-quantum part");
  let kemSeed = spk.kem;
  if (kemOpkId !== null) {
    const k = s.kopks?.find((o) => o.id === kemOpkId);
    if (!k) throw new CoreError("no_prekey", "one-time KEM prekey unknown or already used");
    kemSeed = k.seed;
  }
  return { ...used, idh: s.idh, kemSeed };
}

/**
 * After a successful first decryption: delete the OPK (and one-time KEM prekey), remember the
 * ephemeral (§8.3.3).
 */
export function consumePrekeys(
  s: PrekeyState,
  spkId: number,
  opkId: number | null,
  ekA: Uint8Array,
  kemOpkId: number | null = null,
): PrekeyState {
  // Never evict (see MAX_SEEN_EPHEMERALS); findPrekeys refused this message if the cache is full.
  if (seenCount(s, spkId) >= MAX_SEEN_EPHEMERALS)
    throw new CoreError("prekey_limit", "too many new sessions on this signed prekey");
  const seen = [...s.seen, `${spkId}:${enc(ekA)}`];
  const used = opkId === null ? undefined : s.opks.find((o) => o.id === opkId);
  if (used !== undefined) x25519Forget(b64(used.priv, "opk"));
  const next = { ...s, opks: opkId === null ? s.opks : s.opks.filter((o) => o.id !== opkId), seen };
  if (kemOpkId !== null && s.kopks !== undefined) {
    const usedKem = s.kopks.find((o) => o.id === kemOpkId);
    if (usedKem !== undefined) mlkemForget(b64(usedKem.seed, "kem seed"));
    next.kopks = s.kopks.filter((o) => o.id !== kemOpkId);
  }
  return next;
}
