/**
 * The PWA's byte-level storage formats, in Node's WebCrypto: device-key boxes bind their purpose
 * and record key (PROTOCOL.md §12.3), and the identity backup file (§12.5) round-trips, refuses a
 * wrong passphrase, an edited header, a weak or absurd KDF setting, and a seed that does not
 * match its identity key.
 */
import { describe, expect, test, vi } from "vitest";
import {
  BackupError,
  exportIdentity,
  importIdentity,
  PBKDF2_ITERATIONS,
} from "../../pwa/src/storage/backup";
import { open, StorageError, seal } from "../../pwa/src/storage/device-key";
import { ed25519KeyPairFromSeed, randomBytes } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";

async function deviceKey(): Promise<CryptoKey> {
  return crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

describe("device-key boxes", () => {
  test("open only with the same key, purpose and record key", async () => {
    const key = await deviceKey();
    const pt = new TextEncoder().encode("hello");
    const box = await seal(key, "history", "dm:bob|m1", pt);
    expect(box.iv).toHaveLength(12);
    expect(box.ct).toHaveLength(pt.length + 16);
    expect(new TextDecoder().decode(await open(key, "history", "dm:bob|m1", box))).toBe("hello");
    await expect(open(key, "history", "dm:eve|m1", box)).rejects.toBeInstanceOf(StorageError);
    await expect(open(key, "engine", "dm:bob|m1", box)).rejects.toBeInstanceOf(StorageError);
    await expect(open(await deviceKey(), "history", "dm:bob|m1", box)).rejects.toBeInstanceOf(
      StorageError,
    );
    const flipped = { iv: box.iv, ct: box.ct.slice() };
    flipped.ct[3] = (flipped.ct[3] ?? 0) ^ 0x80;
    await expect(open(key, "history", "dm:bob|m1", flipped)).rejects.toBeInstanceOf(StorageError);
  });

  test("every box gets a fresh nonce", async () => {
    const key = await deviceKey();
    const a = await seal(key, "history", "k", new Uint8Array(8));
    const b = await seal(key, "history", "k", new Uint8Array(8));
    expect(toB64u(a.iv)).not.toBe(toB64u(b.iv));
  });
});

describe("identity backup file", () => {
  const PASS = "correct horse battery staple";

  async function makeFile() {
    const seed = randomBytes(32);
    const pair = await ed25519KeyPairFromSeed(seed, false);
    const file = await exportIdentity(seed.slice(), "alice", "main", pair.publicKey, PASS);
    return { seed, pair, file, text: JSON.stringify(file) };
  }

  test("round-trips the seed with the exact documented shape", async () => {
    const { seed, pair, file, text } = await makeFile();
    expect(Object.keys(file).sort()).toEqual(
      ["ciphertext", "format", "hub", "identityKey", "kdf", "nonce", "username", "v"].sort(),
    );
    expect(file.kdf).toMatchObject({ name: "PBKDF2-SHA256", iterations: PBKDF2_ITERATIONS });
    expect(fromB64u(file.kdf.salt)).toHaveLength(16);
    expect(fromB64u(file.nonce)).toHaveLength(12);
    expect(fromB64u(file.ciphertext)).toHaveLength(48);
    expect(file.identityKey).toBe(toB64u(pair.publicKey));
    const r = await importIdentity(text, PASS);
    expect(r).toMatchObject({ username: "alice", hub: "main" });
    expect(toB64u(r.seed)).toBe(toB64u(seed));
  });

  test("refuses a wrong passphrase and short passphrases", async () => {
    const { text } = await makeFile();
    await expect(importIdentity(text, "wrong passphrase")).rejects.toThrow(/Wrong passphrase/);
    const seed = randomBytes(32);
    const pair = await ed25519KeyPairFromSeed(seed, false);
    await expect(exportIdentity(seed, "alice", "main", pair.publicKey, "short")).rejects.toThrow(
      BackupError,
    );
  });

  test("refuses edited headers (bound as AAD) and foreign identity keys", async () => {
    const { file } = await makeFile();
    const renamed = JSON.stringify({ ...file, username: "mallory" });
    await expect(importIdentity(renamed, PASS)).rejects.toThrow(/Wrong passphrase|altered/);
    const otherKey = toB64u((await ed25519KeyPairFromSeed(randomBytes(32), false)).publicKey);
    const swapped = JSON.stringify({ ...file, identityKey: otherKey });
    await expect(importIdentity(swapped, PASS)).rejects.toThrow(BackupError);
  });

  test("refuses malformed files before any key derivation", async () => {
    const { file } = await makeFile();
    const bad = [
      "not json",
      JSON.stringify({ ...file, extra: 1 }),
      JSON.stringify({ ...file, v: 2 }),
      JSON.stringify({ ...file, kdf: { ...file.kdf, iterations: 1000 } }),
      JSON.stringify({ ...file, kdf: { ...file.kdf, iterations: 1e9 } }),
      JSON.stringify({ ...file, nonce: `${file.nonce}A` }),
      JSON.stringify({ ...file, username: "Alice" }),
    ];
    // Parsing fails first: no 600k-iteration PBKDF2 is ever run for a malformed file.
    const derive = vi.spyOn(crypto.subtle, "deriveKey");
    try {
      for (const text of bad) {
        await expect(importIdentity(text, PASS), text.slice(0, 60)).rejects.toThrow(
          /not a Parley identity file/,
        );
      }
      expect(derive).not.toHaveBeenCalled();
    } finally {
      derive.mockRestore();
    }
  });
});
