/**
 * Device lists on the relay (PROTOCOL.md §4.6): the relay stores an identity's newest signed list
 * and serves it with the identity's bundle and welcome; it refuses a list not signed by the
 * authenticated identity and any version not above the stored one, and forgets the list when
 * the name goes to another identity.
 */
import { describe, expect, it } from "vitest";
import { nextDeviceList, signDeviceList } from "../../shared/core/devices";
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import type { DeviceList } from "../../shared/protocol";
import { freshHub, type Keys, newKeys, TestClient } from "./support/client";

const device = async (name: string, addedAt: number) => ({
  id: toB64u(randomBytes(16)),
  key: toB64u((await generateIdentityKeyPair()).publicKey),
  name,
  addedAt,
});

async function firstList(keys: Keys): Promise<DeviceList> {
  return signDeviceList(
    {
      identityKey: keys.identityKey,
      version: 1,
      devices: [await device("laptop", 1)],
      removed: [],
    },
    (m) => ed25519Sign(keys.identity.privateKey, m),
  );
}

describe("relay device lists", () => {
  it("stores a newer list and serves it with the bundle and the welcome", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const { c: alice } = await TestClient.connect(hub, "alice", keys);
    const v1 = await firstList(keys);
    alice.send({ v: 1, t: "devices", id: "d1", list: v1 });
    await alice.next("accepted", (f) => f.id === "d1");
    const v2 = await signDeviceList(nextDeviceList(v1, { add: [await device("phone", 2)] }), (m) =>
      ed25519Sign(keys.identity.privateKey, m),
    );
    alice.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await alice.next("accepted", (f) => f.id === "d2");

    const { c: bob } = await TestClient.connect(hub, "bob");
    bob.send({ v: 1, t: "fetch_bundle", id: "b", username: "alice" });
    expect((await bob.next("bundle")).devices).toEqual(v2);
    alice.close();
    await alice.waitClosed();
    const again = await TestClient.open(hub);
    const w = await again.auth("alice", keys);
    expect(w.devices).toEqual(v2);
    again.close();
    bob.close();
  });

  it("a user without a list has none in its bundle or welcome (single-device users unchanged)", async () => {
    const hub = freshHub();
    const { c: alice, welcome } = await TestClient.connect(hub, "alice");
    expect("devices" in welcome).toBe(false);
    const { c: bob } = await TestClient.connect(hub, "bob");
    bob.send({ v: 1, t: "fetch_bundle", id: "b", username: "alice" });
    expect("devices" in (await bob.next("bundle"))).toBe(false);
    alice.close();
    bob.close();
  });

  it("refuses a rollback or a replay of the stored version (stale_device_list)", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const { c: alice } = await TestClient.connect(hub, "alice", keys);
    const v1 = await firstList(keys);
    const v2 = await signDeviceList(nextDeviceList(v1, {}), (m) =>
      ed25519Sign(keys.identity.privateKey, m),
    );
    alice.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await alice.next("accepted", (f) => f.id === "d2");
    for (const [id, list] of [
      ["old", v1],
      ["same", v2],
    ] as const) {
      alice.send({ v: 1, t: "devices", id, list });
      expect(await alice.error(id)).toMatchObject({ code: "stale_device_list" });
    }
    alice.close();
  });

  it("refuses a list signed by another key, or one naming another identity (bad_signature)", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const mallory = await newKeys();
    const { c: alice } = await TestClient.connect(hub, "alice", keys);
    const theirs = await firstList(mallory);
    alice.send({ v: 1, t: "devices", id: "x", list: theirs });
    expect(await alice.error("x")).toMatchObject({ code: "bad_signature" });
    const forged = await signDeviceList(
      {
        identityKey: keys.identityKey,
        version: 1,
        devices: [await device("evil", 1)],
        removed: [],
      },
      (m) => ed25519Sign(mallory.identity.privateKey, m),
    );
    alice.send({ v: 1, t: "devices", id: "y", list: forged });
    expect(await alice.error("y")).toMatchObject({ code: "bad_signature" });
    const { c: bob } = await TestClient.connect(hub, "bob");
    bob.send({ v: 1, t: "fetch_bundle", id: "b", username: "alice" });
    expect("devices" in (await bob.next("bundle"))).toBe(false);
    alice.close();
    bob.close();
  });
});
