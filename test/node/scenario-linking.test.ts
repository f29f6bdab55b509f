/**
 * Linking and removing a device end to end (PROTOCOL.md §4.6–§4.8), through the product's relay in
 * the Node harness: the new device offers on an unauthenticated socket (NewDeviceLink), the
 * laptop fetches the offer by code, confirms and answers (ParleyClient.fetchLinkOffer /
 * approveLink), the phone makes its store from the transfer and authenticates on the same socket
 * as a linked device, with the laptop's contacts pinned. A wrong code, or a relay substituting the
 * offer or the answer, is refused; removing the phone closes it at once.
 */
import { describe, expect, it } from "vitest";
import { ParleyClient } from "../../shared/core/client";
import type { ParleyEvent } from "../../shared/core/client-api";
import { signDeviceList } from "../../shared/core/devices";
import { NewDeviceLink } from "../../shared/core/link-device";
import {
  createLinkOffer,
  LinkError,
  offeredDevice,
  parseLinkCode,
  sealLinkAnswer,
} from "../../shared/core/linking";
import { KEYS, MemoryStore } from "../../shared/core/store";
import { ed25519KeyPairFromSeed, ed25519Sign, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { CLOSE, type ClientFrame, type ServerFrame } from "../../shared/protocol";
import { newUser, timers } from "../support/clients";
import { link, newPhone, setupAliceAndBob as setup, through } from "../support/linked-device";
import { NodeRelay } from "../support/node-relay";

const codeOf = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (e) {
    return e instanceof LinkError ? e.code : String(e);
  }
  return "resolved";
};

