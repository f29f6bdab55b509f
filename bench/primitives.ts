/**
 * Per-primitive speed, WebCrypto vs noble, and in Node also the Node backend
 * (node/crypto-backend.ts: libsodium for X25519, node:crypto for the rest) against the faster of those two. Runtime-neutral: the
 * same module runs in Node and, bundled (bench/browser-primitives.ts), inside headless Chromium —
 * the PWA's runtime — so the product's choice of path per primitive and size is checked where it
 * runs. In Chromium no backend is installed (the default WebCrypto/noble dispatch is the product);
 * in Node the bench installs the Node backend, which is then the product for every row it has.
 *
 * Each row runs both paths in alternating slices (lib.ts comparePair) and names the path
 * shared/crypto takes. Rows marked † are composite: the product path is a mix (see the note).
 */
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from "@hpke/core";
import { gcm } from "@noble/ciphers/aes.js";
import { ed25519 as nobleEd, x25519 as nobleX } from "@noble/curves/ed25519.js";
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  type CryptoBackend,
  cryptoBackendName,
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  hkdfSha256,
  hmacSha256,
  hpkeSeal,
  installCryptoBackend,
  randomBytes,
  x25519,
  x25519GenerateKeyPair,
  x25519PublicKey,
} from "../shared/crypto";
import { aesGcmDecryptSubtle, aesGcmEncryptSubtle } from "../shared/crypto/aead";
import {
  nobleEd25519PublicKey,
  nobleEd25519Sign,
  nobleEd25519VerifyParley,
  nobleX25519,
} from "../shared/crypto/noble";
import { subtleHkdfSha256, subtleHmacSha256 } from "../shared/crypto/subtle";
import { x25519PublicKeyPath } from "../shared/crypto/x25519";
import { comparePair } from "./lib";

export interface PrimitiveRow {
  [column: string]: string | number;
  primitive: string;
  "webcrypto ops/s": number;
  "noble ops/s": number;
  "webcrypto/noble": string;
  "product uses": string;
}

const X25519_PKCS8_PREFIX = new Uint8Array([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);
const BASE = new Uint8Array(32);
BASE[0] = 9;

/** The plain WebCrypto X25519 a first implementation does: PKCS#8 import, raw import, derive. */
async function plainSubtleX25519(secret: Uint8Array, pub: Uint8Array): Promise<Uint8Array> {
  const pkcs8 = new Uint8Array(48);
  pkcs8.set(X25519_PKCS8_PREFIX);
  pkcs8.set(secret, 16);
  const alg = { name: "X25519" };
  const priv = await crypto.subtle.importKey("pkcs8", pkcs8, alg, false, ["deriveBits"]);
  const p = await crypto.subtle.importKey("raw", pub as Uint8Array<ArrayBuffer>, alg, false, []);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: p }, priv, 256));
}

/**
 * `node`: the Node backend, given by the Node entry point (bench/main.ts); absent in Chromium.
 * The default paths are timed with no backend installed; the one installed on entry is restored.
 */
export async function runPrimitives(
  log: (s: string) => void = () => {},
  node?: CryptoBackend,
): Promise<PrimitiveRow[]> {
  const installedOnEntry = cryptoBackendName();
  installCryptoBackend(null);
  try {
    return await measureAll(log, node);
  } finally {
    if (node && installedOnEntry === node.name) installCryptoBackend(node);
  }
}

