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
