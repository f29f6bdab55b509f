/** Behaviour of the crypto core beyond the published vectors: round trips, typed errors, fingerprints. * The product functions (x25519, aesGcm*, ed25519Sign/Verify, hkdf/hmac/sha256) run on the
 * installed crypto backend: node:crypto in the `node` project, the default WebCrypto/noble paths
 * in the `workers` project (PROTOCOL.md §3.1) — so every vector here checks both backends.
 */

import { describe, expect, it } from "vitest";
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  CryptoError,
  constantTimeEqual,
  DecryptError,
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  generateIdentityKeyPair,
  HpkeOpenError,
  HpkeSealError,
  hkdfSha256,
  hpkeOpen,
  hpkeSeal,
  InvalidKeyError,
  InvalidLengthError,
  identityFingerprint,
  LowOrderError,
  randomBytes,
  safetyNumber,
  safetyNumberGroups,
  sha256,
  wipe,
  x25519,
  x25519GenerateKeyPair,
  x25519PublicKey,
} from "../../shared/crypto";
import { safetyNumberHalf } from "../../shared/crypto/fingerprint";
import { nobleEd25519PublicKey, nobleEd25519Verify, nobleX25519 } from "../../shared/crypto/noble";
import { lp, utf8 } from "../../shared/encoding";
import identityVectors from "../vectors/parley_identity_vectors.json";
import { fromHex } from "./crypto-util";

/** Asserts that `p` rejects with exactly class `cls` and a message mentioning `mention`. */
async function rejectsWith(
  p: Promise<unknown>,
  cls: new (...a: never[]) => Error,
  mention?: string,
) {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(cls);
  expect(err).toBeInstanceOf(CryptoError);
  expect((err as Error).name).toBe(cls.name);
  if (mention !== undefined) expect((err as Error).message).toContain(mention);
}

function throwsWith(f: () => unknown, cls: new (...a: never[]) => Error, mention?: string) {
  return rejectsWith((async () => f())(), cls, mention);
}

const flip = (b: Uint8Array, i: number) => {
  const c = b.slice();
  c[i] = (c[i] ?? 0) ^ 1;
  return c;
};

describe("randomBytes", () => {
  it("returns fresh bytes of the requested length, beyond the 64 KiB getRandomValues limit", () => {
    expect(randomBytes(0)).toHaveLength(0);
    const big = randomBytes(70_000);
    expect(big).toHaveLength(70_000);
    // The tail past the first chunk must be filled too (all-zero 4 KiB has probability 2^-32768).
    expect(big.subarray(66_000).some((x) => x !== 0)).toBe(true);
    expect(constantTimeEqual(randomBytes(32), randomBytes(32))).toBe(false);
  });
  it("rejects a non-integer or negative length", () => {
    expect(() => randomBytes(-1)).toThrow(InvalidLengthError);
    expect(() => randomBytes(1.5)).toThrow(InvalidLengthError);
  });
});

