/**
 * The group key schedule (PROTOCOL.md §9.3), RFC 9420 §8 simplified: every epoch's secrets come
 * from the previous epoch's init secret, the committer's fresh commit secret and the group
 * context, which carries the confirmed transcript hash over every commit so far. Pure byte-in,
 * byte-out functions; test/vectors/group-schedule.json pins their bytes.
 *
 *   joiner_secret  = HKDF(ikm = commit_secret, salt = init_secret[E-1],
 *                         info = lp("parley/v2/group-joiner", hub, group, u64(E)))
 *   confirmed[E]   = SHA-256(lp("parley/v2/group-confirmed", interim[E-1], body, sig))
 *   group_context  = lp("parley/v2/group-context", hub, group, u64(E), confirmed[E])
 *   epoch_secret   = HKDF(ikm = joiner_secret, salt = "", info = group_context)
 *   prk            = HKDF-Extract(salt = "", ikm = epoch_secret)
 *   init_secret[E] = HKDF-Expand(prk, lp("parley/v2/group-init"), 32)
 *   confirm_key    = HKDF-Expand(prk, lp("parley/v2/group-confirm"), 32)
 *   authenticator  = HKDF-Expand(prk, lp("parley/v2/group-authenticator"), 32)
 *   sender chain   = HKDF-Expand(prk, lp("parley/v2/group-sender") || lp(name, ik, leaf_key), 32)
 *   tag[E]         = HMAC-SHA256(confirm_key, confirmed[E])
 *   interim[E]     = SHA-256(lp("parley/v2/group-interim", confirmed[E], tag[E]))
 */
import {
  hkdfSha256,
  hkdfSha256Expand,
  hkdfSha256Extract,
  hmacSha256,
  sha256,
  wipe,
} from "../crypto";
import { concatBytes, fromB64u, lp } from "../encoding";
import { u64be } from "./codec";

const EMPTY = new Uint8Array(0);
/** interim[0]: the transcript before any commit. */
export const ZERO_HASH = new Uint8Array(32);

/** Secrets of one epoch (the epoch secret itself is never kept, §9.5). */
export interface EpochKeys {
  /** Chains the next epoch (kept while this epoch is current only). */
  init: Uint8Array;
  confirmKey: Uint8Array;
  /** Members compare it out of band, like a safety number (§9.3). */
  authenticator: Uint8Array;
  /** Every member's initial sending chain, in the order asked for. */
  chains: Uint8Array[];
}

export function joinerSecret(
  initPrev: Uint8Array,
  commitSecret: Uint8Array,
  hub: string,
  group: string,
  epoch: number,
): Uint8Array {
  return hkdfSha256(
    commitSecret,
    initPrev,
    lp("parley/v2/group-joiner", hub, group, u64be(epoch)),
    32,
  );
}

export function confirmedTranscript(
  interimPrev: Uint8Array,
  body: Uint8Array,
  sig: Uint8Array,
): Uint8Array {
  return sha256(lp("parley/v2/group-confirmed", interimPrev, body, sig));
}

export function interimTranscript(confirmed: Uint8Array, tag: Uint8Array): Uint8Array {
  return sha256(lp("parley/v2/group-interim", confirmed, tag));
}

export function groupContext(
  hub: string,
  group: string,
  epoch: number,
  confirmed: Uint8Array,
): Uint8Array {
  return lp("parley/v2/group-context", hub, group, u64be(epoch), confirmed);
}

/**
 * Derive an epoch's keys and its members' sending chains. The per-member input is the leaf key
 * the roster lists for the member (§9.5): two devices holding one identity publish different
 * leaf keys, so they never derive the same sending chain, whatever roster a relay shows them.
 * HKDF is Expand(Extract(…)) (RFC 5869 §2): the PRK is extracted once per epoch, and the lp()
 * prefix every member shares is encoded once.
 */
export function epochKeys(
  joiner: Uint8Array,
  context: Uint8Array,
  members: ReadonlyArray<{ name: string; ik: Uint8Array; leaf: Uint8Array }>,
): EpochKeys {
  const epochSecret = hkdfSha256(joiner, EMPTY, context, 32);
  const prk = hkdfSha256Extract(epochSecret, EMPTY);
  wipe(epochSecret);
  try {
    const prefix = lp("parley/v2/group-sender");
    return {
      init: hkdfSha256Expand(prk, lp("parley/v2/group-init"), 32),
      confirmKey: hkdfSha256Expand(prk, lp("parley/v2/group-confirm"), 32),
      authenticator: hkdfSha256Expand(prk, lp("parley/v2/group-authenticator"), 32),
      chains: members.map((m) =>
        hkdfSha256Expand(prk, concatBytes(prefix, lp(m.name, m.ik, m.leaf)), 32),
      ),
    };
  } finally {
    wipe(prk);
  }
}

export function confirmationTag(confirmKey: Uint8Array, confirmed: Uint8Array): Uint8Array {
  return hmacSha256(confirmKey, confirmed);
}

/**
 * What a leaf key's signature covers (§9.3). A hybrid leaf key (an X-Wing key whose X25519 half
 * is `key`, §9.3) is signed under its own label with the SHA-256 of its ML-KEM half, so a
 * signature of one kind never verifies as the other: a relay that drops the ML-KEM half of a
 * hybrid leaf is left with a leaf nobody signed.
 */
export function leafTranscript(
  hub: string,
  group: string,
  epoch: number,
  id: number,
  key: Uint8Array,
  nonce: Uint8Array,
  kemHash?: Uint8Array,
): Uint8Array {
  return kemHash === undefined
    ? lp("parley/v2/group-leaf", hub, group, u64be(epoch), id, key, nonce)
    : lp("parley/v2/group-leaf-xwing", hub, group, u64be(epoch), id, key, nonce, kemHash);
}

/** What the signature of a published leaf key (`join`, `leaf`, `group` frames) covers. */
export function leafMessage(
  hub: string,
  group: string,
  l: { id: number; key: string; epoch: number; nonce: string; kem?: string | undefined },
): Uint8Array {
  const kemHash = l.kem === undefined ? undefined : sha256(fromB64u(l.kem));
  return leafTranscript(hub, group, l.epoch, l.id, fromB64u(l.key), fromB64u(l.nonce), kemHash);
}

/** Wrap format version (§9.2.3): 0x01 = X25519 HPKE (RFC 9180 base mode, DHKEM-X25519). */
export const WRAP_V1 = 0x01;
/** Wrap format version (§9.2.3): 0x02 = X-Wing HPKE (KEM 0x647a, §3.13), to a hybrid leaf key. */
export const WRAP_XWING = 0x02;

/**
 * HPKE info of one wrap, for all wraps of a commit: the shared prefix is encoded once (lp() is
 * a concatenation, §2.2). `kind` says what the wrap holds: "member" a commit secret (the
 * recipient chains it from its init secret), "joiner" the joiner secret itself.
 */
export function wrapInfoFor(
  hub: string,
  group: string,
  epoch: number,
): (kind: "member" | "joiner", name: string, ik: Uint8Array, leafId: number) => Uint8Array {
  const prefix = lp("parley/v2/group-wrap", hub, group, u64be(epoch));
  return (kind, name, ik, leafId) => concatBytes(prefix, lp(kind, name, ik, leafId));
}