async function measureAll(log: (s: string) => void, node?: CryptoBackend): Promise<PrimitiveRow[]> {
  const rows: PrimitiveRow[] = [];
  const add = async (
    primitive: string,
    product: string,
    webcrypto: () => unknown,
    noble: () => unknown,
    /** The Node backend's twin, raced against the faster of the two columns above. */
    nodeFn?: () => unknown,
  ) => {
    const r = await comparePair(primitive, webcrypto, noble);
    const row: PrimitiveRow = {
      primitive,
      "webcrypto ops/s": r.a.opsPerSec,
      "noble ops/s": r.b.opsPerSec,
      "webcrypto/noble": `${r.ratio.toFixed(2)}×`,
      "product uses": product,
    };
    let extra = "";
    if (node) {
      if (nodeFn) {
        const best = r.ratio >= 1 ? webcrypto : noble;
        const n = await comparePair(`${primitive} (Node backend)`, nodeFn, best);
        row["Node backend ops/s"] = n.a.opsPerSec;
        row["Node backend / faster of the two"] = `${n.ratio.toFixed(2)}×`;
        row["product uses"] = "Node backend";
        extra = `; Node backend ${n.a.opsPerSec.toFixed(0)} (${n.ratio.toFixed(2)}× the faster)`;
      } else {
        row["Node backend ops/s"] = "";
        row["Node backend / faster of the two"] = "";
      }
    }
    rows.push(row);
    log(`  ${primitive}: ${r.a.opsPerSec.toFixed(0)} vs ${r.b.opsPerSec.toFixed(0)} ops/s${extra}`);
  };

  const a = await x25519GenerateKeyPair();
  const b = await x25519GenerateKeyPair();
  await add(
    "X25519 DH, same secret again (key cached)",
    "webcrypto (cached key)",
    () => x25519(a.secretKey, b.publicKey),
    () => nobleX25519(a.secretKey, b.publicKey),
    node && (() => node.x25519(a.secretKey, b.publicKey)),
  );
  await add(
    "X25519 DH, new secret, plain PKCS#8 import",
    "—",
    () => plainSubtleX25519(randomBytes(32), b.publicKey),
    () => nobleX25519(randomBytes(32), b.publicKey),
    // The product's cost for a secret it has not seen: JWK import (+ its public key), then DH.
    node && (() => node.x25519(randomBytes(32), b.publicKey)),
  );
  // Let the product's one-time calibration (x25519.ts) finish before timing its choice.
  for (let i = 0; i < 30; i++) await x25519PublicKey(randomBytes(32));
  const keyPath = `calibrated here: ${x25519PublicKeyPath() === "webcrypto" ? "webcrypto" : "noble fixed-base"}`;
  await add(
    "X25519 public key: WebCrypto vs product †",
    keyPath,
    () => plainSubtleX25519(randomBytes(32), BASE),
    () => x25519PublicKey(randomBytes(32)),
    node && (() => node.x25519PublicKey(randomBytes(32))),
  );
  await add(
    "X25519 public key: noble ladder vs product",
    keyPath,
    () => nobleX.getPublicKey(randomBytes(32)),
    () => x25519PublicKey(randomBytes(32)),
    node && (() => node.x25519PublicKey(randomBytes(32))),
  );

  const seed = randomBytes(32);
  const id = await ed25519KeyPairFromSeed(seed);
  const msg = randomBytes(200);
  const sig = await ed25519Sign(id.privateKey, msg);
  if (!nobleEd25519VerifyParley(nobleEd25519PublicKey(seed), msg, sig)) throw new Error("mismatch");
  if (!nobleEd.verify(sig, msg, id.publicKey)) throw new Error("mismatch");
  await add(
    "Ed25519 sign",
    "webcrypto",
    () => ed25519Sign(id.privateKey, msg),
    () => nobleEd25519Sign(seed, msg),
    node && (() => node.ed25519Sign(id.privateKey, msg)),
  );
  await add(
    "Ed25519 verify",
    "webcrypto (cached key)",
    () => ed25519Verify(id.publicKey, msg, sig),
    () => nobleEd25519VerifyParley(id.publicKey, msg, sig),
    node && (() => node.ed25519Verify(id.publicKey, msg, sig)),
  );

  const ikm = randomBytes(32);
  const salt = randomBytes(32);
  const info = randomBytes(40);
  await add(
    "HKDF-SHA256 (32 B out)",
    "noble",
    () => subtleHkdfSha256(ikm, salt, info, 32),
    () => hkdfSha256(ikm, salt, info, 32),
    node && (() => node.hkdfSha256(ikm, salt, info, 32)),
  );
  await add(
    "HMAC-SHA256 (32 B key, 40 B message)",
    "noble",
    () => subtleHmacSha256(ikm, info),
    () => hmacSha256(ikm, info),
    node && (() => node.hmacSha256(ikm, info)),
  );

  const key = randomBytes(32);
  const nonce = randomBytes(12);
  const aad = randomBytes(64);
  const small = "noble (≤ 256 B)";
  for (const [label, size, product] of [
    ["100 B", 100, small],
    ["1 KiB", 1024, "webcrypto (> 256 B)"],
    ["64 KiB", 64 * 1024, "webcrypto (> 256 B)"],
  ] as const) {
    const pt = randomBytes(size);
    await add(
      `AES-256-GCM ${label} enc+dec`,
      product,
      async () => {
        const ct = await aesGcmEncryptSubtle(key, nonce, pt, aad);
        await aesGcmDecryptSubtle(key, nonce, ct, aad);
      },
      () => {
        const ct = gcm(key, nonce, aad).encrypt(pt);
        gcm(key, nonce, aad).decrypt(ct);
      },
      node &&
        (async () =>
          node.aesGcmDecrypt(key, nonce, await node.aesGcmEncrypt(key, nonce, pt, aad), aad)),
    );
  }
  // The product's dispatching entry points, for completeness (should track the faster column).
  const pt100 = randomBytes(100);
  await add(
    "AES-256-GCM 100 B: product dispatch vs noble",
    small,
    async () => aesGcmDecrypt(key, nonce, await aesGcmEncrypt(key, nonce, pt100, aad), aad),
    () => gcm(key, nonce, aad).decrypt(gcm(key, nonce, aad).encrypt(pt100)),
  );

  const r = await x25519GenerateKeyPair();
  const secret = randomBytes(32);
  const hinfo = randomBytes(60);
  // The product is @hpke/core's construction on whichever primitives hpkeSeal's race picked for
  // this runtime (shared/crypto/hpke.ts: Parley's, i.e. the Node backend, or the library's
  // WebCrypto ones); the baseline is the library's default suite, every step a WebCrypto call.
  const stock = new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Aes256Gcm(),
  });
  await add(
    "HPKE seal 32 B: stock @hpke/core vs product †",
    "@hpke/core, raced primitives",
    async () => {
      const pk = await stock.kem.deserializePublicKey(r.publicKey as Uint8Array<ArrayBuffer>);
      await stock.seal({ recipientPublicKey: pk, info: hinfo }, secret, aad);
    },
    () => hpkeSeal(r.publicKey, secret, hinfo, aad),
  );
  return rows;
}