describe("Ed25519 identity keys", () => {
  it("signs and verifies with a non-extractable private key", async () => {
    const id = await generateIdentityKeyPair();
    expect(id.publicKey).toHaveLength(32);
    expect(id.privateKey.extractable).toBe(false);
    const msg = lp("parley/v1/test", "hello");
    const sig = await ed25519Sign(id.privateKey, msg);
    expect(sig).toHaveLength(64);
    expect(await ed25519Verify(id.publicKey, msg, sig)).toBe(true);
    expect(nobleEd25519Verify(id.publicKey, msg, sig)).toBe(true);
    expect(await ed25519Verify(id.publicKey, flip(msg, 5), sig)).toBe(false);
    expect(await ed25519Verify(id.publicKey, msg, flip(sig, 0))).toBe(false);
    expect(await ed25519Verify(id.publicKey, msg, flip(sig, 63))).toBe(false);
    expect(await ed25519Verify(flip(id.publicKey, 0), msg, sig)).toBe(false);
  });
  it("honours extractable=true when asked", async () => {
    expect((await generateIdentityKeyPair(true)).privateKey.extractable).toBe(true);
    const seed = randomBytes(32);
    expect((await ed25519KeyPairFromSeed(seed, true)).privateKey.extractable).toBe(true);
    expect((await ed25519KeyPairFromSeed(seed)).privateKey.extractable).toBe(false);
  });
  it("derives the same public key from a seed as noble does, deterministically", async () => {
    const seed = randomBytes(32);
    const a = await ed25519KeyPairFromSeed(seed);
    const b = await ed25519KeyPairFromSeed(seed);
    expect(a.publicKey).toEqual(nobleEd25519PublicKey(seed));
    expect(b.publicKey).toEqual(a.publicKey);
    const msg = utf8("m");
    // Ed25519 signatures are deterministic (RFC 8032 §5.1.6): both keys sign identically.
    expect(await ed25519Sign(a.privateKey, msg)).toEqual(await ed25519Sign(b.privateKey, msg));
  });
  it("verify returns false, never throws, on malformed input", async () => {
    const id = await generateIdentityKeyPair();
    const msg = utf8("m");
    const sig = await ed25519Sign(id.privateKey, msg);
    const bad: [unknown, unknown, unknown][] = [
      [id.publicKey.subarray(0, 31), msg, sig],
      [new Uint8Array(33), msg, sig],
      [id.publicKey, msg, sig.subarray(0, 63)],
      [id.publicKey, msg, new Uint8Array(65)],
      [null, msg, sig],
      ["key", msg, sig],
      [id.publicKey, "m", sig],
      [id.publicKey, msg, undefined],
      // y = 2^255 - 1 (not canonical, not on the curve): the import itself fails.
      [new Uint8Array(32).fill(0xff), msg, sig],
    ];
    for (const [k, m, s] of bad) {
      expect(await ed25519Verify(k as Uint8Array, m as Uint8Array, s as Uint8Array)).toBe(false);
      expect(nobleEd25519Verify(k as Uint8Array, m as Uint8Array, s as Uint8Array)).toBe(false);
    }
  });
  it("sign rejects anything but an Ed25519 private CryptoKey with InvalidKeyError", async () => {
    const id = await generateIdentityKeyPair();
    const pub = await crypto.subtle.importKey(
      "raw",
      new Uint8Array(id.publicKey),
      "Ed25519",
      true,
      ["verify"],
    );
    await rejectsWith(ed25519Sign(pub, utf8("m")), InvalidKeyError, "privateKey");
    const hmacKey = await crypto.subtle.importKey(
      "raw",
      new Uint8Array(32),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    await rejectsWith(ed25519Sign(hmacKey, utf8("m")), InvalidKeyError, "privateKey");
    await rejectsWith(ed25519Sign({} as CryptoKey, utf8("m")), InvalidKeyError, "privateKey");
    await rejectsWith(ed25519Sign(id.privateKey, "m" as never), InvalidLengthError, "message");
  });
  it("seed must be 32 bytes", async () => {
    await rejectsWith(ed25519KeyPairFromSeed(new Uint8Array(31)), InvalidLengthError, "seed");
  });
});

describe("X25519", () => {
  it("agrees on both sides and with noble", async () => {
    const a = await x25519GenerateKeyPair();
    const b = await x25519GenerateKeyPair();
    const ab = await x25519(a.secretKey, b.publicKey);
    expect(ab).toHaveLength(32);
    expect(await x25519(b.secretKey, a.publicKey)).toEqual(ab);
    expect(nobleX25519(a.secretKey, b.publicKey)).toEqual(ab);
    expect(await x25519PublicKey(a.secretKey)).toEqual(a.publicKey);
  });
  it("rejects low-order peer keys with LowOrderError (RFC 7748 §6.1)", async () => {
    const a = await x25519GenerateKeyPair();
    const zero = new Uint8Array(32);
    const one = new Uint8Array(32);
    one[0] = 1;
    for (const pk of [zero, one]) {
      await rejectsWith(x25519(a.secretKey, pk), LowOrderError, "RFC 7748");
      await throwsWith(() => nobleX25519(a.secretKey, pk), LowOrderError, "RFC 7748");
    }
  });
  it("names the bad argument on wrong lengths", async () => {
    const a = await x25519GenerateKeyPair();
    await rejectsWith(
      x25519(a.secretKey.subarray(1), a.publicKey),
      InvalidLengthError,
      "secretKey",
    );
    await rejectsWith(x25519(a.secretKey, new Uint8Array(33)), InvalidLengthError, "publicKey");
    await rejectsWith(x25519PublicKey(new Uint8Array(0)), InvalidLengthError, "secretKey");
  });
});

describe("HKDF / hashes", () => {
  it("rejects output lengths outside 1..8160 and non-byte arguments", () => {
    const z = new Uint8Array(0);
    expect(() => hkdfSha256(z, z, z, 0)).toThrow(InvalidLengthError);
    expect(() => hkdfSha256(z, z, z, 255 * 32 + 1)).toThrow(InvalidLengthError);
    expect(hkdfSha256(z, z, z, 255 * 32)).toHaveLength(8160);
    expect(() => hkdfSha256("x" as never, z, z, 32)).toThrow(/ikm/);
    expect(() => hkdfSha256(z, z, [1] as never, 32)).toThrow(/info/);
    expect(() => sha256(null as never)).toThrow(InvalidLengthError);
  });
  it("binds every input: changing ikm, salt or info changes the output", () => {
    const base = hkdfSha256(utf8("ikm"), utf8("salt"), utf8("info"), 32);
    expect(hkdfSha256(utf8("ikn"), utf8("salt"), utf8("info"), 32)).not.toEqual(base);
    expect(hkdfSha256(utf8("ikm"), utf8("salu"), utf8("info"), 32)).not.toEqual(base);
    expect(hkdfSha256(utf8("ikm"), utf8("salt"), utf8("infp"), 32)).not.toEqual(base);
    // RFC 5869: a shorter output is a prefix of a longer one (same PRK, same T(1)).
    expect(hkdfSha256(utf8("ikm"), utf8("salt"), utf8("info"), 16)).toEqual(base.subarray(0, 16));
  });
});

describe("AES-256-GCM", () => {
  const key = randomBytes(32);
  const nonce = randomBytes(12);
  const aad = utf8("aad");
  const pt = utf8("attack at dawn");

  it("round-trips and appends a 16-byte tag", async () => {
    const ct = await aesGcmEncrypt(key, nonce, pt, aad);
    expect(ct).toHaveLength(pt.length + 16);
    expect(await aesGcmDecrypt(key, nonce, ct, aad)).toEqual(pt);
    expect(
      await aesGcmDecrypt(key, nonce, await aesGcmEncrypt(key, nonce, new Uint8Array(0), aad), aad),
    ).toEqual(new Uint8Array(0));
  });
  it("throws DecryptError on any altered byte, wrong key, nonce or AAD", async () => {
    const ct = await aesGcmEncrypt(key, nonce, pt, aad);
    for (let i = 0; i < ct.length; i++) {
      await rejectsWith(aesGcmDecrypt(key, nonce, flip(ct, i), aad), DecryptError);
    }
    await rejectsWith(aesGcmDecrypt(flip(key, 0), nonce, ct, aad), DecryptError);
    await rejectsWith(aesGcmDecrypt(key, flip(nonce, 11), ct, aad), DecryptError);
    await rejectsWith(aesGcmDecrypt(key, nonce, ct, utf8("aae")), DecryptError);
    await rejectsWith(aesGcmDecrypt(key, nonce, ct.subarray(0, ct.length - 1), aad), DecryptError);
    await rejectsWith(aesGcmDecrypt(key, nonce, ct.subarray(0, 15), aad), DecryptError, "tag");
  });
  it("names the bad argument on wrong lengths", async () => {
    await rejectsWith(
      aesGcmEncrypt(key.subarray(0, 16), nonce, pt, aad),
      InvalidLengthError,
      "key",
    );
    await rejectsWith(aesGcmEncrypt(key, randomBytes(16), pt, aad), InvalidLengthError, "nonce");
    await rejectsWith(aesGcmDecrypt(key, nonce.subarray(1), pt, aad), InvalidLengthError, "nonce");
    await rejectsWith(aesGcmEncrypt(key, nonce, pt, "aad" as never), InvalidLengthError, "aad");
  });
});

describe("HPKE base mode", () => {
  const info = utf8("parley/v1/test-wrap");
  const aad = utf8("group|epoch");
  const pt = randomBytes(32);

  it("round-trips", async () => {
    const r = await x25519GenerateKeyPair();
    const { enc, ciphertext } = await hpkeSeal(r.publicKey, pt, info, aad);
    expect(enc).toHaveLength(32);
    expect(ciphertext).toHaveLength(pt.length + 16);
    expect(await hpkeOpen(r.secretKey, enc, ciphertext, info, aad)).toEqual(pt);
    // Fresh ephemeral each time: the same plaintext never seals to the same bytes.
    expect((await hpkeSeal(r.publicKey, pt, info, aad)).enc).not.toEqual(enc);
  });
  it("open fails with HpkeOpenError on wrong key, info, aad, enc or altered ciphertext", async () => {
    const r = await x25519GenerateKeyPair();
    const other = await x25519GenerateKeyPair();
    const { enc, ciphertext } = await hpkeSeal(r.publicKey, pt, info, aad);
    await rejectsWith(hpkeOpen(other.secretKey, enc, ciphertext, info, aad), HpkeOpenError);
    await rejectsWith(hpkeOpen(r.secretKey, enc, ciphertext, utf8("other"), aad), HpkeOpenError);
    await rejectsWith(hpkeOpen(r.secretKey, enc, ciphertext, info, utf8("x")), HpkeOpenError);
    await rejectsWith(hpkeOpen(r.secretKey, flip(enc, 3), ciphertext, info, aad), HpkeOpenError);
    await rejectsWith(hpkeOpen(r.secretKey, enc, flip(ciphertext, 0), info, aad), HpkeOpenError);
    await rejectsWith(
      hpkeOpen(r.secretKey, enc, ciphertext.subarray(0, 10), info, aad),
      HpkeOpenError,
    );
    // A low-order enc makes the recipient's DH all-zero (RFC 9180 §7.1.4).
    await rejectsWith(
      hpkeOpen(r.secretKey, new Uint8Array(32), ciphertext, info, aad),
      HpkeOpenError,
    );
  });
  it("seal to a low-order key fails with HpkeSealError", async () => {
    await rejectsWith(hpkeSeal(new Uint8Array(32), pt, info, aad), HpkeSealError);
  });
  it("names the bad argument on wrong lengths", async () => {
    const r = await x25519GenerateKeyPair();
    await rejectsWith(
      hpkeSeal(r.publicKey.subarray(1), pt, info, aad),
      InvalidLengthError,
      "recipientPublicKey",
    );
    await rejectsWith(
      hpkeOpen(r.secretKey, new Uint8Array(31), pt, info, aad),
      InvalidLengthError,
      "enc",
    );
    await rejectsWith(
      hpkeOpen(new Uint8Array(33), new Uint8Array(32), pt, info, aad),
      InvalidLengthError,
      "recipientSecretKey",
    );
  });
});

describe("constantTimeEqual / wipe", () => {
  it("compares contents and lengths", () => {
    const a = new Uint8Array([1, 2, 3]);
    expect(constantTimeEqual(a, new Uint8Array([1, 2, 3]))).toBe(true);
    expect(constantTimeEqual(new Uint8Array(0), new Uint8Array(0))).toBe(true);
    expect(constantTimeEqual(a, new Uint8Array([1, 2, 4]))).toBe(false);
    expect(constantTimeEqual(a, new Uint8Array([0, 2, 3]))).toBe(false);
    expect(constantTimeEqual(a, new Uint8Array([1, 2]))).toBe(false);
    expect(constantTimeEqual(a, new Uint8Array([1, 2, 3, 0]))).toBe(false);
    expect(constantTimeEqual(a, "abc" as never)).toBe(false);
  });
  it("wipe zeroes in place", () => {
    const a = randomBytes(64);
    a[0] = 1;
    wipe(a);
    expect(a.every((x) => x === 0)).toBe(true);
  });
});

/** Independent base32 (RFC 4648 §6) through BigInt, to check the fingerprint's bit packing. */
function base32Ref(bytes: Uint8Array): string {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  const bits = bytes.length * 8;
  let out = "";
  for (let i = bits - 5; i >= 0; i -= 5)
    out += "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[Number((n >> BigInt(i)) & 31n)];
  return out;
}

describe("identity fingerprint", () => {
  it("is 16 base32 chars in 4 groups of 4 = first 10 bytes of SHA-256(lp(label, key))", async () => {
    const { publicKey } = await generateIdentityKeyPair();
    const fp = identityFingerprint(publicKey);
    expect(fp).toMatch(/^[A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4} [A-Z2-7]{4}$/);
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", new Uint8Array(lp("parley/v1/fingerprint", publicKey))),
    );
    expect(fp.replace(/ /g, "")).toBe(base32Ref(digest.subarray(0, 10)));
  });
  it("is stable for a key and distinct across keys", async () => {
    const a = (await generateIdentityKeyPair()).publicKey;
    const b = (await generateIdentityKeyPair()).publicKey;
    expect(identityFingerprint(a)).toBe(identityFingerprint(a.slice()));
    expect(identityFingerprint(a)).not.toBe(identityFingerprint(b));
    expect(identityFingerprint(a)).not.toBe(identityFingerprint(flip(a, 31)));
  });
  it("rejects a key that is not 32 bytes", () => {
    expect(() => identityFingerprint(new Uint8Array(31))).toThrow(InvalidLengthError);
    expect(() => identityFingerprint(new Uint8Array(31))).toThrow(/identityKey/);
  });
});

