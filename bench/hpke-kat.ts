/**
 * RFC 9180 Appendix A known answers for the hand-written HPKE seal (shared/crypto/hpke.ts), run
 * by the bench before it times that path, plus a seal → @hpke/core open round trip.
 */
import { hpkeOpen, hpkeSeal, randomBytes, x25519GenerateKeyPair } from "../shared/crypto";
import { hpkeSealWithEphemeral } from "../shared/crypto/hpke";
import vectors from "../test/vectors/hpke_rfc9180_x25519_sha256_aes256gcm.json";

const hex = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (x) => Number.parseInt(x, 16));
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** Returns the number of vectors checked; throws on the first mismatch. */
export async function checkHpkeKnownAnswers(): Promise<number> {
  let n = 0;
  for (const v of vectors as Array<Record<string, unknown>>) {
    if (v.mode !== 0) continue;
    const first = (v.encryptions as Array<Record<string, string>>)[0];
    if (!first) continue;
    const out = await hpkeSealWithEphemeral(
      hex(v.skEm as string),
      hex(v.pkRm as string),
      hex(first.pt as string),
      hex(v.info as string),
      hex(first.aad as string),
    );
    if (toHex(out.enc) !== v.enc || toHex(out.ciphertext) !== first.ct) {
      throw new Error("HPKE seal differs from RFC 9180 Appendix A");
    }
    n++;
  }
  for (let i = 0; i < 20; i++) {
    const r = await x25519GenerateKeyPair();
    const pt = randomBytes(32);
    const info = randomBytes(i);
    const aad = randomBytes(32);
    const s = await hpkeSeal(r.publicKey, pt, info, aad);
    const back = await hpkeOpen(r.secretKey, s.enc, s.ciphertext, info, aad);
    if (toHex(back) !== toHex(pt)) throw new Error("HPKE seal/open round trip failed");
    n++;
  }
  return n;
}
