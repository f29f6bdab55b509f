/**
 * Leaf keys (PROTOCOL.md §9.3): per-member, per-group X25519 wrap keys, signed by the member's
 * identity key. A commit wraps to each member's oldest published leaf key; a member deletes the
 * private half of that key (and of every older one) once it has entered the commit's epoch, and
 * publishes a fresh one. So a wrap can be opened only with key material the member deletes when
 * it enters the next epoch.
 */
import { ed25519VerifyMany, x25519Forget } from "../crypto";
import { fromB64u, toB64u } from "../encoding";
import { LEAF_NONCE_BYTES, LEAF_QUEUE, type Leaf, type Member } from "../protocol";
import { b64 } from "./codec";
import { CoreError } from "./errors";
import type { GroupRecord, OwnLeaf, RosterEntry } from "./group";
import { leafTranscript } from "./group-schedule";
import { newX25519, type Random } from "./ratchet";

/** Private leaf keys kept per group at most (published ones plus any not yet accepted). */
export const MAX_OWN_LEAVES = 2 * LEAF_QUEUE;

/** Make `count` fresh signed leaf keys for `group`, made in `epoch` (§9.3). */
export async function makeLeaves(params: {
  hub: string;
  group: string;
  epoch: number;
  count: number;
  random: Random;
  sign(message: Uint8Array): Promise<Uint8Array>;
}): Promise<OwnLeaf[]> {
  const out: OwnLeaf[] = [];
  for (let i = 0; i < params.count; i++) {
    const kp = await newX25519(params.random);
    const idBytes = params.random(4);
    const id = new DataView(idBytes.buffer, idBytes.byteOffset, 4).getUint32(0);
    const nonce = params.random(LEAF_NONCE_BYTES);
    const sig = await params.sign(
      leafTranscript(params.hub, params.group, params.epoch, id, fromB64u(kp.pub), nonce),
    );
    out.push({
      id,
      key: kp.pub,
      priv: kp.priv,
      epoch: params.epoch,
      nonce: toB64u(nonce),
      sig: toB64u(sig),
    });
  }
  return out;
}

/** The public half, as published (`join`, `leaf` frames). */
export function publicLeaf(l: OwnLeaf): Leaf {
  return { id: l.id, key: l.key, epoch: l.epoch, nonce: l.nonce, sig: l.sig };
}

/** Our unused leaf key a roster entry names (same id and key), or null. */
export function ownLeafFor(record: GroupRecord, entry: RosterEntry): OwnLeaf | null {
  return record.leaves.find((l) => l.id === entry.leafId && l.key === entry.leafKey) ?? null;
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
  for (const l of leaves.slice(0, at + 1)) x25519Forget(fromB64u(l.priv));
  return leaves.slice(at + 1);
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
  `${hub}.${group}.${m.ik}.${m.leafId}.${m.leafEpoch}.${m.leafKey}.${m.leafNonce}.${m.leafSig}`;

/** Drop the cache (benchmarks measure the cold path with it; nothing else needs to). */
export function forgetVerifiedLeaves(): void {
  verifiedLeaves.clear();
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
        message: leafTranscript(hub, group, m.leafEpoch, m.leafId, b64(m.leafKey, "leaf"), nonce),
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
