/**
 * The crypto backend seam (shared/crypto/backend.ts, PROTOCOL.md §3.1): the Node backend
 * (node/crypto-backend.ts, installed for this project by test/support/node-crypto-backend.ts)
 * and the default WebCrypto/noble backend give the same bytes or the same typed error, output for
 * output, on random inputs — including every error case the public API has. The known-answer
 * vectors (test/shared/crypto-*.test.ts) run through the Node backend in this project and through
 * the default one in the workers project.
 */

import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { installNodeCryptoBackend, nodeCryptoBackend } from "../../node/crypto-backend";
import { CryptoThread } from "../../node/crypto-thread";
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  cryptoBackendName,
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  ed25519VerifyMany,
  generateIdentityKeyPair,
  hkdfSha256,
  hkdfSha256Expand,
  hkdfSha256Extract,
  hmacSha256,
  installCryptoBackend,
  mlkemDecapsulate,
  mlkemEncapsulate,
  mlkemEncapsulateMany,
  mlkemKeyPairFromSeed,
  randomBytes,
  sha256,
  sha256Hasher,
  x25519,
  x25519GenerateKeyPair,
  x25519PublicKey,
} from "../../shared/crypto";
import { nobleX25519, nobleX25519PublicKey } from "../../shared/crypto/noble";
import { outcome, toHex } from "../shared/crypto-util";

const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const anyBytes = (max: number) => fc.uint8Array({ minLength: 0, maxLength: max });

/** Runs `f` once on the default backend and once on the Node backend; outcomes as values. */
async function both<T>(f: () => Promise<T> | T) {
  installCryptoBackend(null);
  let def: T | { error: string };
  try {
    def = await outcome(f);
  } finally {
    installNodeCryptoBackend();
  }
  return { default: def, node: await outcome(f) };
}

const hexOf = async (p: Promise<Uint8Array> | Uint8Array) => toHex(await p);

/**
 * u-coordinates of small order on Curve25519 and their non-canonical encodings, each also with
 * bit 255 set (RFC 7748 §5 masks it, so it is the same point).
 */
const P = 2n ** 255n - 19n;
const LOW_ORDER_U = [
  0n,
  1n,
  325606250916557431795983626356110631294008115727848805560023387167927233504n,
  39382357235489614581723060781553021112529911719440698176882885853963445705823n,
  P - 1n,
  P,
  P + 1n,
].flatMap((u) => [u, u | (1n << 255n)]);
const encodeU = (u: bigint) => {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number((u >> BigInt(8 * i)) & 0xffn);
  return out;
};

afterEach(() => {
  // A failed assertion inside `both` must not leave the default installed for the next test.
  installNodeCryptoBackend();
});

