/**
 * Relay answers (PROTOCOL.md §6, §10.1): `accepted` and `error` routed through the in-flight
 * registry (inflight.ts) to what they answer — a message in the outbox, a join, a leave, a
 * commit, a bundle request, a prekey upload — with the relay's error code kept typed
 * (`relayCode` on the error event, §11.1). Transient refusals keep the entry for the next
 * connection; final ones end it.
 */
import * as v from "valibot";
import type { ErrorCode, FrameOf, ServerFrame } from "../../protocol";
import type { ConversationId } from "../client-api";
import { type OutboxEntry, OutboxEntrySchema } from "../store";
import * as direct from "./direct";
import { delivery, error, type Tx } from "./effects";
import * as commits from "./group-commits";
import * as membership from "./group-membership";
import * as groups from "./group-steps";
import { endFlight } from "./inflight";

/**
 * A stored outbox entry, or null when it is gone or no longer parses (§10.1): a bad entry is
 * deleted and reported — its message shown as failed — so it can never block the entries
 * behind it on every later connection.
 */
export function outboxEntry(tx: Tx, key: string, value: unknown): OutboxEntry | null {
  if (value === undefined) return null;
  const r = v.safeParse(OutboxEntrySchema, value);
  if (r.success) return r.output;
  tx.del(key);
  const raw = (typeof value === "object" && value !== null ? value : {}) as Record<string, unknown>;
  const conversationId = asConversationId(raw.conversationId);
  if (conversationId !== undefined && typeof raw.messageId === "string") {
    delivery(tx, conversationId, raw.messageId, "failed");
  }
  error(
    tx,
    "outbox_entry_invalid",
    "a stored message could not be sent and was set aside",
    conversationId,
  );
  return null;
}

export function asConversationId(x: unknown): ConversationId | undefined {
  return typeof x === "string" && (x.startsWith("dm:") || x.startsWith("group:"))
    ? (x as ConversationId)
    : undefined;
}

export async function onAccepted(tx: Tx, f: FrameOf<ServerFrame, "accepted">): Promise<void> {
  const s = tx.state;
  const fl = s.flights.get(f.id);
  if (fl === undefined) return;
  switch (fl.kind) {
    case "send": {
      const entry = outboxEntry(tx, fl.key, await tx.get(fl.key));
      s.flights.delete(f.id);
      if (entry === null) return;
      tx.del(fl.key);
      const conv = asConversationId(entry.conversationId);
      if (conv && entry.messageId) delivery(tx, conv, entry.messageId, "sent");
      return;
    }
    case "upload":
      s.flights.delete(f.id);
      if (s.link.t === "online") s.link = { ...s.link, uploading: false };
      return;
    case "commit":
      return commits.onCommitAccepted(tx, f.id, fl.group);
    case "join":
      return membership.onJoinAccepted(tx, f.id);
    case "leaf":
      return membership.onLeafAnswered(tx, f.id);
    case "leave":
      // Another device's leave (§4.7) gets no `left` of ours: the answer ends it.
      if (fl.member !== undefined) return endFlight(tx, f.id);
      return membership.onLeaveAccepted(tx, f.id);
    case "remove":
      s.flights.delete(f.id);
      return;
    case "fetch":
      return; // the `bundle` answers it
  }
}

/** A relay error (§6): routed to what it answers through the registry, its code kept typed. */
export async function onRelayError(tx: Tx, f: FrameOf<ServerFrame, "error">): Promise<void> {
  const s = tx.state;
  const text = `${f.code}: ${f.message}`;
  const code: ErrorCode = f.code;
  if (code === "device_replaced") {
    // Another device claimed the identity (a restore from backup, §4.3). Reconnecting would
    // only be refused again; the user may take it back (reclaimDevice).
    s.retired = true;
    tx.emit({ type: "connection", state: "retired" });
    return;
  }
  if (code === "device_removed") {
    // Another device of ours signed a list without this one (§4.7): the relay closes us and
    // refuses every later auth. Reconnecting is pointless; the user is told.
    s.retired = true;
    s.removed = true;
    tx.emit({ type: "connection", state: "removed" });
    return;
  }
  const id = f.id;
  const fl = id === undefined ? undefined : s.flights.get(id);
  if (id === undefined || fl === undefined) {
    error(tx, "relay_error", text, undefined, code);
    return;
  }
  switch (fl.kind) {
    case "send": {
      const entry = outboxEntry(tx, fl.key, await tx.get(fl.key));
      if (entry === null) {
        s.flights.delete(id);
        error(tx, "relay_error", text, undefined, code);
        return;
      }
      const conv = asConversationId(entry.conversationId);
      // A copy for a device the relay no longer serves (removed, §4.7): learn the peer's list,
      // so the next message does not go to it (§4.9). The other devices' copies stand.
      if (
        code === "unknown_device" &&
        entry.frame.t === "send" &&
        entry.frame.device !== undefined
      ) {
        tx.del(fl.key);
        s.flights.delete(id);
        direct.learnDevices(tx, entry.frame.to);
        // Shown, not hidden (§4.6 hiddenDevices): the list we hold names the device. A removal
        // we had not heard of yet, or a relay keeping a listed device from us.
        error(
          tx,
          "relay_error",
          `The relay did not take a copy for one of ${entry.frame.to}'s devices (unknown_device); checking ${entry.frame.to}'s device list`,
          direct.dmId(entry.frame.to),
          code,
        );
        return;
      }
      // Transient refusals keep the entry: it is sent again on the next connection (§10.1).
      // not_authenticated: the frame overtook our auth (e.g. across a relay restart).
      if (!membership.TRANSIENT.has(code)) {
        tx.del(fl.key);
        s.flights.delete(id);
        if (conv && entry.messageId) delivery(tx, conv, entry.messageId, "failed");
      }
      error(tx, "relay_error", text, conv, code);
      return;
    }
    case "upload":
      s.flights.delete(id);
      if (s.link.t === "online") s.link = { ...s.link, uploading: false };
      error(tx, "relay_error", text, undefined, code);
      return;
    case "fetch":
      s.flights.delete(id);
      if (fl.list) return; // only a device list was asked for (§4.9): nothing waits on it
      await direct.onFetchRefused(tx, { peer: fl.peer, device: fl.device });
      error(tx, "relay_error", text, direct.dmId(fl.peer), code);
      return;
    case "commit":
      return commits.onCommitRefused(tx, id, fl.group, code, f.message);
    case "join":
      await membership.onJoinRefused(tx, id, fl.group, code);
      error(tx, "relay_error", text, groups.groupId(fl.group), code);
      return;
    case "leaf":
      if (membership.TRANSIENT.has(code)) return; // kept: the next welcome sends it again
      return membership.onLeafAnswered(tx, id);
    case "leave":
      if (fl.member !== undefined) {
        // The device is out already (not_member) or the relay could not take it: nothing of
        // ours changes; a transient refusal is sent again at the next welcome.
        if (!membership.TRANSIENT.has(code)) endFlight(tx, id);
        return;
      }
      await membership.onLeaveRefused(tx, id, fl.group, code);
      error(tx, "relay_error", text, groups.groupId(fl.group), code);
      return;
    case "remove":
      s.flights.delete(id);
      error(tx, "relay_error", text, groups.groupId(fl.group), code);
      return;
  }
}
