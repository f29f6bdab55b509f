/**
 * Several devices of one identity on the relay (PROTOCOL.md §4.7): devices on the identity's
 * signed list connect side by side, each with its own mailbox; a `send` names one device; a
 * device the next list drops is disconnected and refused, and nothing more is stored for it.
 */

import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { nextDeviceList, signDeviceList } from "../../shared/core/devices";
import { ed25519Sign, generateIdentityKeyPair } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { CLOSE, type DeviceList, LIMITS } from "../../shared/protocol";
import {
  commitFrame,
  freshHub,
  type Keys,
  newKeys,
  oneTimePrekeys,
  signedPrekey,
  TestClient,
  wrapFor,
} from "./support/client";
import { newSubscription, received, subscribeFrame, until } from "./support/push-service";
import { countTable, relaySql, stubFor } from "./support/relay-store";

const LAPTOP = toB64u(new Uint8Array(16).fill(1));
const PHONE = toB64u(new Uint8Array(16).fill(2));
const OTHER = toB64u(new Uint8Array(16).fill(3));

async function entry(id: string, name: string) {
  return { id, key: toB64u((await generateIdentityKeyPair()).publicKey), name, addedAt: 1 };
}
const sign = (keys: Keys) => (m: Uint8Array) => ed25519Sign(keys.identity.privateKey, m);

async function device(hub: string, keys: Keys, id: string, claim = false) {
  const c = await TestClient.open(hub);
  c.send(await c.authFrame("alice", keys, { device: id, claim }));
  return c;
}

/** Alice's laptop (current device) online with a list {laptop, phone} published. */
async function setup() {
  const hub = freshHub();
  const keys = await newKeys();
  const laptop = await device(hub, keys, LAPTOP, true);
  await laptop.next("welcome");
  const v1 = await signDeviceList(
    {
      identityKey: keys.identityKey,
      version: 1,
      devices: [await entry(LAPTOP, "laptop"), await entry(PHONE, "phone")],
      removed: [],
    },
    sign(keys),
  );
  laptop.send({ v: 1, t: "devices", id: "d1", list: v1 });
  await laptop.next("accepted", (f) => f.id === "d1");
  const { c: bob } = await TestClient.connect(hub, "bob");
  return { hub, keys, laptop, bob, v1 };
}

/** `commitFrame` of the support client with the fields filled in (no TestClient leaf lookup). */
function commitFor(group: string, id: string, parentEpoch: number, members: string[]) {
  return { ...commitFrame(id, group, parentEpoch, members), interim: toB64u(new Uint8Array(32)) };
}

/** setup() with alice's phone connected too, and the laptop founding "team" (epoch 1). */
async function laptopFoundsTeam() {
  const s = await setup();
  s.laptop.keys = s.keys;
  s.laptop.username = "alice";
  const phone = await device(s.hub, s.keys, PHONE);
  phone.keys = s.keys;
  const welcome = await phone.next("welcome");
  const commit = (id: string, parentEpoch: number, members: string[]) =>
    commitFor("team", id, parentEpoch, members);
  s.laptop.send({ v: 1, t: "join", id: "j1", group: "team" });
  await s.laptop.next("accepted", (f) => f.id === "j1");
  s.laptop.send(commit("c1", 0, ["alice"]));
  await s.laptop.next("accepted", (f) => f.id === "c1");
  return { ...s, phone, addr: `alice.${PHONE}`, welcome, commit };
}

const deliveredBody = async (c: TestClient) => {
  const d = await c.next("deliver");
  c.send({ v: 1, t: "ack", mids: [d.mid] });
  return d.item.kind === "direct" ? d.item.body : null;
};

