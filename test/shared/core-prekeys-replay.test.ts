/**
 * The prekey-message replay cache (prekeys.ts, PROTOCOL.md §8.3.3) never forgets an entry of a
 * live signed prekey: flooding it with other first messages cannot evict a real one so that a
 * relay could replay it as a new session. A full cache refuses new sessions on that SPK
 * (`prekey_limit`) until rotation; the cache goes with the SPK secret after the grace period.
 */
import { describe, expect, it } from "vitest";
import { type DmCtx, emptyDm, encryptDm, receiveDm, startFromBundle } from "../../shared/core/dm";
import { isCoreError } from "../../shared/core/errors";
import {
  consumePrekeys,
  DAY,
  findPrekeys,
  initialPrekeys,
  MAX_SEEN_EPHEMERALS,
  maintainSpk,
  type PrekeyState,
  publicPq,
  publicSpk,
  seenCount,
} from "../../shared/core/prekeys";
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";

async function ctxFor(name: string) {
  const id = await generateIdentityKeyPair();
  const ctx: DmCtx = {
    hub: "main",
    me: { name, identityKey: id.publicKey },
    sign: (m) => ed25519Sign(id.privateKey, m),
    random: randomBytes,
    now: 1_000,
  };
  return { id, ctx };
}

describe("prekey replay cache (§8.3.3)", () => {
  it("a flood of first messages cannot evict a live entry; the old first message stays a replay", async () => {
    const a = await ctxFor("alice");
    const b = await ctxFor("bob");
    let prekeys: PrekeyState = await initialPrekeys(b.id, 1_000, randomBytes);
    const spkId = prekeys.spk.id;
    // alice starts without a one-time prekey (the case only the replay cache protects).
    const bundleStart = await startFromBundle(
      emptyDm("bob"),
      null,
      {
        identityKey: toB64u(b.id.publicKey),
        signedPrekey: publicSpk(prekeys),
        oneTimePrekey: null,
        pqPrekey: publicPq(prekeys),
      },
      a.ctx,
      await initialPrekeys(a.id, 1_000, randomBytes),
    );
    if (!bundleStart.contact) throw new Error("alice pinned bob");
    const first = (
      await encryptDm(
        bundleStart.record,
        bundleStart.contact,
        { t: "text", id: "m1", ts: 1, text: "first" },
        a.ctx,
      )
    ).body;
    const got = await receiveDm(emptyDm("alice"), null, prekeys, first, b.ctx);
    expect(got.received[0]).toMatchObject({ t: "text", text: "first" });
    if (!got.prekeys) throw new Error("prekeys consumed");
    prekeys = got.prekeys;
    expect(seenCount(prekeys, spkId)).toBe(1);

    // The relay floods bob with MAX_SEEN_EPHEMERALS other valid first messages on the same SPK.
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < MAX_SEEN_EPHEMERALS; i++) {
      const ek = randomBytes(32);
      try {
        findPrekeys(prekeys, spkId, null, ek);
        prekeys = consumePrekeys(prekeys, spkId, null, ek);
        accepted++;
      } catch (e) {
        if (!isCoreError(e, "prekey_limit")) throw e;
        refused++;
      }
    }
    // Bounded by refusing, not by evicting: the cache is full and alice's entry is still there.
    expect(accepted).toBe(MAX_SEEN_EPHEMERALS - 1);
    expect(refused).toBe(1);
    expect(seenCount(prekeys, spkId)).toBe(MAX_SEEN_EPHEMERALS);

    // bob ended the chat (no session left): the replayed first message is still a replay.
    await expect(receiveDm(emptyDm("alice"), null, prekeys, first, b.ctx)).rejects.toSatisfy((e) =>
      isCoreError(e, "replay"),
    );

    // A full cache makes the next maintenance rotate early; the old SPK keeps its cache for the
    // grace period, and afterwards its secret and cache are gone: the message cannot be opened.
    const rotated = await maintainSpk(prekeys, b.id, 2_000, randomBytes, 30 * DAY, 7 * DAY);
    expect(rotated.rotated).toBe(true);
    expect(rotated.state.spk.id).not.toBe(spkId);
    expect(seenCount(rotated.state, spkId)).toBe(MAX_SEEN_EPHEMERALS);
    await expect(receiveDm(emptyDm("alice"), null, rotated.state, first, b.ctx)).rejects.toSatisfy(
      (e) => isCoreError(e, "replay"),
    );
    const expired = await maintainSpk(
      rotated.state,
      b.id,
      2_000 + 8 * DAY,
      randomBytes,
      30 * DAY,
      7 * DAY,
    );
    expect(seenCount(expired.state, spkId)).toBe(0);
    await expect(receiveDm(emptyDm("alice"), null, expired.state, first, b.ctx)).rejects.toSatisfy(
      (e) => isCoreError(e, "no_prekey"),
    );
  }, 60_000);
});
