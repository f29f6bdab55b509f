/**
 * Device lists (PROTOCOL.md §4.6): the transcript byte by byte, a pinned signature vector, and
 * every decision of the pure transition — accepted, unchanged, each refusal — with proof that the
 * transition does not change its inputs.
 */
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import {
  applyDeviceList,
  canonicalDeviceList,
  deviceListShapeError,
  deviceListTranscript,
  deviceListVerifies,
  deviceMemberRefusal,
  hiddenDevices,
  isListedDevice,
  nextDeviceList,
  type PinnedDevices,
  signDeviceList,
  type UnsignedDeviceList,
} from "../../shared/core/devices";
import { ed25519KeyPairFromSeed, ed25519Sign, sha256 } from "../../shared/crypto";
import { fromB64u, toB64u, utf8 } from "../../shared/encoding";
import {
  type DeviceList,
  deviceOfMember,
  MemberName,
  parseClientFrame,
  userOfMember,
} from "../../shared/protocol";

const L = (label: string) => sha256(utf8(label));
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const id16 = (label: string) => toB64u(L(label).slice(0, 16));

async function keys() {
  const ik = await ed25519KeyPairFromSeed(L("device-list-ik"));
  const devA = await ed25519KeyPairFromSeed(L("device-list-dev-a"));
  const devB = await ed25519KeyPairFromSeed(L("device-list-dev-b"));
  const other = await ed25519KeyPairFromSeed(L("device-list-other-ik"));
  return { ik, devA, devB, other };
}

/** The vector list of §4.6: two devices, one removed id. */
async function vectorList(): Promise<UnsignedDeviceList> {
  const { ik, devA, devB } = await keys();
  return canonicalDeviceList({
    identityKey: toB64u(ik.publicKey),
    version: 3,
    devices: [
      { id: id16("device-a"), key: toB64u(devA.publicKey), name: "laptop", addedAt: 1700000000000 },
      { id: id16("device-b"), key: toB64u(devB.publicKey), name: "phone", addedAt: 1700000600000 },
    ],
    removed: [id16("device-c")],
  });
}

async function signed(list: UnsignedDeviceList, by?: CryptoKey): Promise<DeviceList> {
  const { ik } = await keys();
  const key = by ?? ik.privateKey;
  return signDeviceList(list, (m) => ed25519Sign(key, m));
}

