/**
 * Leaf keys (PROTOCOL.md §9.3): per-member, per-group wrap keys, signed by the member's identity
 * key: hybrid X-Wing keys (ML-KEM-768 + X25519, §3.13), or X25519 only from a classical client. A
 * commit wraps to each member's oldest published leaf key; a member deletes the private half of
 * that key (and of every older one) once it has entered the commit's epoch, and publishes a fresh
 * one. So a wrap can be opened only with key material the member deletes when it enters the
 * next epoch.
 */
import {
  constantTimeEqual,
  ed25519VerifyMany,
  sha256,
  XWING_SEED_BYTES,
  x25519Forget,
  xwingForget,
  xwingPublicKey,
} from "../crypto";
import { concatBytes, fromB64u, toB64u } from "../encoding";
import { LEAF_KEM_BYTES, LEAF_NONCE_BYTES, LEAF_QUEUE, type Leaf, type Member } from "../protocol";
import { b64 } from "./codec";
import { CoreError } from "./errors";
import type { GroupRecord, OwnLeaf, RosterEntry } from "./group";
import { leafTranscript } from "./group-schedule";
import { newX25519, type Random } from "./ratchet";

/** Private leaf keys kept per group at most (published ones plus any not yet accepted). */
export const MAX_OWN_LEAVES = 2 * LEAF_QUEUE;

/**
 * Make `count` fresh signed leaf keys for `group`, made in `epoch` (§9.3): hybrid X-Wing keys
 * (the X25519 half is `key`, the ML-KEM half `kem`), or X25519 only with `classical` (tests of
 * mixed groups and of the downgrade checks; the engine always makes hybrid ones).
 */
export async function makeLeaves(params: {
  hub: string;
  group: string;
  epoch: number;
  count: number;
  random: Random;
  sign(message: Uint8Array): Promise<Uint8Array>;
  classical?: boolean;
}): Promise<OwnLeaf[]> {
  const out: OwnLeaf[] = [];
  for (let i = 0; i < params.count; i++) {
    let key: Uint8Array;
    let priv: Uint8Array;
    let kem: Uint8Array | undefined;
    if (params.classical === true) {
      const kp = await newX25519(params.random);
      key = fromB64u(kp.pub);
      priv = fromB64u(kp.priv);
    } else {
      priv = params.random(XWING_SEED_BYTES);
      const pk = await xwingPublicKey(priv);
      kem = pk.slice(0, LEAF_KEM_BYTES);
      key = pk.slice(LEAF_KEM_BYTES);
    }
    const idBytes = params.random(4);
    const id = new DataView(idBytes.buffer, idBytes.byteOffset, 4).getUint32(0);
    const nonce = params.random(LEAF_NONCE_BYTES);
    const kemHash = kem === undefined ? undefined : sha256(kem);
    const sig = await params.sign(
      leafTranscript(params.hub, params.group, params.epoch, id, key, nonce, kemHash),
    );
    out.push({
      id,
      key: toB64u(key),
      priv: toB64u(priv),
      epoch: params.epoch,
      nonce: toB64u(nonce),
      sig: toB64u(sig),
      ...(kem === undefined ? {} : { kem: toB64u(kem) }),
    });
  }
  return out;
}

/** The public half, as published (`join`, `leaf` frames). */
export function publicLeaf(l: OwnLeaf): Leaf {
  return {
    id: l.id,
    key: l.key,
    epoch: l.epoch,
    nonce: l.nonce,
    sig: l.sig,
    ...(l.kem === undefined ? {} : { kem: l.kem }),
  };
}

/**
 * Our unused leaf key a roster entry names (same id and key, and for a hybrid one the hash of
 * its ML-KEM half), or null.
 */
export function ownLeafFor(record: GroupRecord, entry: RosterEntry): OwnLeaf | null {
  const l = record.leaves.find((x) => x.id === entry.leafId && x.key === entry.leafKey);
  if (l === undefined) return null;
  if (l.kem === undefined) return entry.leafKem === undefined ? l : null;
  return entry.leafKem !== undefined &&
    constantTimeEqual(sha256(b64(l.kem, "leaf kem")), b64(entry.leafKem, "leaf kem hash"))
    ? l
    : null;
}

/** Whether every member of a roster has a hybrid leaf key: the epoch is post-quantum (§9.3). */
export function isPostQuantum(roster: readonly RosterEntry[]): boolean {
  return roster.every((m) => m.leafKem !== undefined);
}

/**
 * No member goes back from a hybrid leaf key to a classical one (§9.3 "Downgrade"): a name that
 * had a hybrid leaf key in `old` must have one in `next`. A post-quantum client never publishes
 * a classical leaf key, so a classical entry for it can only be an old signed key a relay
 * replays — a wrap to it would be open to a quantum adversary.
 */
export function checkNoDowngrade(old: readonly RosterEntry[], next: readonly RosterEntry[]): void {
  const hybrid = new Set(old.filter((m) => m.leafKem !== undefined).map((m) => m.name));
  const lost = next.filter((m) => hybrid.has(m.name) && m.leafKem === undefined).map((m) => m.name);
  if (lost.length > 0)
    throw new CoreError(
      "downgrade",
      `classical leaf key for ${lost.join(", ")}, who had a hybrid one`,
    );
}

/**
 * Delete the private half of `used` and of every leaf key made before it (§9.3): the member has
 * entered the epoch whose commit was wrapped to `used`, so nothing it holds opens that commit or
 * an earlier one. The X25519 cache forgets them too.
 */
