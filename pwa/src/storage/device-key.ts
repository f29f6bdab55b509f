/**
 * The device key: one AES-256-GCM key generated in this browser profile as a non-extractable
 * CryptoKey. Page JavaScript (including an injected script) can use it but never read it out, so
 * the ciphertexts in IndexedDB are useless once copied off the device. Every box binds a context
 * label and its record key as AAD (lp() transcript, PROTOCOL.md §2.2): a box moved to another
 * record or purpose fails to open.
 */
import * as v from "valibot";
import { concatBytes, lp } from "../../../shared/encoding";
import type { Db } from "./db";
import { DeviceKeyRecord, type Sealed } from "./schemas";

const NONCE_BYTES = 12;

export class StorageError extends Error {
  override name = "StorageError";
}

export async function loadOrCreateDeviceKey(db: Db): Promise<CryptoKey> {
  const raw = await db.get("meta", "deviceKey");
  if (raw !== undefined) {
    const parsed = v.safeParse(DeviceKeyRecord, raw);
    if (!parsed.success) throw new StorageError("stored device key is not a usable AES-GCM key");
    return parsed.output.key;
  }
  const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, [
    "encrypt",
    "decrypt",
  ]);
  const rec: DeviceKeyRecord = { v: 1, key };
  // add() not put(): if another tab raced us, keep its key and use that one.
  try {
    await db.add("meta", rec, "deviceKey");
    return key;
  } catch {
    return loadOrCreateDeviceKey(db);
  }
}

function aad(purpose: string, recordKey: string): Uint8Array<ArrayBuffer> {
  return concatBytes(lp("parley/v1/pwa-at-rest", purpose, recordKey)) as Uint8Array<ArrayBuffer>;
}

/** Encrypt under the device key with a fresh random 96-bit nonce (NIST SP 800-38D §8.2.2). */
export async function seal(
  key: CryptoKey,
  purpose: string,
  recordKey: string,
  plaintext: Uint8Array,
): Promise<Sealed> {
  const iv = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: aad(purpose, recordKey) },
    key,
    plaintext as Uint8Array<ArrayBuffer>,
  );
  return { iv, ct: new Uint8Array(ct) };
}

/** Decrypt a box; throws StorageError if it was altered, moved or sealed by another key. */
export async function open(
  key: CryptoKey,
  purpose: string,
  recordKey: string,
  box: Sealed,
): Promise<Uint8Array> {
  try {
    const pt = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: box.iv as Uint8Array<ArrayBuffer>,
        additionalData: aad(purpose, recordKey),
      },
      key,
      box.ct as Uint8Array<ArrayBuffer>,
    );
    return new Uint8Array(pt);
  } catch {
    throw new StorageError(`stored ${purpose} record does not decrypt`);
  }
}