describe("linked devices on the relay", () => {
  it("a listed device connects beside the current one; neither is replaced", async () => {
    const { hub, keys, laptop, bob, v1 } = await setup();
    const phone = await device(hub, keys, PHONE);
    const w = await phone.next("welcome");
    expect(w.devices).toEqual(v1);
    expect(w.groups).toEqual([]);
    await laptop.none("error", 300);
    expect(laptop.closed).toBeNull();
    // A newer list stored by one device is pushed to the others at once (§4.6), not to itself.
    const v2 = await signDeviceList(
      nextDeviceList(v1, { add: [await entry(OTHER, "tablet")] }),
      sign(keys),
    );
    laptop.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await laptop.next("accepted", (f) => f.id === "d2");
    expect((await phone.next("device_list")).list).toEqual(v2);
    await laptop.none("device_list", 300);
    // The same device again replaces only its own older connection.
    const phone2 = await device(hub, keys, PHONE);
    await phone2.next("welcome");
    expect((await phone.error()).code).toBe("replaced");
    expect(laptop.closed).toBeNull();
    for (const c of [laptop, phone2, bob]) c.close();
  });

  it("each device has its own mailbox: a send names a device, an offline one catches up", async () => {
    const { hub, keys, laptop, bob } = await setup();
    bob.send({ v: 1, t: "send", id: "s1", to: "alice", body: "AAAA" });
    bob.send({ v: 1, t: "send", id: "s2", to: "alice", device: PHONE, body: "BBBB" });
    bob.send({ v: 1, t: "send", id: "s3", to: "alice", device: LAPTOP, body: "CCCC" });
    for (const id of ["s1", "s2", "s3"]) await bob.next("accepted", (f) => f.id === id);
    expect(await deliveredBody(laptop)).toBe("AAAA");
    expect(await deliveredBody(laptop)).toBe("CCCC");
    await laptop.none("deliver", 300);
    // The phone was offline: its item waited in its own mailbox.
    const phone = await device(hub, keys, PHONE);
    await phone.next("welcome");
    expect(await deliveredBody(phone)).toBe("BBBB");
    await phone.none("deliver", 300);
    // Sent-sync: the laptop copies its own message to the phone.
    laptop.send({ v: 1, t: "send", id: "own", to: "alice", device: PHONE, body: "DDDD" });
    await laptop.next("accepted", (f) => f.id === "own");
    const d = await phone.next("deliver");
    expect(d.from).toBe("alice");
    expect(d.item).toEqual({ kind: "direct", body: "DDDD" });
    for (const c of [laptop, phone, bob]) c.close();
  });

  it("deliver names the sending device of an identity with a list, live and stored (§4.9)", async () => {
    const { hub, keys, laptop, bob } = await setup();
    const phone = await device(hub, keys, PHONE);
    await phone.next("welcome");
    // Live: handed to Bob's connection as it is stored.
    phone.send({ v: 1, t: "send", id: "p", to: "bob", body: "AAAA" });
    laptop.send({ v: 1, t: "send", id: "l", to: "bob", body: "BBBB" });
    const fromPhone = await bob.next(
      "deliver",
      (f) => f.item.kind === "direct" && f.item.body === "AAAA",
    );
    const fromLaptop = await bob.next(
      "deliver",
      (f) => f.item.kind === "direct" && f.item.body === "BBBB",
    );
    expect([fromPhone.from, fromPhone.fromDevice]).toEqual(["alice", PHONE]);
    expect([fromLaptop.from, fromLaptop.fromDevice]).toEqual(["alice", LAPTOP]);
    bob.send({ v: 1, t: "ack", mids: [fromPhone.mid, fromLaptop.mid] });
    // A sender without a list names no device.
    bob.send({ v: 1, t: "send", id: "b", to: "alice", body: "CCCC" });
    const fromBob = await laptop.next("deliver");
    expect(fromBob.from).toBe("bob");
    expect("fromDevice" in fromBob).toBe(false);
    laptop.send({ v: 1, t: "ack", mids: [fromBob.mid] });
    // Stored: a copy for the phone while it is offline keeps its sending device.
    phone.close();
    await phone.waitClosed();
    laptop.send({ v: 1, t: "send", id: "own", to: "alice", device: PHONE, body: "DDDD" });
    await laptop.next("accepted", (f) => f.id === "own");
    const phone2 = await device(hub, keys, PHONE);
    await phone2.next("welcome");
    const stored = await phone2.next("deliver");
    expect([stored.from, stored.fromDevice, stored.item]).toEqual([
      "alice",
      LAPTOP,
      { kind: "direct", body: "DDDD" },
    ]);
    phone2.send({ v: 1, t: "ack", mids: [stored.mid] });
    // Frames of one socket are handled in order: an answered frame after each ack means the
    // ack was handled.
    for (const [c, id] of [
      [bob, "f1"],
      [laptop, "f2"],
      [phone2, "f3"],
    ] as const) {
      c.send({ v: 1, t: "send", id, to: "nobody", body: "AAAA" });
      expect((await c.error(id)).code).toBe("unknown_user");
    }
    // The device of an acknowledged row goes with it, when the relay's flush deletes the row
    // (within FLUSH_DELAY_MS, PROTOCOL §7.3).
    const left = () =>
      runInDurableObject(stubFor(hub), (_i, state) =>
        Number(relaySql(state).exec("SELECT COUNT(*) AS n FROM mailbox_devices").one().n),
      );
    for (let i = 0; (await left()) > 0; i++) {
      if (i === 60) throw new Error("the acknowledged row's device was never deleted");
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const c of [laptop, phone2, bob]) c.close();
  });

  it("a device not on the list gets nothing: unknown_device, and its auth follows the single-device rule", async () => {
    const { hub, keys, laptop, bob } = await setup();
    bob.send({ v: 1, t: "send", id: "x", to: "alice", device: OTHER, body: "AAAA" });
    expect((await bob.error("x")).code).toBe("unknown_device");
    const other = await device(hub, keys, OTHER);
    expect((await other.error()).code).toBe("device_replaced");
    for (const c of [laptop, bob]) c.close();
  });

  it("each device is its own group member, under its mailbox address (§4.7, §9.1)", async () => {
    const { hub, keys, laptop, bob, v1, phone, addr, welcome, commit } = await laptopFoundsTeam();
    expect(welcome.address).toBe(addr);
    // The phone joins as itself: its leaf keys are signed by the identity key it holds.
    phone.send({ v: 1, t: "join", id: "j2", group: "team" });
    await phone.next("accepted", (f) => f.id === "j2");
    const pending = await laptop.next("group", (f) =>
      f.state.pendingJoins.some((m) => m.username === addr),
    );
    expect(pending.state.pendingJoins.find((m) => m.username === addr)?.identityKey).toBe(
      keys.identityKey,
    );
    laptop.send(commit("c2", 1, ["alice", addr]));
    await laptop.next("accepted", (f) => f.id === "c2");
    const w = await phone.next("deliver", (f) => f.item.kind === "commit");
    expect(w.from).toBe("alice");
    expect(w.item.kind === "commit" && w.item.wrap).toBe(wrapFor(addr));
    phone.send({ v: 1, t: "ack", mids: [w.mid] });
    // What the phone sends in the group comes from its address, to the laptop's mailbox too.
    await phone.next("group", (f) => f.state.epoch === 2);
    phone.send({ v: 1, t: "group_send", id: "g1", group: "team", epoch: 2, body: "AAAA" });
    await phone.next("accepted", (f) => f.id === "g1");
    const m = await laptop.next("deliver", (f) => f.item.kind === "group");
    expect(m.from).toBe(addr);
    expect(m.fromKey).toBe(keys.identityKey);
    // A linked device's welcome lists its own groups.
    phone.close();
    await phone.waitClosed();
    const again = await device(hub, keys, PHONE);
    const w2 = await again.next("welcome");
    expect(w2.groups.map((g) => g.group)).toEqual(["team"]);
    expect(w2.groups[0]?.members.map((x) => x.username)).toEqual(["alice", addr]);
    again.close();
    await again.waitClosed();
    // A list that removes the phone takes it out of its groups (pending, the relay's word)...
    const v2 = await signDeviceList(nextDeviceList(v1, { remove: [PHONE] }), sign(keys));
    laptop.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await laptop.next("accepted", (f) => f.id === "d2");
    await laptop.next("group", (f) => f.state.pendingLeaves.includes(addr));
    // ...and the laptop hands the members the phone's signed leave (§9.7.4).
    laptop.send({ v: 1, t: "leave", id: "l1", group: "team", member: addr, auth: "AAAA" });
    await laptop.next("accepted", (f) => f.id === "l1");
    const auths = await laptop.next("group", (f) => (f.state.leaveAuths ?? []).length > 0);
    expect(auths.state.leaveAuths).toEqual([{ username: addr, auth: "AAAA" }]);
    // Another identity cannot speak for alice's devices; nor can a device name itself this way.
    bob.send({ v: 1, t: "leave", id: "l2", group: "team", member: "alice" });
    expect((await bob.error("l2")).code).toBe("not_member");
    laptop.send({ v: 1, t: "leave", id: "l3", group: "team", member: "alice" });
    expect((await laptop.error("l3")).code).toBe("not_member");
    for (const c of [laptop, bob]) c.close();
  });

  it("a reclaimed name takes its old identity's devices out of their groups too (§4.3, §4.7)", async () => {
    const { hub, laptop, bob, phone, addr, commit } = await laptopFoundsTeam();
    for (const [c, id] of [
      [phone, "j2"],
      [bob, "j3"],
    ] as const) {
      c.send({ v: 1, t: "join", id, group: "team" });
      await c.next("accepted", (f) => f.id === id);
    }
    await laptop.next("group", (f) => f.state.pendingJoins.length === 2);
    laptop.send(commit("c2", 1, ["alice", addr, "bob"]));
    await laptop.next("accepted", (f) => f.id === "c2");
    // Everything delivered to alice's devices is acknowledged (undelivered mail holds a name).
    for (const [c, n] of [
      [laptop, 2],
      [phone, 1],
    ] as const) {
      for (let i = 0; i < n; i++) {
        const d = await c.next("deliver", (f) => f.item.kind === "commit");
        c.send({ v: 1, t: "ack", mids: [d.mid] });
      }
      await c.sync();
      c.close();
      await c.waitClosed();
    }
    await runInDurableObject(stubFor(hub), (_i, state) => {
      relaySql(state).exec(
        "UPDATE users SET seen_at = ? WHERE username = ?",
        Date.now() - LIMITS.usernameIdleReclaimMs - 1000,
        "alice",
      );
    });
    const fresh = await newKeys();
    const first = await TestClient.open(hub);
    first.send(await first.authFrame("alice", fresh));
    expect((await first.error()).code).toBe("name_taken");
    // Both of the old identity's members are on their way out, not only the username.
    const st = await bob.next("group", (f) => f.state.pendingLeaves.length === 2);
    expect(st.state.pendingLeaves).toEqual(["alice", addr]);
    bob.send(commit("c3", 2, ["bob"]));
    await bob.next("accepted", (f) => f.id === "c3");
    const n = await TestClient.open(hub);
    expect((await n.auth("alice", fresh)).identityKey).toBe(fresh.identityKey);
    for (const c of [n, bob]) c.close();
  });

  it("a device the next list removes is disconnected, refused, and nothing more is stored for it", async () => {
    const { hub, keys, laptop, bob, v1 } = await setup();
    const phone = await device(hub, keys, PHONE);
    await phone.next("welcome");
    const v2 = await signDeviceList(nextDeviceList(v1, { remove: [PHONE] }), sign(keys));
    laptop.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await laptop.next("accepted", (f) => f.id === "d2");
    expect((await phone.error()).code).toBe("device_removed");
    expect((await phone.waitClosed()).code).toBe(CLOSE.deviceReplaced);
    const again = await device(hub, keys, PHONE);
    expect((await again.error()).code).toBe("device_removed");
    bob.send({ v: 1, t: "send", id: "late", to: "alice", device: PHONE, body: "AAAA" });
    expect((await bob.error("late")).code).toBe("unknown_device");
    for (const c of [laptop, bob]) c.close();
  });

  it("when the list drops the current device, a listed device takes its place", async () => {
    const { hub, keys, laptop, bob, v1 } = await setup();
    const phone = await device(hub, keys, PHONE);
    await phone.next("welcome");
    const v2: DeviceList = await signDeviceList(
      nextDeviceList(v1, { remove: [LAPTOP] }),
      sign(keys),
    );
    phone.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await phone.next("accepted", (f) => f.id === "d2");
    expect((await laptop.error()).code).toBe("device_removed");
    phone.close();
    await phone.waitClosed();
    const promoted = await device(hub, keys, PHONE);
    await promoted.next("welcome");
    bob.send({ v: 1, t: "send", id: "s", to: "alice", body: "EEEE" });
    expect(await deliveredBody(promoted)).toBe("EEEE");
    for (const c of [promoted, bob]) c.close();
  });

  it("each device has its own prekeys: fetch_bundle names a device and gets that device's keys (§4.7)", async () => {
    const { hub, keys, laptop, bob, v1 } = await setup();
    laptop.send({ v: 1, t: "upload_prekeys", id: "ul", oneTimePrekeys: oneTimePrekeys(100, 4) });
    await laptop.next("accepted", (f) => f.id === "ul");
    // The phone connects with a signed prekey of its own: its welcome counts its own entry (0).
    const phone = await TestClient.open(hub);
    const auth = await phone.authFrame("alice", keys, { device: PHONE });
    phone.send(auth);
    expect((await phone.next("welcome")).oneTimePrekeysRemaining).toBe(0);
    expect((await phone.next("prekeys_low")).remaining).toBe(0);
    phone.send({ v: 1, t: "upload_prekeys", id: "up", oneTimePrekeys: oneTimePrekeys(500, 4) });
    await phone.next("accepted", (f) => f.id === "up");

    const bundle = async (id: string, device?: string) => {
      bob.send({ v: 1, t: "fetch_bundle", id, username: "alice", ...(device ? { device } : {}) });
      return Promise.race([bob.next("bundle", (f) => f.id === id), bob.error(id)]);
    };
    const p1 = await bundle("p1", PHONE);
    if (p1.t !== "bundle") throw new Error(`refused: ${p1.code}`);
    expect(p1.device).toBe(PHONE);
    expect(p1.signedPrekey).toEqual(auth.signedPrekey);
    expect(p1.oneTimePrekey?.id).toBe(500);
    expect(p1.devices).toEqual(v1);
    // Without a device, or naming the current one: the current device's entry, untouched.
    const l1 = await bundle("l1");
    if (l1.t !== "bundle") throw new Error(`refused: ${l1.code}`);
    expect(l1.device).toBeUndefined();
    expect(l1.signedPrekey).not.toEqual(auth.signedPrekey);
    expect(l1.oneTimePrekey?.id).toBe(100);
    const l2 = await bundle("l2", LAPTOP);
    if (l2.t !== "bundle") throw new Error(`refused: ${l2.code}`);
    expect(l2.signedPrekey).toEqual(l1.signedPrekey);
    expect(l2.oneTimePrekey?.id).toBe(101);
    // The phone's next key is still its own.
    const p2 = await bundle("p2", PHONE);
    expect(p2.t === "bundle" && p2.oneTimePrekey?.id).toBe(501);
    // The per-requester quota (§7.4) is per device: Bob's burst on the phone ends there (its stock
    // is left for others), while the laptop's entry still hands him one.
    const p3q = await bundle("p3q", PHONE);
    expect(p3q.t === "bundle" && p3q.oneTimePrekey?.id).toBe(502);
    const p4q = await bundle("p4q", PHONE);
    if (p4q.t !== "bundle") throw new Error(`refused: ${p4q.code}`);
    expect(p4q.oneTimePrekey).toBeNull();
    expect(p4q.signedPrekey).toEqual(auth.signedPrekey);
    const l3 = await bundle("l3");
    expect(l3.t === "bundle" && l3.oneTimePrekey?.id).toBe(102);
    // A device not on the list, or listed but never connected (no signed prekey): unknown_device.
    expect(await bundle("x", OTHER)).toMatchObject({ t: "error", code: "unknown_device" });
    const v2 = await signDeviceList(
      nextDeviceList(v1, { add: [await entry(OTHER, "tablet")] }),
      sign(keys),
    );
    laptop.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await laptop.next("accepted", (f) => f.id === "d2");
    expect(await bundle("t", OTHER)).toMatchObject({ t: "error", code: "unknown_device" });
    // A signed prekey the identity did not sign is refused; the stored one stays.
    const stranger = await newKeys();
    phone.send({
      v: 1,
      t: "upload_prekeys",
      id: "bad",
      signedPrekey: await signedPrekey(stranger, 9),
      oneTimePrekeys: [],
    });
    expect((await phone.error("bad")).code).toBe("bad_signature");
    const p3 = await bundle("p3", PHONE);
    expect(p3.t === "bundle" && p3.signedPrekey).toEqual(auth.signedPrekey);
    // Once a list drops the phone, nobody gets a bundle for it.
    const v3 = await signDeviceList(nextDeviceList(v2, { remove: [PHONE] }), sign(keys));
    laptop.send({ v: 1, t: "devices", id: "d3", list: v3 });
    await laptop.next("accepted", (f) => f.id === "d3");
    expect(await bundle("gone", PHONE)).toMatchObject({ t: "error", code: "unknown_device" });
    for (const c of [laptop, phone, bob]) c.close();
  });
});

