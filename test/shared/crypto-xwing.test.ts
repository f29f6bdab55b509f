/**
 * X-Wing (shared/crypto/xwing.ts, PROTOCOL.md §3.13) and HPKE with it (hpke-xwing.ts): the
 * draft's vectors in Node and in workerd (this directory runs in both projects; Chromium runs
 * runXWingKats in test/node/crypto-chromium.test.ts), agreement with noble's independent X-Wing
 * on random keys, and the typed refusals.
 */
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { describe, expect, it } from "vitest";
import {
  hpkeOpen,
  hpkeOpenXWing,
  hpkeSealManyXWing,
  hpkeSealXWing,
  randomBytes,
  XWING_CIPHERTEXT_BYTES,
  XWING_PUBLIC_KEY_BYTES,
  x25519GenerateKeyPair,
  xwingDecapsulate,
  xwingEncapsulate,
  xwingPublicKey,
} from "../../shared/crypto";
import { hpkeSuite } from "../../shared/crypto/hpke";
import vectors from "../vectors/xwing_test_vectors.json";
import { runXWingKats } from "./xwing-kat";

describe("X-Wing known answers", () => {
  it("matches the draft's three vectors (keygen, encaps, decaps) and seals/opens HPKE over them", async () => {
    const report = await runXWingKats(vectors);
    expect(report).toEqual({ failures: [], count: 3 });
  });

  it("agrees with noble's X-Wing both ways on random keys", async () => {
    for (let i = 0; i < 4; i++) {
      const sk = randomBytes(32);
      const pk = await xwingPublicKey(sk);
      expect(pk).toEqual(ml_kem768_x25519.getPublicKey(sk));
      const ours = await xwingEncapsulate(pk);
      expect(ml_kem768_x25519.decapsulate(ours.ciphertext, sk)).toEqual(ours.sharedSecret);
      const theirs = ml_kem768_x25519.encapsulate(pk);
      expect(await xwingDecapsulate(theirs.cipherText, sk)).toEqual(theirs.sharedSecret);
    }
  });

  it("an X-Wing seal leaves the classical suites alone (each suite has its own KDF instance)", async () => {
    const sk = randomBytes(32);
    await hpkeSealXWing(
      await xwingPublicKey(sk),
      new Uint8Array(32),
      new Uint8Array(1),
      new Uint8Array(),
    );
    const kp = await x25519GenerateKeyPair();
    const info = new Uint8Array([7]);
    for (const name of ["parley", "webcrypto"] as const) {
      const s = hpkeSuite(name);
      const pk = await s.kem.deserializePublicKey(kp.publicKey);
      const sealed = await s.seal({ recipientPublicKey: pk, info }, new Uint8Array(32), info);
      await expect(
        hpkeOpen(kp.secretKey, new Uint8Array(sealed.enc), new Uint8Array(sealed.ct), info, info),
      ).resolves.toEqual(new Uint8Array(32));
    }
  });

  it("refuses wrong lengths and a wrong key with typed errors", async () => {
    const sk = randomBytes(32);
    const pk = await xwingPublicKey(sk);
    await expect(xwingEncapsulate(pk.slice(1))).rejects.toMatchObject({
      name: "InvalidLengthError",
    });
    await expect(
      xwingDecapsulate(new Uint8Array(XWING_CIPHERTEXT_BYTES - 1), sk),
    ).rejects.toMatchObject({
      name: "InvalidLengthError",
    });
    // A public key whose ML-KEM half is not reduced modulo q (FIPS 203 §7.2).
    const unreduced = pk.slice();
    unreduced.fill(0xff, 0, 3);
    await expect(xwingEncapsulate(unreduced)).rejects.toMatchObject({ name: "InvalidKeyError" });
    const info = new Uint8Array([1]);
    const sealed = await hpkeSealXWing(pk, new Uint8Array(32), info, new Uint8Array());
    expect(sealed.enc.length).toBe(XWING_CIPHERTEXT_BYTES);
    expect(sealed.ciphertext.length).toBe(48);
    await expect(
      hpkeOpenXWing(randomBytes(32), sealed.enc, sealed.ciphertext, info, new Uint8Array()),
    ).rejects.toMatchObject({ name: "HpkeOpenError" });
    await expect(
      hpkeSealXWing(new Uint8Array(XWING_PUBLIC_KEY_BYTES - 1), new Uint8Array(1), info, info),
    ).rejects.toMatchObject({ name: "InvalidLengthError" });
  });
});

describe("hpkeSealManyXWing (a commit's wraps, §9.2.3)", () => {
  it("seals to each recipient in order, each opening only with its own key, across several chunks", async () => {
    // 70 recipients: more than two of the chunks the ML-KEM halves are requested in.
    const sks = Array.from({ length: 70 }, () => randomBytes(32));
    const recipients = await Promise.all(
      sks.map(async (sk, i) => ({
        recipientPublicKey: await xwingPublicKey(sk),
        info: new TextEncoder().encode(`member ${i}`),
      })),
    );
    const pt = randomBytes(32);
    const aad = randomBytes(32);
    const sealed = await hpkeSealManyXWing(recipients, pt, aad);
    expect(sealed).toHaveLength(70);
    for (const [i, w] of sealed.entries()) {
      const r = recipients[i] as (typeof recipients)[number];
      expect(await hpkeOpenXWing(sks[i] as Uint8Array, w.enc, w.ciphertext, r.info, aad)).toEqual(
        pt,
      );
    }
    // Fresh encapsulation per wrap; another member's key opens nothing.
    expect(new Set(sealed.map((w) => toHexString(w.enc))).size).toBe(70);
    const w0 = sealed[0] as (typeof sealed)[number];
    await expect(
      hpkeOpenXWing(
        sks[1] as Uint8Array,
        w0.enc,
        w0.ciphertext,
        recipients[0]?.info as Uint8Array,
        aad,
      ),
    ).rejects.toMatchObject({ name: "HpkeOpenError" });
  });

  it("a key failing FIPS 203's check anywhere in the batch is HpkeSealError, no wraps returned", async () => {
    const recipients = await Promise.all(
      Array.from({ length: 40 }, async () => ({
        recipientPublicKey: await xwingPublicKey(randomBytes(32)),
        info: randomBytes(8),
      })),
    );
    const bad = (recipients[37] as (typeof recipients)[number]).recipientPublicKey.slice();
    bad[0] = 0xff;
    bad[1] = 0x0f; // first ML-KEM coefficient 4095 ≥ q
    recipients[37] = { recipientPublicKey: bad, info: randomBytes(8) };
    await expect(
      hpkeSealManyXWing(recipients, randomBytes(32), randomBytes(32)),
    ).rejects.toMatchObject({ name: "HpkeSealError" });
  });
});

function toHexString(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
