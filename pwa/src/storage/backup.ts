/**
 * Identity backup: the 32-byte Ed25519 seed in a passphrase-encrypted JSON file, to move an
 * identity to a new device (PROTOCOL.md §12, client storage). Format (all binary base64url):
 *
 *   { "format": "parley-identity", "v": 1, "username", "hub", "identityKey",
 *     "kdf": { "name": "PBKDF2-SHA256", "iterations": 600000, "salt": 16 bytes },
 *     "nonce": 12 bytes, "ciphertext": AES-256-GCM(seed) 48 bytes }
 *
 * key = PBKDF2-HMAC-SHA256(passphrase NFC UTF-8, salt, iterations, 32 bytes) — 600,000
 * iterations is OWASP's 2023 figure for PBKDF2-SHA256. AAD = lp("parley/v1/identity-backup",
 * username, hub, identityKey), so the header fields cannot be swapped. On import the seed must
 * re-derive exactly `identityKey`, or the file is refused.
 */
import * as v from "valibot";
import { ed25519KeyPairFromSeed, randomBytes } from "../../../shared/crypto";
import { fromB64u, lp, toB64u } from "../../../shared/encoding";
import { HubName, Name, PublicKey } from "../../../shared/protocol";
import { buf, passphraseKey } from "./passphrase";

export const BACKUP_FORMAT = "parley-identity";
export const PBKDF2_ITERATIONS = 600_000;
/** Refuse files that ask for absurd work (denial of service) or too little (weak). */
const MIN_ITERATIONS = 600_000;
const MAX_ITERATIONS = 10_000_000;
export const MIN_PASSPHRASE_LENGTH = 10;

const b64 = (n: number) =>
  v.pipe(
    v.string(),
    v.check((s) => {
      try {
        return fromB64u(s).length === n;
      } catch {
        return false;
      }
    }, `expected ${n} bytes of base64url`),
  );

export const BackupFile = v.strictObject({
  format: v.literal(BACKUP_FORMAT),
  v: v.literal(1),
  username: Name,
  hub: HubName,
  identityKey: PublicKey,
  kdf: v.strictObject({
    name: v.literal("PBKDF2-SHA256"),
    iterations: v.pipe(
      v.number(),
      v.integer(),
      v.minValue(MIN_ITERATIONS),
      v.maxValue(MAX_ITERATIONS),
    ),
    salt: b64(16),
  }),
  nonce: b64(12),
  ciphertext: b64(48),
});
export type BackupFile = v.InferOutput<typeof BackupFile>;

export class BackupError extends Error {
  override name = "BackupError";
}

function aad(username: string, hub: string, identityKey: string): Uint8Array<ArrayBuffer> {
  return buf(lp("parley/v1/identity-backup", username, hub, fromB64u(identityKey)));
}

export async function exportIdentity(
  seed: Uint8Array,
  username: string,
  hub: string,
  identityKey: Uint8Array,
  passphrase: string,
  iterations = PBKDF2_ITERATIONS,
): Promise<BackupFile> {
  if (passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new BackupError(`Use a passphrase of at least ${MIN_PASSPHRASE_LENGTH} characters.`);
  }
  const salt = randomBytes(16);
  const nonce = randomBytes(12);
  const key = await passphraseKey(passphrase, salt, iterations);
  const ik = toB64u(identityKey);
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: buf(nonce), additionalData: aad(username, hub, ik) },
    key,
    buf(seed),
  );
  return {
    format: BACKUP_FORMAT,
    v: 1,
    username,
    hub,
    identityKey: ik,
    kdf: { name: "PBKDF2-SHA256", iterations, salt: toB64u(salt) },
    nonce: toB64u(nonce),
    ciphertext: toB64u(new Uint8Array(ct)),
  };
}

/** Parse, decrypt and check a backup; returns the seed (caller wipes it) and the names. */
export async function importIdentity(
  text: string,
  passphrase: string,
): Promise<{ seed: Uint8Array; username: string; hub: string }> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new BackupError("This is not a Parley identity file.");
  }
  const parsed = v.safeParse(BackupFile, json);
  if (!parsed.success)
    throw new BackupError("This is not a Parley identity file (or a newer one).");
  const f = parsed.output;
  const key = await passphraseKey(passphrase, fromB64u(f.kdf.salt), f.kdf.iterations);
  let seed: Uint8Array;
  try {
    seed = new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: buf(fromB64u(f.nonce)),
          additionalData: aad(f.username, f.hub, f.identityKey),
        },
        key,
        buf(fromB64u(f.ciphertext)),
      ),
    );
  } catch {
    throw new BackupError("Wrong passphrase, or the file was altered.");
  }
  const pair = await ed25519KeyPairFromSeed(seed, false);
  if (toB64u(pair.publicKey) !== f.identityKey) {
    seed.fill(0);
    throw new BackupError("The file's key does not match its identity.");
  }
  return { seed, username: f.username, hub: f.hub };
}
