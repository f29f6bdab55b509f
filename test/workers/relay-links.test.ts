/**
 * The link rendezvous through the real relay (PROTOCOL.md §4.8.3): a new device's offer waits on
 * its unauthenticated socket, a device of the identity fetches it and answers, the new device
 * opens the answer and then authenticates on the same socket as a listed device. And what the
 * relay refuses: a second offer under a live rendezvous, fetches and answers for no waiting
 * socket, link frames in the wrong state; and that an answer the new device refuses (not made
 * with its code) does not end its wait.
 */
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { nextDeviceList, signDeviceList } from "../../shared/core/devices";
import {
  checkLinkOffer,
  createLinkOffer,
  LinkError,
  newLinkCode,
  offeredDevice,
  openLinkAnswer,
  type PendingLink,
  sealLinkAnswer,
} from "../../shared/core/linking";
import { ed25519Sign, generateIdentityKeyPair } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { type DeviceList, LIMITS } from "../../shared/protocol";
import { BASE, freshHub, type Keys, newKeys, ORIGIN, TestClient } from "./support/client";

const LAPTOP = toB64u(new Uint8Array(16).fill(1));

/** Alice's laptop online, current device, with a list naming only itself. */
async function alice(hub: string, routed = false) {
  const keys = await newKeys();
  const laptop = await TestClient.open(hub, ORIGIN, undefined, routed ? "alice" : undefined);
  laptop.send(await laptop.authFrame("alice", keys, { device: LAPTOP, claim: true }));
  await laptop.next("welcome");
  const list = await signDeviceList(
    {
      identityKey: keys.identityKey,
      version: 1,
      devices: [
        {
          id: LAPTOP,
          key: toB64u((await generateIdentityKeyPair()).publicKey),
          name: "laptop",
          addedAt: 1,
        },
      ],
      removed: [],
    },
    (m) => ed25519Sign(keys.identity.privateKey, m),
  );
  laptop.send({ v: 1, t: "devices", id: "d1", list });
  await laptop.next("accepted", (f) => f.id === "d1");
  return { keys, laptop, list };
}

/** A new device: its socket, and its offer left under its code's rendezvous. */
async function newDevice(hub: string, name = "phone") {
  const c = await TestClient.open(hub);
  const pending = await createLinkOffer(hub, name);
  c.send(offerFrame("o1", pending));
  await c.next("accepted", (f) => f.id === "o1");
  return { c, pending };
}

/** The new device's `link_offer` of `pending` (§4.8.2). */
function offerFrame(id: string, pending: PendingLink) {
  return {
    v: 1,
    t: "link_offer",
    id,
    rendezvous: pending.code.rendezvous,
    offer: pending.offer,
  } as const;
}

async function transferFor(keys: Keys, list: DeviceList, pending: PendingLink) {
  const next = await signDeviceList(
    nextDeviceList(list, { add: [offeredDevice(pending.offer, Date.now())] }),
    (m) => ed25519Sign(keys.identity.privateKey, m),
  );
  return {
    next,
    transfer: {
      v: 1 as const,
      username: "alice",
      // The test identity is not made from a seed: the transfer carries a stand-in the new
      // device checks against the list (so it is refused below unless the list is its own).
      identitySeed: toB64u(new Uint8Array(32)),
      devices: next,
      contacts: [],
    },
  };
}

/**
 * The laptop, shown the code, fetches the offer and checks it against the code, publishes the
 * list naming the new device, and answers; the sealed answer.
 */
async function fetchAndAnswer(
  hub: string,
  laptop: TestClient,
  keys: Keys,
  list: DeviceList,
  pending: PendingLink,
) {
  laptop.send({ v: 1, t: "link_fetch", id: "f1", rendezvous: pending.code.rendezvous });
  const offered = await laptop.next("link_offered", (f) => f.id === "f1");
  expect(offered.offer).toEqual(pending.offer);
  checkLinkOffer(hub, pending.code, offered.offer);
  const { next, transfer } = await transferFor(keys, list, pending);
  laptop.send({ v: 1, t: "devices", id: "d2", list: next });
  await laptop.next("accepted", (f) => f.id === "d2");
  const answer = await sealLinkAnswer(hub, pending.code, offered.offer, transfer);
  laptop.send({ v: 1, t: "link_answer", id: "a1", rendezvous: pending.code.rendezvous, answer });
  await laptop.next("accepted", (f) => f.id === "a1");
  return answer;
}

