/**
 * Human-comparable identity checks (PROTOCOL.md §3.7): a short base32 fingerprint shown under a
 * username, and a 60-digit Signal-style safety number for a pair of identities, identical on
 * both sides, for out-of-band comparison.
 */

import { concatBytes, lp, utf8 } from "../encoding";
import { assertBytes } from "./bytes";
import { ED25519_PUBLIC_KEY_BYTES } from "./constants";
import { InvalidLengthError } from "./errors";
import { sha256, sha512 } from "./kdf";

export const FINGERPRINT_LABEL = "parley/v1/fingerprint";
/** 10 bytes = 80 bits = exactly 16 base32 characters, no padding. */
export const FINGERPRINT_BYTES = 10;
const BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"; // RFC 4648 §6

/** Signal NumericFingerprintGenerator parameters (libsignal `fingerprint.rs`, version 0). */
export const SAFETY_NUMBER_ITERATIONS = 5200;
export const SAFETY_NUMBER_VERSION = 0;
export const SAFETY_NUMBER_DIGITS = 60;
const CHUNKS_PER_PARTY = 6;
const CHUNK_BYTES = 5;
const CHUNK_MODULUS = 100_000;

function base32(bytes: Uint8Array): string {
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32_ALPHABET[(acc >> bits) & 31];
    }
  }
  if (bits > 0) out += BASE32_ALPHABET[(acc << (5 - bits)) & 31];
  return out;
}

/**
 * First 10 bytes of SHA-256(lp("parley/v1/fingerprint", identityKey)) as RFC 4648 base32,
 * in 4 groups of 4 separated by single spaces, e.g. "MFRG GZDF MZTW Q2LK". 80 bits: enough to
 * tell contacts apart at a glance, not a substitute for the safety number.
 */
export function identityFingerprint(identityKey: Uint8Array): string {
  assertBytes("identityKey", identityKey, ED25519_PUBLIC_KEY_BYTES);
  const digest = sha256(lp(FINGERPRINT_LABEL, identityKey)).subarray(0, FINGERPRINT_BYTES);
  const s = base32(digest);
  return [0, 4, 8, 12].map((i) => s.slice(i, i + 4)).join(" ");
}

export interface SafetyNumberParty {
  username: string;
  identityKey: Uint8Array;
}

/**
 * 30 digits for one party, exactly Signal's NumericFingerprintGenerator (display half):
 * hash = u16be(version) || key || stableId; 5200 times hash = SHA-512(hash || key);
 * then six 5-byte big-endian chunks, each mod 10^5, zero-padded to 5 digits. Generic over the
 * key bytes so tests can compare with libsignal, which uses 33-byte type-prefixed keys.
 */
export function safetyNumberHalf(key: Uint8Array, stableId: Uint8Array): string {
  const version = new Uint8Array([SAFETY_NUMBER_VERSION >> 8, SAFETY_NUMBER_VERSION & 0xff]);
  let hash = concatBytes(version, key, stableId);
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) {
    hash = sha512(concatBytes(hash, key));
  }
  let out = "";
  for (let c = 0; c < CHUNKS_PER_PARTY; c++) {
    let v = 0;
    // 40-bit big-endian integer: below 2^53, so plain Number arithmetic is exact.
    for (let j = 0; j < CHUNK_BYTES; j++) v = v * 256 + (hash[c * CHUNK_BYTES + j] ?? 0);
    out += String(v % CHUNK_MODULUS).padStart(5, "0");
  }
  return out;
}

function partyDigits(p: SafetyNumberParty, name: "a" | "b"): string {
  if (typeof p !== "object" || p === null || typeof p.username !== "string") {
    throw new InvalidLengthError(`${name}.username: expected a string`);
  }
  assertBytes(`${name}.identityKey`, p.identityKey, ED25519_PUBLIC_KEY_BYTES);
  return safetyNumberHalf(p.identityKey, utf8(p.username));
}

/**
 * The 60-digit safety number of two identities: each party's 30 digits, the two halves sorted
 * (string order) and concatenated, so both sides compute the same number.
 */
export function safetyNumber(a: SafetyNumberParty, b: SafetyNumberParty): string {
  const da = partyDigits(a, "a");
  const db = partyDigits(b, "b");
  return da < db ? da + db : db + da;
}

/** Display form: 12 groups of 5 digits. */
export function safetyNumberGroups(n: string): string[] {
  if (typeof n !== "string" || !/^[0-9]{60}$/.test(n)) {
    throw new InvalidLengthError(`n: expected ${SAFETY_NUMBER_DIGITS} digits`);
  }
  const out: string[] = [];
  for (let i = 0; i < SAFETY_NUMBER_DIGITS; i += 5) out.push(n.slice(i, i + 5));
  return out;
}
