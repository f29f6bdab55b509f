/**
 * Optional passphrase lock (PROTOCOL.md §12.3). Off: the device key is a non-extractable
 * CryptoKey stored in IndexedDB and the app opens by itself. On: the device key is 32 random bytes
 * kept only sealed under a key derived from the passphrase (PBKDF2-SHA256, 600,000 iterations),
 * imported non-extractable at unlock; the identity's CryptoKey is dropped from storage and
 * re-derived from the sealed seed, so without the passphrase nothing in IndexedDB can be used.
 *
 * Switching re-encrypts every box (engine state, history, seed, saved transfers) under the new key and writes it
 * all in ONE transaction together with the new key material: a crash leaves the old state intact.
 * The engine must be stopped while this runs (the controller shuts it down first).
 */
import * as v from "valibot";
import { randomBytes } from "../../../shared/crypto";
import type { Db } from "./db";
import { open, StorageError, seal } from "./device-key";
import { buf, passphraseKey } from "./passphrase";
import { SEED_PURPOSE } from "./profile";
import { type DeviceKeyRecord, HistoryRow, LockRecord, ProfileRecord, Sealed } from "./schemas";
import { resealTransfers } from "./transfers";

export const LOCK_ITERATIONS = 600_000;
export const MIN_LOCK_PASSPHRASE = 8;

export class LockError extends Error {
  override name = "LockError";
}

function importDeviceKey(raw: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", buf(raw), { name: "AES-GCM" }, false, [
    "encrypt",
    "decrypt",
  ]);
}

export async function readLock(db: Db): Promise<LockRecord | null> {
  const raw = await db.get("meta", "lock");
  if (raw === undefined) return null;
  const parsed = v.safeParse(LockRecord, raw);
  if (!parsed.success) throw new StorageError("stored lock record does not match its schema");
  return parsed.output;
}

/** The device key, from the passphrase. Throws LockError on a wrong passphrase. */
export async function unlock(db: Db, passphrase: string): Promise<CryptoKey> {
  const lock = await readLock(db);
  if (!lock) throw new LockError("Parley is not locked.");
  const kek = await passphraseKey(passphrase, lock.kdf.salt, lock.kdf.iterations);
  let raw: Uint8Array;
  try {
    raw = await open(kek, "lock", "device-key", lock.box);
  } catch {
    throw new LockError("Wrong passphrase.");
  }
  try {
    return await importDeviceKey(raw);
  } finally {
    raw.fill(0);
  }
}

type MetaChange = { key: string; value: unknown } | { key: string; delete: true };

/** Re-seal every box from `oldKey` to `newKey` and apply `meta` changes, atomically. */
async function rekey(
  db: Db,
  oldKey: CryptoKey,
  newKey: CryptoKey,
  profile: (p: ProfileRecord, sealedSeed: Sealed) => ProfileRecord,
  meta: MetaChange[],
): Promise<{ dropped: number }> {
  const rawProfile = v.safeParse(ProfileRecord, await db.get("meta", "profile"));
  if (!rawProfile.success) throw new StorageError("no stored profile");
  const p = rawProfile.output;
  const seed = await open(oldKey, SEED_PURPOSE, p.username, p.sealedSeed);
  const sealedSeed = await seal(newKey, SEED_PURPOSE, p.username, seed);
  seed.fill(0);

  // Keys and values from one transaction, so that they pair up whatever else writes (the
  // engine is stopped before a re-key, ParleyClient.stop; this does not rely on it).
  const read = db.transaction("engine", "readonly");
  const [engineKeys, engineVals] = await Promise.all([
    read.store.getAllKeys(),
    read.store.getAll(),
  ]);
  const engine: Array<{ key: string; box: Sealed }> = [];
  for (let i = 0; i < engineKeys.length; i++) {
    const key = engineKeys[i] as string;
    const box = v.safeParse(Sealed, engineVals[i]);
    if (!box.success) throw new StorageError(`engine record ${key} is not a sealed box`);
    const pt = await open(oldKey, "engine", key, box.output);
    engine.push({ key, box: await seal(newKey, "engine", key, pt) });
    pt.fill(0);
  }

  const history: HistoryRow[] = [];
  let dropped = 0;
  for (const raw of await db.getAll("history")) {
    const row = v.safeParse(HistoryRow, raw);
    if (!row.success) {
      dropped++;
      continue;
    }
    try {
      const pt = await open(oldKey, "history", row.output.key, row.output.box);
      history.push({ ...row.output, box: await seal(newKey, "history", row.output.key, pt) });
    } catch {
      // A row that no longer opens (altered) cannot be carried over; it is dropped.
      dropped++;
    }
  }

  const transfers = await resealTransfers(db, oldKey, newKey);

  const tx = db.transaction(["meta", "engine", "history", "transfers"], "readwrite");
  const metaStore = tx.objectStore("meta");
  void metaStore.put(profile(p, sealedSeed), "profile");
  for (const m of meta) {
    if ("delete" in m) void metaStore.delete(m.key);
    else void metaStore.put(m.value, m.key);
  }
  const engineStore = tx.objectStore("engine");
  void engineStore.clear();
  for (const e of engine) void engineStore.put(e.box, e.key);
  const historyStore = tx.objectStore("history");
  void historyStore.clear();
  for (const h of history) void historyStore.put(h);
  const transferStore = tx.objectStore("transfers");
  for (const t of transfers.keep) void transferStore.put(t.value, t.key);
  for (const k of transfers.drop) {
    void transferStore.delete(k);
    void transferStore.delete(IDBKeyRange.bound(`${k}#`, `${k}#\uffff`));
  }
  await tx.done;
  return { dropped };
}

/** Turn the lock on; returns the new device key (the caller restarts the engine with it). */
export async function enableLock(
  db: Db,
  currentKey: CryptoKey,
  passphrase: string,
): Promise<CryptoKey> {
  if (passphrase.length < MIN_LOCK_PASSPHRASE) {
    throw new LockError(`Use a passphrase of at least ${MIN_LOCK_PASSPHRASE} characters.`);
  }
  const raw = randomBytes(32);
  const salt = randomBytes(16);
  try {
    const newKey = await importDeviceKey(raw);
    const kek = await passphraseKey(passphrase, salt, LOCK_ITERATIONS);
    const lock: LockRecord = {
      v: 1,
      kdf: { name: "PBKDF2-SHA256", iterations: LOCK_ITERATIONS, salt: new Uint8Array(salt) },
      box: await seal(kek, "lock", "device-key", raw),
    };
    await rekey(
      db,
      currentKey,
      newKey,
      (p, sealedSeed) => {
        // Without the passphrase the signing key must not be usable either: drop it.
        const { identityPrivateKey: _dropped, ...rest } = p;
        return { ...rest, sealedSeed };
      },
      [
        { key: "lock", value: lock },
        { key: "deviceKey", delete: true },
      ],
    );
    return newKey;
  } finally {
    raw.fill(0);
  }
}

/** Turn the lock off: a fresh non-extractable device key, stored; the identity key stored again. */
export async function disableLock(
  db: Db,
  currentKey: CryptoKey,
  identityPrivateKey: CryptoKey,
): Promise<CryptoKey> {
  const newKey = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
    "encrypt",
    "decrypt",
  ]);
  const rec: DeviceKeyRecord = { v: 1, key: newKey };
  await rekey(
    db,
    currentKey,
    newKey,
    (p, sealedSeed) => ({ ...p, sealedSeed, identityPrivateKey }),
    [
      { key: "deviceKey", value: rec },
      { key: "lock", delete: true },
    ],
  );
  return newKey;
}
