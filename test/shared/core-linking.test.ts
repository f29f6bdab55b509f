/**
 * Linking a device (PROTOCOL.md §4.8): the code's spelling, the pinned key-derivation vector, the
 * round trip from offer to opened transfer, and each refusal — a relay substituting the offer or
 * the answer, an altered byte anywhere, a transfer that does not list the new device.
 */

import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { nextDeviceList, signDeviceList } from "../../shared/core/devices";
import {
  CROCKFORD,
  checkLinkOffer,
  createLinkOffer,
  formatLinkCode,
  LinkError,
  type LinkTransfer,
  linkKeys,
  linkOfferTranscript,
  listLinking,
  listRemoving,
  newLinkCode,
  offeredDevice,
  openLinkAnswer,
  type PendingLink,
  parseLinkCode,
  sealLinkAnswer,
} from "../../shared/core/linking";
import { ed25519KeyPairFromSeed, ed25519Sign, sha256 } from "../../shared/crypto";
import { fromB64u, toB64u, utf8 } from "../../shared/encoding";
import { type DeviceList, LinkAnswer, LinkOffer } from "../../shared/protocol";

const L = (label: string) => sha256(utf8(label));
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const HUB = "main";

async function existingDevice() {
  const seed = L("link-ik");
  const ik = await ed25519KeyPairFromSeed(seed);
  const dev = await ed25519KeyPairFromSeed(L("link-dev-a"));
  const list = await signDeviceList(
    {
      identityKey: toB64u(ik.publicKey),
      version: 1,
      devices: [
        { id: toB64u(L("a").slice(0, 16)), key: toB64u(dev.publicKey), name: "laptop", addedAt: 1 },
      ],
      removed: [],
    },
    (m) => ed25519Sign(ik.privateKey, m),
  );
  return { seed, ik, list };
}

/** The existing device's side: check the offer, list the device, seal the transfer. */
async function answer(pending: PendingLink, opts: { list?: DeviceList; seed?: Uint8Array } = {}) {
  const e = await existingDevice();
  checkLinkOffer(HUB, pending.code, pending.offer);
  const list =
    opts.list ??
    (await signDeviceList(nextDeviceList(e.list, { add: [offeredDevice(pending.offer, 2)] }), (m) =>
      ed25519Sign(e.ik.privateKey, m),
    ));
  const transfer: LinkTransfer = {
    v: 1,
    username: "alice",
    identitySeed: toB64u(opts.seed ?? e.seed),
    devices: list,
    contacts: [{ username: "bob", identityKey: toB64u(L("bob").slice(0, 32)), verified: true }],
  };
  return { transfer, answer: await sealLinkAnswer(HUB, pending.code, pending.offer, transfer), e };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof LinkError) return e.code;
    throw e;
  }
  return "accepted";
}

function flip(b64: string, at = 0): string {
  const b = fromB64u(b64);
  b[at % b.length] = (b[at % b.length] ?? 0) ^ 1;
  return toB64u(b);
}

describe("link codes (§4.8.1)", () => {
  it("20 Crockford characters, formatted in groups of four, read back however typed", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 500; i++) {
      const c = newLinkCode();
      expect(c.rendezvous).toHaveLength(8);
      expect(c.secret).toHaveLength(12);
      expect([...(c.rendezvous + c.secret)].every((ch) => CROCKFORD.includes(ch))).toBe(true);
      const shown = formatLinkCode(c);
      expect(shown).toMatch(/^[0-9A-Z]{4}(-[0-9A-Z]{4}){4}$/);
      expect(parseLinkCode(shown)).toEqual(c);
      expect(parseLinkCode(shown.toLowerCase().replace(/-/g, " "))).toEqual(c);
      seen.add(shown);
    }
    expect(seen.size).toBe(500);
    // Letters people read as digits are those digits.
    expect(parseLinkCode("o1il-0000-0000-0000-0000")).toEqual({
      rendezvous: "01110000",
      secret: "000000000000",
    });
  });

  it("every character value occurs (the 100 bits are all used)", () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      const c = newLinkCode();
      for (const ch of c.rendezvous + c.secret) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    }
    expect(counts.size).toBe(32);
  });

  it("refuses what is not a code: bad_code", () => {
    for (const t of ["", "ABCD-EFGH", "ABCD-EFGH-JKMN-PQRS-TVWXY", "ABCD-EFGH-JKMN-PQRS-TVWU"]) {
      expect(() => parseLinkCode(t)).toThrow(LinkError);
    }
  });
});

