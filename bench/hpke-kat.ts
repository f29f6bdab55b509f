/**
 * RFC 9180 Appendix A known answers for both instances of the product's HPKE suite
 * (shared/crypto/hpke.ts: @hpke/core's construction over Parley's primitives, and over the
 * library's WebCrypto KEM/AEAD), run by the bench before it times that path, plus a seal → open
 * round trip through the product functions.
 */
import { hpkeOpen, hpkeSeal, randomBytes, x25519GenerateKeyPair } from "../shared/crypto";
import { type HpkeSuiteName, hpkeSuite } from "../shared/crypto/hpke";
import vectors from "../test/vectors/hpke_rfc9180_x25519_sha256_aes256gcm.json";

const hex = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (x) => Number.parseInt(x, 16));
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** Returns the number of vectors checked; throws on the first mismatch. */
export async function checkHpkeKnownAnswers(): Promise<number> {
  let n = 0;
  const names: HpkeSuiteName[] = ["parley", "webcrypto"];
  for (const [name, v] of names.flatMap((n) =>
    (vectors as Array<Record<string, unknown>>).map((x) => [n, x] as const),
  )) {
    if (v.mode !== 0) continue;
    const first = (v.encryptions as Array<Record<string, string>>)[0];
    if (!first) continue;
    const suite = hpkeSuite(name);
    const recipient = await suite.kem.deserializePublicKey(hex(v.pkRm as string).buffer);
    const ctx = await suite.createSenderContext({
      recipientPublicKey: recipient,
      info: hex(v.info as string).buffer,
      ekm: hex(v.ikmE as string).buffer, // deterministic ephemeral, for known answers only
    });
    const ct = new Uint8Array(
      await ctx.seal(hex(first.pt as string).buffer, hex(first.aad as string).buffer),
    );
    if (toHex(new Uint8Array(ctx.enc)) !== v.enc || toHex(ct) !== first.ct) {
      throw new Error(`HPKE seal (${name} suite) differs from RFC 9180 Appendix A`);
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
