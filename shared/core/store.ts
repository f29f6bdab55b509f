/**
 * Storage helpers (PROTOCOL.md §10): the key layout the engine uses inside a `ClientStore`, and
 * `MemoryStore`, the in-memory implementation used by tests (the PWA implements the same
 * interface with IndexedDB).
 *
 *   meta/owner        { gen }            owner generation (nonce safety, §10.2)
 *   prekeys           PrekeyState
 *   contact/<name>    Contact
 *   dm/<name>         DmRecord           the conversation with <name> (its decision, and the session
 *                                        when <name> has no device list)
 *   dmd/<name>/<dev>  DmRecord           the pairwise session with device <dev> of <name> (ourselves
 *                                        included) once <name> has a device list (§4.9)
 *   group/<name>      GroupRecord
 *   meta/device       Device             this installation's id, its device signing key (§4.6), and
 *                                        whether it claims the identity
 *   outbox/<seq>      OutboxEntry        frames persisted before they are sent (write-ahead)
 *   sent/<peer>/<id>  SentText           1:1 texts the peer has not receipted (resent on repair)
 */
import * as v from "valibot";
import { b64Bytes, ClientFrame } from "../protocol";
import { type ClientStore, type StoreOp, StorePreconditionError } from "./client-api";
import { FileRef, InviteSchema } from "./content";
import { DisappearMs, MessageRef } from "./message-content";

export const KEYS = {
  owner: "meta/owner",
  prekeys: "prekeys",
  contact: (n: string) => `contact/${n}`,
  dm: (n: string) => `dm/${n}`,
  /** The pairwise session with one device of a user that has a device list (§4.9). */
  dmDevice: (n: string, device: string) => `dmd/${n}/${device}`,
  dmDevicesOf: (n: string) => `dmd/${n}/`,
  /** hs_init ephemerals already answered, kept when a chat is ended (§8.2.3). */
  seenInits: (n: string) => `seen/${n}`,
  group: (n: string) => `group/${n}`,
  device: "meta/device",
  /** A linked device's groups to join at its first welcome (the link transfer's, §4.8.3). */
  linkGroups: "meta/link-groups",
  /** The accepted device list of a user, ourselves included (§4.6). */
  devices: (n: string) => `devices/${n}`,
  outbox: (seq: number) => `outbox/${String(seq).padStart(15, "0")}`,
  sent: (peer: string, id: string) => `sent/${peer}/${id}`,
  sentOf: (peer: string) => `sent/${peer}/`,
} as const;

/**
 * This installation (PROTOCOL.md §4.3): a random id, and `claim` — set on a new store (a fresh
 * identity or a restore from backup) and by `reclaimDevice`, cleared at the first welcome —
 * and `seed`, the 32-byte seed of its own Ed25519 device signing key (§4.6: the key a device
 * list names it with). Stores made before device keys lack `seed`: the engine adds one when it
 * loads them (engine/load.ts), so a loaded `Device` always has it.
 */
export const DeviceSchema = v.strictObject({
  id: v.pipe(v.string(), v.length(22)),
  claim: v.boolean(),
  seed: v.optional(b64Bytes(32)),
  /** A linked device's mailbox address (§4.7), as its last `welcome` named it: its group name. */
  address: v.optional(v.string()),
  /** For a linked device: the identity's current device id, as its last `welcome` named it. */
  current: v.optional(v.string()),
});
export type StoredDevice = v.InferOutput<typeof DeviceSchema>;
export type Device = StoredDevice & { seed: string };

/** A 1:1 text sent and not yet receipted by the peer, kept to send again on repair (§8.10). */
export const SentTextSchema = v.strictObject({
  id: v.string(),
  ts: v.pipe(v.number(), v.integer(), v.minValue(0)),
  text: v.string(),
  reply: v.optional(MessageRef),
  /** Disappearing timer: past `ts + exp` it is dropped, never sent again (§8.6.1). */
  exp: v.optional(DisappearMs),
  /** A closed-group invitation the text carries (§9.7.3). */
  invite: v.optional(InviteSchema),
  /** The attachment the message carries, if any (§8.6.1): sent again with it. */
  file: v.optional(FileRef),
});
export type SentText = v.InferOutput<typeof SentTextSchema>;

export const OwnerSchema = v.strictObject({
  gen: v.pipe(v.number(), v.integer(), v.minValue(0)),
});

export const OutboxEntrySchema = v.strictObject({
  frame: ClientFrame,
  conversationId: v.optional(v.string()),
  messageId: v.optional(v.string()),
});
export type OutboxEntry = v.InferOutput<typeof OutboxEntrySchema>;

/** Equality of JSON-able values for `expect` preconditions (`undefined` = absent). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === undefined || b === undefined) return a === b;
  return JSON.stringify(a) === JSON.stringify(b);
}

/** In-memory ClientStore. Values are deep-copied in and out, like IndexedDB's structured clone. */
export class MemoryStore implements ClientStore {
  private readonly data = new Map<string, unknown>();
  /** Number of `batch` calls so far (tests assert write-ahead ordering with it). */
  batches = 0;

  async get(key: string): Promise<unknown> {
    const v = this.data.get(key);
    return v === undefined ? undefined : structuredClone(v);
  }

  async list(prefix: string): Promise<Array<{ key: string; value: unknown }>> {
    return [...this.data.keys()]
      .filter((k) => k.startsWith(prefix))
      .sort()
      .map((key) => ({ key, value: structuredClone(this.data.get(key)) }));
  }

  async batch(ops: readonly StoreOp[]): Promise<void> {
    this.batches++;
    // Apply all or nothing: check every precondition and clone first (a value that cannot be
    // cloned aborts the batch), all synchronously, so no other batch can interleave (§10.2).
    for (const o of ops) {
      if (o.op === "expect" && !jsonEqual(this.data.get(o.key), o.value)) {
        throw new StorePreconditionError(o.key);
      }
    }
    const staged = ops.map((o) => (o.op === "put" ? { ...o, value: structuredClone(o.value) } : o));
    for (const o of staged) {
      if (o.op === "put") this.data.set(o.key, o.value);
      else if (o.op === "delete") this.data.delete(o.key);
    }
  }

  /** JSON snapshot of everything (state serialise/restore tests, backups of test users). */
  dump(): string {
    return JSON.stringify([...this.data.entries()]);
  }

  static load(json: string): MemoryStore {
    const s = new MemoryStore();
    for (const [k, val] of JSON.parse(json) as [string, unknown][]) s.data.set(k, val);
    return s;
  }
}