describe("installation", () => {
  it("the node project runs shared/crypto on the Node backend", () => {
    expect(cryptoBackendName()).toBe(nodeCryptoBackend.name);
  });
  it("null restores the default backend, and a partial backend keeps the default for the rest", async () => {
    installCryptoBackend(null);
    expect(cryptoBackendName()).toMatch(/^default/);
    const calls: string[] = [];
    installCryptoBackend({
      name: "counting",
      sha256: (m) => {
        calls.push("sha256");
        return nodeCryptoBackend.sha256(m);
      },
    });
    expect(cryptoBackendName()).toBe("counting");
    const m = randomBytes(10);
    expect(toHex(sha256(m))).toBe(toHex(nodeCryptoBackend.sha256(m)));
    expect(calls).toEqual(["sha256"]);
    // Not overridden: the default HMAC still answers (RFC 4231 test case 2).
    const mac = hmacSha256(
      new TextEncoder().encode("Jefe"),
      new TextEncoder().encode("what do ya want for nothing?"),
    );
    expect(toHex(mac)).toBe("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    expect(calls).toEqual(["sha256"]);
  });
});

describe("X25519: Node backend = default backend = noble", () => {
  it("DH on any 32-byte secret and public key", async () => {
    await fc.assert(
      fc.asyncProperty(bytes(32), bytes(32), async (sk, pk) => {
        const got = await both(() => hexOf(x25519(sk, pk)));
        const noble = await outcome(() => toHex(nobleX25519(sk, pk)));
        expect(got).toEqual({ default: noble, node: noble });
      }),
      { numRuns: 200 },
    );
  });

  it("low-order public keys are LowOrderError on both backends", async () => {
    const us = LOW_ORDER_U.map(encodeU);
    await fc.assert(
      fc.asyncProperty(bytes(32), fc.constantFrom(...us), async (sk, pk) => {
        expect(await both(() => x25519(sk, pk))).toEqual({
          default: { error: "LowOrderError" },
          node: { error: "LowOrderError" },
        });
      }),
      { numRuns: 60 },
    );
  });

  it("the same secret again still gives the right DH for each peer", async () => {
    const sk = randomBytes(32);
    for (let i = 0; i < 20; i++) {
      const pk = randomBytes(32);
      const noble = toHex(nobleX25519(sk, pk));
      expect(await both(() => hexOf(x25519(sk, pk)))).toEqual({ default: noble, node: noble });
    }
  });

  it("public keys from secrets, and generated pairs, match RFC 7748 X25519(k, 9)", async () => {
    await fc.assert(
      fc.asyncProperty(bytes(32), async (sk) => {
        const noble = toHex(nobleX25519PublicKey(sk));
        expect(await both(() => hexOf(x25519PublicKey(sk)))).toEqual({
          default: noble,
          node: noble,
        });
      }),
      { numRuns: 150 },
    );
    for (let i = 0; i < 20; i++) {
      const pair = await x25519GenerateKeyPair();
      expect(toHex(pair.publicKey)).toBe(toHex(nobleX25519PublicKey(pair.secretKey)));
    }
  });

  it("wrong lengths and non-bytes are InvalidLengthError on both backends", async () => {
    const k = randomBytes(32);
    for (const [sk, pk] of [
      [randomBytes(31), k],
      [k, randomBytes(33)],
      [[...k] as unknown as Uint8Array, k],
    ] as const) {
      expect(await both(() => x25519(sk, pk))).toEqual({
        default: { error: "InvalidLengthError" },
        node: { error: "InvalidLengthError" },
      });
    }
    expect(await both(() => x25519PublicKey(randomBytes(16)))).toEqual({
      default: { error: "InvalidLengthError" },
      node: { error: "InvalidLengthError" },
    });
  });

  it("returned keys are caller-owned copies: wiping one does not change later results", async () => {
    const sk = randomBytes(32);
    const first = await x25519PublicKey(sk);
    const expected = toHex(first);
    first.fill(0);
    expect(toHex(await x25519PublicKey(sk))).toBe(expected);
  });
});

describe("Ed25519: Node backend = default backend", () => {
  it("signatures are byte-identical (RFC 8032 signing is deterministic), also with non-extractable keys", async () => {
    await fc.assert(
      fc.asyncProperty(bytes(32), anyBytes(300), async (seed, msg) => {
        const id = await ed25519KeyPairFromSeed(seed);
        const got = await both(() => hexOf(ed25519Sign(id.privateKey, msg)));
        expect(got.node).toEqual(got.default);
        expect(typeof got.node).toBe("string");
      }),
      { numRuns: 60 },
    );
    const id = await generateIdentityKeyPair();
    const msg = randomBytes(50);
    const sig = await ed25519Sign(id.privateKey, msg);
    expect(await both(() => ed25519Verify(id.publicKey, msg, sig))).toEqual({
      default: true,
      node: true,
    });
  });

  it("verification agrees on valid, altered and foreign signatures and on arbitrary keys", async () => {
    const ids = await Promise.all([0, 1, 2].map(() => generateIdentityKeyPair()));
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 }),
        anyBytes(200),
        fc.constantFrom("valid", "flip-sig", "flip-msg", "other-key", "random-key", "random-sig"),
        fc.integer({ min: 0, max: 63 }),
        async (who, msg, how, at) => {
          const id = ids[who] as (typeof ids)[number];
          const sig = await ed25519Sign(id.privateKey, msg);
          let pk = id.publicKey;
          let m: Uint8Array = msg;
          let s = sig;
          if (how === "flip-sig") s = flip(sig, at);
          if (how === "flip-msg") m = msg.length === 0 ? new Uint8Array([1]) : flip(msg, at);
          if (how === "other-key") pk = (ids[(who + 1) % 3] as (typeof ids)[number]).publicKey;
          if (how === "random-key") pk = randomBytes(32);
          if (how === "random-sig") s = randomBytes(64);
          const got = await both(() => ed25519Verify(pk, m, s));
          expect(got.node).toBe(got.default);
          if (how === "valid") expect(got.node).toBe(true);
          if (how === "other-key" || how === "flip-msg") expect(got.node).toBe(false);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("S >= L, refused keys and malformed arguments are false on both backends, never a throw", async () => {
    const id = await generateIdentityKeyPair();
    const msg = randomBytes(20);
    const sig = await ed25519Sign(id.privateKey, msg);
    // S + L: the same signature with a non-reduced S (RFC 8032 §5.1.7 rejects it).
    const L = 2n ** 252n + 27742317777372353535851937790883648493n;
    let s = 0n;
    for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(sig[i] as number);
    const big = Uint8Array.from(sig);
    const sl = s + L;
    for (let i = 0; i < 32; i++) big[32 + i] = Number((sl >> BigInt(8 * i)) & 0xffn);
    const identity = new Uint8Array(32);
    identity[0] = 1;
    const cases: [Uint8Array, Uint8Array, Uint8Array][] = [
      [id.publicKey, msg, big],
      [identity, msg, sig],
      [new Uint8Array(32).fill(0xff), msg, sig],
      [id.publicKey.subarray(1), msg, sig],
      [id.publicKey, msg, sig.subarray(1)],
      [id.publicKey, "x" as unknown as Uint8Array, sig],
    ];
    for (const [pk, m, sg] of cases) {
      expect(await both(() => ed25519Verify(pk, m, sg))).toEqual({ default: false, node: false });
    }
  });

  it("ed25519VerifyMany = ed25519Verify item by item, in order, below and above the pool batch size", async () => {
    const ids = await Promise.all([0, 1, 2].map(() => generateIdentityKeyPair()));
    const one = async (i: number) => {
      const id = ids[i % 3] as (typeof ids)[number];
      const message = randomBytes(i % 50);
      const signature = await ed25519Sign(id.privateKey, message);
      // Every fifth item is bad in a different way: altered, foreign key, refused key, short.
      switch (i % 10) {
        case 1:
          return { publicKey: id.publicKey, message, signature: flip(signature, i % 64) };
        case 3:
          return {
            publicKey: (ids[(i + 1) % 3] as (typeof ids)[number]).publicKey,
            message,
            signature,
          };
        case 5:
          return { publicKey: new Uint8Array(32), message, signature };
        case 7:
          return { publicKey: id.publicKey, message, signature: signature.subarray(1) };
        default:
          return { publicKey: id.publicKey, message, signature };
      }
    };
    for (const n of [0, 1, 7, 8, 9, 64, 257]) {
      const items = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
      const expected = await Promise.all(
        items.map((x) => ed25519Verify(x.publicKey, x.message, x.signature)),
      );
      const got = await both(() => ed25519VerifyMany(items));
      expect(got, `${n} items`).toEqual({ default: expected, node: expected });
      expect(expected.filter((x) => !x).length).toBe(
        Array.from({ length: n }, (_, i) => i % 10).filter((k) => [1, 3, 5, 7].includes(k)).length,
      );
    }
  });

  it("a public key or a non-key where a private key is expected is InvalidKeyError on both", async () => {
    const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;
    for (const k of [pair.publicKey, {} as CryptoKey]) {
      expect(await both(() => ed25519Sign(k, randomBytes(8)))).toEqual({
        default: { error: "InvalidKeyError" },
        node: { error: "InvalidKeyError" },
      });
    }
  });
});

function flip(b: Uint8Array, at: number): Uint8Array {
  const out = Uint8Array.from(b);
  const i = at % out.length;
  out[i] = (out[i] as number) ^ 0x01;
  return out;
}

describe("AES-256-GCM: Node backend = default backend (both of its size paths)", () => {
  it("encrypts to the same bytes and opens the same, for sizes around the default's crossover", async () => {
    await fc.assert(
      fc.asyncProperty(
        bytes(32),
        bytes(12),
        fc.oneof(anyBytes(40), anyBytes(700)),
        anyBytes(100),
        async (key, nonce, pt, aad) => {
          const ct = await both(() => hexOf(aesGcmEncrypt(key, nonce, pt, aad)));
          expect(ct.node).toEqual(ct.default);
          const sealed = await aesGcmEncrypt(key, nonce, pt, aad);
          const back = await both(() => hexOf(aesGcmDecrypt(key, nonce, sealed, aad)));
          expect(back).toEqual({ default: toHex(pt), node: toHex(pt) });
        },
      ),
      { numRuns: 150 },
    );
  });

  it("64 KiB + 1 round-trips identically", async () => {
    const [key, nonce, aad, pt] = [
      randomBytes(32),
      randomBytes(12),
      randomBytes(30),
      randomBytes(65_537),
    ];
    const ct = await both(() => hexOf(aesGcmEncrypt(key, nonce, pt, aad)));
    expect(ct.node).toEqual(ct.default);
  });

  it("any altered byte, wrong AAD, wrong nonce or short input is DecryptError on both", async () => {
    await fc.assert(
      fc.asyncProperty(
        bytes(32),
        bytes(12),
        fc.oneof(anyBytes(40), anyBytes(400)),
        fc.nat(),
        fc.constantFrom("ct", "aad", "nonce", "short"),
        async (key, nonce, pt, at, how) => {
          const aad = randomBytes(16);
          const sealed = await aesGcmEncrypt(key, nonce, pt, aad);
          let c = sealed;
          let a = aad;
          let n: Uint8Array = nonce;
          if (how === "ct") c = flip(sealed, at);
          if (how === "aad") a = flip(aad, at);
          if (how === "nonce") n = flip(nonce, at);
          if (how === "short") c = sealed.subarray(0, at % 16);
          expect(await both(() => aesGcmDecrypt(key, n, c, a))).toEqual({
            default: { error: "DecryptError" },
            node: { error: "DecryptError" },
          });
        },
      ),
      { numRuns: 150 },
    );
  });

  it("wrong key or nonce lengths are InvalidLengthError on both", async () => {
    const pt = randomBytes(10);
    for (const [k, n] of [
      [randomBytes(16), randomBytes(12)],
      [randomBytes(32), randomBytes(16)],
    ] as const) {
      for (const f of [() => aesGcmEncrypt(k, n, pt, pt), () => aesGcmDecrypt(k, n, pt, pt)]) {
        expect(await both(f)).toEqual({
          default: { error: "InvalidLengthError" },
          node: { error: "InvalidLengthError" },
        });
      }
    }
  });
});

describe("HMAC, HKDF, SHA-256: Node backend = default backend", () => {
  it("HMAC-SHA256 for keys shorter than, equal to and longer than a block (incl. empty)", async () => {
    await fc.assert(
      fc.asyncProperty(anyBytes(150), anyBytes(300), async (key, msg) => {
        const got = await both(() => toHex(hmacSha256(key, msg)));
        expect(got.node).toEqual(got.default);
      }),
      { numRuns: 200 },
    );
  });

  it("HKDF-SHA256 on any salt (incl. empty), info (incl. > 1024 bytes) and length", async () => {
    await fc.assert(
      fc.asyncProperty(
        anyBytes(80),
        anyBytes(80),
        fc.oneof(anyBytes(60), anyBytes(1500)),
        fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 255 * 32 })),
        async (ikm, salt, info, length) => {
          const got = await both(() => toHex(hkdfSha256(ikm, salt, info, length)));
          expect(got.node).toEqual(got.default);
          expect(typeof got.node).toBe("string");
        },
      ),
      { numRuns: 150 },
    );
  });

  it("HKDF = Expand(Extract(ikm, salt), info, L) (RFC 5869 §2), one PRK for several infos", async () => {
    await fc.assert(
      fc.asyncProperty(
        anyBytes(80),
        anyBytes(80),
        fc.array(fc.oneof(anyBytes(60), anyBytes(1100)), { minLength: 1, maxLength: 4 }),
        fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 255 * 32 })),
        async (ikm, salt, infos, length) => {
          const split = await both(() => {
            const prk = hkdfSha256Extract(ikm, salt);
            return infos.map((info) => toHex(hkdfSha256Expand(prk, info, length)));
          });
          const whole = infos.map((info) => toHex(hkdfSha256(ikm, salt, info, length)));
          expect(split).toEqual({ default: whole, node: whole });
        },
      ),
      { numRuns: 100 },
    );
    // A PRK is 32 bytes; the expand length range is HKDF's.
    for (const f of [
      () => hkdfSha256Expand(randomBytes(31), new Uint8Array(0), 32),
      () => hkdfSha256Expand(randomBytes(32), new Uint8Array(0), 0),
      () => hkdfSha256Expand(randomBytes(32), new Uint8Array(0), 255 * 32 + 1),
    ]) {
      expect(await both(f)).toEqual({
        default: { error: "InvalidLengthError" },
        node: { error: "InvalidLengthError" },
      });
    }
  });

  it("HKDF lengths outside 1..8160 are InvalidLengthError on both", async () => {
    const k = randomBytes(32);
    for (const n of [0, -1, 1.5, 255 * 32 + 1]) {
      expect(await both(() => hkdfSha256(k, k, k, n))).toEqual({
        default: { error: "InvalidLengthError" },
        node: { error: "InvalidLengthError" },
      });
    }
  });

  it("SHA-256", async () => {
    await fc.assert(
      fc.asyncProperty(anyBytes(300), async (m) => {
        const got = await both(() => toHex(sha256(m)));
        expect(got.node).toEqual(got.default);
      }),
      { numRuns: 100 },
    );
  });

  it("incremental SHA-256 over any split equals SHA-256 of the whole", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(anyBytes(5000), { maxLength: 8 }), async (pieces) => {
        const got = await both(() => {
          const h = sha256Hasher();
          for (const p of pieces) h.update(p);
          return toHex(h.digest());
        });
        const whole = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
        let at = 0;
        for (const p of pieces) {
          whole.set(p, at);
          at += p.length;
        }
        expect(got.node).toEqual(got.default);
        expect(got.node).toBe(toHex(sha256(whole)));
      }),
      { numRuns: 50 },
    );
  });

  it("outputs are plain Uint8Arrays, not views of Node's Buffer pool", async () => {
    const k = randomBytes(32);
    const outs = [
      hmacSha256(k, k),
      hkdfSha256(k, k, k, 42),
      sha256(k),
      await x25519(k, await x25519PublicKey(randomBytes(32))),
      await aesGcmEncrypt(k, randomBytes(12), k, k),
      await ed25519Sign((await generateIdentityKeyPair()).privateKey, k),
    ];
    for (const o of outs) {
      expect(Object.getPrototypeOf(o)).toBe(Uint8Array.prototype);
      expect(o.byteOffset).toBe(0);
      expect(o.buffer.byteLength).toBe(o.length);
    }
  });
});

