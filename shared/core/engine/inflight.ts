/**
 * The in-flight registry (PROTOCOL.md §10.1): every frame that waits for the relay's `accepted`
 * or `error` is registered under its frame id with what it is, so answers are routed by a typed
 * lookup and never by the shape of the id. The kinds that must survive a reload or a lost
 * connection are persisted before their frame leaves (write-ahead):
 *   send    outbox/<seq>   the encrypted `send`/`group_send` frame itself (texts and receipts)
 *   join    flight/<seq>   a `join` pressed, offline or not: sent again at every welcome until answered
 *   leaf    flight/<seq>   fresh leaf keys of a group (§9.3), likewise
 *   leave   flight/<seq>   a `leave` likewise (`rejoin`: the leave half of a rejoin, §9.4)
 *   commit  group/<name>   the record's `pendingCommit` (its secret is applied on `accepted`)
 * `fetch` (a bundle request) and `upload` (one-time prekeys) are asked again on every
 * connection anyway, so they live in memory only.
 */
import * as v from "valibot";
import { Leaf, PROTOCOL_VERSION } from "../../protocol";
import type { ConversationId } from "../client-api";
import type { Tx } from "./effects";

export type Flight =
  | { kind: "send"; key: string; conversationId?: ConversationId; messageId?: string }
  | { kind: "join"; key: string; group: string }
  | { kind: "leaf"; key: string; group: string }
  | { kind: "leave"; key: string; group: string; rejoin: boolean; member?: string }
  /** An admin's removal of a member (§9.7.4): asked once, answered or lost with the socket. */
  | { kind: "remove"; group: string; user: string }
  | { kind: "commit"; group: string }
  /** A bundle for a session with `peer` (one of its devices, §4.7) or, `list`, for its device list alone (§4.9). */
  | { kind: "fetch"; peer: string; device?: string; list?: true }
  | { kind: "upload" };

export const FLIGHT_PREFIX = "flight/";
export const flightKey = (seq: number) => `${FLIGHT_PREFIX}${String(seq).padStart(15, "0")}`;

/** A persisted join, leaf upload or leave (`flight/<seq>`). */
export const FlightRecordSchema = v.variant("kind", [
  v.strictObject({
    kind: v.literal("join"),
    id: v.string(),
    group: v.string(),
    leaves: v.array(Leaf),
    /** Closed groups (§9.7.3): the invitation the join carries. */
    auth: v.optional(v.string()),
  }),
  v.strictObject({
    kind: v.literal("leaf"),
    id: v.string(),
    group: v.string(),
    leaves: v.array(Leaf),
  }),
  v.strictObject({
    kind: v.literal("leave"),
    id: v.string(),
    group: v.string(),
    rejoin: v.boolean(),
    /** Closed groups (§9.7.4): our signed leave. */
    auth: v.optional(v.string()),
    /** The leave of another device of ours (its member name, §4.7), not our own. */
    member: v.optional(v.string()),
  }),
]);
export type FlightRecord = v.InferOutput<typeof FlightRecordSchema>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** The next frame id and its sequence number (unique among the frames in flight, §10.1). */
export function nextId(tx: Tx): { id: string; seq: number } {
  tx.state.seq++;
  return { id: String(tx.state.seq), seq: tx.state.seq };
}

/** The frame of a persisted join or leave (same id every time it is sent). */
export function flightFrame(r: FlightRecord) {
  switch (r.kind) {
    case "join":
      return {
        v: PROTOCOL_VERSION,
        t: "join",
        id: r.id,
        group: r.group,
        leaves: r.leaves,
        ...(r.auth === undefined ? {} : { auth: r.auth }),
      } as const;
    case "leaf":
      return {
        v: PROTOCOL_VERSION,
        t: "leaf",
        id: r.id,
        group: r.group,
        leaves: r.leaves,
      } as const;
    case "leave":
      return {
        v: PROTOCOL_VERSION,
        t: "leave",
        id: r.id,
        group: r.group,
        ...(r.auth === undefined ? {} : { auth: r.auth }),
        ...(r.member === undefined ? {} : { member: r.member }),
      } as const;
  }
}

/** Register and persist a join or leave, and send it if the link is up. */
export function startFlight(tx: Tx, r: DistributiveOmit<FlightRecord, "id">): void {
  const { id, seq } = nextId(tx);
  const key = flightKey(seq);
  const rec = { ...r, id } as FlightRecord;
  tx.put(key, rec);
  tx.state.flights.set(
    id,
    rec.kind === "leave"
      ? {
          kind: "leave",
          key,
          group: rec.group,
          rejoin: rec.rejoin,
          ...(rec.member === undefined ? {} : { member: rec.member }),
        }
      : { kind: rec.kind, key, group: rec.group },
  );
  tx.send(flightFrame(rec));
}

/** Done with a flight: forget it, and its persisted record if it has one. */
export function endFlight(tx: Tx, id: string): void {
  const f = tx.state.flights.get(id);
  if (f === undefined) return;
  tx.state.flights.delete(id);
  if (f.kind === "join" || f.kind === "leave" || f.kind === "leaf") tx.del(f.key);
}

/** The pending leave of `group`, if any (the summary shows it as `leaving`). */
export function leaveOf(
  flights: ReadonlyMap<string, Flight>,
  group: string,
): { id: string; flight: Extract<Flight, { kind: "leave" }> } | null {
  for (const [id, f] of flights)
    if (f.kind === "leave" && f.group === group && f.member === undefined) return { id, flight: f };
  return null;
}

export function joinOf(flights: ReadonlyMap<string, Flight>, group: string): string | null {
  for (const [id, f] of flights) if (f.kind === "join" && f.group === group) return id;
  return null;
}

/** Drop the in-memory-only kinds: their frames died with the socket. */
export function dropTransient(flights: Map<string, Flight>): void {
  for (const [id, f] of [...flights]) {
    if (f.kind === "fetch" || f.kind === "upload" || f.kind === "commit" || f.kind === "remove")
      flights.delete(id);
  }
}
