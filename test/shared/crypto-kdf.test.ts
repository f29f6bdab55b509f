/**
 * HKDF-SHA256 / HMAC-SHA256 known answers: RFC 5869 Appendix A (cases 1–3) and Wycheproof
 * hkdf_sha256. The noble path (kdf.ts, used by the protocol) and the WebCrypto path (subtle.ts)
 * must give the same bytes on every vector.
 * The product functions (x25519, aesGcm*, ed25519Sign/Verify, hkdf/hmac/sha256) run on the
 * installed crypto backend: node:crypto in the `node` project, the default WebCrypto/noble paths
 * in the `workers` project (PROTOCOL.md §3.1) — so every vector here checks both backends.
 */

import { describe, expect, it } from "vitest";
import { hkdfSha256, hmacSha256, sha256 } from "../../shared/crypto";
import { subtleHkdfSha256, subtleHmacSha256, subtleSha256 } from "../../shared/crypto/subtle";
import rfc5869 from "../vectors/rfc5869_hkdf_sha256.json";
import wycheproof from "../vectors/wycheproof_hkdf_sha256_test.json";
import { fromHex, outcome, Tally, toHex, wycheproofResult } from "./crypto-util";

describe("RFC 5869 Appendix A, SHA-256 cases", () => {
  it.each(rfc5869)("case $case", async (v) => {
    const [ikm, salt, info] = [fromHex(v.ikm), fromHex(v.salt), fromHex(v.info)];
    // RFC 5869 §2.2: PRK = HMAC-Hash(salt, IKM), an empty salt meaning HashLen zeros.
    const extractSalt = salt.length === 0 ? new Uint8Array(32) : salt;
    expect(
      {
        prk: toHex(hmacSha256(extractSalt, ikm)),
        subtlePrk: toHex(await subtleHmacSha256(extractSalt, ikm)),
        okm: toHex(hkdfSha256(ikm, salt, info, v.L)),
        subtleOkm: toHex(await subtleHkdfSha256(ikm, salt, info, v.L)),
      },
      `RFC 5869 ${v.case}`,
    ).toEqual({ prk: v.prk, subtlePrk: v.prk, okm: v.okm, subtleOkm: v.okm });
  });
  it("has the three SHA-256 cases", () => {
    expect(rfc5869.map((v) => v.case)).toEqual(["A.1", "A.2", "A.3"]);
  });
});

describe("Wycheproof hkdf_sha256_test.json", () => {
  const tally = new Tally();
  const vectors = wycheproof.testGroups.flatMap((g) => g.tests);
  it.each(vectors)("tcId $tcId", async (t) => {
    const result = wycheproofResult(t.result, t.tcId);
    if (result === "acceptable")
      throw new Error(`tcId ${t.tcId}: no policy for acceptable HKDF vectors`);
    const [ikm, salt, info] = [fromHex(t.ikm), fromHex(t.salt), fromHex(t.info)];
    const got = {
      noble: await outcome(() => toHex(hkdfSha256(ikm, salt, info, t.size))),
      subtle: await outcome(async () => toHex(await subtleHkdfSha256(ikm, salt, info, t.size))),
    };
    // Invalid vectors ask for more than 255 * HashLen bytes (RFC 5869 §2.3).
    const expected = result === "valid" ? t.okm : { error: "InvalidLengthError" };
    tally.add(`${result}:${typeof got.noble === "string" ? "derived" : got.noble.error}`);
    expect(got, `tcId ${t.tcId}: ${t.comment} [${t.flags.join(",")}]`).toEqual({
      noble: expected,
      subtle: expected,
    });
  });
  it("pins the counts: 83 valid, 3 invalid (size too large)", () => {
    expect(vectors).toHaveLength(wycheproof.numberOfTests);
    expect(tally.counts).toEqual({ "valid:derived": 83, "invalid:InvalidLengthError": 3 });
  });
});

describe("SHA-256 / HMAC noble vs WebCrypto on varied lengths", () => {
  it("agree on every length 0..200 and on keys longer than a block", async () => {
    for (let n = 0; n <= 200; n += 7) {
      const m = new Uint8Array(n).map((_, i) => (i * 31 + n) & 0xff);
      const k = new Uint8Array(n % 100).map((_, i) => (i * 17) & 0xff);
      expect({ sha: toHex(sha256(m)), hmac: toHex(hmacSha256(k, m)) }, `length ${n}`).toEqual({
        sha: toHex(await subtleSha256(m)),
        hmac: toHex(await subtleHmacSha256(k, m)),
      });
    }
  });
  it('SHA-256 of "abc" (FIPS 180-2 example)', () => {
    expect(toHex(sha256(new TextEncoder().encode("abc")))).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
  });
});
