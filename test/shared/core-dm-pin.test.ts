/**
 * A key is shown as changed only after it signed something (PROTOCOL.md §8.7): an unsigned or
 * forged `hs_init` or `prekey` body naming a new identity key is refused as `bad_signature` and
 * leaves the contact — its pinned key and its "verified" mark — exactly as it was.
 */
import { describe, expect, it } from "vitest";
import { type DmCtx, emptyDm, receiveDm } from "../../shared/core/dm";
import { encodeHsInit, prekeyPrefix } from "../../shared/core/envelope";
import { initialPrekeys, publicSpk } from "../../shared/core/prekeys";
import type { Contact } from "../../shared/core/trust";
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";

async function bobWithVerifiedAlice() {
  const bob = await generateIdentityKeyPair();
  const alice = await generateIdentityKeyPair();
  const ctx: DmCtx = {
    hub: "main",
    me: { name: "bob", identityKey: bob.publicKey },
    sign: (m) => ed25519Sign(bob.privateKey, m),
    random: randomBytes,
    now: 5_000,
  };
  const contact: Contact = {
    username: "alice",
    identityKey: toB64u(alice.publicKey),
    verified: true,
    changedKey: null,
    pinnedAt: 1_000,
  };
  const prekeys = await initialPrekeys(bob, 1_000, randomBytes);
  return { bob, ctx, contact, prekeys };
}

describe("no key change without a signature", () => {
  it("a forged hs_init with another identity key: bad_signature, the pin and 'verified' stay", async () => {
    const { bob, ctx, contact } = await bobWithVerifiedAlice();
    const mallory = await generateIdentityKeyPair();
    const body = encodeHsInit({
      ikA: mallory.publicKey,
      ikB: bob.publicKey,
      ephA: randomBytes(32),
      sigA: randomBytes(64),
    });
    await expect(receiveDm(emptyDm("alice"), contact, null, body, ctx)).rejects.toMatchObject({
      code: "bad_signature",
    });
  });

  it("a forged prekey message with another identity key: bad_signature, nothing held", async () => {
    const { bob, ctx, contact, prekeys } = await bobWithVerifiedAlice();
    const mallory = await generateIdentityKeyPair();
    const spk = publicSpk(prekeys);
    const prefix = prekeyPrefix({
      ikA: mallory.publicKey,
      ikB: bob.publicKey,
      spkId: spk.id,
      opkId: null,
      ekA: randomBytes(32),
      sigA: randomBytes(64),
      sid: randomBytes(16),
    });
    // A plausible header and ciphertext after the prefix: never reached.
    const body = new Uint8Array([...prefix, ...randomBytes(40), ...randomBytes(80)]);
    await expect(receiveDm(emptyDm("alice"), contact, prekeys, body, ctx)).rejects.toMatchObject({
      code: "bad_signature",
    });
  });
});
