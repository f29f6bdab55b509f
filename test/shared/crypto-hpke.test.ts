/**
 * HPKE known answers: RFC 9180 Appendix A vectors for Parley's suite DHKEM(X25519, HKDF-SHA256)
 * / HKDF-SHA256 / AES-256-GCM (0x0020, 0x0001, 0x0002), modes 0–3 (base, psk, auth, auth_psk):
 * derived keys, enc, every sealed message in sequence, every export — through the same
 * @hpke/core suite object that hpkeSeal/hpkeOpen use — and hpkeOpen on the base-mode vector.
 */

import { describe, expect, it } from "vitest";
import { HPKE_AEAD_ID, HPKE_KDF_ID, HPKE_KEM_ID, hpkeOpen } from "../../shared/crypto";
import { hpkeSuite } from "../../shared/crypto/hpke";
import vectors from "../vectors/hpke_rfc9180_x25519_sha256_aes256gcm.json";
import { fromHex, toHex } from "./crypto-util";

const MODES = ["base", "psk", "auth", "auth_psk"] as const;

type Vector = (typeof vectors)[number];

async function contexts(v: Vector) {
  const suite = hpkeSuite();
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

describe("RFC 9180 Appendix A vectors for our suite", () => {
  it("holds exactly modes 0–3 of suite (0x0020, 0x0001, 0x0002)", () => {
    expect(vectors.map((v) => [v.mode, v.kem_id, v.kdf_id, v.aead_id])).toEqual(
      [0, 1, 2, 3].map((m) => [m, HPKE_KEM_ID, HPKE_KDF_ID, HPKE_AEAD_ID]),
    );
  });

  it.each(vectors.map((v) => ({ ...v, name: MODES[v.mode] })))(
    "mode $mode ($name): keys and enc",
    async (v) => {
      const { suite, recipient, sender, senderCtx } = await contexts(v);
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
    const { senderCtx, recipientCtx } = await contexts(v);
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
    const { senderCtx, recipientCtx } = await contexts(v);
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
