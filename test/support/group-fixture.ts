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
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
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

export function entryOf(name: string, ik: Uint8Array | string, l: OwnLeaf): RosterEntry {
  return {
    name,
    ik: typeof ik === "string" ? ik : toB64u(ik),
    leafId: l.id,
    leafKey: l.key,
    leafEpoch: l.epoch,
    leafNonce: l.nonce,
    leafSig: l.sig,
  };
}

export async function groupMember(
  name: string,
  opts: { hub?: string; group?: string; count?: number; identity?: GM } = {},
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
    leaf: { id: l.id, key: l.key, epoch: l.epoch, nonce: l.nonce, sig: l.sig },
  };
}
