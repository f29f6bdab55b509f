/**
 * Per-primitive speed, WebCrypto vs noble (issue 6). Runtime-neutral: the same module runs in Node
 * and, bundled, inside headless Chromium (the PWA's runtime), so the product's choice of path per
 * primitive and size is checked where it runs.
 */
import { gcm } from "@noble/ciphers/aes.js";
import {
  aesGcmDecrypt,
  aesGcmEncrypt,
  ed25519KeyPairFromSeed,
  ed25519Sign,
  ed25519Verify,
  hkdfSha256,
  randomBytes,
  x25519,
  x25519GenerateKeyPair,
} from "../shared/crypto";
import {
  nobleEd25519PublicKey,
  nobleEd25519Sign,
  nobleEd25519VerifyParley,
  nobleX25519,
} from "../shared/crypto/noble";
import { subtleHkdfSha256 } from "../shared/crypto/subtle";
import type { Measurement, MeasureOptions } from "./lib";

type Measure = (
  name: string,
  fn: (i: number) => unknown,
  o?: MeasureOptions,
) => Promise<Measurement>;

export interface PrimitiveRow {
  [column: string]: string | number;
  primitive: string;
  "webcrypto ops/s": number;
  "noble ops/s": number;
  "webcrypto/noble": string;
  "product uses": string;
}

/** What the product calls for each primitive (kept in step with shared/crypto by a test-free read). */
const PRODUCT_PATH: Record<string, "webcrypto" | "noble"> = {
  "X25519 ECDH": "webcrypto",
  "Ed25519 sign": "webcrypto",
  "Ed25519 verify": "webcrypto",
  "HKDF-SHA256 (32 B out)": "noble",
  "AES-256-GCM 100 B enc+dec": "noble",
  "AES-256-GCM 64 KiB enc+dec": "webcrypto",
};

export async function runPrimitives(measure: Measure): Promise<PrimitiveRow[]> {
  const rows: PrimitiveRow[] = [];
  const add = (primitive: string, w: Measurement, n: Measurement) =>
    rows.push({
      primitive,
      "webcrypto ops/s": w.opsPerSec,
      "noble ops/s": n.opsPerSec,
      "webcrypto/noble": `${(w.opsPerSec / n.opsPerSec).toFixed(2)}×`,
      "product uses": PRODUCT_PATH[primitive] ?? "?",
    });

  const a = await x25519GenerateKeyPair();
  const b = await x25519GenerateKeyPair();
  add(
    "X25519 ECDH",
    await measure("x25519 webcrypto", () => x25519(a.secretKey, b.publicKey)),
    await measure("x25519 noble", () => nobleX25519(a.secretKey, b.publicKey)),
  );

  const seed = randomBytes(32);
  const id = await ed25519KeyPairFromSeed(seed);
  const msg = randomBytes(200);
  const sig = await ed25519Sign(id.privateKey, msg);
  if (!nobleEd25519VerifyParley(nobleEd25519PublicKey(seed), msg, sig)) throw new Error("mismatch");
  add(
    "Ed25519 sign",
    await measure("ed25519 sign webcrypto", () => ed25519Sign(id.privateKey, msg)),
    await measure("ed25519 sign noble", () => nobleEd25519Sign(seed, msg)),
  );
  add(
    "Ed25519 verify",
    await measure("ed25519 verify webcrypto", () => ed25519Verify(id.publicKey, msg, sig)),
    await measure("ed25519 verify noble", () => nobleEd25519VerifyParley(id.publicKey, msg, sig)),
  );

  const ikm = randomBytes(32);
  const salt = randomBytes(32);
  const info = randomBytes(40);
  add(
    "HKDF-SHA256 (32 B out)",
    await measure("hkdf webcrypto", () => subtleHkdfSha256(ikm, salt, info, 32)),
    await measure("hkdf noble", () => hkdfSha256(ikm, salt, info, 32)),
  );

  const key = randomBytes(32);
  const nonce = randomBytes(12);
  const aad = randomBytes(64);
  for (const [label, size] of [
    ["100 B", 100],
    ["64 KiB", 64 * 1024],
  ] as const) {
    const pt = randomBytes(size);
    add(
      `AES-256-GCM ${label} enc+dec`,
      await measure(`aes-gcm ${label} webcrypto`, async () => {
        const ct = await aesGcmEncrypt(key, nonce, pt, aad);
        await aesGcmDecrypt(key, nonce, ct, aad);
      }),
      await measure(`aes-gcm ${label} noble`, () => {
        const ct = gcm(key, nonce, aad).encrypt(pt);
        gcm(key, nonce, aad).decrypt(ct);
      }),
    );
  }
  return rows;
}
