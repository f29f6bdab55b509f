/**
 * Key directory for post-quantum prekeys (PROTOCOL.md §5, §7.4, §8.3.5), in workerd: a v2-signed
 * signed prekey is accepted, its PQ prekey stored from `auth` and handed out with it, one-time
 * ML-KEM prekeys handed out at most once and bounded, a PQ prekey naming another SPK refused.
 */
import { describe, expect, it } from "vitest";
import { signedPrekeyTranscriptV2 } from "../../shared/auth";
import { ed25519Sign, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { LIMITS } from "../../shared/protocol";
import { freshHub, type Keys, newKeys, TestClient } from "./support/client";

async function v2Spk(keys: Keys, id: number) {
  const key = randomBytes(32);
  const sig = await ed25519Sign(keys.identity.privateKey, signedPrekeyTranscriptV2(id, key));
  return { id, key: toB64u(key), sig: toB64u(sig) };
}

const pqPrekey = (spkId: number) => ({
  spkId,
  idh: toB64u(randomBytes(32)),
  kem: toB64u(randomBytes(1184)),
  sig: toB64u(randomBytes(64)),
});

const kemOpks = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({
    id: from + i,
    key: toB64u(randomBytes(1184)),
    sig: toB64u(randomBytes(64)),
  }));

describe("relay key directory: post-quantum prekeys", () => {
  it("stores the PQ prekey of auth and hands out one-time KEM prekeys once, with it", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const bob = await TestClient.open(hub);
    const spk = await v2Spk(keys, 7);
    const pq = pqPrekey(7);
    bob.send({ ...(await bob.authFrame("bob", keys, { spk })), pqPrekey: pq });
    await bob.next("welcome");
    const kem = kemOpks(1, 2);
    bob.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: [], oneTimeKemPrekeys: kem });
    await bob.next("accepted", (f) => f.id === "u");
    const { c: alice } = await TestClient.connect(hub, "alice");
    const got = [];
    for (let i = 0; i < 3; i++) {
      alice.send({ v: 1, t: "fetch_bundle", id: `f${i}`, username: "bob" });
      got.push(await alice.next("bundle", (f) => f.id === `f${i}`));
    }
    expect(got.map((b) => b.signedPrekey)).toEqual([spk, spk, spk]);
    expect(got.map((b) => b.pqPrekey)).toEqual([pq, pq, pq]);
    // Oldest first, never twice, then null (the last-resort KEM key in pqPrekey remains).
    expect(got.map((b) => b.oneTimeKemPrekey ?? null)).toEqual([kem[0], kem[1], null]);
    alice.close();
    bob.close();
  });

  it("refuses a PQ prekey for another signed prekey; an auth without one drops the stored one", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const bad = await TestClient.open(hub);
    const spk = await v2Spk(keys, 7);
    bad.send({ ...(await bad.authFrame("bob", keys, { spk })), pqPrekey: pqPrekey(8) });
    expect((await bad.next("error")).code).toBe("bad_frame");
    await bad.waitClosed();
    const bob = await TestClient.open(hub);
    bob.send({ ...(await bob.authFrame("bob", keys, { spk })), pqPrekey: pqPrekey(7) });
    await bob.next("welcome");
    bob.close();
    await bob.waitClosed();
    const again = await TestClient.open(hub);
    again.send(await again.authFrame("bob", keys, { spk }));
    await again.next("welcome");
    const { c: alice } = await TestClient.connect(hub, "alice");
    alice.send({ v: 1, t: "fetch_bundle", id: "f", username: "bob" });
    const b = await alice.next("bundle");
    expect(b.pqPrekey ?? null).toBeNull();
    expect(b.oneTimeKemPrekey ?? null).toBeNull();
    alice.close();
    again.close();
  });

  it("bounds the stored one-time KEM prekeys and rejects duplicate ids in one upload", async () => {
    const hub = freshHub();
    const { c: bob } = await TestClient.connect(hub, "bob");
    const dup = [...kemOpks(1, 1), ...kemOpks(1, 1)];
    bob.send({ v: 1, t: "upload_prekeys", id: "d", oneTimePrekeys: [], oneTimeKemPrekeys: dup });
    expect((await bob.next("error", (f) => f.id === "d")).code).toBe("bad_frame");
    const per = LIMITS.maxOneTimeKemPrekeysPerUpload;
    for (let i = 0; i * per < LIMITS.maxOneTimeKemPrekeysStored; i++) {
      const id = `u${i}`;
      const batch = kemOpks(1 + i * per, per);
      bob.send({ v: 1, t: "upload_prekeys", id, oneTimePrekeys: [], oneTimeKemPrekeys: batch });
      await bob.next("accepted", (f) => f.id === id);
    }
    bob.send({
      v: 1,
      t: "upload_prekeys",
      id: "over",
      oneTimePrekeys: [],
      oneTimeKemPrekeys: kemOpks(10_000, 1),
    });
    expect((await bob.next("error", (f) => f.id === "over")).code).toBe("limit_reached");
    bob.close();
  });
});
