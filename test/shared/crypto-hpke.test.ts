/**
 * HPKE known answers: RFC 9180 Appendix A vectors for Parley's suite DHKEM(X25519, HKDF-SHA256)
 * / HKDF-SHA256 / AES-256-GCM (0x0020, 0x0001, 0x0002), modes 0–3 (base, psk, auth, auth_psk):
 * derived keys, enc, every sealed message in sequence, every export — through the same
 * @hpke/core suite object that hpkeSeal/hpkeOpen use (the library's construction with Parley's
 * X25519 / HKDF / AES-GCM primitives plugged in) — and hpkeOpen on the base-mode vector. Then
 * interoperability with stock @hpke/core (its own WebCrypto primitives) both ways on random
 * inputs, and the same refusals as stock for low-order keys and altered inputs.
 */

import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  HPKE_AEAD_ID,
  HPKE_KDF_ID,
  HPKE_KEM_ID,
  HpkeOpenError,
  HpkeSealError,
  hpkeOpen,
  hpkeSeal,
  hpkeSealMany,
  randomBytes,
  x25519GenerateKeyPair,
} from "../../shared/crypto";
import { type HpkeSuiteName, hpkeSealSuite, hpkeSuite } from "../../shared/crypto/hpke";
import vectors from "../vectors/hpke_rfc9180_x25519_sha256_aes256gcm.json";
import x25519Vectors from "../vectors/wycheproof_x25519_test.json";
import { fromHex, toHex } from "./crypto-util";

const MODES = ["base", "psk", "auth", "auth_psk"] as const;

type Vector = (typeof vectors)[number];

/** Both instances of Parley's suite (Parley's primitives / the library's WebCrypto ones). */
const SUITES: HpkeSuiteName[] = ["parley", "webcrypto"];

async function contexts(v: Vector, name: HpkeSuiteName) {
  const suite = hpkeSuite(name);
  const recipient = await suite.kem.deriveKeyPair(fromHex(v.ikmR));
  const sender = v.ikmS !== undefined ? await suite.kem.deriveKeyPair(fromHex(v.ikmS)) : undefined;
  const psk =
    v.psk !== undefined && v.psk_id !== undefined
      ? { key: fromHex(v.psk), id: fromHex(v.psk_id) }
      : undefined;
  const info = fromHex(v.info);
  const senderCtx = await suite.createSenderContext({
    recipientPublicKey: recipient.publicKey,
    info,
    ekm: fromHex(v.ikmE), // deterministic ephemeral: DeriveKeyPair(ikmE), for test vectors only
    ...(psk ? { psk } : {}),
    ...(sender ? { senderKey: sender } : {}),
  });
  const recipientCtx = await suite.createRecipientContext({
    recipientKey: recipient,
    enc: senderCtx.enc,
    info,
    ...(psk ? { psk } : {}),
    ...(sender ? { senderPublicKey: sender.publicKey } : {}),
  });
  return { suite, recipient, sender, senderCtx, recipientCtx };
}

