/**
 * The crypto core inside Chromium (the PWA's runtime): shared/crypto is bundled with esbuild,
 * loaded into a page on an https origin, and run on the same vectors as
 * test/shared/crypto-*.test.ts. Chromium must give the verdicts the relay (workerd) and Node give:
 * that is what "one Ed25519 rule everywhere" (PROTOCOL.md §3.2) means in practice.
 */

import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type * as Crypto from "../../shared/crypto";
import { ed25519Verify, x25519 } from "../../shared/crypto";
import type * as Noble from "../../shared/crypto/noble";
import { nobleEd25519VerifyParley } from "../../shared/crypto/noble";
import type * as ChunkedKat from "../shared/chunked-kat";
import { runChunkedKats } from "../shared/chunked-kat";
import type * as Util from "../shared/crypto-util";
import { fromHex, outcome, toHex } from "../shared/crypto-util";
import type * as MlKemKat from "../shared/mlkem-kat";
import { runMlKemKats } from "../shared/mlkem-kat";
import type * as XWingKat from "../shared/xwing-kat";
import { CHROMIUM, CHROMIUM_ARGS } from "../support/browser";
import unlucky from "../vectors/cctv_mlkem_768_unluckysample.json";
import taming from "../vectors/ed25519_edge_cases_taming_noble.json";
import zip215 from "../vectors/ed25519_zip215_noble.json";
import hpkeVectors from "../vectors/hpke_rfc9180_x25519_sha256_aes256gcm.json";
import identity from "../vectors/parley_identity_vectors.json";
import aesVectors from "../vectors/wycheproof_aes_gcm_test.json";
import chunkedVectors from "../vectors/wycheproof_c2sp_chunked_encryption_aes_256_gcm_test.json";
import edVectors from "../vectors/wycheproof_ed25519_test.json";
import mlkemEncaps from "../vectors/wycheproof_mlkem_768_encaps_test.json";
import mlkemKeygen from "../vectors/wycheproof_mlkem_768_keygen_seed_test.json";
import mlkemDecaps from "../vectors/wycheproof_mlkem_768_semi_expanded_decaps_test.json";
import mlkemCombined from "../vectors/wycheproof_mlkem_768_test.json";
import xVectors from "../vectors/wycheproof_x25519_test.json";
import xwingVectors from "../vectors/xwing_test_vectors.json";

/** What the bundle puts on globalThis.Parley. */
type Bundle = typeof Crypto &
  typeof Noble &
  typeof Util &
  typeof MlKemKat &
  typeof ChunkedKat &
  typeof XWingKat;
declare global {
  var Parley: Bundle;
}

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ORIGIN = "https://crypto.parley.test/";

let browser: Browser;
let page: Page;

beforeAll(async () => {
  const bundle = await build({
    stdin: {
      contents: [
        'export * from "./shared/crypto";',
        'export * from "./shared/crypto/noble";',
        'export * from "./test/shared/crypto-util";',
        'export * from "./test/shared/mlkem-kat";',
        'export * from "./test/shared/chunked-kat";',
        'export * from "./test/shared/xwing-kat";',
      ].join("\n"),
      resolveDir: ROOT,
      loader: "ts",
    },
    bundle: true,
    write: false,
    format: "iife",
    globalName: "Parley",
    platform: "browser",
    target: "es2022",
  });
  const js = bundle.outputFiles[0]?.text;
  if (js === undefined) throw new Error("esbuild produced no output");
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  page = await browser.newPage();
  // A routed https origin: WebCrypto needs a secure context, and no network is involved.
  await page.route(`${ORIGIN}**`, (route) =>
    route.fulfill({ contentType: "text/html", body: `<!doctype html><script>${js}</script>` }),
  );
  await page.goto(ORIGIN);
  expect(await page.evaluate(() => typeof globalThis.Parley?.ed25519Verify)).toBe("function");
}, 60_000);

afterAll(async () => {
  await browser?.close();
});

interface EdCase {
  pk: string;
  msg: string;
  sig: string;
}

