/**
 * ML-KEM-768 (shared/crypto/mlkem.ts, PROTOCOL.md §3.8) against Wycheproof and C2SP CCTV vectors,
 * in Node and in workerd (this directory runs in both projects); Chromium runs the same
 * runMlKemKats in test/node/crypto-chromium.test.ts. Plus the typed refusals and a round trip.
 */
import { describe, expect, it } from "vitest";
import {
  MLKEM768_CIPHERTEXT_BYTES,
  MLKEM768_PUBLIC_KEY_BYTES,
  mlkemDecapsulateSeed,
  mlkemEncapsulate,
  mlkemEncapsulateMany,
  mlkemPublicKey,
  randomBytes,
} from "../../shared/crypto";
import unlucky from "../vectors/cctv_mlkem_768_unluckysample.json";
import encaps from "../vectors/wycheproof_mlkem_768_encaps_test.json";
import keygen from "../vectors/wycheproof_mlkem_768_keygen_seed_test.json";
import decaps from "../vectors/wycheproof_mlkem_768_semi_expanded_decaps_test.json";
import combined from "../vectors/wycheproof_mlkem_768_test.json";
import { fromHex, toHex } from "./crypto-util";
import { runMlKemKats } from "./mlkem-kat";

describe("ML-KEM-768 known answers", () => {
  it("matches every Wycheproof and CCTV vector, refusing every invalid one with a typed error", () => {
    const report = runMlKemKats({ combined, encaps, keygen, decaps, unlucky });
    expect(report.failures).toEqual([]);
    // Every file was read: the counts the vector files declare (test/vectors/SOURCES.md).
    expect(report.counts).toEqual({
      mlkem_768: { valid: 153, invalid: 40 },
      mlkem_768_encaps: { valid: 133, invalid: 132 },
      mlkem_768_keygen_seed: { valid: 100, invalid: 0 },
      mlkem_768_semi_expanded_decaps: { valid: 3, invalid: 6 },
      cctv_unlucky_final: { valid: 1, invalid: 0 },
      cctv_unlucky_ipd: { valid: 1, invalid: 0 },
    });
  });

  it("mlkemEncapsulateMany: every valid Wycheproof encaps vector in one batch gives its c and K, in order", async () => {
    // In the node project this batch runs on the backend's crypto thread (node/crypto-thread.ts).
    const valid = encaps.testGroups.flatMap((g) => g.tests.filter((t) => t.result === "valid"));
    expect(valid).toHaveLength(133);
    const got = await mlkemEncapsulateMany(
      valid.map((t) => ({ publicKey: fromHex(t.ek ?? ""), m: fromHex(t.m ?? "") })),
    );
    expect(got.map((x) => [toHex(x.ciphertext), toHex(x.sharedSecret)])).toEqual(
      valid.map((t) => [t.c, t.K]),
    );
    // One key failing FIPS 203 §7.2 refuses the whole batch, with the error of the single call.
    const bad = encaps.testGroups
      .flatMap((g) => g.tests)
      .find((t) => t.result === "invalid" && (t.ek ?? "").length === 2 * MLKEM768_PUBLIC_KEY_BYTES);
    if (bad === undefined) throw new Error("no invalid full-length key in the file");
    const batch = valid.slice(0, 20).map((t) => ({ publicKey: fromHex(t.ek ?? "") }));
    batch.splice(10, 0, { publicKey: fromHex(bad.ek ?? "") });
    await expect(mlkemEncapsulateMany(batch)).rejects.toMatchObject({ name: "InvalidKeyError" });
    // Fresh randomness per item: two batches to one key never share a secret.
    const pk = fromHex(valid[0]?.ek ?? "");
    const twice = await mlkemEncapsulateMany(Array.from({ length: 16 }, () => ({ publicKey: pk })));
    expect(new Set(twice.map((x) => toHex(x.sharedSecret))).size).toBe(16);
  });

  it("round-trips with fresh randomness; a wrong ciphertext gives a different secret, not an error", () => {
    const seed = randomBytes(64);
    const pk = mlkemPublicKey(seed);
    expect(pk.length).toBe(MLKEM768_PUBLIC_KEY_BYTES);
    const a = mlkemEncapsulate(pk);
    const b = mlkemEncapsulate(pk);
    expect(a.ciphertext.length).toBe(MLKEM768_CIPHERTEXT_BYTES);
    expect(a.sharedSecret).not.toEqual(b.sharedSecret);
    expect(mlkemDecapsulateSeed(a.ciphertext, seed)).toEqual(a.sharedSecret);
    const bad = a.ciphertext.slice();
    bad[0] = (bad[0] as number) ^ 1;
    expect(mlkemDecapsulateSeed(bad, seed)).not.toEqual(a.sharedSecret);
  });

  it("refuses wrong lengths with typed errors", () => {
    const seed = randomBytes(64);
    expect(() => mlkemEncapsulate(new Uint8Array(1183))).toThrow(
      expect.objectContaining({ name: "InvalidKeyError" }),
    );
    expect(() => mlkemDecapsulateSeed(new Uint8Array(1087), seed)).toThrow(
      expect.objectContaining({ name: "InvalidLengthError" }),
    );
    expect(() => mlkemDecapsulateSeed(new Uint8Array(1088), seed.slice(1))).toThrow(
      expect.objectContaining({ name: "InvalidLengthError" }),
    );
    expect(() => mlkemEncapsulate(mlkemPublicKey(seed), new Uint8Array(31))).toThrow(
      expect.objectContaining({ name: "InvalidLengthError" }),
    );
  });
});
