/**
 * Our signed prekey and one-time prekeys (PROTOCOL.md §8.3.1): generation, rotation on a schedule
 * with a grace period for the old secret, replenishment, and one-shot consumption with a replay
 * cache of initiator ephemerals. Pure transitions over a serialisable record.
 */
import * as v from "valibot";
import type { IdentityKeyPair } from "../crypto";
import { ed25519Sign, x25519Forget } from "../crypto";
import { lp } from "../encoding";
import type { OneTimePrekey, SignedPrekey } from "../protocol";
import { b64, enc, Key32, Uint } from "./codec";
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

const SpkSchema = v.strictObject({
  id: Uint,
  pub: Key32,
  priv: Key32,
  sig: v.string(),
  createdAt: Uint,
});
export const PrekeyStateSchema = v.strictObject({
  spk: SpkSchema,
  /** Replaced signed prekeys still accepted until `retiredAt + grace`. */
  oldSpks: v.array(v.strictObject({ id: Uint, pub: Key32, priv: Key32, retiredAt: Uint })),
  opks: v.array(v.strictObject({ id: Uint, pub: Key32, priv: Key32 })),
  nextOpkId: Uint,
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

async function makeSpk(identity: IdentityKeyPair, id: number, now: number, random: Random) {
  const kp = await newX25519(random);
  const sig = await ed25519Sign(identity.privateKey, spkMessage(id, b64(kp.pub, "spk")));
  return { id, pub: kp.pub, priv: kp.priv, sig: enc(sig), createdAt: now };
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
  return {
    spk: await makeSpk(identity, randomId(random), now, random),
    oldSpks: [],
    opks: [],
    nextOpkId: randomId(random),
    seen: [],
  };
}

export function publicSpk(s: PrekeyState): SignedPrekey {
  return { id: s.spk.id, key: s.spk.pub, sig: s.spk.sig };
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
  for (const o of s.oldSpks) if (!oldSpks.includes(o)) x25519Forget(b64(o.priv, "spk"));
  if (now - s.spk.createdAt < rotateMs && seenCount(s, s.spk.id) < MAX_SEEN_EPHEMERALS) {
    return { state: { ...s, oldSpks, seen: pruneSeen(s.seen, s.spk.id, oldSpks) }, rotated: false };
  }
  const id = (s.spk.id + 1) >>> 0 || 1;
  const retired = { id: s.spk.id, pub: s.spk.pub, priv: s.spk.priv, retiredAt: now };
  const next = [...oldSpks, retired];
  return {
    state: {
      ...s,
      spk: await makeSpk(identity, id, now, random),
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

/** After a successful first decryption: delete the OPK, remember the ephemeral (§8.3.3). */
export function consumePrekeys(
  s: PrekeyState,
  spkId: number,
  opkId: number | null,
  ekA: Uint8Array,
): PrekeyState {
  // Never evict (see MAX_SEEN_EPHEMERALS); findPrekeys refused this message if the cache is full.
  if (seenCount(s, spkId) >= MAX_SEEN_EPHEMERALS)
    throw new CoreError("prekey_limit", "too many new sessions on this signed prekey");
  const seen = [...s.seen, `${spkId}:${enc(ekA)}`];
  const used = opkId === null ? undefined : s.opks.find((o) => o.id === opkId);
  if (used !== undefined) x25519Forget(b64(used.priv, "opk"));
  return { ...s, opks: opkId === null ? s.opks : s.opks.filter((o) => o.id !== opkId), seen };
}
