/**
 * Our own device list after this device changed it (PROTOCOL.md §4.6, §4.8.3): once the relay
 * accepted the `devices` frame carrying it (the runner waits for that, client.ts), the list is
 * checked with the same pure rule as any list shown to us and pinned, and the change is an
 * `own_devices` event like one made elsewhere — on the device that linked a phone too, the phone
 * is announced. The first list of an identity names this device itself: only the others count
 * as added.
 */
import type { DeviceList } from "../../protocol";
import { applyDeviceList, deviceListVerifies } from "../devices";
import { CoreError } from "../errors";
import { KEYS } from "../store";
import { loadPinnedDevices } from "./devices";
import { announceDevices } from "./direct";
import type { Tx } from "./effects";
import { leaveForRemovedDevices } from "./group-membership";

export async function ownListStored(tx: Tx, list: DeviceList): Promise<void> {
  const { env } = tx;
  const pinned = await loadPinnedDevices(tx, env.username);
  const d = applyDeviceList({
    identityKey: env.identityKey,
    pinned,
    list,
    verified: await deviceListVerifies(list),
  });
  if (d.kind === "unchanged") return;
  // Our own signature over a list we just built: a refusal here is a local bug, not the relay.
  if (d.kind === "refused") throw new CoreError("malformed", `own device list: ${d.reason}`);
  tx.put(KEYS.devices(env.username), d.pinned);
  for (const dev of d.removed) tx.del(KEYS.dmDevice(env.username, dev.id));
  // Contacts hear of it end to end, not only from the relay (§4.9).
  await announceDevices(tx, list);
  // A removed device leaves our groups, with its signed leave for the members (§4.7, §9.7.4).
  await leaveForRemovedDevices(
    tx,
    d.removed.map((e) => e.id),
  );
  const self = tx.state.device.id;
  const added = d.added.filter((e) => e.id !== self);
  if (added.length > 0 || d.removed.length > 0)
    tx.emit({ type: "own_devices", added, removed: d.removed });
}