describe("linking a device", () => {
  it("the phone authenticates as a linked device with the contacts pinned; the laptop announces it", async () => {
    const { relay, alice, bob, seed } = await setup();
    const phone = await newPhone(relay);
    expect(phone.progress.map((p) => p.t)).toEqual(["waiting", "offered"]);
    const added = await link(relay, alice, seed, phone);
    await relay.settle();

    expect(phone.progress.at(-1)?.t).toBe("linked");
    const client = phone.client as ParleyClient;
    expect(client.identityKey).toBe(alice.client.identityKey);
    expect(phone.events).toContainEqual({ type: "connection", state: "online" });
    // Its prekeys are its own directory entry (§4.7): its top-up is accepted, nothing refused.
    expect(phone.events.filter((e) => e.type === "error")).toEqual([]);
    // Both devices of alice are connected: the phone is a linked device, the laptop untouched.
    expect(phone.conn.username).toBe("alice");
    expect(phone.conn.closed).toBe(false);
    expect(alice.conn?.closed).toBe(false);
    expect(client.contact("bob")).toMatchObject({
      identityKey: bob.client.identityKey,
      verified: true,
    });
    // The laptop shows the new device (§4.6: a prominent notice on the other devices).
    expect(alice.events.filter((e) => e.type === "own_devices")).toEqual([
      { type: "own_devices", added: [added], removed: [] },
    ]);
    const laptopView = await alice.client.ownDevices();
    const phoneView = await client.ownDevices();
    expect(laptopView.devices.map((d) => d.name).sort()).toEqual(["laptop", "phone"]);
    expect(phoneView.devices).toEqual(laptopView.devices);
    expect(phoneView.thisDevice).toBe(added.id);
    expect(laptopView.thisDevice).not.toBe(added.id);
    // The phone's own first list is pinned, not news to it; the device key it offered is listed.
    expect(phone.events.some((e) => e.type === "own_devices")).toBe(false);
    const stored = (await phone.store.get(KEYS.device)) as { seed: string; claim: boolean };
    expect(stored.claim).toBe(false);
    const key = toB64u(
      (await ed25519KeyPairFromSeed(Uint8Array.from(Buffer.from(stored.seed, "base64url"))))
        .publicKey,
    );
    expect(added.key).toBe(key);
    expect(relay.failures).toEqual([]);
  });

  it("a wrong or unknown code is refused before anything is signed", async () => {
    const { relay, alice } = await setup();
    const phone = await newPhone(relay);
    const right = parseLinkCode(phone.link.code);
    const wrongSecret = `${right.rendezvous}${right.secret.startsWith("0") ? "1" : "0"}${right.secret.slice(1)}`;
    expect(await codeOf(through(relay, alice.client.fetchLinkOffer(wrongSecret)))).toBe(
      "code_mismatch",
    );
    const otherRendezvous = `${right.rendezvous.startsWith("0") ? "1" : "0"}${right.rendezvous.slice(1)}${right.secret}`;
    expect(await codeOf(through(relay, alice.client.fetchLinkOffer(otherRendezvous)))).toBe(
      "unknown_link",
    );
    expect(await codeOf(alice.client.fetchLinkOffer("not a code"))).toBe("bad_code");
    expect((await alice.client.ownDevices()).devices).toEqual([]);
    expect(relay.log.some((x) => x.frame.t === "device_list")).toBe(false);
  });

  it("a relay substituting the offer is refused; one substituting the answer is refused and the real one still links", async () => {
    const { relay, alice, seed } = await setup();
    const phone = await newPhone(relay);
    // The relay's own offer (its link key, to read the transfer) under the phone's rendezvous.
    const mine = await createLinkOffer(relay.hub, "phone");
    relay.intercept = (_to, f: ServerFrame) =>
      f.t === "link_offered" ? { ...f, offer: mine.offer } : f;
    expect(await codeOf(through(relay, alice.client.fetchLinkOffer(phone.link.code)))).toBe(
      "code_mismatch",
    );
    expect(relay.log.some((x) => x.frame.t === "link_answered")).toBe(false);

    // Now the answer: the relay swaps in a transfer of its own identity, with a list that names
    // the phone's device and key, sealed to the phone's link key — but MAC'd without the code.
    relay.intercept = null;
    const { offer } = await through(relay, alice.client.fetchLinkOffer(phone.link.code));
    const mallory = randomBytes(32);
    const m = await ed25519KeyPairFromSeed(mallory);
    const list = await signDeviceList(
      {
        identityKey: toB64u(m.publicKey),
        version: 1,
        devices: [offeredDevice(offer, 1)],
        removed: [],
      },
      (x) => ed25519Sign(m.privateKey, x),
    );
    const guess = parseLinkCode(`${parseLinkCode(phone.link.code).rendezvous}${"0".repeat(12)}`);
    const forged = await sealLinkAnswer(relay.hub, guess, offer, {
      v: 1,
      username: "alice",
      identitySeed: toB64u(mallory),
      devices: list,
      contacts: [],
    });
    let real: ServerFrame | null = null;
    relay.intercept = (_to, f: ServerFrame) => {
      if (f.t !== "link_answered") return f;
      real = f;
      return { ...f, answer: forged };
    };
    await link(relay, alice, seed, phone);
    expect(phone.progress.at(-1)).toEqual({ t: "refused", code: "code_mismatch" });
    expect(phone.client).toBeNull();
    expect(await phone.store.get(KEYS.device)).toBeUndefined();
    relay.intercept = null;
    relay.push(phone.conn, real as unknown as ServerFrame);
    await relay.settle();
    expect(phone.progress.at(-1)?.t).toBe("linked");
    expect(phone.conn.username).toBe("alice");
  });

  it("a device that stops waiting before the answer is dropped from the list again", async () => {
    const { relay, alice, seed } = await setup();
    const phone = await newPhone(relay);
    const request = await through(relay, alice.client.fetchLinkOffer(phone.link.code));
    // The phone goes away after the laptop read its offer, before the laptop answers.
    relay.disconnect(phone.conn);
    await relay.settle();
    expect(
      await codeOf(
        through(
          relay,
          alice.client.approveLink(request, { identitySeed: seed, thisDeviceName: "laptop" }),
        ),
      ),
    ).toBe("unknown_link");
    await relay.settle();
    // Listed for a moment (the list had to be stored before the answer), then removed.
    const own = alice.events.filter((e) => e.type === "own_devices");
    expect(own.map((e) => [e.added.map((d) => d.name), e.removed.map((d) => d.name)])).toEqual([
      [["phone"], []],
      [[], ["phone"]],
    ]);
    expect((await alice.client.ownDevices()).devices.map((d) => d.name)).toEqual(["laptop"]);
    // The relay's stored list agrees: the device id is revoked, so it can never come back.
    const list = relay.objectOf("alice").life.store.getDeviceList("alice");
    if (list === null) throw new Error("no stored list");
    expect(list.devices.map((d) => d.id)).toEqual([(await alice.client.ownDevices()).thisDevice]);
    expect(list.removed).toEqual([request.device]);
  });

  it("removing the phone closes it and it is told; the laptop's list no longer names it", async () => {
    const { relay, alice, seed } = await setup();
    const phone = await newPhone(relay);
    const added = await link(relay, alice, seed, phone);
    await relay.settle();
    expect(
      await codeOf(alice.client.removeDevice((await alice.client.ownDevices()).thisDevice)),
    ).toBe("unknown_device");
    await through(relay, alice.client.removeDevice(added.id));
    await relay.settle();
    expect(phone.conn.closing?.code).toBe(CLOSE.deviceReplaced);
    expect(phone.events).toContainEqual({ type: "connection", state: "removed" });
    expect((await alice.client.ownDevices()).devices.map((d) => d.name)).toEqual(["laptop"]);
    expect(alice.events.filter((e) => e.type === "own_devices").at(-1)).toEqual({
      type: "own_devices",
      added: [],
      removed: [added],
    });
    // A fresh start of the phone (its memory gone, its store kept) is refused too (§4.7 rule 1).
    const events: ParleyEvent[] = [];
    const restarted = await ParleyClient.create({
      hub: relay.hub,
      origin: relay.origin,
      username: "alice",
      identity: await ed25519KeyPairFromSeed(seed),
      store: phone.store,
      transport: { send: (fr) => again.fromClient(fr) },
      now: () => relay.now(),
      schedule: timers.schedule,
    });
    restarted.subscribe((e) => events.push(e));
    const again = relay.connect(restarted);
    await relay.settle();
    expect(again.username).toBeNull();
    expect(again.closing?.code).toBe(CLOSE.deviceReplaced);
    expect(events).toContainEqual({ type: "connection", state: "removed" });
  });
});

