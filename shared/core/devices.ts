/**
 * Device lists (PROTOCOL.md §4.6): an identity's devices, each with its own signing key, listed
 * in a versioned list the identity key signs. This module holds the transcript, signing and
 * verification, and the pure transition a client runs on every list it is shown: accept a newer
 * list that verifies, refuse a rollback, an equivocation, a revoked device coming back or a device
 * whose key changed. A device not on the accepted list is not one of the identity's devices.
 */
import { ed25519Verify } from "../crypto";
import { fromB64u, lp, toB64u } from "../encoding";
import { DEVICE_ID_BYTES, type DeviceEntry, type DeviceList, LIMITS } from "../protocol";
import { u64be } from "./codec";

export const DEVICE_LIST_LABEL = "parley/v1/device-list";
/** Revoked ids a client remembers per identity (the union of every accepted list's `removed`). */
export const MAX_REVOKED_KEPT = 256;

/** The list without its signature: what the identity key signs. */
export type UnsignedDeviceList = Omit<DeviceList, "sig">;

/**
 * lp("parley/v1/device-list", identityKey, u32 version, u32 n, [id, key, UTF-8 name,
 * u64be addedAt] × n, u32 m, [removed id] × m) — PROTOCOL.md §4.6.
 */
export function deviceListTranscript(list: UnsignedDeviceList): Uint8Array {
  const fields: (Uint8Array | string | number)[] = [
    DEVICE_LIST_LABEL,
    fromB64u(list.identityKey),
    list.version,
    list.devices.length,
  ];
  for (const d of list.devices)
    fields.push(fromB64u(d.id), fromB64u(d.key), d.name, u64be(d.addedAt));
  fields.push(list.removed.length);
  for (const id of list.removed) fields.push(fromB64u(id));
  return lp(...fields);
}

/** Lexicographic byte order (ids are public: no constant-time need). */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** Ascending byte order of base64url ids, each once: the one spelling of a list (§4.6). */
function strictlyAscending(ids: readonly string[]): boolean {
  for (let i = 1; i < ids.length; i++) {
    const prev = ids[i - 1];
    const cur = ids[i];
    if (prev === undefined || cur === undefined) return false;
    if (compareBytes(fromB64u(prev), fromB64u(cur)) >= 0) return false;
  }
  return true;
}

/**
 * The structural rules a schema cannot express (§4.6): device ids ascending and distinct, removed
 * ids ascending and distinct, no id both listed and removed. Null when they hold.
 */
export function deviceListShapeError(list: UnsignedDeviceList): string | null {
  if (list.devices.length < 1 || list.devices.length > LIMITS.maxDevicesPerUser)
    return "device count";
  if (list.removed.length > LIMITS.maxRemovedDevices) return "removed count";
  for (const id of [...list.devices.map((d) => d.id), ...list.removed])
    if (fromB64u(id).length !== DEVICE_ID_BYTES) return "device id length";
  if (!strictlyAscending(list.devices.map((d) => d.id))) return "device order";
  if (!strictlyAscending(list.removed)) return "removed order";
  const removed = new Set(list.removed);
  if (list.devices.some((d) => removed.has(d.id))) return "device both listed and removed";
  return null;
}

/** Put devices and removed ids in their canonical order (ascending id bytes). */
export function canonicalDeviceList(list: UnsignedDeviceList): UnsignedDeviceList {
  const byId = (a: string, b: string) => compareBytes(fromB64u(a), fromB64u(b));
  return {
    identityKey: list.identityKey,
    version: list.version,
    devices: [...list.devices].sort((a, b) => byId(a.id, b.id)),
    removed: [...list.removed].sort(byId),
  };
}

/** Sign a list with the identity key (canonical order first). */
export async function signDeviceList(
  list: UnsignedDeviceList,
  sign: (message: Uint8Array) => Promise<Uint8Array>,
): Promise<DeviceList> {
  const canonical = canonicalDeviceList(list);
  const shape = deviceListShapeError(canonical);
  if (shape !== null) throw new RangeError(`device list: ${shape}`);
  const sig = await sign(deviceListTranscript(canonical));
  return { ...canonical, sig: toB64u(sig) };
}

/** Shape and signature under the list's own identity key (§3.2's one verification rule). */
export async function deviceListVerifies(list: DeviceList): Promise<boolean> {
  if (deviceListShapeError(list) !== null) return false;
  return ed25519Verify(fromB64u(list.identityKey), deviceListTranscript(list), fromB64u(list.sig));
}

/** What a client keeps about one identity's devices (per contact, and for its own account). */
export interface PinnedDevices {
  identityKey: string;
  version: number;
  /** The accepted list itself (kept whole, so it can be re-served and compared). */
  list: DeviceList;
  /** Every device id an accepted list removed or dropped, newest last, at most MAX_REVOKED_KEPT. */
  revoked: string[];
}

export type DeviceListRefusal =
  /** Signed by another identity than the one pinned for this user. */
  | "identity"
  /** Breaks the shape rules or the signature does not verify. */
  | "signature"
  /** A version below the pinned one: a relay replaying an old list. */
  | "rollback"
  /** The pinned version with other contents: two lists under one version. */
  | "equivocation"
  /** Lists a device an earlier list removed: a revoked device never comes back under its id. */
  | "revoked"
  /** A device id the pinned list has, with another signing key. */
  | "device_key_changed";

