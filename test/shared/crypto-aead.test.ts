/**
 * AES-256-GCM known answers: Wycheproof aead (256-bit keys, 96-bit IVs, 128-bit tags). Vectors
 * for other key or IV sizes are outside Parley's API and must be refused with InvalidLengthError.
 * The product dispatches by size between WebCrypto and @noble/ciphers (shared/crypto/aead.ts);
 * both paths run on every vector, so neither can drift.
 * The product functions (x25519, aesGcm*, ed25519Sign/Verify, hkdf/hmac/sha256) run on the
 * installed crypto backend: node:crypto in the `node` project, the default WebCrypto/noble paths
 * in the `workers` project (PROTOCOL.md §3.1) — so every vector here checks both backends.
 */

import { describe, expect, it } from "vitest";
import { aesGcmDecrypt, aesGcmEncrypt } from "../../shared/crypto";
import {
  aesGcmDecryptNoble,
  aesGcmDecryptSubtle,
  aesGcmEncryptNoble,
  aesGcmEncryptSubtle,
} from "../../shared/crypto/aead";
import wycheproof from "../vectors/wycheproof_aes_gcm_test.json";
import { fromHex, outcome, Tally, toHex, wycheproofResult } from "./crypto-util";

const vectors = wycheproof.testGroups.flatMap((g) =>
  g.tests.map((t) => ({ ...t, keySize: g.keySize, ivSize: g.ivSize, tagSize: g.tagSize })),
);
const ours = vectors.filter((v) => v.keySize === 256 && v.ivSize === 96 && v.tagSize === 128);
const others = vectors.filter((v) => !ours.includes(v));

describe("Wycheproof aes_gcm_test.json, AES-256 with 96-bit IV", () => {
  const tally = new Tally();
  it.each(ours)("tcId $tcId", async (t) => {
    const result = wycheproofResult(t.result, t.tcId);
    if (result === "acceptable")
      throw new Error(`tcId ${t.tcId}: no policy for acceptable AES-GCM vectors`);
    const [key, iv, aad, msg] = [fromHex(t.key), fromHex(t.iv), fromHex(t.aad), fromHex(t.msg)];
    const sealed = fromHex(t.ct + t.tag);
    const got = {
      encrypt:
        result === "valid"
          ? await outcome(async () => toHex(await aesGcmEncrypt(key, iv, msg, aad)))
          : null,
      decrypt: await outcome(async () => toHex(await aesGcmDecrypt(key, iv, sealed, aad))),
      subtleEncrypt:
        result === "valid" ? toHex(await aesGcmEncryptSubtle(key, iv, msg, aad)) : null,
      subtleDecrypt: await outcome(async () =>
        toHex(await aesGcmDecryptSubtle(key, iv, sealed, aad)),
      ),
      nobleEncrypt: result === "valid" ? toHex(aesGcmEncryptNoble(key, iv, msg, aad)) : null,
      nobleDecrypt: await outcome(() => toHex(aesGcmDecryptNoble(key, iv, sealed, aad))),
    };
    tally.add(`${result}:${typeof got.decrypt === "string" ? "opened" : got.decrypt.error}`);
    expect(got, `tcId ${t.tcId}: ${t.comment} [${t.flags.join(",")}]`).toEqual(
      result === "valid"
        ? {
            encrypt: t.ct + t.tag,
            decrypt: t.msg,
            subtleEncrypt: t.ct + t.tag,
            subtleDecrypt: t.msg,
            nobleEncrypt: t.ct + t.tag,
            nobleDecrypt: t.msg,
          }
        : {
            encrypt: null,
            decrypt: { error: "DecryptError" },
            subtleEncrypt: null,
            subtleDecrypt: { error: "DecryptError" },
            nobleEncrypt: null,
            nobleDecrypt: { error: "DecryptError" },
          },
    );
  });
  it("pins the counts: 39 valid, 27 invalid (modified tags)", () => {
    expect(tally.counts).toEqual({ "valid:opened": 39, "invalid:DecryptError": 27 });
  });
});

describe("Wycheproof AES-GCM vectors outside Parley's parameters are refused by length", () => {
  const tally = new Tally();
  it.each(others)("tcId $tcId (key $keySize bits, IV $ivSize bits)", async (t) => {
    const [key, iv, aad, msg] = [fromHex(t.key), fromHex(t.iv), fromHex(t.aad), fromHex(t.msg)];
    const got = {
      encrypt: await outcome(() => aesGcmEncrypt(key, iv, msg, aad)),
      decrypt: await outcome(() => aesGcmDecrypt(key, iv, fromHex(t.ct + t.tag), aad)),
    };
    tally.add(t.keySize !== 256 ? "wrong key size" : "wrong IV size");
    expect(got, `tcId ${t.tcId}`).toEqual({
      encrypt: { error: "InvalidLengthError" },
      decrypt: { error: "InvalidLengthError" },
    });
  });
  it("pins the counts", () => {
    expect(vectors).toHaveLength(wycheproof.numberOfTests);
    expect(tally.counts).toEqual({ "wrong key size": 211, "wrong IV size": 39 });
  });
});
