/**
 * The local profile: username, hub and the Ed25519 identity. The identity is created from a
 * random 32-byte seed into a NON-extractable CryptoKey (signing works, reading the key does not);
 * the seed itself is kept only sealed under the device key so the user can export the identity in
 * a passphrase-encrypted file (backup.ts), and so a passphrase lock (lock.ts) can drop the
 * CryptoKey from storage and re-derive it at unlock (PROTOCOL.md §12.3–§12.4).
 */
import * as v from "valibot";
import { ed25519KeyPairFromSeed, type IdentityKeyPair, randomBytes } from "../../../shared/crypto";
import type { Db } from "./db";
import { open, StorageError, seal } from "./device-key";
import { ProfileRecord } from "./schemas";

export interface Profile {
  username: string;
  hub: string;
  createdAt: number;
  identity: IdentityKeyPair;
}

export const SEED_PURPOSE = "identity-seed";

async function readRecord(db: Db): Promise<ProfileRecord | null> {
  const raw = await db.get("meta", "profile");
  if (raw === undefined) return null;
  const parsed = v.safeParse(ProfileRecord, raw);
  if (!parsed.success) throw new StorageError("stored profile does not match its schema");
  return parsed.output;
}

/** Load the profile; with a lock on (no stored private key) the identity comes from the seed. */
export async function loadProfile(db: Db, deviceKey: CryptoKey): Promise<Profile | null> {
  const p = await readRecord(db);
  if (!p) return null;
  let privateKey = p.identityPrivateKey;
  if (!privateKey) {
    const seed = await open(deviceKey, SEED_PURPOSE, p.username, p.sealedSeed);
    try {
      const pair = await ed25519KeyPairFromSeed(seed, false);
      privateKey = pair.privateKey;
    } finally {
      seed.fill(0);
    }
  }
  return {
    username: p.username,
    hub: p.hub,
    createdAt: p.createdAt,
    identity: { publicKey: p.identityPublicKey, privateKey },
  };
}

/** Make the identity from `seed` (fresh random by default) and store the profile. */
export async function createProfile(
  db: Db,
  deviceKey: CryptoKey,
  username: string,
  hub: string,
  now: number,
  seed: Uint8Array = randomBytes(32),
): Promise<Profile> {
  const identity = await ed25519KeyPairFromSeed(seed, false);
  const sealedSeed = await seal(deviceKey, SEED_PURPOSE, username, seed);
  seed.fill(0);
  const rec: ProfileRecord = {
    v: 1,
    username,
    hub,
    createdAt: now,
    identityPublicKey: new Uint8Array(identity.publicKey),
    identityPrivateKey: identity.privateKey,
    sealedSeed,
  };
  await db.put("meta", rec, "profile");
  return { username, hub, createdAt: now, identity };
}

/** The identity seed, for export only; the caller wipes it after use. */
export async function readSeed(db: Db, deviceKey: CryptoKey): Promise<Uint8Array> {
  const p = await readRecord(db);
  if (!p) throw new StorageError("no stored profile");
  return open(deviceKey, SEED_PURPOSE, p.username, p.sealedSeed);
}
