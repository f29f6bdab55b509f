/**
 * Handshake-init replay (§8.2.3): bob remembers the hs_init ephemerals he answered, so a relay replaying an
 * old, validly signed init cannot replace a handshake in progress. The memory must outlast many
 * genuine handshakes from the same peer (MAX_SEEN_INITS), not just the last few.
 */
import { expect, it } from "vitest";
import { type DmCtx, emptyDm, MAX_SEEN_INITS, receiveDm, startOnline } from "../../shared/core/dm";
import { CoreError } from "../../shared/core/errors";
import type { Contact } from "../../shared/core/trust";
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";

async function ctx(name: string) {
  const id = await generateIdentityKeyPair();
  const c: DmCtx = {
    hub: "main",
    me: { name, identityKey: id.publicKey },
    sign: (m) => ed25519Sign(id.privateKey, m),
    random: randomBytes,
    now: 1_000,
  };
  return c;
}

const contact = (username: string, key: Uint8Array): Contact => ({
  username,
  identityKey: toB64u(key),
  verified: false,
  changedKey: null,
  pinnedAt: 0,
});

it("an old hs_init replayed after 40 newer handshakes is still recognised", async () => {
  expect(MAX_SEEN_INITS).toBeGreaterThanOrEqual(64);
  const a = await ctx("alice");
  const b = await ctx("bob");
  const aliceSeesBob = contact("bob", b.me.identityKey);
  const inits: Uint8Array[] = [];
  for (let i = 0; i < 40; i++) {
    const r = await startOnline(emptyDm("bob"), aliceSeesBob, a);
    inits.push(r.send[0] as Uint8Array);
  }
  let rec = emptyDm("alice");
  let pin: Contact | null = null;
  for (const body of inits) {
    const r = await receiveDm(rec, pin, null, body, b);
    rec = r.record;
    pin = r.contact;
  }
  const replayed = receiveDm(rec, pin, null, inits[0] as Uint8Array, b);
  await expect(replayed).rejects.toBeInstanceOf(CoreError);
  await expect(replayed).rejects.toMatchObject({ code: "replay" });
});
