/**
 * Deleted X25519 private keys do not stay usable through the DH cache (PROTOCOL.md §3.3): the
 * cache keeps a CryptoKey per secret it has used, so each place that deletes a secret — the
 * Double Ratchet's old ratchet key after a DH step, a one-time prekey once used, a signed prekey
 * past its grace period — also drops it from the cache.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { b64 } from "../../shared/core/codec";
import {
  addOneTimePrekeys,
  consumePrekeys,
  initialPrekeys,
  maintainSpk,
} from "../../shared/core/prekeys";
import {
  initInitiator,
  initResponder,
  newX25519,
  ratchetDecrypt,
  ratchetEncrypt,
} from "../../shared/core/ratchet";
import {
  generateIdentityKeyPair,
  randomBytes,
  x25519,
  x25519Cached,
  x25519GenerateKeyPair,
} from "../../shared/crypto";
import { backend, installCryptoBackend } from "../../shared/crypto/backend";
import { fromB64u } from "../../shared/encoding";

const PREFIX = new Uint8Array([1, 5]);
const te = (s: string) => new TextEncoder().encode(s);

describe("retired X25519 secrets leave the DH cache", () => {
  // The cache belongs to the default (WebCrypto + noble) backend, the one browsers and workerd
  // run; the Node backend (libsodium on raw bytes) keeps no keys. Run on the default here too.
  const saved = { ...backend() };
  beforeAll(() => installCryptoBackend(null));
  afterAll(() => installCryptoBackend(Object.keys(saved).length > 0 ? saved : null));

  it("the ratchet's old key, after the DH step that replaced it", async () => {
    const root = randomBytes(32);
    const ad = randomBytes(40);
    const bobKey = await newX25519(randomBytes);
    let a = await initInitiator({
      rootKey: root,
      ad,
      peerRatchetKey: fromB64u(bobKey.pub),
      receiveChain: null,
      random: randomBytes,
    });
    let b = initResponder({ rootKey: root, ad, ratchetKeyPair: bobKey, sendChain: null });
    const m1 = await ratchetEncrypt(a, te("hi"), PREFIX);
    a = m1.state;
    // Bob's first receive is a DH step: it uses his initial ratchet key, then replaces it.
    const bobFirst = b64(b.dhs.priv, "dhs");
    b = (await ratchetDecrypt(b, m1.header, m1.ciphertext, PREFIX, randomBytes)).state;
    expect(b.dhs.priv).not.toBe(bobKey.priv);
    expect(x25519Cached(bobFirst)).toBe(false);
    // Alice's key of that turn is replaced when Bob's answer arrives.
    const aliceKey = b64(a.dhs.priv, "dhs");
    await x25519(aliceKey, (await x25519GenerateKeyPair()).publicKey); // in the cache now
    expect(x25519Cached(aliceKey)).toBe(true);
    const r = await ratchetEncrypt(b, te("yo"), PREFIX);
    a = (await ratchetDecrypt(a, r.header, r.ciphertext, PREFIX, randomBytes)).state;
    expect(x25519Cached(aliceKey)).toBe(false);
    // The current keys still work (the cache only ever saves time).
    const m2 = await ratchetEncrypt(a, te("again"), PREFIX);
    const out = await ratchetDecrypt(b, m2.header, m2.ciphertext, PREFIX, randomBytes);
    expect(new TextDecoder().decode(out.plaintext)).toBe("again");
  });

  it("a one-time prekey once used, and a signed prekey past its grace period", async () => {
    const id = await generateIdentityKeyPair();
    let s = await initialPrekeys(id, 0, randomBytes);
    s = (await addOneTimePrekeys(s, 2, randomBytes)).state;
    const [opk, other] = s.opks as [(typeof s.opks)[0], (typeof s.opks)[0]];
    const peer = (await x25519GenerateKeyPair()).publicKey;
    for (const k of [opk.priv, other.priv, s.spk.priv]) await x25519(b64(k, "k"), peer);
    s = consumePrekeys(s, s.spk.id, opk.id, randomBytes(32));
    expect(x25519Cached(b64(opk.priv, "opk"))).toBe(false);
    expect(x25519Cached(b64(other.priv, "opk"))).toBe(true);

    const spk = s.spk.priv;
    const day = 86_400_000;
    s = (await maintainSpk(s, id, 8 * day, randomBytes, 7 * day, 14 * day)).state; // rotated
    expect(s.oldSpks.map((o) => o.priv)).toEqual([spk]);
    expect(x25519Cached(b64(spk, "spk"))).toBe(true); // still within grace: still needed
    s = (await maintainSpk(s, id, 23 * day, randomBytes, 7 * day, 14 * day)).state;
    expect(s.oldSpks.map((o) => o.priv)).not.toContain(spk);
    expect(x25519Cached(b64(spk, "spk"))).toBe(false);
  });
});