export function consumeLeaves(leaves: readonly OwnLeaf[], used: OwnLeaf | null): OwnLeaf[] {
  if (used === null) return [...leaves];
  const at = leaves.findIndex((l) => l.id === used.id && l.key === used.key);
  if (at < 0) return [...leaves];
  for (const l of leaves.slice(0, at + 1)) {
    if (l.kem === undefined) x25519Forget(fromB64u(l.priv));
    else xwingForget(fromB64u(l.priv));
  }
  return leaves.slice(at + 1);
}

/** The ML-KEM halves of the hybrid leaf keys a relay's group state lists, by name (§9.2.3). */
export function leafKemsOf(state: {
  members: readonly Member[];
  pendingJoins: readonly Member[];
}): Map<string, string> {
  const out = new Map<string, string>();
  // A re-joining member is listed twice; its pending join names the leaf key the commit uses.
  for (const m of [...state.members, ...state.pendingJoins])
    if (m.leaf.kem !== undefined) out.set(m.username, m.leaf.kem);
  return out;
}

export function rosterFromMembers(members: readonly Member[]): RosterEntry[] {
  return members
    .map((m) => ({
      name: m.username,
      ik: m.identityKey,
      leafId: m.leaf.id,
      leafKey: m.leaf.key,
      leafEpoch: m.leaf.epoch,
      leafNonce: m.leaf.nonce,
      leafSig: m.leaf.sig,
      ...(m.leaf.kem === undefined ? {} : { leafKem: toB64u(sha256(fromB64u(m.leaf.kem))) }),
    }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Leaf keys already verified, keyed by the exact strings that were verified ("." is outside the
 * base64url alphabet, so the key is unambiguous). Why: every commit re-checks the whole roster
 * (§9.4), and in a steady group most entries are the same ones commit after commit; Ed25519
 * verification is deterministic, so a positive result can be reused. Bounded (oldest evicted);
 * only successes are remembered.
 */
const VERIFIED_MAX = 8192;
const verifiedLeaves = new Set<string>();
const leafCacheId = (hub: string, group: string, m: RosterEntry) =>
  `${hub}.${group}.${m.ik}.${m.leafId}.${m.leafEpoch}.${m.leafKey}.${m.leafNonce}.${m.leafSig}.${m.leafKem ?? ""}`;

/** Drop the caches (benchmarks measure the cold path with it; nothing else needs to). */
export function forgetVerifiedLeaves(): void {
  verifiedLeaves.clear();
  hybridKeys.clear();
}

/**
 * Hybrid recipient keys (the relay's ML-KEM half ‖ the X25519 leaf key, §9.2.3) whose ML-KEM half
 * was checked against the signed `leafKem` hash, keyed by the strings that were checked; a hit
 * also requires the same ML-KEM string, so a substituted key is refused warm as it is cold. Why:
 * a commit wraps to every member, and decoding a 1,600-character ML-KEM key, hashing and
 * concatenating it cost ~15 µs a member, for the same members commit after commit. Bounded
 * (oldest evicted); the returned bytes are shared and never written to.
 */
const HYBRID_MAX = 2048;
const hybridKeys = new Map<string, { kem: string; key: Uint8Array }>();

/** The 1216-byte X-Wing key to wrap to for a hybrid roster entry, `kem` from the group state. */
export function hybridRecipientKey(m: RosterEntry, kem: string): Uint8Array {
  const leafKem = m.leafKem as string;
  const id = `${leafKem}.${m.leafKey}`;
  const hit = hybridKeys.get(id);
  if (hit !== undefined && hit.kem === kem) return hit.key;
  const ek = b64(kem, "leaf kem");
  if (!constantTimeEqual(sha256(ek), b64(leafKem, "leaf kem hash")))
    throw new CoreError("bad_signature", `${m.name}'s ML-KEM key is not the one it signed`);
  const key = concatBytes(ek, b64(m.leafKey, "leaf"));
  hybridKeys.delete(id);
  hybridKeys.set(id, { kem, key });
  if (hybridKeys.size > HYBRID_MAX) {
    const oldest = hybridKeys.keys().next().value;
    if (oldest !== undefined) hybridKeys.delete(oldest);
  }
  return key;
}

/** Every roster entry's leaf key must verify under its identity key before we wrap to it. */
export async function verifyRosterLeaves(
  hub: string,
  group: string,
  roster: readonly RosterEntry[],
): Promise<void> {
  const todo = roster.filter((m) => !verifiedLeaves.has(leafCacheId(hub, group, m)));
  if (todo.length === 0) return;
  // One batch of independent checks: the crypto seam spreads it over the runtime's threads.
  const ok = await ed25519VerifyMany(
    todo.map((m) => {
      const nonce = b64(m.leafNonce, "leaf nonce");
      const sig = b64(m.leafSig, "leaf sig");
      if (nonce.length !== LEAF_NONCE_BYTES || sig.length !== 64)
        throw new CoreError("malformed", `malformed leaf key of ${m.name}`);
      return {
        publicKey: b64(m.ik, "ik"),
        message: leafTranscript(
          hub,
          group,
          m.leafEpoch,
          m.leafId,
          b64(m.leafKey, "leaf"),
          nonce,
          m.leafKem === undefined ? undefined : b64(m.leafKem, "leaf kem hash"),
        ),
        signature: sig,
      };
    }),
  );
  for (const [i, m] of todo.entries()) {
    if (!ok[i]) throw new CoreError("bad_signature", `leaf key of ${m.name} does not verify`);
    verifiedLeaves.add(leafCacheId(hub, group, m));
    if (verifiedLeaves.size > VERIFIED_MAX) {
      const oldest = verifiedLeaves.values().next().value;
      if (oldest !== undefined) verifiedLeaves.delete(oldest);
    }
  }
}