describe("link rendezvous (§4.8.3)", () => {
  it("on users' routes: the device waits on its rendezvous's object, the laptop's object reaches it, and the device authenticates on its user's route", async () => {
    const hub = freshHub("link");
    const { keys, laptop, list } = await alice(hub, true);
    const pending = await createLinkOffer(hub, "phone");
    const other = await createLinkOffer(hub, "tablet");
    const route = { link: pending.code.rendezvous };
    const phone = await TestClient.open(hub, ORIGIN, undefined, route);
    // Its route names its rendezvous: an offer under another one is not served here.
    phone.send(offerFrame("x", other));
    expect((await phone.error("x")).code).toBe("wrong_route");
    phone.send(offerFrame("o1", pending));
    await phone.next("accepted", (f) => f.id === "o1");
    // Nobody authenticates on a rendezvous's route.
    phone.send(await phone.authFrame("alice", keys, { device: pending.offer.device }));
    expect((await phone.error()).code).toBe("wrong_route");
    const answer = await fetchAndAnswer(hub, laptop, keys, list, pending);
    expect((await phone.next("link_answered")).answer).toEqual(answer);
    // Nothing waits under the other code: no object answers for it.
    laptop.send({ v: 1, t: "link_fetch", id: "f2", rendezvous: other.code.rendezvous });
    expect((await laptop.error("f2")).code).toBe("unknown_link");
    // The phone connects on its user's route, where alice's object admits it by her list.
    phone.close();
    const onRoute = await TestClient.open(hub, ORIGIN, undefined, "alice");
    onRoute.send(await onRoute.authFrame("alice", keys, { device: pending.offer.device }));
    const welcome = await onRoute.next("welcome");
    expect(welcome.devices?.version).toBe(2);
    expect(welcome.address).toBe(`alice.${pending.offer.device}`);
    // A route that names both a user and a rendezvous is refused.
    const res = await SELF.fetch(
      `${BASE}/ws?hub=${hub}&user=alice&link=${pending.code.rendezvous}`,
      { headers: { Upgrade: "websocket", Origin: ORIGIN } },
    );
    expect(res.status).toBe(400);
    await res.arrayBuffer();
    onRoute.close();
    laptop.close();
  });

  it("offer, fetch, answer: the new device gets the answer on its waiting socket and then authenticates as a listed device", async () => {
    const hub = freshHub("link");
    const { keys, laptop, list } = await alice(hub);
    const { c: phone, pending } = await newDevice(hub);
    const answer = await fetchAndAnswer(hub, laptop, keys, list, pending);
    const got = await phone.next("link_answered");
    expect(got.answer).toEqual(answer);
    // The seal and MAC hold end to end; the stand-in seed is not the list's identity, which is
    // exactly what the new device checks last.
    await expect(openLinkAnswer(pending, got.answer)).rejects.toMatchObject({ code: "not_listed" });
    // Same socket, now authenticated as the phone the list names: a linked device (§4.7).
    phone.send(await phone.authFrame("alice", keys, { device: pending.offer.device }));
    const welcome = await phone.next("welcome");
    expect(welcome.devices?.version).toBe(2);
    // The offer went with the wait: nothing is fetched under the rendezvous any more.
    laptop.send({ v: 1, t: "link_fetch", id: "f2", rendezvous: pending.code.rendezvous });
    expect((await laptop.error("f2")).code).toBe("unknown_link");
  });

  it("an answer the new device refuses does not end its wait; the genuine one still arrives", async () => {
    const hub = freshHub("link");
    const { keys, laptop, list } = await alice(hub);
    const { c: phone, pending } = await newDevice(hub);
    const { transfer } = await transferFor(keys, list, pending);
    // Mallory learned the rendezvous (the relay could) but not the code's secret half.
    const mallory = await TestClient.connect(hub, "mallory");
    const forged = await sealLinkAnswer(
      hub,
      { ...pending.code, secret: newLinkCode().secret },
      pending.offer,
      transfer,
    );
    mallory.c.send({
      v: 1,
      t: "link_answer",
      id: "m1",
      rendezvous: pending.code.rendezvous,
      answer: forged,
    });
    await mallory.c.next("accepted", (f) => f.id === "m1");
    const first = await phone.next("link_answered");
    await expect(openLinkAnswer(pending, first.answer)).rejects.toBeInstanceOf(LinkError);
    await expect(openLinkAnswer(pending, first.answer)).rejects.toMatchObject({
      code: "code_mismatch",
    });
    const genuine = await sealLinkAnswer(hub, pending.code, pending.offer, transfer);
    laptop.send({
      v: 1,
      t: "link_answer",
      id: "a1",
      rendezvous: pending.code.rendezvous,
      answer: genuine,
    });
    await laptop.next("accepted", (f) => f.id === "a1");
    expect((await phone.next("link_answered")).answer).toEqual(genuine);
  });

  it("refusals: a taken rendezvous, no waiting socket, one offer per socket, link frames in the wrong state", async () => {
    const hub = freshHub("link");
    const { laptop } = await alice(hub);
    const { c: phone, pending } = await newDevice(hub);
    // Another socket under the same rendezvous.
    const other = await TestClient.open(hub);
    other.send({
      v: 1,
      t: "link_offer",
      id: "o2",
      rendezvous: pending.code.rendezvous,
      offer: pending.offer,
    });
    expect((await other.error("o2")).code).toBe("link_taken");
    // A second offer from the waiting socket.
    phone.send({
      v: 1,
      t: "link_offer",
      id: "o3",
      rendezvous: newLinkCode().rendezvous,
      offer: pending.offer,
    });
    expect((await phone.error("o3")).code).toBe("limit_reached");
    // A waiting socket is still unauthenticated: nothing else is allowed.
    phone.send({ v: 1, t: "link_fetch", id: "f0", rendezvous: pending.code.rendezvous });
    expect((await phone.error("f0")).code).toBe("not_authenticated");
    // An authenticated socket makes no offer.
    laptop.send({
      v: 1,
      t: "link_offer",
      id: "o4",
      rendezvous: newLinkCode().rendezvous,
      offer: pending.offer,
    });
    expect((await laptop.error("o4")).code).toBe("already_authenticated");
    // Nothing waits under an unknown rendezvous.
    const unknown = newLinkCode().rendezvous;
    laptop.send({ v: 1, t: "link_fetch", id: "f1", rendezvous: unknown });
    expect((await laptop.error("f1")).code).toBe("unknown_link");
    const answer = await sealLinkAnswer(hub, pending.code, pending.offer, {
      v: 1,
      username: "alice",
      identitySeed: toB64u(new Uint8Array(32)),
      devices: (await alice(freshHub("x"))).list,
      contacts: [],
    });
    laptop.send({ v: 1, t: "link_answer", id: "a1", rendezvous: unknown, answer });
    expect((await laptop.error("a1")).code).toBe("unknown_link");
    // The waiting socket closes: its offer goes, and the rendezvous is free again.
    phone.close();
    await phone.waitClosed();
    for (let i = 0; ; i++) {
      laptop.send({ v: 1, t: "link_fetch", id: `g${i}`, rendezvous: pending.code.rendezvous });
      const f = await laptop.next("error", (e) => e.id === `g${i}`).catch(() => null);
      if (f?.code === "unknown_link") break;
      if (i > 20) throw new Error("the closed socket's offer is still served");
    }
    other.send({
      v: 1,
      t: "link_offer",
      id: "o5",
      rendezvous: pending.code.rendezvous,
      offer: pending.offer,
    });
    await other.next("accepted", (f) => f.id === "o5");
  });

  it("bad link frames are bad_frame: a rendezvous outside Crockford base32, an oversized transfer", async () => {
    const hub = freshHub("link");
    const { laptop } = await alice(hub);
    const { pending } = await newDevice(hub);
    laptop.send({ v: 1, t: "link_fetch", id: "b1", rendezvous: "ILOU0000" });
    expect((await laptop.error("b1")).code).toBe("bad_frame");
    laptop.send({
      v: 1,
      t: "link_answer",
      id: "b2",
      rendezvous: pending.code.rendezvous,
      answer: {
        enc: "A".repeat(1494),
        ciphertext: "A".repeat(LIMITS.maxLinkTransferChars + 4),
        mac: "A".repeat(43),
      },
    });
    const e = await laptop.error("b2");
    expect(["bad_frame", "too_large"]).toContain(e.code);
  });
});