describe.each(SUITES)("RFC 9180 Appendix A vectors for our suite, instance %s", (name) => {
  it("holds exactly modes 0–3 of suite (0x0020, 0x0001, 0x0002)", () => {
    expect(vectors.map((v) => [v.mode, v.kem_id, v.kdf_id, v.aead_id])).toEqual(
      [0, 1, 2, 3].map((m) => [m, HPKE_KEM_ID, HPKE_KDF_ID, HPKE_AEAD_ID]),
    );
  });

  it.each(vectors.map((v) => ({ ...v, name: MODES[v.mode] })))(
    "mode $mode ($name): keys and enc",
    async (v) => {
      const { suite, recipient, sender, senderCtx } = await contexts(v, name);
      const ephemeral = await suite.kem.deriveKeyPair(fromHex(v.ikmE));
      const ser = async (k: CryptoKey) =>
        toHex(new Uint8Array(await suite.kem.serializePublicKey(k)));
      const serPriv = async (k: CryptoKey) =>
        toHex(new Uint8Array(await suite.kem.serializePrivateKey(k)));
      expect(
        {
          pkRm: await ser(recipient.publicKey),
          skRm: await serPriv(recipient.privateKey),
          pkEm: await ser(ephemeral.publicKey),
          pkSm: sender ? await ser(sender.publicKey) : undefined,
          enc: toHex(new Uint8Array(senderCtx.enc)),
        },
        `mode ${v.mode}`,
      ).toEqual({ pkRm: v.pkRm, skRm: v.skRm, pkEm: v.pkEm, pkSm: v.pkSm, enc: v.enc });
    },
  );

  it.each(vectors)("mode $mode: every encryption sealed and opened in sequence", async (v) => {
    const { senderCtx, recipientCtx } = await contexts(v, name);
    const sealed: string[] = [];
    const opened: string[] = [];
    for (const e of v.encryptions) {
      sealed.push(toHex(new Uint8Array(await senderCtx.seal(fromHex(e.pt), fromHex(e.aad)))));
      opened.push(toHex(new Uint8Array(await recipientCtx.open(fromHex(e.ct), fromHex(e.aad)))));
    }
    expect({ sealed, opened }, `mode ${v.mode}: ${v.encryptions.length} encryptions`).toEqual({
      sealed: v.encryptions.map((e) => e.ct),
      opened: v.encryptions.map((e) => e.pt),
    });
  });

  it.each(vectors)("mode $mode: exports on both sides", async (v) => {
    const { senderCtx, recipientCtx } = await contexts(v, name);
    const got = [];
    for (const x of v.exports) {
      got.push({
        sender: toHex(new Uint8Array(await senderCtx.export(fromHex(x.exporter_context), x.L))),
        recipient: toHex(
          new Uint8Array(await recipientCtx.export(fromHex(x.exporter_context), x.L)),
        ),
      });
    }
    expect(got, `mode ${v.mode} exports`).toEqual(
      v.exports.map((x) => ({ sender: x.exported_value, recipient: x.exported_value })),
    );
  });

  it("pins the counts: 4 modes x 257 encryptions, 3 exports each", () => {
    expect(vectors.map((v) => [v.encryptions.length, v.exports.length])).toEqual([
      [257, 3],
      [257, 3],
      [257, 3],
      [257, 3],
    ]);
  });

  it("hpkeOpen (single-shot base mode) opens the first base-mode ciphertext of the vector", async () => {
    const v = vectors.find((x) => x.mode === 0);
    const e = v?.encryptions[0];
    if (v === undefined || e === undefined) throw new Error("base-mode vector missing");
    const pt = await hpkeOpen(
      fromHex(v.skRm),
      fromHex(v.enc),
      fromHex(e.ct),
      fromHex(v.info),
      fromHex(e.aad),
    );
    expect(toHex(pt)).toBe(e.pt);
    // The second ciphertext was sealed with sequence number 1: single-shot open must refuse it.
    const e1 = v.encryptions[1];
    if (e1 === undefined) throw new Error("second encryption missing");
    await expect(
      hpkeOpen(fromHex(v.skRm), fromHex(v.enc), fromHex(e1.ct), fromHex(v.info), fromHex(e1.aad)),
    ).rejects.toMatchObject({ name: "HpkeOpenError" });
  });
});

/** @hpke/core exactly as shipped: its DHKEM(X25519), HKDF and AES-256-GCM on WebCrypto. */
const stock = new CipherSuite({
  kem: new DhkemX25519HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});

const bytes = (max: number) =>
  fc.uint8Array({ minLength: 0, maxLength: max }).map((b) => Uint8Array.from(b));

// Every public key in Wycheproof's X25519 file whose shared secret is all-zero (low order).
const lowOrder = [
  ...new Set(
    x25519Vectors.testGroups
      .flatMap((g) => g.tests)
      .filter((t) => /^0+$/.test(t.shared))
      .map((t) => t.public),
  ),
];

/** Plaintext sizes on both sides of aesGcmEncrypt's noble/WebCrypto split (256 B). */
const plaintexts = fc.oneof(bytes(64), fc.integer({ min: 200, max: 600 }).map(randomBytes));

