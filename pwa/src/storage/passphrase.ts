/**
 * Passphrase → AES-256-GCM wrapping key (PROTOCOL.md §12.3, §12.5): PBKDF2-SHA256 on WebCrypto,
 * non-extractable. One function for the passphrase lock and the identity backup file, so both use
 * the same normalisation (NFC, so the same typed passphrase works on every keyboard).
 */
import { utf8 } from "../../../shared/encoding";

/** Views from our own code are ArrayBuffer-backed; WebCrypto's typings want that spelled out. */
export const buf = (b: Uint8Array) => b as Uint8Array<ArrayBuffer>;

export async function passphraseKey(
  passphrase: string,
  salt: Uint8Array,
  iterations: number,
): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey(
    "raw",
    buf(utf8(passphrase.normalize("NFC"))),
    "PBKDF2",
    false,
    ["deriveKey"],
  );
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt: buf(salt), iterations },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}
