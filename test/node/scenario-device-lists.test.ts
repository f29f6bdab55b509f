/**
 * Device lists seen by the engine (PROTOCOL.md §4.6), through the real relay: a contact's list
 * arrives with its bundle and is pinned on first sight; a later list's new and removed devices
 * are lines in the conversation; a list a hostile relay forged, rolled back or stripped of a
 * device is refused and shown, and changes nothing pinned; our own list's changes reach us as an
 * `own_devices` event at the next connection.
 */
import { describe, expect, it } from "vitest";
import { nextDeviceList, signDeviceList } from "../../shared/core/devices";
import { ed25519Sign, generateIdentityKeyPair } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import type { DeviceList, ServerFrame } from "../../shared/protocol";
import { connect, disconnect, lines, online, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const id = (n: number) => toB64u(new Uint8Array(16).fill(n));
async function entry(n: number, name: string) {
  return { id: id(n), key: toB64u((await generateIdentityKeyPair()).publicKey), name, addedAt: n };
}

/** What another device of `u` would do: publish a signed list (PROTOCOL §4.6). */
async function publish(relay: NodeRelay, u: TestUser, list: DeviceList): Promise<void> {
  u.conn?.fromClient({ v: 1, t: "devices", id: `dl${list.version}`, list });
  await relay.settle();
}
const signAs = (u: TestUser) => (m: Uint8Array) => ed25519Sign(u.identity.privateKey, m);

/** bob starts a chat with alice while she is offline: the relay answers with her bundle. */
async function fetchAgain(relay: NodeRelay, bob: TestUser): Promise<void> {
  await bob.client.endChat("alice");
  await bob.client.startChat("alice");
  await relay.settle();
}

async function setup() {
  const relay = new NodeRelay();
  const [alice, bob] = await online(relay, "alice", "bob");
  if (!alice || !bob) throw new Error("setup");
  const v1 = await signDeviceList(
    {
      identityKey: toB64u(alice.identity.publicKey),
      version: 1,
      devices: [await entry(1, "laptop")],
      removed: [],
    },
    signAs(alice),
  );
  await publish(relay, alice, v1);
  await disconnect(alice);
  await bob.client.startChat("alice");
  await relay.settle();
  return { relay, alice, bob, v1 };
}
const kinds = (u: TestUser) =>
  lines(u, "dm:alice")
    .filter((l) => l.kind.startsWith("device"))
    .map((l) => `${l.kind}: ${l.text}`);

describe("device lists in the engine", () => {
  it("a contact's first list is pinned quietly; later devices added and removed are lines", async () => {
    const { relay, alice, bob, v1 } = await setup();
    expect(kinds(bob)).toEqual([]);
    const v2 = await signDeviceList(
      nextDeviceList(v1, { add: [await entry(2, "phone")] }),
      signAs(alice),
    );
    await connect(alice);
    await publish(relay, alice, v2);
    await disconnect(alice);
    await fetchAgain(relay, bob);
    const v3 = await signDeviceList(nextDeviceList(v2, { remove: [id(2)] }), signAs(alice));
    await connect(alice);
    await publish(relay, alice, v3);
    await disconnect(alice);
    await fetchAgain(relay, bob);
    expect(kinds(bob)).toEqual([
      "device_added: alice linked a new device: phone",
      "device_removed: alice removed a device: phone",
    ]);
    expect(relay.failures).toEqual([]);
  });

  it("a hostile relay's forged device, rollback or hidden device is refused and shown", async () => {
    const { relay, alice, bob, v1 } = await setup();
    const v2 = await signDeviceList(
      nextDeviceList(v1, { add: [await entry(2, "phone")] }),
      signAs(alice),
    );
    await connect(alice);
    await publish(relay, alice, v2);
    await disconnect(alice);
    await fetchAgain(relay, bob);
    const mallory = await generateIdentityKeyPair();
    const forged = await signDeviceList(
      nextDeviceList(v2, { add: [await entry(9, "evil")] }),
      (m) => ed25519Sign(mallory.privateKey, m),
    );
    // Hiding the phone: the relay serves a list without it, under a new version it cannot sign.
    const hidden: DeviceList = { ...nextDeviceList(v2, { remove: [id(2)] }), sig: v2.sig };
    for (const served of [forged, v1, hidden]) {
      relay.intercept = (_to, f: ServerFrame) =>
        f.t === "bundle" && f.username === "alice" ? { ...f, devices: served } : f;
      await fetchAgain(relay, bob);
    }
    relay.intercept = null;
    expect(kinds(bob)).toEqual([
      "device_added: alice linked a new device: phone",
      "device_list_refused: The relay showed a device list for alice that is not signed by their identity key: ignored",
      "device_list_refused: The relay showed a device list for alice that is older than one already seen: ignored",
      "device_list_refused: The relay showed a device list for alice that is not signed by their identity key: ignored",
    ]);
    // What bob pinned is still v2: the honest list again is no change.
    await fetchAgain(relay, bob);
    expect(kinds(bob)).toHaveLength(4);
  });

  it("our own new device is announced on our other device at its next connection", async () => {
    const { relay, alice, v1 } = await setup();
    await connect(alice);
    expect(alice.events.some((e) => e.type === "own_devices")).toBe(false);
    const v2 = await signDeviceList(
      nextDeviceList(v1, { add: [await entry(2, "phone")] }),
      signAs(alice),
    );
    await publish(relay, alice, v2);
    await disconnect(alice);
    await connect(alice);
    const notices = alice.events.filter((e) => e.type === "own_devices");
    expect(notices).toEqual([
      { type: "own_devices", added: [v2.devices.find((d) => d.id === id(2))], removed: [] },
    ]);
    // Live: another device of ours stored a newer list; the relay pushes it (§4.6).
    const v3 = await signDeviceList(nextDeviceList(v2, { remove: [id(2)] }), signAs(alice));
    await alice.client.onServerFrame({ v: 1, t: "device_list", list: v3 });
    await relay.settle();
    expect(alice.events.filter((e) => e.type === "own_devices").at(-1)).toEqual({
      type: "own_devices",
      added: [],
      removed: [v2.devices.find((d) => d.id === id(2))],
    });
  });
});