describe("hpkeSeal / hpkeOpen interoperate with stock @hpke/core", () => {
  it("product hpkeSeal → stock open, on random inputs", async () => {
    await fc.assert(
      fc.asyncProperty(plaintexts, bytes(80), bytes(80), async (pt, info, aad) => {
        const r = await x25519GenerateKeyPair();
        const s = await hpkeSeal(r.publicKey, pt, info, aad);
        expect(s.enc.length).toBe(32);
        expect(s.ciphertext.length).toBe(pt.length + 16);
        const sk = await stock.kem.deserializePrivateKey(r.secretKey);
        const back = await stock.open({ recipientKey: sk, enc: s.enc, info }, s.ciphertext, aad);
        expect(new Uint8Array(back)).toEqual(pt);
      }),
      { numRuns: 40 },
    );
  });

  it("stock seal → product hpkeOpen, on random inputs", async () => {
    await fc.assert(
      fc.asyncProperty(plaintexts, bytes(80), bytes(80), async (pt, info, aad) => {
        const r = await x25519GenerateKeyPair();
        const pk = await stock.kem.deserializePublicKey(r.publicKey);
        const s = await stock.seal({ recipientPublicKey: pk, info }, pt, aad);
        const back = await hpkeOpen(
          r.secretKey,
          new Uint8Array(s.enc),
          new Uint8Array(s.ct),
          info,
          aad,
        );
        expect(back).toEqual(pt);
      }),
      { numRuns: 40 },
    );
  });

  it("hpkeSealMany: one independent seal per recipient, in order; one bad key rejects it all", async () => {
    const rs = await Promise.all(Array.from({ length: 25 }, () => x25519GenerateKeyPair()));
    const pt = randomBytes(32);
    const aad = randomBytes(32);
    const infos = rs.map((_, i) => randomBytes(i));
    const sealed = await hpkeSealMany(
      rs.map((r, i) => ({ recipientPublicKey: r.publicKey, info: infos[i] as Uint8Array })),
      pt,
      aad,
    );
    expect(sealed.length).toBe(rs.length);
    expect(new Set(sealed.map((s) => toHex(s.enc))).size).toBe(rs.length);
    for (const [i, r] of rs.entries()) {
      const s = sealed[i] as { enc: Uint8Array; ciphertext: Uint8Array };
      const sk = await stock.kem.deserializePrivateKey(r.secretKey);
      const back = await stock.open(
        { recipientKey: sk, enc: s.enc, info: infos[i] },
        s.ciphertext,
        aad,
      );
      expect(new Uint8Array(back)).toEqual(pt);
    }
    const withBad = rs.map((r) => ({ recipientPublicKey: r.publicKey, info: new Uint8Array(0) }));
    withBad[17] = { recipientPublicKey: fromHex(lowOrder[0] as string), info: new Uint8Array(0) };
    await expect(hpkeSealMany(withBad, pt, aad)).rejects.toBeInstanceOf(HpkeSealError);
    expect(await hpkeSealMany([], pt, aad)).toEqual([]);
  });

  it("hpkeSeal settles on one of the two suite instances after its timed trials", async () => {
    const r = await x25519GenerateKeyPair();
    for (let i = 0; i < 30; i++) {
      const pt = randomBytes(32);
      const aad = randomBytes(4);
      const s = await hpkeSeal(r.publicKey, pt, new Uint8Array(0), aad);
      expect(await hpkeOpen(r.secretKey, s.enc, s.ciphertext, new Uint8Array(0), aad)).toEqual(pt);
    }
    expect(SUITES).toContain(hpkeSealSuite());
  });
});

describe.each(SUITES)("suite instance %s and stock @hpke/core, both ways", (name) => {
  it("single-shot seal/open on random inputs", async () => {
    const ours = hpkeSuite(name);
    await fc.assert(
      fc.asyncProperty(
        plaintexts,
        bytes(80),
        bytes(80),
        fc.boolean(),
        async (pt, info, aad, oursSeals) => {
          const [a, b] = oursSeals ? [ours, stock] : [stock, ours];
          const r = await x25519GenerateKeyPair();
          const s = await a.seal(
            { recipientPublicKey: await a.kem.deserializePublicKey(r.publicKey), info },
            pt,
            aad,
          );
          const back = await b.open(
            { recipientKey: await b.kem.deserializePrivateKey(r.secretKey), enc: s.enc, info },
            s.ct,
            aad,
          );
          expect(new Uint8Array(back)).toEqual(pt);
        },
      ),
      { numRuns: 30 },
    );
  });

  it("multi-message contexts and exports agree (sequence numbers > 0)", async () => {
    const product = hpkeSuite(name);
    for (const [a, b] of [
      [product, stock],
      [stock, product],
    ] as const) {
      const rA = await a.kem.generateKeyPair();
      const skRaw = new Uint8Array(await a.kem.serializePrivateKey(rA.privateKey));
      const pkRaw = new Uint8Array(await a.kem.serializePublicKey(rA.publicKey));
      const info = randomBytes(20);
      const sender = await a.createSenderContext({
        recipientPublicKey: await a.kem.deserializePublicKey(pkRaw),
        info,
      });
      const recipient = await b.createRecipientContext({
        recipientKey: await b.kem.deserializePrivateKey(skRaw),
        enc: sender.enc,
        info,
      });
      for (let i = 0; i < 4; i++) {
        const pt = randomBytes(i * 150);
        const aad = randomBytes(i);
        const ct = await sender.seal(pt, aad);
        expect(new Uint8Array(await recipient.open(ct, aad)), `message ${i}`).toEqual(pt);
      }
      const ctx = randomBytes(12);
      expect(new Uint8Array(await sender.export(ctx, 48))).toEqual(
        new Uint8Array(await recipient.export(ctx, 48)),
      );
    }
  });

  it("the same key pair from DeriveKeyPair", async () => {
    const ikm = randomBytes(32);
    const ours = hpkeSuite(name);
    const p = await ours.kem.deriveKeyPair(ikm);
    const q = await stock.kem.deriveKeyPair(ikm);
    expect(new Uint8Array(await ours.kem.serializePublicKey(p.publicKey))).toEqual(
      new Uint8Array(await stock.kem.serializePublicKey(q.publicKey)),
    );
    expect(new Uint8Array(await ours.kem.serializePrivateKey(p.privateKey))).toEqual(
      new Uint8Array(await stock.kem.serializePrivateKey(q.privateKey)),
    );
  });

  it("a low-order recipient key or enc is refused (RFC 9180 §7.1.4)", async () => {
    const ours = hpkeSuite(name);
    const r = await x25519GenerateKeyPair();
    for (const hex of lowOrder) {
      const k = fromHex(hex);
      await expect(
        ours.seal({ recipientPublicKey: await ours.kem.deserializePublicKey(k) }, randomBytes(32)),
        hex,
      ).rejects.toThrow();
      await expect(
        ours.open(
          { recipientKey: await ours.kem.deserializePrivateKey(r.secretKey), enc: k },
          randomBytes(48),
        ),
        hex,
      ).rejects.toThrow();
    }
  });
});

