/**
 * Device lists seen by the engine (PROTOCOL.md §4.6): every list the relay shows us — a contact's
 * in its `bundle`, our own in `welcome` — is checked against the one we accepted before with the
 * pure rule of shared/core/devices.ts, and its changes are shown: a line in the contact's
 * conversation, or for our own identity an `own_devices` event every other device of ours shows
 * prominently. A refused list changes nothing we hold and is shown too.
 */
import * as v from "valibot";
import { DeviceList, type DeviceList as DeviceListT } from "../../protocol";
import type { ConversationId } from "../client-api";
import {
  applyDeviceList,
  type DeviceListRefusal,
  deviceListVerifies,
  type PinnedDevices,
} from "../devices";
import { KEYS } from "../store";
import { system, type Tx } from "./effects";

const PinnedSchema = v.strictObject({
  identityKey: v.string(),
  version: v.pipe(v.number(), v.integer(), v.minValue(1)),
  list: DeviceList,
  revoked: v.array(v.string()),
});

/** The pinned list of `username`, or null (none yet, or a stored record that no longer parses). */
export async function loadPinnedDevices(
  tx: Pick<Tx, "get">,
  username: string,
): Promise<PinnedDevices | null> {
  const raw = await tx.get(KEYS.devices(username));
  if (raw === undefined) return null;
  const r = v.safeParse(PinnedSchema, raw);
  return r.success ? r.output : null;
}

const REFUSAL_TEXT: Record<DeviceListRefusal, string> = {
  identity: "is signed for another identity",
  signature: "is not signed by their identity key",
  rollback: "is older than one already seen",
  equivocation: "contradicts another list with the same version",
  revoked: "brings back a removed device",
  device_key_changed: "gives a device another key",
};

/**
 * Check `list`, shown for `username` whose identity key we hold as `identityKey`, and record and
 * show what changed, in `conversation` (the contact's; null for our own list, shown as an
 * `own_devices` event). The first list of a user is taken as it is (trust on first use, like the
 * identity key) and shown for nobody; later ones show each added and removed device.
 */
export async function seeDeviceList(
  tx: Tx,
  username: string,
  identityKey: string,
  list: DeviceListT,
  conversation: ConversationId | null,
  /** A contact we have no conversation with (a group member, §9.1): kept, shown nowhere. */
  quiet = false,
): Promise<void> {
  const pinned = await loadPinnedDevices(tx, username);
  const verified = await deviceListVerifies(list);
  const d = applyDeviceList({ identityKey, pinned, list, verified });
  if (d.kind === "unchanged") return;
  const own = conversation === null;
  if (d.kind === "refused" && quiet) return;
  if (d.kind === "refused") {
    const text = `The relay showed a device list for ${own ? "your account" : username} that ${REFUSAL_TEXT[d.reason]}: ignored`;
    if (own) tx.emit({ type: "error", code: "relay_error", message: text });
    else system(tx, conversation, "device_list_refused", text, { username });
    return;
  }
  tx.put(KEYS.devices(username), d.pinned);
  // A removed device's sessions are of no more use: their keys go (§4.9).
  for (const dev of d.removed) tx.del(KEYS.dmDevice(username, dev.id));
  if (quiet) return;
  if (pinned === null) {
    // A first list is taken on first use (§4.6); a contact on several devices is still told
    // apart from one on a single device: each of them will read what we send.
    if (conversation !== null && list.devices.length > 1)
      system(
        tx,
        conversation,
        "device_added",
        `${username} uses ${list.devices.length} devices: ${list.devices.map((x) => x.name).join(", ")}`,
        { username },
      );
    return;
  }
  if (conversation === null) {
    if (d.added.length > 0 || d.removed.length > 0)
      tx.emit({ type: "own_devices", added: d.added, removed: d.removed });
    return;
  }
  for (const dev of d.added)
    system(tx, conversation, "device_added", `${username} linked a new device: ${dev.name}`, {
      username,
    });
  for (const dev of d.removed)
    system(tx, conversation, "device_removed", `${username} removed a device: ${dev.name}`, {
      username,
    });
}
