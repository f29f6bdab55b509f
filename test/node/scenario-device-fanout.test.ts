/**
 * 1:1 messages over several devices (PROTOCOL.md §4.9), through the product's relay in the Node
 * harness: alice links her phone for real (§4.8), then every message reaches each of the
 * recipient's devices on its own pairwise session, and each device's sent messages appear on the
 * sender's other devices (sent-sync). Removing the phone stops everything after it: the relay
 * refuses copies for it, the sender learns the new list, and the phone's whole store opens
 * nothing sent afterwards.
 */
import { describe, expect, it } from "vitest";
import type { ChatMessage, ParleyEvent } from "../../shared/core/client-api";
import { KEYS } from "../../shared/core/store";
import { ed25519KeyPairFromSeed, randomBytes } from "../../shared/crypto";
import {
  connect,
  disconnect,
  lines,
  newUser,
  say,
  type TestUser,
  timers,
} from "../support/clients";
import { link, newPhone, type Phone, setupAliceAndBob, through } from "../support/linked-device";
import { NodeRelay } from "../support/node-relay";

const BOB = "dm:bob" as const;
const ALICE = "dm:alice" as const;

function texts(events: ParleyEvent[], conv: string, direction: "in" | "out"): string[] {
  return events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .filter((m) => m.conversationId === conv && m.direction === direction)
    .map((m) => m.text);
}

async function settled(relay: NodeRelay, rounds = 6): Promise<void> {
  for (let i = 0; i < rounds; i++) await relay.settle();
}

/** alice's laptop and phone (linked), bob single-device; they have talked before the link. */
async function twoDevices() {
  const { relay, alice, bob, seed } = await setupAliceAndBob();
  await say(alice, BOB, "before the phone");
  await settled(relay);
  const phone = await newPhone(relay);
  await link(relay, alice, seed, phone);
  await settled(relay);
  if (phone.client === null) throw new Error("the phone did not link");
  return { relay, alice, bob, phone, seed };
}

/** bob writes to alice: copies go out, and none names the (removed) phone. */
async function bobWritesNotToThePhone(
  relay: NodeRelay,
  bob: TestUser,
  text: string,
  phoneId: string | undefined,
): Promise<void> {
  const mark = relay.clientLog.length;
  await say(bob, ALICE, text);
  await settled(relay);
  const sends = relay.clientLog
    .slice(mark)
    .filter((x) => x.from === "bob" && x.frame.t === "send" && x.frame.to === "alice");
  expect(sends.length).toBeGreaterThan(0);
  expect(sends.every((x) => x.frame.t === "send" && x.frame.device !== phoneId)).toBe(true);
}

const phoneSays = async (relay: NodeRelay, phone: Phone, text: string) => {
  await through(relay, (phone.client as NonNullable<Phone["client"]>).sendText(BOB, text));
  await settled(relay);
};

