/**
 * X25519 known answers (RFC 7748 §5.2 and §6.1 via circl, Wycheproof xdh), WebCrypto path and
 * noble path side by side. Deliberate strictness: all-zero shared secrets are LowOrderError.
 * The product functions (x25519, aesGcm*, ed25519Sign/Verify, hkdf/hmac/sha256) run on the
 * installed crypto backend: node:crypto in the `node` project, the default WebCrypto/noble paths
 * in the `workers` project (PROTOCOL.md §3.1) — so every vector here checks both backends.
 */

import { describe, expect, it } from "vitest";
import { x25519, x25519PublicKey } from "../../shared/crypto";
import { nobleX25519, nobleX25519PublicKey } from "../../shared/crypto/noble";
import kat from "../vectors/circl_rfc7748_kat_test.json";
import iterated from "../vectors/circl_rfc7748_times_test.json";
import wycheproof from "../vectors/wycheproof_x25519_test.json";
import { fromHex, outcome, Tally, toHex, wycheproofResult } from "./crypto-util";

const ZERO = "00".repeat(32);

const both = async (sk: Uint8Array, pk: Uint8Array) => ({
  webcrypto: await outcome(async () => toHex(await x25519(sk, pk))),
  noble: await outcome(() => toHex(nobleX25519(sk, pk))),
});

describe("RFC 7748 known answers (circl rfc7748_kat_test.json)", () => {
  it.each(kat.map((v, i) => ({ ...v, i })))("vector $i", async (v) => {
    const expected = v.output === ZERO ? { error: "LowOrderError" } : v.output;
    expect(await both(fromHex(v.scalar), fromHex(v.input)), `kat ${v.i}`).toEqual({
      webcrypto: expected,
      noble: expected,
    });
  });
});

describe("RFC 7748 §5.2 iterated X25519 (k, u) <- (X25519(k, u), k)", () => {
  // The 10^6-iteration vector is skipped: ~10^6 WebCrypto round trips take minutes.
  const runnable = iterated.filter((v) => v.times <= 1000);
  it.each(runnable)("$times iterations", async (v) => {
    let k = fromHex(`09${"00".repeat(31)}`);
    let u = k;
    for (let i = 0; i < v.times; i++) {
      const next = await x25519(k, u);
      u = k;
      k = next;
    }
    expect(toHex(k), `times ${v.times}`).toBe(v.key);
  });
  it("skips only the 10^6 vector", () => {
    expect(iterated.length - runnable.length).toBe(1);
  });
});

describe("x25519PublicKey = X25519(k, 9) on the RFC 7748 §6.1 key pairs", () => {
  const BASE = `09${"00".repeat(31)}`;
  const pairs = kat.filter((v) => v.input === BASE);
  it.each(pairs)("secret $scalar", async (v) => {
    expect({
      webcrypto: toHex(await x25519PublicKey(fromHex(v.scalar))),
      noble: toHex(nobleX25519PublicKey(fromHex(v.scalar))),
    }).toEqual({ webcrypto: v.output, noble: v.output });
  });
  it("finds Alice's and Bob's key pairs in the file", () => {
    expect(pairs).toHaveLength(2);
  });
});

describe("Wycheproof x25519_test.json", () => {
  const tally = new Tally();
  const vectors = wycheproof.testGroups.flatMap((g) => {
    if (g.curve !== "curve25519") throw new Error(`unexpected curve ${g.curve}`);
    return g.tests;
  });

  it.each(vectors)("tcId $tcId", async (t) => {
    const result = wycheproofResult(t.result, t.tcId);
    let expected: string | { error: string };
    if (result === "invalid") {
      expected = { error: "InvalidKeyError" };
    } else if (t.shared === ZERO) {
      // Our strictness: RFC 7748 §6.1 check, LowOrderError instead of a zero secret.
      expected = { error: "LowOrderError" };
    } else {
      expected = t.shared;
    }
    tally.add(`${result}:${typeof expected === "string" ? "accepted" : expected.error}`);
    expect(
      await both(fromHex(t.private), fromHex(t.public)),
      `tcId ${t.tcId}: ${t.comment}`,
    ).toEqual({
      webcrypto: expected,
      noble: expected,
    });
  });

  it("pins the counts (518 vectors; 31 acceptable rejected as low-order)", () => {
    expect(vectors).toHaveLength(wycheproof.numberOfTests);
    expect(tally.counts).toEqual({
      "valid:accepted": 264,
      "acceptable:accepted": 223,
      "acceptable:LowOrderError": 31,
    });
  });
});
