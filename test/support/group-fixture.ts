/**
 * Group members for core tests (PROTOCOL.md §9): an identity, fresh signed leaf keys for one
 * group, and the roster entry / relay member that lists the oldest of them.
 */
import {
  emptyGroup,
  type GroupRecord,
  makeLeaves,
  type OwnLeaf,
  type RosterEntry,
} from "../../shared/core/group";
import { ed25519Sign, generateIdentityKeyPair, randomBytes, sha256 } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import type { Member } from "../../shared/protocol";

export interface GM {
  name: string;
  ik: Uint8Array;
  privateKey: CryptoKey | Uint8Array;
  sign: (m: Uint8Array) => Promise<Uint8Array>;
  leaves: OwnLeaf[];
  /** The roster entry naming `leaves[0]`. */
  entry: RosterEntry;
}

export function entryOf(
  name: string,
  ik: Uint8Array | string,
  l: Pick<OwnLeaf, "id" | "key" | "epoch" | "nonce" | "sig" | "kem">,
): RosterEntry {
  return {
    name,
    ik: typeof ik === "string" ? ik : toB64u(ik),
    leafId: l.id,
    leafKey: l.key,
    leafEpoch: l.epoch,
    leafNonce: l.nonce,
    leafSig: l.sig,
    ...(l.kem === undefined ? {} : { leafKem: toB64u(sha256(fromB64u(l.kem))) }),
  };
}

/** The ML-KEM halves of the members' oldest hybrid leaf keys, by name (buildCommit's `kems`). */
export function kemsOf(...ms: GM[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of ms) {
    const kem = m.leaves[0]?.kem;
    if (kem !== undefined) out.set(m.name, kem);
  }
  return out;
}

export async function groupMember(
  name: string,
  /**
   * `hybrid`: X-Wing leaf keys, as the engine makes (§9.3). Without it the leaf keys are X25519
   * only, as a classical client's: most core tests exercise that path (still used for such
   * members); the hybrid tests and every engine scenario use hybrid ones.
   */
  opts: { hub?: string; group?: string; count?: number; identity?: GM; hybrid?: boolean } = {},
): Promise<GM> {
  const id =
    opts.identity === undefined
      ? await generateIdentityKeyPair()
      : { publicKey: opts.identity.ik, privateKey: opts.identity.privateKey };
  const sign = (m: Uint8Array) => ed25519Sign(id.privateKey as never, m);
  const leaves = await makeLeaves({
    hub: opts.hub ?? "main",
    group: opts.group ?? "g",
    epoch: 0,
    count: opts.count ?? 4,
    random: randomBytes,
    sign,
    classical: opts.hybrid !== true,
  });
  return {
    name,
    ik: id.publicKey,
    privateKey: id.privateKey as CryptoKey | Uint8Array,
    sign,
    leaves,
    entry: entryOf(name, id.publicKey, leaves[0] as OwnLeaf),
  };
}

/** The record of a member that sent its join with `m.leaves`. */
export function joiningRecord(m: GM, group = "g"): GroupRecord {
  return { ...emptyGroup(group), status: "joining", leaves: m.leaves };
}

/** `m` as the relay lists it (its oldest leaf key). */
export function relayMember(m: GM): Member {
  const l = m.leaves[0] as OwnLeaf;
  return {
    username: m.name,
    identityKey: toB64u(m.ik),
    leaf: {
      id: l.id,
      key: l.key,
      epoch: l.epoch,
      nonce: l.nonce,
      sig: l.sig,
      ...(l.kem === undefined ? {} : { kem: l.kem }),
    },
  };
}
