/**
 * workerd (the relay's runtime, and the stand-in for browsers here) runs shared/crypto on the
 * default WebCrypto/noble backend (PROTOCOL.md §3.1): nothing installs another one, so the shared
 * known-answer vectors in this project check the default paths while the `node` project checks the
 * Node backend.
 */
import { describe, expect, it } from "vitest";
import { cryptoBackendName, x25519, x25519PublicKey } from "../../shared/crypto";

describe("crypto backend in workerd", () => {
  it("is the default one", () => {
    expect(cryptoBackendName()).toMatch(/^default/);
  });
  it("and it computes RFC 7748 §6.1 (Alice's public key, then the shared secret)", async () => {
    const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    const un = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (x) => Number.parseInt(x, 16));
    const a = un("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    const b = un("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    expect(hex(await x25519PublicKey(a))).toBe(
      "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
    );
    expect(hex(await x25519(a, await x25519PublicKey(b)))).toBe(
      "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    );
  });
});