describe("hpkeSeal / hpkeOpen refuse what stock @hpke/core refuses", () => {
  it("has low-order keys to try", () => {
    expect(lowOrder.length).toBeGreaterThan(5);
  });

  it("seal to a low-order recipient key fails in both (RFC 9180 §7.1.4)", async () => {
    for (const hex of lowOrder) {
      const pk = fromHex(hex);
      await expect(
        hpkeSeal(pk, randomBytes(32), randomBytes(4), randomBytes(4)),
        hex,
      ).rejects.toBeInstanceOf(HpkeSealError);
      const spk = await stock.kem.deserializePublicKey(pk);
      await expect(stock.seal({ recipientPublicKey: spk }, randomBytes(32)), hex).rejects.toThrow();
    }
  });

  it("open with a low-order enc fails in both", async () => {
    const r = await x25519GenerateKeyPair();
    const ct = randomBytes(48);
    for (const hex of lowOrder) {
      const enc = fromHex(hex);
      await expect(
        hpkeOpen(r.secretKey, enc, ct, randomBytes(3), randomBytes(3)),
        hex,
      ).rejects.toBeInstanceOf(HpkeOpenError);
      const sk = await stock.kem.deserializePrivateKey(r.secretKey);
      await expect(stock.open({ recipientKey: sk, enc }, ct), hex).rejects.toThrow();
    }
  });

  it("a changed bit anywhere in enc or ciphertext, or other info/aad, fails in both", async () => {
    await fc.assert(
      fc.asyncProperty(plaintexts, fc.nat(), fc.nat(7), async (pt, at, bit) => {
        const r = await x25519GenerateKeyPair();
        const info = randomBytes(8);
        const aad = randomBytes(8);
        const s = await hpkeSeal(r.publicKey, pt, info, aad);
        const wire = Uint8Array.from([...s.enc, ...s.ciphertext]);
        const i = at % wire.length;
        wire[i] = (wire[i] as number) ^ (1 << bit);
        const enc = wire.slice(0, 32);
        const ct = wire.slice(32);
        const sk = await stock.kem.deserializePrivateKey(r.secretKey);
        await expect(hpkeOpen(r.secretKey, enc, ct, info, aad)).rejects.toBeInstanceOf(
          HpkeOpenError,
        );
        await expect(stock.open({ recipientKey: sk, enc, info }, ct, aad)).rejects.toThrow();
        const other = randomBytes(8);
        await expect(hpkeOpen(r.secretKey, s.enc, s.ciphertext, other, aad)).rejects.toBeInstanceOf(
          HpkeOpenError,
        );
        await expect(
          hpkeOpen(r.secretKey, s.enc, s.ciphertext, info, other),
        ).rejects.toBeInstanceOf(HpkeOpenError);
      }),
      { numRuns: 30 },
    );
  });
});
