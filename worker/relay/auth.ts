/**
 * Authentication transcripts and checks (PROTOCOL.md §4.2–§4.3).
 *
 * Every signed input is an `lp()` transcript (PROTOCOL.md §2.2) that starts with a fixed label, so a
 * signature made for one purpose can never be replayed for another. The auth signature binds the
 * relay's fresh challenge, the hub and the page origin (so a signature a malicious page obtained
 * cannot be used against another hub, origin or connection) and every key the client publishes.
 */
import { type AuthContext, authTranscript, signedPrekeyVersion } from "../../shared/auth";
import { ed25519Verify } from "../../shared/crypto/ed25519";
import { fromB64u } from "../../shared/encoding";
import type { ClientFrame, ErrorCode, FrameOf, SignedPrekey } from "../../shared/protocol";

export {
  AUTH_LABEL,
  type AuthContext,
  authTranscript,
  SPK_LABEL,
  signedPrekeyTranscript,
} from "../../shared/auth";

/** Verify a signed prekey (v1 or v2 label, PROTOCOL.md §8.3.5) against the identity claiming it. */
export async function verifySignedPrekey(
  identityKey: Uint8Array,
  spk: SignedPrekey,
): Promise<boolean> {
  return (await signedPrekeyVersion(identityKey, spk)) !== null;
}

/**
 * Check an `auth` frame's signatures. The schema already guaranteed canonical base64url of the
 * right lengths, so decoding cannot fail here. The prekey is checked first: a client that
 * publishes a prekey its identity did not sign gets `bad_signature`, any other failure
 * `auth_failed` (PROTOCOL.md §4.3).
 */
export async function verifyAuthFrame(
  ctx: AuthContext,
  frame: FrameOf<ClientFrame, "auth">,
): Promise<{ ok: true } | { ok: false; code: ErrorCode }> {
  const identityKey = fromB64u(frame.identityKey);
  if (!(await verifySignedPrekey(identityKey, frame.signedPrekey))) {
    return { ok: false, code: "bad_signature" };
  }
  const spk = {
    id: frame.signedPrekey.id,
    key: fromB64u(frame.signedPrekey.key),
    sig: fromB64u(frame.signedPrekey.sig),
  };
  const message = authTranscript(ctx, frame.username, identityKey, spk, {
    id: fromB64u(frame.device),
    claim: frame.claim,
  });
  if (!(await ed25519Verify(identityKey, message, fromB64u(frame.sig)))) {
    return { ok: false, code: "auth_failed" };
  }
  return { ok: true };
}