it("a store made before device keys gets its device signing key when loaded, written with the takeover", async () => {
  const relay = new NodeRelay();
  const u = await newUser(relay, "alice");
  const device = (await u.store.get(KEYS.device)) as { id: string; seed: string };
  expect(device.seed).toMatch(/^[A-Za-z0-9_-]{43}$/);
  const old = new MemoryStore();
  await old.batch([{ op: "put", key: KEYS.device, value: { id: device.id, claim: false } }]);
  await ParleyClient.create({
    hub: relay.hub,
    origin: relay.origin,
    username: "alice",
    identity: u.identity,
    store: old,
    transport: { send: () => undefined },
    now: () => relay.now(),
  });
  const after = (await old.get(KEYS.device)) as { id: string; claim: boolean; seed: string };
  expect(after.id).toBe(device.id);
  expect(after.claim).toBe(false);
  expect(after.seed).toMatch(/^[A-Za-z0-9_-]{43}$/);
  expect(after.seed).not.toBe(device.seed);
  // One batch to make the old store, one for the takeover that added the key.
  expect(old.batches).toBe(2);
});

it("the new device's waiting side: another hub's hello and a refused offer end it; others' frames do not", async () => {
  const sent: ClientFrame[] = [];
  const wrongHub = await NewDeviceLink.start("main", "phone", (f) => sent.push(f));
  expect(
    await wrongHub.onServerFrame({
      v: 1,
      t: "hello",
      hub: "other",
      challenge: "A".repeat(43),
      time: 0,
    }),
  ).toEqual({ t: "failed", code: "wrong_hub" });
  expect(sent).toEqual([]);

  const link = await NewDeviceLink.start("main", "phone", (f) => sent.push(f));
  expect(
    await link.onServerFrame({ v: 1, t: "hello", hub: "main", challenge: "A".repeat(43), time: 0 }),
  ).toEqual({ t: "waiting" });
  const offer = sent.at(-1);
  if (offer?.t !== "link_offer") throw new Error("no offer sent");
  expect(offer.rendezvous).toBe(parseLinkCode(link.code).rendezvous);
  expect(await link.onServerFrame({ v: 1, t: "accepted", id: "someone-else" })).toEqual({
    t: "waiting",
  });
  expect(
    await link.onServerFrame({ v: 1, t: "error", id: "x", code: "rate_limited", message: "m" }),
  ).toEqual({ t: "waiting" });
  expect(
    await link.onServerFrame({ v: 1, t: "error", id: offer.id, code: "link_taken", message: "m" }),
  ).toEqual({ t: "failed", code: "link_taken" });
  // An answer under another rendezvous is refused without being opened.
  expect(
    await link.onServerFrame({
      v: 1,
      t: "link_answered",
      rendezvous: "ZZZZZZZZ",
      answer: { enc: "A".repeat(1494), ciphertext: "AAAA", mac: "A".repeat(43) },
    }),
  ).toEqual({ t: "refused", code: "code_mismatch" });
  // Cancelled: its keys are wiped and nothing more is handled.
  link.cancel();
  expect(await link.onServerFrame({ v: 1, t: "accepted", id: offer.id })).toEqual({ t: "waiting" });
});
