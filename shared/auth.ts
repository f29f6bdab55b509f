/**
 * The transcripts an identity key signs for the relay (PROTOCOL.md §4.3): one definition, used by
 * the client that signs and the relay that verifies.
 */
import { ed25519Verify } from "./crypto/ed25519";
import { fromB64u, lp } from "./encoding";

export const AUTH_LABEL = "parley/v1/auth";
export const SPK_LABEL = "parley/v1/spk";
/**
 * A signed prekey signed under this label comes with a post-quantum prekey (PROTOCOL.md §8.3.5):
 * an initiator that finds none refuses to start, so a relay cannot strip it unnoticed.
 */
export const SPK_LABEL_V2 = "parley/v2/spk";

/** lp("parley/v1/spk", u32 id, key bytes): what the identity key signs for a signed prekey. */
export function signedPrekeyTranscript(id: number, key: Uint8Array): Uint8Array {
  return lp(SPK_LABEL, id, key);
}

/** lp("parley/v2/spk", u32 id, key bytes): a signed prekey of a post-quantum client (§8.3.5). */
export function signedPrekeyTranscriptV2(id: number, key: Uint8Array): Uint8Array {
  return lp(SPK_LABEL_V2, id, key);
}

/**
 * Which label a signed prekey is signed under: 2 (a post-quantum client, §8.3.5), 1 (classical),
 * or null when neither verifies. Wire fields are canonical base64url (the schema checked them).
 */
export async function signedPrekeyVersion(
  identityKey: Uint8Array,
  spk: { id: number; key: string; sig: string },
): Promise<1 | 2 | null> {
  const key = fromB64u(spk.key);
  const sig = fromB64u(spk.sig);
  if (await ed25519Verify(identityKey, signedPrekeyTranscriptV2(spk.id, key), sig)) return 2;
  if (await ed25519Verify(identityKey, signedPrekeyTranscript(spk.id, key), sig)) return 1;
  return null;
}

export interface AuthContext {
  hub: string;
  origin: string;
  challenge: Uint8Array;
}

/**
 * lp("parley/v1/auth", hub, origin, challenge, username, identityKey, u32 spk.id, spk.key,
 * spk.sig, device, u32 claim). Strings are UTF-8, keys, signatures and the device id raw bytes,
 * integers 4-byte big-endian; `claim` is 1 or 0.
 */
export function authTranscript(
  ctx: AuthContext,
  username: string,
  identityKey: Uint8Array,
  spk: { id: number; key: Uint8Array; sig: Uint8Array },
  device: { id: Uint8Array; claim: boolean },
): Uint8Array {
  return lp(
    AUTH_LABEL,
    ctx.hub,
    ctx.origin,
    ctx.challenge,
    username,
    identityKey,
    spk.id,
    spk.key,
    spk.sig,
    device.id,
    device.claim ? 1 : 0,
  );
}