describe("device list transcript and signature (§4.6)", () => {
  it("is the lp() encoding the spec's table gives, field by field", async () => {
    const list = await vectorList();
    const u32 = (n: number) => n.toString(16).padStart(8, "0");
    const lpHex = (bytesHex: string) => u32(bytesHex.length / 2) + bytesHex;
    const b = (s: string) => hex(fromB64u(s));
    let expected =
      lpHex(hex(utf8("parley/v1/device-list"))) +
      lpHex(b(list.identityKey)) +
      lpHex(u32(3)) +
      lpHex(u32(2));
    for (const d of list.devices)
      expected +=
        lpHex(b(d.id)) +
        lpHex(b(d.key)) +
        lpHex(hex(utf8(d.name))) +
        lpHex(d.addedAt.toString(16).padStart(16, "0"));
    expected += lpHex(u32(1)) + lpHex(b(id16("device-c")));
    expect(hex(deviceListTranscript(list))).toBe(expected);
  });

  it("matches the pinned vector (PROTOCOL.md §4.6)", async () => {
    const list = await signed(await vectorList());
    // Inputs: seeds are SHA-256 of the ASCII labels; device ids the first 16 bytes of
    // SHA-256("device-a" | "device-b" | "device-c"). Devices sort by id bytes.
    expect({
      ik: hex(fromB64u(list.identityKey)),
      order: list.devices.map((d) => d.name),
      transcriptSha256: hex(sha256(deviceListTranscript(list))),
      sig: hex(fromB64u(list.sig)),
    }).toMatchInlineSnapshot(`
      {
        "ik": "5e6b6da182aff98f1e58f0b61c2e546c2071d5036044d4dc8edd08e817460d58",
        "order": [
          "phone",
          "laptop",
        ],
        "sig": "c4a464d79f710ce216048db1c165166750a86393fe1a9e91a4f35607218609eaf16cd169f3e0501501b7c9a2c582655247666921bcd2e4006f40afb88d11a001",
        "transcriptSha256": "683bd5dff418e9c0abe8e295c8e007aab743646d2f2c764f55999861a6af2e3c",
      }
    `);
    expect(await deviceListVerifies(list)).toBe(true);
  });

  it("any changed field breaks the signature", async () => {
    const list = await signed(await vectorList());
    const first = list.devices[0];
    if (first === undefined) throw new Error("no device");
    const variants: DeviceList[] = [
      { ...list, version: 4 },
      { ...list, removed: [] },
      { ...list, devices: [{ ...first, name: "laptoq" }, ...list.devices.slice(1)] },
      { ...list, devices: [{ ...first, addedAt: first.addedAt + 1 }, ...list.devices.slice(1)] },
      { ...list, devices: list.devices.slice(1) },
    ];
    for (const v of variants) expect(await deviceListVerifies(v)).toBe(false);
  });

  it("has one spelling: unsorted, duplicate or both-listed-and-removed ids are refused", async () => {
    const list = await vectorList();
    const [a, b] = list.devices;
    if (a === undefined || b === undefined) throw new Error("no device");
    expect(deviceListShapeError(list)).toBeNull();
    expect(deviceListShapeError({ ...list, devices: [b, a] })).toBe("device order");
    expect(deviceListShapeError({ ...list, devices: [a, a] })).toBe("device order");
    expect(deviceListShapeError({ ...list, removed: [a.id] })).toBe(
      "device both listed and removed",
    );
    // A signature over a non-canonical list does not make it acceptable.
    const { ik } = await keys();
    const bad = { ...list, devices: [b, a] };
    const sig = await ed25519Sign(ik.privateKey, deviceListTranscript(bad));
    expect(await deviceListVerifies({ ...bad, sig: toB64u(sig) })).toBe(false);
  });

  it("the wire schema bounds devices (1…5), names and removed ids", async () => {
    const list = await signed(await vectorList());
    const frame = (l: unknown) => JSON.stringify({ v: 1, t: "devices", id: "d1", list: l });
    expect(parseClientFrame(frame(list)).ok).toBe(true);
    expect(parseClientFrame(frame({ ...list, devices: [] })).ok).toBe(false);
    const six = Array.from({ length: 6 }, (_, i) => ({ ...list.devices[0], id: id16(`x${i}`) }));
    expect(parseClientFrame(frame({ ...list, devices: six })).ok).toBe(false);
    const named = (name: string) => ({
      ...list,
      devices: [{ ...list.devices[0], name }, ...list.devices.slice(1)],
    });
    expect(parseClientFrame(frame(named("a\u0007b"))).ok).toBe(false);
    expect(parseClientFrame(frame(named("x".repeat(65)))).ok).toBe(false);
    expect(parseClientFrame(frame({ ...list, version: 0 })).ok).toBe(false);
    expect(parseClientFrame(frame({ ...list, extra: 1 })).ok).toBe(false);
  });
});