export type DeviceListDecision =
  | { kind: "accepted"; pinned: PinnedDevices; added: DeviceEntry[]; removed: DeviceEntry[] }
  | { kind: "unchanged" }
  | { kind: "refused"; reason: DeviceListRefusal };

/**
 * The pure transition (§4.6): given what we pinned (null before the first list), the identity
 * key pinned for the user, the list shown, and whether its signature verified (`deviceListVerifies`,
 * run by the caller), decide. Never changes its inputs.
 */
export function applyDeviceList(params: {
  identityKey: string;
  pinned: PinnedDevices | null;
  list: DeviceList;
  verified: boolean;
}): DeviceListDecision {
  const { identityKey, pinned, list } = params;
  if (list.identityKey !== identityKey) return { kind: "refused", reason: "identity" };
  if (!params.verified || deviceListShapeError(list) !== null)
    return { kind: "refused", reason: "signature" };
  if (pinned !== null && pinned.identityKey === identityKey) {
    if (list.version < pinned.version) return { kind: "refused", reason: "rollback" };
    if (list.version === pinned.version)
      return list.sig === pinned.list.sig && sameList(list, pinned.list)
        ? { kind: "unchanged" }
        : { kind: "refused", reason: "equivocation" };
    const revoked = new Set(pinned.revoked);
    if (list.devices.some((d) => revoked.has(d.id))) return { kind: "refused", reason: "revoked" };
    for (const d of list.devices) {
      const before = pinned.list.devices.find((p) => p.id === d.id);
      if (before !== undefined && before.key !== d.key)
        return { kind: "refused", reason: "device_key_changed" };
    }
  }
  const prior = pinned !== null && pinned.identityKey === identityKey ? pinned : null;
  const before = prior?.list.devices ?? [];
  const now = new Set(list.devices.map((d) => d.id));
  const was = new Set(before.map((d) => d.id));
  const added = list.devices.filter((d) => !was.has(d.id));
  const removed = before.filter((d) => !now.has(d.id));
  const revoked = [...(prior?.revoked ?? [])];
  for (const id of [...list.removed, ...removed.map((d) => d.id)])
    if (!revoked.includes(id)) revoked.push(id);
  return {
    kind: "accepted",
    pinned: {
      identityKey,
      version: list.version,
      list,
      revoked: revoked.slice(-MAX_REVOKED_KEPT),
    },
    added,
    removed,
  };
}

function sameList(a: DeviceList, b: DeviceList): boolean {
  return toB64u(deviceListTranscript(a)) === toB64u(deviceListTranscript(b));
}

/**
 * Is `deviceId` (with signing key `deviceKey`, when the caller has one) a device of the pinned
 * list? A device that is not is refused whatever the relay says (§4.6).
 */
export function isListedDevice(
  pinned: PinnedDevices | null,
  deviceId: string,
  deviceKey?: string,
): boolean {
  if (pinned === null) return false;
  const d = pinned.list.devices.find((e) => e.id === deviceId);
  return d !== undefined && (deviceKey === undefined || d.key === deviceKey);
}

/**
 * May a group member that is a linked device's address (§4.7, §9.7.2) be in a roster, given the
 * list we hold for its user (null: none)? A device the user's list removed never is. For our own
 * identity (`own`) we hold the list every device of ours signs, so a device it does not name is
 * refused too; for a contact a device not on an older list we hold may simply be newer than it.
 */
export function deviceMemberRefusal(
  pinned: PinnedDevices | null,
  deviceId: string,
  own: boolean,
): "revoked" | "unlisted" | null {
  if (pinned?.revoked.includes(deviceId)) return "revoked";
  if (pinned?.list.devices.some((d) => d.id === deviceId)) return null;
  return own ? "unlisted" : null;
}

/**
 * Listed devices missing from what the relay served (§4.6): a relay hiding a device from a
 * sender's fan-out shows up here, since the list it cannot forge still names the device.
 */
export function hiddenDevices(pinned: PinnedDevices, served: readonly string[]): DeviceEntry[] {
  const have = new Set(served);
  return pinned.list.devices.filter((d) => !have.has(d.id));
}

/** The next list: `add` appended, `remove` ids dropped and revoked, version + 1 (§4.6). */
export function nextDeviceList(
  current: DeviceList,
  change: { add?: DeviceEntry[]; remove?: string[] },
): UnsignedDeviceList {
  const drop = new Set(change.remove ?? []);
  const devices = [...current.devices.filter((d) => !drop.has(d.id)), ...(change.add ?? [])];
  // The most recent removals are kept when the bound is reached; peers keep their own union.
  const removed = [...current.removed.filter((id) => !drop.has(id)), ...drop]
    .filter((id) => !devices.some((d) => d.id === id))
    .slice(-LIMITS.maxRemovedDevices);
  return canonicalDeviceList({
    identityKey: current.identityKey,
    version: current.version + 1,
    devices,
    removed,
  });
}