describe("1:1 messages over alice's two devices (§4.9)", () => {
  it("each device of alice gets bob's messages; each of hers shows on the other as sent", async () => {
    const { relay, alice, bob, phone } = await twoDevices();
    // The laptop writes: bob reads it, and the phone shows it as alice's own, in bob's chat.
    await say(alice, BOB, "hi from the laptop");
    await settled(relay);
    expect(texts(bob.events, ALICE, "in")).toContain("hi from the laptop");
    expect(texts(phone.events, BOB, "out")).toContain("hi from the laptop");
    // bob answers: both of alice's devices read it, each on its own session.
    await say(bob, ALICE, "hi alice");
    await settled(relay);
    expect(texts(alice.events, BOB, "in")).toContain("hi alice");
    expect(texts(phone.events, BOB, "in")).toContain("hi alice");
    // bob is alice's contact on the phone too (the transfer's decision): no message request.
    const onPhone = phone.events.flatMap((e) =>
      e.type === "conversation" && e.conversation.id === BOB ? [e.conversation] : [],
    );
    expect(onPhone.length).toBeGreaterThan(0);
    expect(onPhone.every((c) => c.contact === undefined)).toBe(true);
    // The phone writes: bob reads it, the laptop shows it as sent.
    await phoneSays(relay, phone, "hi from the phone");
    expect(texts(bob.events, ALICE, "in")).toContain("hi from the phone");
    expect(texts(alice.events, BOB, "out")).toContain("hi from the phone");
    // Once bob knew alice's list, each copy went to a named device of it, never one body twice.
    const sends = relay.clientLog.filter(
      (x) => x.frame.t === "send" && x.frame.to === "alice" && x.from === "bob",
    );
    const devices = new Set(sends.map((x) => (x.frame.t === "send" ? x.frame.device : "")));
    devices.delete(undefined);
    expect(devices.size).toBe(2);
    const bodies = sends.map((x) => (x.frame.t === "send" ? x.frame.body : ""));
    expect(new Set(bodies).size).toBe(bodies.length);
    // Nothing went wrong anywhere.
    for (const u of [alice, bob] as TestUser[])
      expect(u.events.filter((e) => e.type === "error")).toEqual([]);
    expect(phone.events.filter((e) => e.type === "error")).toEqual([]);
    // bob learnt alice's list from the first message that named a device (§4.9).
    const pinned = (await bob.store.get(KEYS.devices("alice"))) as { list: { devices: unknown[] } };
    expect(pinned.list.devices).toHaveLength(2);
  });

  it("alice's devices announce each list change to bob end to end: he writes to the new phone at once, and never to it after its removal", async () => {
    const { relay, alice, bob, phone } = await twoDevices();
    // alice has not written since the link: bob knows of the phone from the laptop's announcement.
    const pinned = (await bob.store.get(KEYS.devices("alice"))) as { list: { devices: unknown[] } };
    expect(pinned.list.devices).toHaveLength(2);
    // The list's order is by device id; what bob is told names both.
    const told = lines(bob, ALICE).filter((l) => l.kind === "device_added");
    expect(told).toHaveLength(1);
    expect(told[0]?.text).toMatch(/^alice uses 2 devices: (laptop, phone|phone, laptop)$/);
    await say(bob, ALICE, "hi, both of you");
    await settled(relay);
    expect(texts(phone.events, BOB, "in")).toContain("hi, both of you");
    expect(texts(alice.events, BOB, "in")).toContain("hi, both of you");
    const phoneId = (await alice.client.ownDevices()).devices.find((d) => d.name === "phone")?.id;
    // The laptop writes too, so it holds a session with the phone (its sync copy).
    await say(alice, BOB, "the laptop too");
    await settled(relay);
    expect(await bob.store.get(KEYS.dmDevice("alice", phoneId ?? ""))).toBeDefined();
    expect(await alice.store.get(KEYS.dmDevice("alice", phoneId ?? ""))).toBeDefined();
    await through(relay, alice.client.removeDevice(phoneId ?? ""));
    await settled(relay);
    // bob saw the removal before sending anything, so nothing of his names the phone again:
    // not one copy for the relay to refuse (or, were it hostile, to hand to the phone).
    expect(lines(bob, ALICE).map((l) => l.kind)).toContain("device_removed");
    // Neither bob nor the laptop keeps a session with the removed phone.
    expect(await bob.store.get(KEYS.dmDevice("alice", phoneId ?? ""))).toBeUndefined();
    expect(await alice.store.get(KEYS.dmDevice("alice", phoneId ?? ""))).toBeUndefined();
    await bobWritesNotToThePhone(relay, bob, "just the laptop now", phoneId);
    expect(relay.log.some((x) => x.to === "bob" && x.frame.t === "error")).toBe(false);
    expect(texts(alice.events, BOB, "in")).toContain("just the laptop now");
  });

  it("after the laptop removes the phone, nothing bob sends opens with the phone's whole store", async () => {
    const { relay, alice, bob, phone } = await twoDevices();
    // bob learns of the phone from the first message of alice's that names a device (§4.9).
    await say(alice, BOB, "I have a phone now");
    await settled(relay);
    await say(bob, ALICE, "to both");
    await settled(relay);
    expect(texts(phone.events, BOB, "in")).toContain("to both");
    const phoneId = (await alice.client.ownDevices()).devices.find((d) => d.name === "phone")?.id;
    if (phoneId === undefined) throw new Error("no phone on the list");
    // A relay that withholds alice's end-to-end announcement of the new list from bob (§4.9).
    relay.intercept = (to, f) =>
      to === "bob" && f.t === "deliver" && f.from === "alice" ? null : f;
    await through(relay, alice.client.removeDevice(phoneId));
    await settled(relay);
    relay.intercept = null;
    // bob still holds the old list: his next copy for the phone is refused by the relay
    // (unknown_device), which makes him fetch the new list; the one after names no phone.
    const before = relay.clientLog.length;
    await say(bob, ALICE, "after removal 1");
    await settled(relay);
    // The refusal is shown (a relay hiding a listed device would be too), then the list is learnt.
    expect(
      bob.events.some(
        (e) => e.type === "error" && e.relayCode === "unknown_device" && e.conversationId === ALICE,
      ),
    ).toBe(true);
    expect(lines(bob, ALICE).map((l) => l.kind)).toContain("device_removed");
    await bobWritesNotToThePhone(relay, bob, "after removal 2", phoneId);
    expect(texts(alice.events, BOB, "in")).toEqual(
      expect.arrayContaining(["after removal 1", "after removal 2"]),
    );
    // A relay that hands the phone everything bob sent alice after the removal: the phone's
    // store opens none of it (each body is under a session with another device).
    const afterRemoval = relay.clientLog
      .slice(before)
      .filter((x) => x.from === "bob" && x.frame.t === "send" && x.frame.to === "alice");
    const client = phone.client as NonNullable<Phone["client"]>;
    const seen = phone.events.length;
    let mid = 1_000_000;
    for (const x of afterRemoval) {
      if (x.frame.t !== "send" || x.frame.device === phoneId) continue;
      await client
        .onServerFrame({
          v: 1,
          t: "deliver",
          mid: String(mid++),
          from: "bob",
          fromKey: bob.client.identityKey,
          ts: relay.now(),
          item: { kind: "direct", body: x.frame.body },
        })
        .catch(() => undefined);
    }
    const opened = texts(phone.events.slice(seen), BOB, "in");
    expect(opened).toEqual([]);
    // The laptop, which signed the removal, copies nothing more to the phone.
    const fromLaptop = relay.clientLog.length;
    await say(alice, BOB, "laptop after removal");
    await settled(relay);
    const copies = relay.clientLog
      .slice(fromLaptop)
      .filter((x) => x.from === "alice" && x.frame.t === "send");
    expect(copies.length).toBeGreaterThan(0);
    expect(copies.every((x) => x.frame.t === "send" && x.frame.device !== phoneId)).toBe(true);
    expect(texts(bob.events, ALICE, "in")).toContain("laptop after removal");
  });

  it("a message the relay drops from one of alice's devices shows as missing, whatever her other device sends", async () => {
    const { relay, alice, bob, phone } = await twoDevices();
    await phoneSays(relay, phone, "warm up");
    expect(texts(bob.events, ALICE, "in")).toContain("warm up");
    const phoneId = (await alice.client.ownDevices()).devices.find((d) => d.name === "phone")?.id;
    let dropped = 0;
    relay.intercept = (to, f) => {
      if (to === "bob" && f.t === "deliver" && f.fromDevice === phoneId && dropped === 0) {
        dropped++;
        return null;
      }
      return f;
    };
    await phoneSays(relay, phone, "lost on the way to bob");
    relay.intercept = null;
    await phoneSays(relay, phone, "after the gap");
    // The laptop's messages (its own session with bob) settle nothing of the phone's gap.
    await say(alice, BOB, "from the laptop meanwhile");
    await settled(relay);
    expect(dropped).toBe(1);
    expect(texts(bob.events, ALICE, "in")).toEqual(
      expect.arrayContaining(["after the gap", "from the laptop meanwhile"]),
    );
    expect(texts(bob.events, ALICE, "in")).not.toContain("lost on the way to bob");
    timers.fire();
    await settled(relay);
    const missing = lines(bob, ALICE).filter((l) => l.kind === "missing");
    expect(missing.map((l) => l.text)).toEqual(["1 message from alice did not arrive"]);
  });

  it("the laptop, offline for days, catches up on what bob and the phone sent, in order", async () => {
    const { relay, alice, bob, phone } = await twoDevices();
    await say(bob, ALICE, "warm up");
    await settled(relay);
    await disconnect(alice);
    await say(bob, ALICE, "monday");
    await phoneSays(relay, phone, "tuesday, from the phone");
    relay.clock += 3 * 24 * 60 * 60 * 1000;
    await say(bob, ALICE, "friday");
    await settled(relay);
    expect(texts(alice.events, BOB, "in")).not.toContain("monday");
    await connect(alice);
    await settled(relay);
    expect(texts(alice.events, BOB, "in").slice(-2)).toEqual(["monday", "friday"]);
    expect(texts(alice.events, BOB, "out")).toContain("tuesday, from the phone");
    const order = alice.events.flatMap((e) =>
      e.type === "message" && e.message.conversationId === BOB ? [e.message.text] : [],
    );
    expect(order.indexOf("monday")).toBeLessThan(order.indexOf("friday"));
    expect(alice.events.filter((e) => e.type === "error")).toEqual([]);
  });

  it("a copy for a device whose bundle answer was lost goes out after bob's next connection", async () => {
    const { relay, alice, bob, seed } = await twoDevices();
    await say(alice, BOB, "hello");
    await settled(relay);
    // A tablet joins alice's list; bob hears of it end to end and has no session with it yet.
    const tablet = await newPhone(relay, "tablet");
    await link(relay, alice, seed, tablet);
    await settled(relay);
    // The relay loses bob's bundle answer for the tablet: that copy waits in its queue.
    relay.intercept = (to, f) => (to === "bob" && f.t === "bundle" ? null : f);
    await say(bob, ALICE, "for all three");
    await settled(relay);
    relay.intercept = null;
    expect(texts(tablet.events, BOB, "in")).not.toContain("for all three");
    expect(texts(alice.events, BOB, "in")).toContain("for all three");
    // bob reconnects: the waiting session starts again and the copy goes.
    await disconnect(bob);
    await connect(bob);
    await settled(relay);
    expect(texts(tablet.events, BOB, "in")).toContain("for all three");
  });

  it("a device the relay makes up is refused: not on alice's signed list, nothing of it is shown", async () => {
    const { relay, alice, bob } = await twoDevices();
    await say(alice, BOB, "real");
    await settled(relay);
    const forged = "AAAAAAAAAAAAAAAAAAAAAA";
    relay.intercept = (to, f) =>
      to === "bob" && f.t === "deliver" && f.from === "alice" ? { ...f, fromDevice: forged } : f;
    await say(alice, BOB, "via a forged device");
    await settled(relay);
    relay.intercept = null;
    expect(texts(bob.events, ALICE, "in")).toContain("real");
    expect(texts(bob.events, ALICE, "in")).not.toContain("via a forged device");
    expect(
      bob.events.some((e) => e.type === "error" && e.message.includes("device list does not name")),
    ).toBe(true);
  });

  it("reading on the phone marks it read on the laptop; with read receipts off bob hears nothing", async () => {
    const { relay, alice, bob, phone } = await twoDevices();
    await say(bob, ALICE, "read me");
    await settled(relay);
    const id = phone.events.flatMap((e) =>
      e.type === "message" && e.message.text === "read me" ? [e.message.id] : [],
    )[0];
    if (id === undefined) throw new Error("the phone did not get it");
    const client = phone.client as NonNullable<Phone["client"]>;
    const bobSaw = bob.events.length;
    await through(relay, client.sendAction(BOB, { t: "read", ids: [id], ownDevicesOnly: true }));
    await settled(relay);
    const readOn = (events: ParleyEvent[]) =>
      events.flatMap((e) =>
        e.type === "content" && e.content.t === "read" ? [[e.direction, e.content.ids]] : [],
      );
    expect(readOn(alice.events)).toContainEqual(["out", [id]]);
    expect(readOn(bob.events.slice(bobSaw))).toEqual([]);
    // With receipts on, bob's devices hear it too, and the laptop still does.
    const laptopSaw = alice.events.length;
    await through(relay, client.sendAction(BOB, { t: "read", ids: [id] }));
    await settled(relay);
    expect(readOn(bob.events.slice(bobSaw))).toContainEqual(["in", [id]]);
    expect(readOn(alice.events.slice(laptopSaw))).toContainEqual(["out", [id]]);
  });

  it("2 users × 2 devices: every message reaches the other's two devices and shows as sent on the sender's other one", async () => {
    const relay = new NodeRelay();
    const aliceSeed = randomBytes(32);
    const bobSeed = randomBytes(32);
    const alice = await newUser(relay, "alice", {
      identity: await ed25519KeyPairFromSeed(aliceSeed),
    });
    const bob = await newUser(relay, "bob", { identity: await ed25519KeyPairFromSeed(bobSeed) });
    await connect(alice, bob);
    await alice.client.startChat("bob");
    await settled(relay);
    await say(alice, BOB, "hello bob");
    await settled(relay);
    const alicePhone = await newPhone(relay, "alice-phone");
    await link(relay, alice, aliceSeed, alicePhone);
    await settled(relay);
    const bobPhone = await newPhone(relay, "bob-phone");
    await link(relay, bob, bobSeed, bobPhone);
    await settled(relay);
    const ap = alicePhone.client as NonNullable<Phone["client"]>;
    const bp = bobPhone.client as NonNullable<Phone["client"]>;
    // alice's phone writes first: it knows no list of bob's yet (it has no session with bob's
    // laptop, which announced bob's list to alice's laptop only), so its first message reaches
    // bob's current device; bob's answering device names itself and the phone learns the list
    // (§4.9). From then on, both of bob's devices.
    await through(relay, ap.sendText(BOB, "first from alice's phone"));
    await settled(relay);
    expect(texts(bob.events, ALICE, "in")).toContain("first from alice's phone");
    expect(texts(alice.events, BOB, "out")).toContain("first from alice's phone");
    await through(relay, ap.sendText(BOB, "from alice's phone"));
    await settled(relay);
    expect(texts(bob.events, ALICE, "in")).toContain("from alice's phone");
    expect(texts(bobPhone.events, ALICE, "in")).toContain("from alice's phone");
    expect(texts(alice.events, BOB, "out")).toContain("from alice's phone");
    // bob's phone answers: both of alice's devices read it, bob's laptop shows it as sent.
    await through(relay, bp.sendText(ALICE, "from bob's phone"));
    await settled(relay);
    expect(texts(alice.events, BOB, "in")).toContain("from bob's phone");
    expect(texts(alicePhone.events, BOB, "in")).toContain("from bob's phone");
    expect(texts(bob.events, ALICE, "out")).toContain("from bob's phone");
    // And the laptops, each to the other's two devices.
    await say(bob, ALICE, "from bob's laptop");
    await settled(relay);
    expect(texts(alicePhone.events, BOB, "in")).toContain("from bob's laptop");
    expect(texts(bobPhone.events, ALICE, "out")).toContain("from bob's laptop");
    // Four devices, every pair its own session: no body was sent twice.
    const bodies = relay.clientLog.flatMap((x) => (x.frame.t === "send" ? [x.frame.body] : []));
    expect(new Set(bodies).size).toBe(bodies.length);
    for (const events of [alice.events, bob.events, alicePhone.events, bobPhone.events])
      expect(events.filter((e) => e.type === "error")).toEqual([]);
  });
});
