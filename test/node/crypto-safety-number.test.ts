/**
 * The safety number is Signal's numeric fingerprint (PROTOCOL.md §3.7): checked digit for digit
 * against libsignal's own Fingerprint (native, so Node only). libsignal keys are 33 bytes
 * (0x05 || X25519 u) where Parley's are raw 32-byte Ed25519 keys; the algorithm is the same
 * over whatever key bytes it is given, which safetyNumberHalf exposes.
 */

import { Fingerprint, PublicKey } from "@signalapp/libsignal-client";
import { describe, expect, it } from "vitest";
import { randomBytes } from "../../shared/crypto";
import { SAFETY_NUMBER_ITERATIONS, safetyNumberHalf } from "../../shared/crypto/fingerprint";
import { utf8 } from "../../shared/encoding";

function signalKey(): { bytes: Uint8Array; key: PublicKey } {
  // Any 32 bytes are a valid X25519 public key encoding for libsignal's deserializer.
  const bytes = new Uint8Array(33);
  bytes[0] = 0x05;
  bytes.set(randomBytes(32), 1);
  return { bytes, key: PublicKey.deserialize(bytes) };
}

describe("safety number = libsignal NumericFingerprintGenerator (version 0, 5200 iterations)", () => {
  it("matches libsignal's displayable fingerprint on random keys and identifiers", () => {
    const names = ["alice", "bob", "ü-名前", "", "a_very_long_name_of_32_chars_xx"];
    for (let i = 0; i < 6; i++) {
      const a = signalKey();
      const b = signalKey();
      const idA = utf8(names[i % names.length] ?? "");
      const idB = utf8(`peer${i}`);
      const signal = Fingerprint.new(
        SAFETY_NUMBER_ITERATIONS,
        0,
        new Uint8Array(idA),
        a.key,
        new Uint8Array(idB),
        b.key,
      )
        .displayableFingerprint()
        .toString();
      const ha = safetyNumberHalf(a.bytes, idA);
      const hb = safetyNumberHalf(b.bytes, idB);
      expect(ha < hb ? ha + hb : hb + ha, `pair ${i}`).toBe(signal);
    }
  });
});