describe("ML-KEM-768: Node backend (PQClean wasm) = default backend (noble)", () => {
  const kemOut = (r: { ciphertext: Uint8Array; sharedSecret: Uint8Array }) => ({
    ct: toHex(r.ciphertext),
    ss: toHex(r.sharedSecret),
  });

  it("the Node backend has its own ML-KEM (not the default's)", () => {
    expect(typeof nodeCryptoBackend.mlkemKeyPairFromSeed).toBe("function");
    expect(typeof nodeCryptoBackend.mlkemEncapsulate).toBe("function");
    expect(typeof nodeCryptoBackend.mlkemDecapsulate).toBe("function");
  });

  it("KeyGen from any seed, Encaps with any m, Decaps of right and altered ciphertexts", async () => {
    await fc.assert(
      fc.asyncProperty(bytes(64), bytes(32), fc.nat(1087), async (seed, m, at) => {
        const kp = await both(() => {
          const k = mlkemKeyPairFromSeed(seed);
          return { pk: toHex(k.publicKey), sk: toHex(k.secretKey) };
        });
        expect(kp.node).toEqual(kp.default);
        const { publicKey, secretKey } = mlkemKeyPairFromSeed(seed);
        const enc = await both(() => kemOut(mlkemEncapsulate(publicKey, m)));
        expect(enc.node).toEqual(enc.default);
        const ct = mlkemEncapsulate(publicKey, m).ciphertext;
        const bad = ct.slice();
        bad[at] = (bad[at] as number) ^ 0x40;
        for (const c of [ct, bad]) {
          const dec = await both(() => toHex(mlkemDecapsulate(c, secretKey)));
          expect(dec.node).toEqual(dec.default);
        }
      }),
      { numRuns: 25 },
    );
  });

  it("an unreduced public key and a secret key failing the hash check are InvalidKeyError on both", async () => {
    const { publicKey, secretKey } = mlkemKeyPairFromSeed(randomBytes(64));
    const unreduced = publicKey.slice();
    unreduced[0] = 0xff;
    unreduced[1] = 0x0f; // first coefficient 4095 ≥ q = 3329 (FIPS 203 §7.2)
    expect(await both(() => mlkemEncapsulate(unreduced, randomBytes(32)))).toEqual({
      default: { error: "InvalidKeyError" },
      node: { error: "InvalidKeyError" },
    });
    const tampered = secretKey.slice();
    tampered[1152 + 5] = (tampered[1152 + 5] as number) ^ 1; // ek inside dk no longer hashes to h
    const ct = mlkemEncapsulate(publicKey).ciphertext;
    expect(await both(() => mlkemDecapsulate(ct, tampered))).toEqual({
      default: { error: "InvalidKeyError" },
      node: { error: "InvalidKeyError" },
    });
  });
});