/** Parley's rule (WebCrypto and the noble twin) and the raw platform verdict, in Chromium. */
function chromiumVerdicts(cases: EdCase[]) {
  return page.evaluate(async (cs) => {
    const P = globalThis.Parley;
    // The browser's raw WebCrypto verdict, without Parley's refused-key check.
    const platform = async (pk: Uint8Array, msg: Uint8Array, sig: Uint8Array) => {
      try {
        const key = await crypto.subtle.importKey("raw", new Uint8Array(pk), "Ed25519", false, [
          "verify",
        ]);
        return await crypto.subtle.verify("Ed25519", key, new Uint8Array(sig), new Uint8Array(msg));
      } catch {
        return false;
      }
    };
    const out: { parley: boolean; twin: boolean; platform: boolean }[] = [];
    for (const c of cs) {
      const [pk, msg, sig] = [P.fromHex(c.pk), P.fromHex(c.msg), P.fromHex(c.sig)];
      out.push({
        parley: await P.ed25519Verify(pk, msg, sig),
        twin: P.nobleEd25519VerifyParley(pk, msg, sig),
        platform: await platform(pk, msg, sig),
      });
    }
    return out;
  }, cases);
}

async function nodeVerdicts(cases: EdCase[]) {
  const out: { parley: boolean; twin: boolean; platform: boolean }[] = [];
  for (const c of cases) {
    const [pk, msg, sig] = [fromHex(c.pk), fromHex(c.msg), fromHex(c.sig)];
    let platform = false;
    try {
      const key = await crypto.subtle.importKey("raw", new Uint8Array(pk), "Ed25519", false, [
        "verify",
      ]);
      platform = await crypto.subtle.verify(
        "Ed25519",
        key,
        new Uint8Array(sig),
        new Uint8Array(msg),
      );
    } catch {
      platform = false;
    }
    out.push({
      parley: await ed25519Verify(pk, msg, sig),
      twin: nobleEd25519VerifyParley(pk, msg, sig),
      platform,
    });
  }
  return out;
}

describe("Ed25519 in Chromium: the same verdicts as Node and workerd", () => {
  const wycheproof = edVectors.testGroups.flatMap((g) =>
    g.tests.map((t) => ({
      pk: g.publicKey.pk,
      msg: t.msg,
      sig: t.sig,
      valid: t.result === "valid",
    })),
  );
  const edge = [
    ...taming.map((v) => ({ pk: v.pub_key, msg: v.message, sig: v.signature })),
    ...zip215.map((v) => ({
      pk: v.vk_bytes,
      msg: toHex(new TextEncoder().encode("Zcash")),
      sig: v.sig_bytes,
    })),
  ];

  it("Wycheproof: 88 valid accepted, 63 invalid rejected", async () => {
    const got = await chromiumVerdicts(wycheproof);
    expect(got).toEqual(
      wycheproof.map((t) => ({ parley: t.valid, twin: t.valid, platform: t.valid })),
    );
  });

  it("Taming and ZIP-215 edge cases (208): identical to Node, raw WebCrypto included", async () => {
    const got = await chromiumVerdicts(edge);
    expect(got).toEqual(await nodeVerdicts(edge));
    expect(got.flatMap((v, i) => (v.parley ? [i] : []))).toEqual([2, 3]);
    // Raw BoringSSL in Chromium: Taming 0, 1, 2, 3, 11 and 12 of the ZIP-215 set (indices 12+).
    expect(got.filter((v) => v.platform)).toHaveLength(17);
  });
});

describe("X25519 in Chromium", () => {
  it("Wycheproof: every vector as in Node (31 all-zero results are LowOrderError)", async () => {
    const tests = xVectors.testGroups.flatMap((g) => g.tests);
    const got = await page.evaluate(async (ts) => {
      const P = globalThis.Parley;
      const out: (string | { error: string })[] = [];
      for (const t of ts) {
        out.push(
          await P.outcome(async () =>
            P.toHex(await P.x25519(P.fromHex(t.private), P.fromHex(t.public))),
          ),
        );
      }
      return out;
    }, tests);
    const expected = tests.map((t) =>
      t.shared === "00".repeat(32) ? { error: "LowOrderError" } : t.shared,
    );
    expect(got).toEqual(expected);
    const node = [];
    for (const t of tests)
      node.push(
        await outcome(async () => toHex(await x25519(fromHex(t.private), fromHex(t.public)))),
      );
    expect(node).toEqual(expected);
    expect(expected.filter((e) => typeof e !== "string")).toHaveLength(31);
  });
});

