/**
 * Property tests (fast-check): on arbitrary inputs, not just published vectors, the WebCrypto and
 * noble paths of each primitive give the same result or the same typed error (PROTOCOL.md §3.1).
 * The product functions (x25519, aesGcm*, ed25519Sign/Verify, hkdf/hmac/sha256) run on the
 * installed crypto backend: node:crypto in the `node` project, the default WebCrypto/noble paths
 * in the `workers` project (PROTOCOL.md §3.1) — so every vector here checks both backends.
 */

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  hkdfSha256,
  x25519,
} from "../../shared/crypto";
import { nobleEd25519Sign, nobleEd25519VerifyParley, nobleX25519 } from "../../shared/crypto/noble";
import { subtleHkdfSha256 } from "../../shared/crypto/subtle";
import { outcome, toHex } from "./crypto-util";

const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });

describe("WebCrypto and noble agree on arbitrary inputs", () => {
  it("X25519 on any 32-byte secret and any 32-byte public key", async () => {
    await fc.assert(
      fc.asyncProperty(bytes(32), bytes(32), async (sk, pk) => {
        const web = await outcome(async () => toHex(await x25519(sk, pk)));
        const noble = await outcome(() => toHex(nobleX25519(sk, pk)));
        expect(web).toEqual(noble);
      }),
      { numRuns: 150 },
    );
  });

  it("X25519 on keys with small-order u-coordinates (always LowOrderError on both paths)", async () => {
    // u = 0, 1 and the order-8 points of RFC 7748's curve, plus their u + p aliases where < 2^255.
    const lowOrder = [
      0n,
      1n,
      325606250916557431795983626356110631294008115727848805560023387167927233504n,
    ];
    const p = 2n ** 255n - 19n;
    const encode = (u: bigint) => {
      const out = new Uint8Array(32);
      for (let i = 0; i < 32; i++) out[i] = Number((u >> BigInt(8 * i)) & 0xffn);
      return out;
    };
    const us = [...lowOrder, p - 1n, p, p + 1n].map(encode);
    await fc.assert(
      fc.asyncProperty(bytes(32), fc.constantFrom(...us), async (sk, pk) => {
        expect({
          web: await outcome(() => x25519(sk, pk)),
          noble: await outcome(() => nobleX25519(sk, pk)),
        }).toEqual({ web: { error: "LowOrderError" }, noble: { error: "LowOrderError" } });
      }),
      { numRuns: 60 },
    );
  });

  it("HKDF-SHA256 for any ikm, salt, info and length", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 100 }),
        fc.uint8Array({ maxLength: 100 }),
        fc.uint8Array({ maxLength: 100 }),
        fc.integer({ min: 1, max: 300 }),
        async (ikm, salt, info, len) => {
          expect(toHex(hkdfSha256(ikm, salt, info, len))).toBe(
            toHex(await subtleHkdfSha256(ikm, salt, info, len)),
          );
        },
      ),
      { numRuns: 150 },
    );
  });

  it("Ed25519: same signature from a seed, same verdict on a signature with any bit flipped", async () => {
    await fc.assert(
      fc.asyncProperty(
        bytes(32),
        fc.uint8Array({ maxLength: 64 }),
        fc.nat(64 * 8 + 31 * 8),
        async (seed, msg, bit) => {
          const pair = await ed25519KeyPairFromSeed(seed);
          const sig = await ed25519Sign(pair.privateKey, msg);
          expect(toHex(sig)).toBe(toHex(nobleEd25519Sign(seed, msg)));
          // Flip one bit of the signature (bits 0..511) or of the public key (512..).
          const s = sig.slice();
          const k = pair.publicKey.slice();
          if (bit < 512) s[bit >> 3] = (s[bit >> 3] ?? 0) ^ (1 << (bit & 7));
          else k[(bit - 512) >> 3] = (k[(bit - 512) >> 3] ?? 0) ^ (1 << (bit & 7));
          const web = await ed25519Verify(k, msg, s);
          expect(web).toBe(nobleEd25519VerifyParley(k, msg, s));
          expect(web).toBe(false);
        },
      ),
      { numRuns: 60 },
    );
  });
});