describe("link keys and MACs: pinned vector (§4.8.4)", () => {
  // Computed independently (Python's hmac/hashlib, RFC 5869 by hand) from the definitions in §4.8.4.
  it("kOffer, kAnswer and the offer transcript for a fixed code", () => {
    const code = parseLinkCode("0123-4567-89AB-CDEF-GHJK");
    const k = linkKeys(HUB, code);
    expect(hex(k.offer)).toBe("44d59b79cb46328ea2e8eba49b72640a576f6bde5fcde9d9cde6358357c8c1b0");
    expect(hex(k.answer)).toBe("51775426879541f3044539c75087124cfd599cc17561afcfb6867198fe8850fb");
    const body = {
      device: toB64u(L("link-device").slice(0, 16)),
      deviceKey: toB64u(L("link-device-key")),
      linkKey: toB64u(new Uint8Array(1216).fill(7)),
      name: "phone",
    };
    expect(hex(sha256(linkOfferTranscript(HUB, code.rendezvous, body)))).toBe(
      "fb350503fa026428c98d798e49c9ca30639b9793ef5317702a9db125e6097992",
    );
  });

  it("the keys depend on the hub and on both halves of the code", () => {
    const code = parseLinkCode("0123-4567-89AB-CDEF-GHJK");
    const base = hex(linkKeys(HUB, code).offer);
    expect(hex(linkKeys("other", code).offer)).not.toBe(base);
    expect(hex(linkKeys(HUB, { ...code, secret: "89ABCDEFGHJM" }).offer)).not.toBe(base);
    expect(hex(linkKeys(HUB, { ...code, rendezvous: "01234568" }).offer)).not.toBe(base);
  });
});