describe("AES-256-GCM, HPKE, fingerprints in Chromium", () => {
  it("Wycheproof AES-256-GCM/96: 39 valid open, 27 invalid throw DecryptError", async () => {
    const tests = aesVectors.testGroups
      .filter((g) => g.keySize === 256 && g.ivSize === 96)
      .flatMap((g) => g.tests);
    const got = await page.evaluate(async (ts) => {
      const P = globalThis.Parley;
      const out: (string | { error: string })[] = [];
      for (const t of ts) {
        const open = () =>
          P.aesGcmDecrypt(
            P.fromHex(t.key),
            P.fromHex(t.iv),
            P.fromHex(t.ct + t.tag),
            P.fromHex(t.aad),
          );
        out.push(await P.outcome(async () => P.toHex(await open())));
      }
      return out;
    }, tests);
    expect(got).toEqual(
      tests.map((t) => (t.result === "valid" ? t.msg : { error: "DecryptError" })),
    );
    expect(tests).toHaveLength(66);
  });

  it("RFC 9180 base mode: hpkeOpen of the vector, and a seal/open round trip", async () => {
    const v = hpkeVectors.find((x) => x.mode === 0);
    const e = v?.encryptions[0];
    if (v === undefined || e === undefined) throw new Error("base-mode vector missing");
    const got = await page.evaluate(
      async ({ v, e }) => {
        const P = globalThis.Parley;
        const pt = await P.hpkeOpen(
          P.fromHex(v.skRm),
          P.fromHex(v.enc),
          P.fromHex(e.ct),
          P.fromHex(v.info),
          P.fromHex(e.aad),
        );
        const r = await P.x25519GenerateKeyPair();
        const sealed = await P.hpkeSeal(
          r.publicKey,
          P.fromHex("0102"),
          P.fromHex("aa"),
          P.fromHex("bb"),
        );
        const back = await P.hpkeOpen(
          r.secretKey,
          sealed.enc,
          sealed.ciphertext,
          P.fromHex("aa"),
          P.fromHex("bb"),
        );
        return { vector: P.toHex(pt), roundTrip: P.toHex(back) };
      },
      { v: { skRm: v.skRm, enc: v.enc, info: v.info }, e },
    );
    expect(got).toEqual({ vector: e.pt, roundTrip: "0102" });
  });

  it("fingerprint and safety number known answers", async () => {
    const got = await page.evaluate((id) => {
      const P = globalThis.Parley;
      return {
        fingerprints: id.fingerprint.map((f) => P.identityFingerprint(P.fromHex(f.identityKey))),
        safetyNumbers: id.safetyNumber.map((s) =>
          P.safetyNumber(
            { username: s.a.username, identityKey: P.fromHex(s.a.identityKey) },
            { username: s.b.username, identityKey: P.fromHex(s.b.identityKey) },
          ),
        ),
      };
    }, identity);
    expect(got).toEqual({
      fingerprints: identity.fingerprint.map((f) => f.fingerprint),
      safetyNumbers: identity.safetyNumber.map((s) => s.safetyNumber),
    });
  });
});

describe("ML-KEM-768 in Chromium", () => {
  it("Wycheproof and CCTV: the same report as in Node (no failures, every case read)", async () => {
    const files = {
      combined: mlkemCombined,
      encaps: mlkemEncaps,
      keygen: mlkemKeygen,
      decaps: mlkemDecaps,
      unlucky,
    };
    const got = await page.evaluate((f) => globalThis.Parley.runMlKemKats(f), files);
    expect(got.failures).toEqual([]);
    expect(got).toEqual(runMlKemKats(files));
  });
});

describe("X-Wing in Chromium (PROTOCOL.md §3.13)", () => {
  it("the draft's vectors and HPKE over them: no failures, every vector read", async () => {
    const got = await page.evaluate((v) => globalThis.Parley.runXWingKats(v), xwingVectors);
    expect(got).toEqual({ failures: [], count: 3 });
  });
});

describe("Cobblestone-256 chunked encryption in Chromium (PROTOCOL.md §3.12)", () => {
  it("gives the verdicts Node and workerd give on every Wycheproof vector", async () => {
    const got = await page.evaluate((f) => globalThis.Parley.runChunkedKats(f), chunkedVectors);
    expect(got.failures).toEqual([]);
    expect(got).toEqual(await runChunkedKats(chunkedVectors));
  });
});
