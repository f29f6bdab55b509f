/**
 * The relay's rule for a published device list (PROTOCOL.md §4.6), pure. The relay is not trusted
 * with device lists — every client verifies the identity key's signature and refuses rollbacks
 * itself — it checks them only so it cannot be made to store and serve junk, or an older list
 * over a newer one, for an honest user.
 */
import type { DeviceList } from "../../shared/protocol";

export type DeviceListCheck =
  | { ok: true }
  | { ok: false; code: "bad_signature" | "stale_device_list" };

/**
 * `verified`: the list's signature and shape check out (shared/core/devices.ts
 * `deviceListVerifies`), run before the stored list is read so the decision needs no await.
 */
export function checkPublishedList(params: {
  identityKey: string;
  stored: DeviceList | null;
  list: DeviceList;
  verified: boolean;
}): DeviceListCheck {
  const { identityKey, stored, list } = params;
  // Only the authenticated identity's own list, signed by it.
  if (list.identityKey !== identityKey || !params.verified)
    return { ok: false, code: "bad_signature" };
  if (stored !== null && stored.identityKey === identityKey && list.version <= stored.version)
    return { ok: false, code: "stale_device_list" };
  return { ok: true };
}

/** A linked device's mailbox address (§4.7): "." is outside the name alphabet (§2.3). */
export function deviceAddress(username: string, device: string): string {
  return `${username}.${device}`;
}

/**
 * How the relay admits `device` of an identity (§4.7), given its stored list and its current
 * device (the one single-device rules know, §4.3):
 * - `linked`: on the list and not the current device — connects beside the others, with its own
 *   mailbox address;
 * - `promote`: on the list while the current device is not (removed, or none yet) — it becomes
 *   the current device, as a claim would make it;
 * - `removed`: the list revokes it — refused;
 * - `unlisted`: no list of this identity, or the current device itself, or a device the list does
 *   not name — the single-device rules of §4.3 apply unchanged.
 */
export function linkedDevice(
  username: string,
  list: DeviceList | null,
  identityKey: string,
  device: string,
  current: string | null,
):
  | { kind: "linked"; address: string }
  | { kind: "promote" }
  | { kind: "removed" }
  | { kind: "unlisted" } {
  if (list === null || list.identityKey !== identityKey) return { kind: "unlisted" };
  if (list.removed.includes(device)) return { kind: "removed" };
  if (!list.devices.some((d) => d.id === device)) return { kind: "unlisted" };
  if (current === device) return { kind: "unlisted" };
  if (current === null || !list.devices.some((d) => d.id === current)) return { kind: "promote" };
  return { kind: "linked", address: deviceAddress(username, device) };
}

/**
 * The mailbox address of a `send` to `device` of `to` (§4.7): the username's for its current
 * device, the device's own for another listed device, null for a device it does not have.
 */
export function sendAddress(
  to: string,
  device: string,
  current: string | null,
  list: DeviceList | null,
  identityKey: string,
): string | null {
  if (device === current) return to;
  if (list === null || list.identityKey !== identityKey) return null;
  return list.devices.some((d) => d.id === device) ? deviceAddress(to, device) : null;
}

/**
 * The device a `send` comes from, named in its `deliver` (§4.9): the linked device of the
 * connection's mailbox address, else the identity's current device — only when the identity has
 * a stored list (a single-device user's items carry no device, as before).
 */
export function sendingDevice(
  from: { username: string; identityKey: string; address?: string | undefined },
  current: string | null,
  list: DeviceList | null,
): string | null {
  if (list === null || list.identityKey !== from.identityKey) return null;
  if (from.address !== undefined) return from.address.slice(from.username.length + 1);
  return current;
}