describe("linking a device (§4.8.2–3)", () => {
  it("round trip: the new device gets the identity, its own listing and the contacts", async () => {
    const pending = await createLinkOffer(HUB, "phone");
    expect(v.is(LinkOffer, pending.offer)).toBe(true);
    const { transfer, answer: a, e } = await answer(pending);
    expect(v.is(LinkAnswer, a)).toBe(true);
    const got = await openLinkAnswer(pending, a);
    expect(got).toEqual(transfer);
    expect(got.devices.identityKey).toBe(toB64u(e.ik.publicKey));
    const me = got.devices.devices.find((d) => d.id === pending.offer.device);
    const mine = await ed25519KeyPairFromSeed(pending.deviceSeed);
    expect(me?.key).toBe(toB64u(mine.publicKey));
    expect(me?.name).toBe("phone");
  });

  it("the history archive's reference (§4.8.5) travels inside the sealed transfer, and only there", async () => {
    const pending = await createLinkOffer(HUB, "phone");
    const e = await existingDevice();
    const list = await signDeviceList(
      nextDeviceList(e.list, { add: [offeredDevice(pending.offer, 2)] }),
      (m) => ed25519Sign(e.ik.privateKey, m),
    );
    const history = {
      blob: toB64u(L("history-blob")),
      key: toB64u(L("history-key")),
      digest: toB64u(L("history-digest")),
      size: 1234,
      type: "application/x-parley-history+json",
      name: "history.json",
    };
    const transfer: LinkTransfer = {
      v: 1,
      username: "alice",
      identitySeed: toB64u(e.seed),
      devices: list,
      contacts: [],
      history,
    };
    const a = await sealLinkAnswer(HUB, pending.code, pending.offer, transfer);
    // The relay carries the answer: neither the blob id nor the key is readable in it.
    const wire = JSON.stringify(a);
    for (const secret of [history.blob, history.key, history.digest]) {
      expect(wire).not.toContain(secret);
    }
    expect((await openLinkAnswer(pending, a)).history).toEqual(history);
    // A reference that is not a file reference makes the whole transfer malformed (strict parse).
    const bad = await sealLinkAnswer(HUB, pending.code, pending.offer, {
      ...transfer,
      history: { ...history, key: "short" },
    });
    expect(await refusal(openLinkAnswer(pending, bad))).toBe("malformed");
  });

  it("the existing device refuses an offer not made with the code it was shown", async () => {
    const pending = await createLinkOffer(HUB, "phone");
    // Another code (a typo, or another device's offer under this rendezvous).
    const other = { ...pending.code, secret: newLinkCode().secret };
    expect(() => checkLinkOffer(HUB, other, pending.offer)).toThrow(LinkError);
    // Another hub.
    expect(() => checkLinkOffer("elsewhere", pending.code, pending.offer)).toThrow(LinkError);
    // A relay substituting any field (its own link key, to read the transfer) or the MAC.
    const relayKey = (await createLinkOffer(HUB, "phone")).offer.linkKey;
    for (const forged of [
      { ...pending.offer, linkKey: relayKey },
      { ...pending.offer, deviceKey: flip(pending.offer.deviceKey) },
      { ...pending.offer, device: flip(pending.offer.device) },
      { ...pending.offer, name: "laptop" },
      { ...pending.offer, mac: flip(pending.offer.mac, 31) },
    ]) {
      let code = "accepted";
      try {
        checkLinkOffer(HUB, pending.code, forged);
      } catch (err) {
        code = err instanceof LinkError ? err.code : "other";
      }
      expect(code).toBe("code_mismatch");
    }
  });

  it("the new device refuses an answer that is not from the device that scanned its code", async () => {
    const pending = await createLinkOffer(HUB, "phone");
    const { answer: a } = await answer(pending);
    // The relay answers with its own identity, sealed to the right link key, under another code.
    const relayPending: PendingLink = { ...pending, code: newLinkCode() };
    const forged = await sealLinkAnswer(
      HUB,
      relayPending.code,
      pending.offer,
      (await answer(pending)).transfer,
    );
    expect(await refusal(openLinkAnswer(pending, forged))).toBe("code_mismatch");
    // Any altered byte of the genuine answer.
    for (const bad of [
      { ...a, enc: flip(a.enc, 5) },
      { ...a, ciphertext: flip(a.ciphertext, 9) },
      { ...a, mac: flip(a.mac, 3) },
    ]) {
      expect(await refusal(openLinkAnswer(pending, bad))).toBe("code_mismatch");
    }
    // The genuine answer still opens: nothing above changed the pending state.
    await expect(openLinkAnswer(pending, a)).resolves.toBeDefined();
  });

  it("an answer sealed to another offer's link key does not open: malformed", async () => {
    const pending = await createLinkOffer(HUB, "phone");
    const second = await createLinkOffer(HUB, "phone");
    // MAC'd with the right code but sealed to another key (and bound to another offer): only the
    // HPKE binding refuses it, which is what this checks.
    const { transfer } = await answer(pending);
    const a = await sealLinkAnswer(HUB, pending.code, second.offer, transfer);
    expect(await refusal(openLinkAnswer(pending, a))).toBe("malformed");
  });

  it("a transfer that does not list this device with its key is refused: not_listed", async () => {
    const pending = await createLinkOffer(HUB, "phone");
    const e = await existingDevice();
    const sign = (m: Uint8Array) => ed25519Sign(e.ik.privateKey, m);
    // The list without the new device.
    const without = await signDeviceList(nextDeviceList(e.list, {}), sign);
    expect(
      await refusal(openLinkAnswer(pending, (await answer(pending, { list: without })).answer)),
    ).toBe("not_listed");
    // The new device under another key.
    const otherKey = await signDeviceList(
      nextDeviceList(e.list, {
        add: [{ ...offeredDevice(pending.offer, 2), key: toB64u(L("not-the-device")) }],
      }),
      sign,
    );
    expect(
      await refusal(openLinkAnswer(pending, (await answer(pending, { list: otherKey })).answer)),
    ).toBe("not_listed");
    // A list signed by someone else, and an identity seed that is not the list's identity.
    const mallory = await ed25519KeyPairFromSeed(L("mallory"));
    const forged = {
      ...(await signDeviceList(
        nextDeviceList(e.list, { add: [offeredDevice(pending.offer, 2)] }),
        (m) => ed25519Sign(mallory.privateKey, m),
      )),
    };
    expect(
      await refusal(openLinkAnswer(pending, (await answer(pending, { list: forged })).answer)),
    ).toBe("not_listed");
    expect(
      await refusal(
        openLinkAnswer(pending, (await answer(pending, { seed: L("mallory") })).answer),
      ),
    ).toBe("not_listed");
  });
});