describe("identity known answers (test/vectors/parley_identity_vectors.json, independent Python)", () => {
  it.each(identityVectors.fingerprint)("fingerprint of $identityKey", (v) => {
    expect(identityFingerprint(fromHex(v.identityKey))).toBe(v.fingerprint);
  });
  it.each(identityVectors.safetyNumber)("safety number of $a.username and $b.username", (v) => {
    const a = { username: v.a.username, identityKey: fromHex(v.a.identityKey) };
    const b = { username: v.b.username, identityKey: fromHex(v.b.identityKey) };
    expect({
      halfA: safetyNumberHalf(a.identityKey, utf8(a.username)),
      halfB: safetyNumberHalf(b.identityKey, utf8(b.username)),
      ab: safetyNumber(a, b),
      ba: safetyNumber(b, a),
    }).toEqual({ halfA: v.halfA, halfB: v.halfB, ab: v.safetyNumber, ba: v.safetyNumber });
  });
});

describe("safety number", () => {
  it("is 60 digits, identical on both sides, and changes with either key or name", async () => {
    const alice = { username: "alice", identityKey: (await generateIdentityKeyPair()).publicKey };
    const bob = { username: "bob", identityKey: (await generateIdentityKeyPair()).publicKey };
    const n = safetyNumber(alice, bob);
    expect(n).toMatch(/^[0-9]{60}$/);
    expect(safetyNumber(bob, alice)).toBe(n);
    const mallory = (await generateIdentityKeyPair()).publicKey;
    const variants = [
      safetyNumber({ ...alice, identityKey: mallory }, bob),
      safetyNumber(alice, { ...bob, identityKey: mallory }),
      safetyNumber({ ...alice, username: "alicf" }, bob),
      safetyNumber(alice, { ...bob, username: "bob2" }),
    ];
    for (const v of variants) expect(v).not.toBe(n);
    // One party's half stays put when only the other party changes.
    const halves = (s: string) => [s.slice(0, 30), s.slice(30)];
    const common = halves(n).filter((h) => halves(variants[0] ?? "").includes(h));
    expect(common).toHaveLength(1);
  });
  it("groups into 12 blocks of 5 and rejects anything but 60 digits", async () => {
    const k = (await generateIdentityKeyPair()).publicKey;
    const n = safetyNumber({ username: "a", identityKey: k }, { username: "b", identityKey: k });
    const g = safetyNumberGroups(n);
    expect(g).toHaveLength(12);
    expect(g.join("")).toBe(n);
    for (const x of g) expect(x).toMatch(/^[0-9]{5}$/);
    expect(() => safetyNumberGroups(n.slice(1))).toThrow(InvalidLengthError);
    expect(() => safetyNumberGroups(`${n.slice(1)}a`)).toThrow(InvalidLengthError);
  });
  it("rejects a key that is not 32 bytes, naming the party", () => {
    const k = new Uint8Array(32);
    expect(() =>
      safetyNumber(
        { username: "a", identityKey: k },
        { username: "b", identityKey: k.subarray(1) },
      ),
    ).toThrow(/b\.identityKey/);
    expect(() =>
      safetyNumber({ username: 1 as never, identityKey: k }, { username: "b", identityKey: k }),
    ).toThrow(InvalidLengthError);
  });
});
