/**
 * Reading durable state (PROTOCOL.md §10): the engine's start-up (owner takeover, device,
 * prekeys, pins, the in-flight registry's index, summaries) and the record loaders steps use.
 * Every stored value is parsed with its schema; storage is never trusted.
 */
import * as v from "valibot";
import { ed25519Sign } from "../../crypto";
import { toB64u } from "../../encoding";
import type { ClientStore, StoreOp } from "../client-api";
import { StorePreconditionError } from "../client-api";
import { type DmCtx, type DmRecord, emptyDm, parseDmRecord } from "../dm";
import { CoreError } from "../errors";
import { emptyGroup, type GroupRecord, parseGroupRecord } from "../group";
import { initialPrekeys, type PrekeyState, PrekeyStateSchema } from "../prekeys";
import { type Device, DeviceSchema, KEYS, OutboxEntrySchema, OwnerSchema } from "../store";
import { type Contact, ContactSchema } from "../trust";
import type { Tx } from "./effects";
import { FLIGHT_PREFIX, FlightRecordSchema } from "./inflight";
import { type EngineState, type Env, initialState } from "./state";
import { dmSummary, groupSummary } from "./summaries";

export function parseWith<T>(schema: v.GenericSchema<unknown, T>, x: unknown, what: string): T {
  const r = v.safeParse(schema, x);
  if (!r.success) throw new CoreError("malformed", `stored ${what}`);
  return r.output;
}

export async function loadDm(tx: Tx, peer: string): Promise<DmRecord> {
  const x = await tx.get(KEYS.dm(peer));
  if (x !== undefined) return parseDmRecord(x);
  // A chat that was ended keeps its replay memory (§8.2.3).
  const seen = v.safeParse(v.array(v.string()), await tx.get(KEYS.seenInits(peer)));
  return seen.success ? { ...emptyDm(peer), seenInits: seen.output } : emptyDm(peer);
}

export async function loadGroup(tx: Tx, name: string): Promise<GroupRecord> {
  const x = await tx.get(KEYS.group(name));
  return x === undefined ? emptyGroup(name) : parseGroupRecord(x);
}

export async function loadPrekeys(tx: Tx): Promise<PrekeyState> {
  return parseWith(PrekeyStateSchema, await tx.get(KEYS.prekeys), "prekeys");
}

/** Put `after` unless it equals the stored pin `before`. */
export function putContact(tx: Tx, before: Contact | undefined, after: Contact): void {
  if (before !== undefined && JSON.stringify(before) === JSON.stringify(after)) return;
  tx.put(KEYS.contact(after.username), after);
}

export function me(env: Env) {
  return { name: env.username, identityKey: env.identity.publicKey };
}

/**
 * Our name as a group member (§4.7, §9.1): the username on the identity's current device, a
 * linked device's mailbox address (`username.device`) otherwise — each device is its own member.
 */
export function selfMember(tx: { env: Env; state: { device: { address?: string | undefined } } }) {
  return tx.state.device.address ?? tx.env.username;
}

/** `me` as a group member: our member name with the identity key (§9.2.2). */
export function meInGroups(tx: { env: Env; state: { device: { address?: string | undefined } } }) {
  return { name: selfMember(tx), identityKey: tx.env.identity.publicKey };
}

export function dmCtx(tx: Tx): DmCtx {
  const { env } = tx;
  return {
    hub: env.hub,
    me: me(env),
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
    random: env.random,
    now: env.now(),
  };
}

const seqOf = (key: string, prefix: string) => Number(key.slice(prefix.length));

/**
 * Take ownership of the store and load the engine state (§10.2): the owner generation is
 * bumped atomically (the one we bump must still be the one we read, else another instance
 * started meanwhile — read again and take over from it), so any older engine stops sending.
 */