describe("the Node backend's crypto thread (node/crypto-thread.ts)", () => {
  it("mlkemEncapsulateMany = mlkemEncapsulate item by item on both backends, below and above the thread batch size", async () => {
    for (const n of [0, 1, 7, 8, 9, 40]) {
      const items = Array.from({ length: n }, () => ({
        publicKey: mlkemKeyPairFromSeed(randomBytes(64)).publicKey,
        m: randomBytes(32),
      }));
      const expected = items.map((x) => {
        const r = mlkemEncapsulate(x.publicKey, x.m);
        return { ct: toHex(r.ciphertext), ss: toHex(r.sharedSecret) };
      });
      const got = await both(async () =>
        (await mlkemEncapsulateMany(items)).map((r) => ({
          ct: toHex(r.ciphertext),
          ss: toHex(r.sharedSecret),
        })),
      );
      expect(got, `${n} items`).toEqual({ default: expected, node: expected });
      // The caller's m stay as given (only drawn ones are wiped).
      expect(items.every((x) => x.m.some((b) => b !== 0))).toBe(true);
    }
  });

  it("a thread that cannot run answers every batch on the main thread instead, the same answers", async () => {
    const broken = new CryptoThread(new URL("data:text/javascript,throw new Error('broken')"));
    const input = randomBytes(64);
    const expected = randomBytes(16);
    expect(await broken.run("verify", 3, input, () => expected)).toBe(expected);
    // Each later batch too (a new thread each time, failing the same way).
    expect(await broken.run("kem", 1, randomBytes(64), () => expected)).toBe(expected);
    // A fallback that throws rejects the batch with its error.
    await expect(
      broken.run("kem", 1, randomBytes(64), () => {
        throw new Error("typed in real use");
      }),
    ).rejects.toThrow("typed in real use");
  });

  it("a thread that exits with batches in flight hands them to their fallbacks", async () => {
    const exits = new CryptoThread(
      new URL("data:text/javascript,setTimeout(() => process.exit(3), 50)"),
    );
    const a = exits.run("verify", 1, randomBytes(8), () => Uint8Array.of(1));
    const b = exits.run("kem", 1, randomBytes(8), () => Uint8Array.of(2));
    expect([...(await a), ...(await b)]).toEqual([1, 2]);
  });
});