describe("the lists the existing device signs (§4.8.3, §4.7)", () => {
  const ik = toB64u(new Uint8Array(32).fill(9));
  const dev = (n: number, name: string) => ({
    id: toB64u(new Uint8Array(16).fill(n)),
    key: toB64u(new Uint8Array(32).fill(n)),
    name,
    addedAt: n,
  });
  const signed = (u: ReturnType<typeof listLinking>): DeviceList => ({ ...u, sig: "" });

  it("the first list names this device too, as version 1", () => {
    const first = listLinking(null, ik, dev(2, "laptop"), dev(1, "phone"));
    expect(first.version).toBe(1);
    expect(first.identityKey).toBe(ik);
    // Canonical order: ascending id bytes, whatever the order they were given in.
    expect(first.devices.map((d) => d.name)).toEqual(["phone", "laptop"]);
    expect(first.removed).toEqual([]);
  });

  it("a later list adds only the new device; another identity's list is not built on", () => {
    const v1 = signed(listLinking(null, ik, dev(1, "laptop"), dev(2, "phone")));
    const v2 = listLinking(v1, ik, dev(1, "laptop"), dev(3, "tablet"));
    expect(v2.version).toBe(2);
    expect(v2.devices.map((d) => d.name)).toEqual(["laptop", "phone", "tablet"]);
    const other = listLinking(
      v1,
      toB64u(new Uint8Array(32).fill(8)),
      dev(1, "laptop"),
      dev(3, "t"),
    );
    expect(other.version).toBe(1);
  });

  it("refuses a device already listed and a sixth device", () => {
    const v1 = signed(listLinking(null, ik, dev(1, "laptop"), dev(2, "phone")));
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e instanceof LinkError ? e.code : "other";
      }
      return "none";
    };
    expect(code(() => listLinking(v1, ik, dev(1, "laptop"), dev(2, "phone")))).toBe(
      "already_linked",
    );
    let full = v1;
    for (const n of [3, 4, 5]) full = signed(listLinking(full, ik, dev(1, "laptop"), dev(n, "x")));
    expect(full.devices).toHaveLength(5);
    expect(code(() => listLinking(full, ik, dev(1, "laptop"), dev(6, "x")))).toBe(
      "too_many_devices",
    );
    // Removal: never this device, never one not listed; the removed id is revoked in the list.
    expect(code(() => listRemoving(full, dev(1, "").id, dev(1, "").id))).toBe("unknown_device");
    expect(code(() => listRemoving(full, dev(7, "").id, dev(1, "").id))).toBe("unknown_device");
    expect(code(() => listRemoving(null, dev(2, "").id, dev(1, "").id))).toBe("unknown_device");
    const without = listRemoving(full, dev(2, "").id, dev(1, "").id);
    expect(without.version).toBe(full.version + 1);
    expect(without.devices.map((d) => d.id)).not.toContain(dev(2, "").id);
    expect(without.removed).toEqual([dev(2, "").id]);
  });
});