describe("presence and push are the identity's, over all its devices (§4.7, §6.3, §7.9)", () => {
  const names = (users: ReadonlyArray<{ username: string }>) => users.map((u) => u.username);
  /** Every delta held back by the interval has gone out, and every frame before now arrived. */
  const settle = async (hub: string, ...cs: TestClient[]) => {
    await runDurableObjectAlarm(stubFor(hub));
    for (const c of cs) await c.sync();
  };
  const deltasOf = (c: TestClient) => c.queue.flatMap((f) => (f.t === "presence_delta" ? [f] : []));

  it("a group only alice's phone is in makes her presence visible to its members (§6.3)", async () => {
    const { hub, keys, laptop, bob } = await setup();
    const phone = await device(hub, keys, PHONE);
    phone.keys = keys;
    const addr = `alice.${PHONE}`;
    await phone.next("welcome");
    const { c: carol } = await TestClient.connect(hub, "carol");
    // carol has no conversation with alice: nothing of alice yet.
    expect(names((await carol.next("presence")).users)).toEqual(["carol"]);
    const commit = (c: TestClient, id: string, parentEpoch: number, members: string[]) =>
      c.send(commitFor("duo", id, parentEpoch, members));
    carol.send({ v: 1, t: "join", id: "j1", group: "duo" });
    await carol.next("accepted", (f) => f.id === "j1");
    commit(carol, "c1", 0, ["carol"]);
    await carol.next("accepted", (f) => f.id === "c1");
    phone.send({ v: 1, t: "join", id: "j2", group: "duo" });
    await phone.next("accepted", (f) => f.id === "j2");
    await carol.next("group", (f) => f.state.pendingJoins.some((m) => m.username === addr));
    commit(carol, "c2", 1, [addr, "carol"]);
    await carol.next("accepted", (f) => f.id === "c2");
    // Sharing a group with one of alice's devices is sharing it with alice.
    await settle(hub, carol);
    expect(deltasOf(carol).some((f) => names(f.online).includes("alice"))).toBe(true);
    for (const c of [laptop, phone, bob, carol]) c.close();
  });

  it("alice is online while any device is; each device gets the deltas", async () => {
    const { hub, keys, laptop, bob } = await setup();
    // They wrote to each other: each may see the other (§6.3).
    bob.send({ v: 1, t: "send", id: "b", to: "alice", body: "AAAA" });
    await bob.next("accepted", (f) => f.id === "b");
    laptop.send({ v: 1, t: "send", id: "a", to: "bob", body: "AAAA" });
    await laptop.next("accepted", (f) => f.id === "a");
    await bob.next("presence_delta", (f) => names(f.online).includes("alice"), 5000);
    const phone = await device(hub, keys, PHONE);
    await phone.next("welcome");
    // The phone's own snapshot is alice's view: bob is in it.
    expect(names((await phone.next("presence")).users)).toEqual(["alice", "bob"]);
    // The laptop goes: alice is still online on her phone, so bob hears nothing.
    await settle(hub, bob);
    bob.queue.length = 0;
    laptop.close();
    await laptop.waitClosed();
    await settle(hub, bob);
    expect(deltasOf(bob).flatMap((f) => f.offline)).toEqual([]);
    // Someone who looks now sees alice online through her phone alone.
    bob.close();
    await bob.waitClosed();
    // The phone, a linked device, gets the delta for bob going offline.
    await phone.next("presence_delta", (f) => f.offline.includes("bob"), 5000);
    const bob2 = await TestClient.open(hub);
    bob2.send(await bob2.authFrame("bob", bob.keys ?? (await newKeys())));
    await bob2.next("welcome");
    expect(names((await bob2.next("presence")).users)).toEqual(["alice", "bob"]);
    // The phone goes too: now alice is offline for bob.
    phone.close();
    await bob2.next("presence_delta", (f) => f.offline.includes("alice"), 5000);
    bob2.close();
  });

  it("each device has its own push subscription, woken by what is stored for it alone", async () => {
    const { hub, keys, laptop, bob, v1 } = await setup();
    await bob.accept("alice").catch(() => undefined);
    const phone = await device(hub, keys, PHONE);
    await phone.next("welcome");
    const laptopSub = await newSubscription();
    const phoneSub = await newSubscription();
    laptop.send(subscribeFrame("pl", laptopSub));
    await laptop.next("accepted", (f) => f.id === "pl");
    // A linked device subscribes on its own, under its address (§7.9).
    phone.send(subscribeFrame("pp", phoneSub));
    await phone.next("accepted", (f) => f.id === "pp");
    expect(await countTable(hub, "push_subs")).toBe(2);
    phone.close();
    await phone.waitClosed();
    // An item for the phone's mailbox wakes the phone; the laptop is connected and not woken.
    bob.send({ v: 1, t: "send", id: "s1", to: "alice", device: PHONE, body: "AAAA" });
    await bob.next("accepted", (f) => f.id === "s1");
    await until(hub, async () => (await received(phoneSub.id)).received.length > 0, "the push");
    expect((await received(laptopSub.id)).received).toEqual([]);
    // The laptop goes offline; an item for the current device wakes the laptop, not the phone.
    laptop.close();
    await laptop.waitClosed();
    const before = (await received(phoneSub.id)).received.length;
    bob.send({ v: 1, t: "send", id: "s2", to: "alice", body: "BBBB" });
    await bob.next("accepted", (f) => f.id === "s2");
    await until(hub, async () => (await received(laptopSub.id)).received.length > 0, "the push");
    expect((await received(phoneSub.id)).received.length).toBe(before);
    // Removing the phone ends its subscription (§7.9) even though it is not connected.
    const laptop2 = await device(hub, keys, LAPTOP);
    await laptop2.next("welcome");
    const v2 = await signDeviceList(nextDeviceList(v1, { remove: [PHONE] }), sign(keys));
    laptop2.send({ v: 1, t: "devices", id: "d2", list: v2 });
    await laptop2.next("accepted", (f) => f.id === "d2");
    expect(await countTable(hub, "push_subs")).toBe(1);
    for (const c of [laptop2, bob]) c.close();
  });
});