describe("applyDeviceList: what a client accepts (§4.6)", () => {
  async function setup() {
    const { ik, devA, devB, other } = await keys();
    const identityKey = toB64u(ik.publicKey);
    const a = { id: id16("device-a"), key: toB64u(devA.publicKey), name: "laptop", addedAt: 1 };
    const b = { id: id16("device-b"), key: toB64u(devB.publicKey), name: "phone", addedAt: 2 };
    const v1 = await signed({ identityKey, version: 1, devices: [a], removed: [] });
    const first = applyDeviceList({ identityKey, pinned: null, list: v1, verified: true });
    if (first.kind !== "accepted") throw new Error("v1 refused");
    return { identityKey, a, b, v1, pinned: first.pinned, other, ik };
  }
  const decide = async (identityKey: string, pinned: PinnedDevices | null, list: DeviceList) =>
    applyDeviceList({ identityKey, pinned, list, verified: await deviceListVerifies(list) });

  it("accepts the first list and reports its devices as added", async () => {
    const { identityKey, v1, a } = await setup();
    const d = await decide(identityKey, null, v1);
    expect(d.kind === "accepted" && d.added).toEqual([a]);
  });

  it("accepts a newer list: added and removed devices, removed ids revoked", async () => {
    const { identityKey, v1, b, a, pinned } = await setup();
    const v2 = await signed(nextDeviceList(v1, { add: [b] }));
    const d2 = await decide(identityKey, pinned, v2);
    if (d2.kind !== "accepted") throw new Error(`v2 ${JSON.stringify(d2)}`);
    expect(d2.added).toEqual([b]);
    expect(d2.removed).toEqual([]);
    const v3 = await signed(nextDeviceList(v2, { remove: [b.id] }));
    expect(v3.removed).toEqual([b.id]);
    const d3 = await decide(identityKey, d2.pinned, v3);
    if (d3.kind !== "accepted") throw new Error("v3 refused");
    expect(d3.removed).toEqual([b]);
    expect(d3.pinned.revoked).toEqual([b.id]);
    expect(isListedDevice(d3.pinned, a.id, a.key)).toBe(true);
    expect(isListedDevice(d3.pinned, b.id)).toBe(false);
  });

  it("the same list again is unchanged; another list under the same version is refused", async () => {
    const { identityKey, v1, b, pinned } = await setup();
    expect(await decide(identityKey, pinned, v1)).toEqual({ kind: "unchanged" });
    const forked = await signed({ ...v1, devices: [...v1.devices, b] });
    expect(await decide(identityKey, pinned, forked)).toEqual({
      kind: "refused",
      reason: "equivocation",
    });
  });

  it("refuses a rollback: an older version after a newer one", async () => {
    const { identityKey, v1, b, pinned } = await setup();
    const v2 = await signed(nextDeviceList(v1, { add: [b] }));
    const d2 = await decide(identityKey, pinned, v2);
    if (d2.kind !== "accepted") throw new Error("v2 refused");
    expect(await decide(identityKey, d2.pinned, v1)).toEqual({
      kind: "refused",
      reason: "rollback",
    });
  });

  it("refuses a list signed by another key, or claiming another identity", async () => {
    const { identityKey, v1, other, pinned } = await setup();
    const forged = await signed(nextDeviceList(v1, {}), other.privateKey);
    expect(await decide(identityKey, pinned, forged)).toEqual({
      kind: "refused",
      reason: "signature",
    });
    const theirs = await signed(
      { ...nextDeviceList(v1, {}), identityKey: toB64u(other.publicKey) },
      other.privateKey,
    );
    expect(await decide(identityKey, pinned, theirs)).toEqual({
      kind: "refused",
      reason: "identity",
    });
  });

  it("a hostile relay cannot add a device: a forged list is refused, the device is unlisted", async () => {
    const { identityKey, v1, pinned, other } = await setup();
    const evil = { id: id16("evil"), key: toB64u(other.publicKey), name: "evil", addedAt: 3 };
    const forged = await signed(nextDeviceList(v1, { add: [evil] }), other.privateKey);
    const d = await decide(identityKey, pinned, forged);
    expect(d.kind).toBe("refused");
    expect(isListedDevice(pinned, evil.id)).toBe(false);
  });

  it("a hidden device is named by the list the relay cannot forge", async () => {
    const { identityKey, v1, b, a, pinned } = await setup();
    const d2 = await decide(identityKey, pinned, await signed(nextDeviceList(v1, { add: [b] })));
    if (d2.kind !== "accepted") throw new Error("v2 refused");
    expect(hiddenDevices(d2.pinned, [a.id])).toEqual([b]);
    expect(hiddenDevices(d2.pinned, [a.id, b.id])).toEqual([]);
  });

  /** v2 adds b, v3 removes it again: both accepted in turn. */
  async function bAddedThenRemoved(s: Awaited<ReturnType<typeof setup>>) {
    const v2 = await signed(nextDeviceList(s.v1, { add: [s.b] }));
    const d2 = await decide(s.identityKey, s.pinned, v2);
    if (d2.kind !== "accepted") throw new Error("v2 refused");
    const v3 = await signed(nextDeviceList(v2, { remove: [s.b.id] }));
    const d3 = await decide(s.identityKey, d2.pinned, v3);
    if (d3.kind !== "accepted") throw new Error("v3 refused");
    return { v2, d2, v3, d3 };
  }

  it("a revoked device never comes back under its id, and a device keeps its key", async () => {
    const s0 = await setup();
    const { identityKey, b, other } = s0;
    const { v2, d2, v3, d3 } = await bAddedThenRemoved(s0);
    // Even if the identity key signs it (a stolen device holding IK re-adding itself, §4.6).
    const back = await signed(nextDeviceList(v3, { add: [b] }));
    expect(await decide(identityKey, d3.pinned, back)).toEqual({
      kind: "refused",
      reason: "revoked",
    });
    const a0 = v2.devices.find((d) => d.id !== b.id);
    if (a0 === undefined) throw new Error("no device");
    const rekeyed = await signed({
      ...nextDeviceList(v2, {}),
      devices: v2.devices.map((d) => (d.id === b.id ? { ...d, key: toB64u(other.publicKey) } : d)),
    });
    expect(await decide(identityKey, d2.pinned, rekeyed)).toEqual({
      kind: "refused",
      reason: "device_key_changed",
    });
  });

  it("does not change its inputs", async () => {
    const { identityKey, v1, b, pinned } = await setup();
    const v2 = await signed(nextDeviceList(v1, { add: [b] }));
    const before = JSON.stringify({ pinned, v2 });
    await decide(identityKey, pinned, v2);
    expect(JSON.stringify({ pinned, v2 })).toBe(before);
  });

  it("a device member (§4.7, §9.7.2): a revoked one is refused; an unlisted one only for our own identity", async () => {
    const s0 = await setup();
    const { b, a } = s0;
    const { d2, d3 } = await bAddedThenRemoved(s0);
    for (const own of [true, false]) {
      expect(deviceMemberRefusal(d2.pinned, b.id, own)).toBeNull();
      expect(deviceMemberRefusal(d3.pinned, a.id, own)).toBeNull();
      expect(deviceMemberRefusal(d3.pinned, b.id, own)).toBe("revoked");
    }
    // A device newer than the contact's list we hold may be a real one; ours we always know.
    const newer = id16("device-c");
    expect(deviceMemberRefusal(d3.pinned, newer, false)).toBeNull();
    expect(deviceMemberRefusal(d3.pinned, newer, true)).toBe("unlisted");
    expect(deviceMemberRefusal(null, newer, false)).toBeNull();
    expect(deviceMemberRefusal(null, newer, true)).toBe("unlisted");
  });
});

describe("member names (§4.7, §9.1)", () => {
  const dev = id16("device-a");
  it("a username, or a username and a 22-character device id; nothing else", () => {
    const ok = (x: string) => v.safeParse(MemberName, x).success;
    expect(ok("alice")).toBe(true);
    expect(ok(`alice.${dev}`)).toBe(true);
    expect(userOfMember(`alice.${dev}`)).toBe("alice");
    expect(deviceOfMember(`alice.${dev}`)).toBe(dev);
    expect(userOfMember("alice")).toBe("alice");
    expect(deviceOfMember("alice")).toBeNull();
    for (const bad of [
      "",
      `.${dev}`,
      `alice.${dev}x`,
      `alice.${dev.slice(1)}`,
      `alice.${dev}.${dev}`,
      `Alice.${dev}`,
      "alice.",
      `${"a".repeat(33)}.${dev}`,
    ])
      expect(ok(bad), bad).toBe(false);
  });
});