export async function loadEngine(
  store: ClientStore,
  env: Env,
): Promise<{ gen: number; state: EngineState }> {
  let gen = 0;
  let device: Device = { id: "", claim: true, seed: "" };
  for (let attempt = 0; ; attempt++) {
    const owner = await store.get(KEYS.owner);
    gen = (owner === undefined ? 0 : parseWith(OwnerSchema, owner, "owner").gen) + 1;
    const ops: StoreOp[] = [
      { op: "expect", key: KEYS.owner, value: owner },
      { op: "put", key: KEYS.owner, value: { gen } },
    ];
    const stored = await store.get(KEYS.device);
    if (stored === undefined) {
      // A new store: a fresh identity, or one restored from backup on a new device, which must
      // become the identity's current device on the relay (§4.3). Its device signing key
      // (§4.6) is made with it.
      device = { id: toB64u(env.random(16)), claim: true, seed: toB64u(env.random(32)) };
      ops.push(
        { op: "expect", key: KEYS.device, value: undefined },
        { op: "put", key: KEYS.device, value: device },
      );
    } else {
      const had = parseWith(DeviceSchema, stored, "device");
      if (had.seed !== undefined) device = { ...had, seed: had.seed };
      else {
        // A store from before device keys: its key is made now and written in this same batch,
        // before anything could name it in a device list (write-ahead, §10.1).
        device = { ...had, seed: toB64u(env.random(32)) };
        ops.push(
          { op: "expect", key: KEYS.device, value: stored },
          { op: "put", key: KEYS.device, value: device },
        );
      }
    }
    if ((await store.get(KEYS.prekeys)) === undefined) {
      ops.push(
        { op: "expect", key: KEYS.prekeys, value: undefined },
        {
          op: "put",
          key: KEYS.prekeys,
          value: await initialPrekeys(env.identity, env.now(), env.random),
        },
      );
    }
    try {
      await store.batch(ops);
      break;
    } catch (e) {
      if (!(e instanceof StorePreconditionError) || attempt >= 2) throw e;
    }
  }
  let seq = 0;
  const outbox = await store.list("outbox/");
  const flights = await store.list(FLIGHT_PREFIX);
  for (const { key } of outbox) seq = Math.max(seq, seqOf(key, "outbox/"));
  for (const { key } of flights) seq = Math.max(seq, seqOf(key, FLIGHT_PREFIX));
  if (!Number.isSafeInteger(seq)) seq = 0;
  const state = initialState(device, seq);
  for (const { value } of await store.list("contact/")) {
    const ct = parseWith(ContactSchema, value, "contact");
    state.contacts.set(ct.username, ct);
  }
  // The registry's index: answers to frames sent before the reload still find their entry.
  // An entry that does not parse is set aside at the next welcome (§10.1).
  for (const { key, value } of outbox) {
    const r = v.safeParse(OutboxEntrySchema, value);
    if (!r.success) continue;
    const { frame, conversationId, messageId } = r.output;
    if (frame.t !== "send" && frame.t !== "group_send") continue;
    state.flights.set(frame.id, {
      kind: "send",
      key,
      ...(conversationId !== undefined ? { conversationId: conversationId as never } : {}),
      ...(messageId !== undefined ? { messageId } : {}),
    });
  }
  for (const { key, value } of flights) {
    const r = v.safeParse(FlightRecordSchema, value);
    if (!r.success) continue;
    const f = r.output;
    state.flights.set(
      f.id,
      f.kind === "leave"
        ? {
            kind: "leave",
            key,
            group: f.group,
            rejoin: f.rejoin,
            ...(f.member === undefined ? {} : { member: f.member }),
          }
        : { kind: f.kind, key, group: f.group },
    );
  }
  for (const { value } of await store.list("dm/")) {
    const sum = dmSummary(state, parseDmRecord(value));
    state.summaries.set(sum.id, sum);
  }
  for (const { value } of await store.list("group/")) {
    const sum = groupSummary(state, parseGroupRecord(value), env);
    state.summaries.set(sum.id, sum);
  }
  return { gen, state };
}
