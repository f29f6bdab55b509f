/**
 * The transcripts an identity key signs for the relay (PROTOCOL.md §4.3): one definition, used by
 * the client that signs and the relay that verifies.
 */
import { lp } from "./encoding";

export const AUTH_LABEL = "parley/v1/auth";
export const SPK_LABEL = "parley/v1/spk";

/** lp("parley/v1/spk", u32 id, key bytes): what the identity key signs for a signed prekey. */
export function signedPrekeyTranscript(id: number, key: Uint8Array): Uint8Array {
  return lp(SPK_LABEL, id, key);
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
