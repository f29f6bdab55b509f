/**
 * The engine's state (PROTOCOL.md §8–§10): what a step reads and returns. `EngineState` is the
 * in-memory part (presence, the relay's group states, pins, the in-flight registry's index,
 * delivery gaps, summaries); the durable part lives in the ClientStore and is read through the
 * step's `Tx` (effects.ts). `Env` is what never changes for one engine: who we are and its knobs.
 */
import type { IdentityKeyPair } from "../../crypto";
import type { GroupState, PresenceScope } from "../../protocol";
import type { ConversationId, ConversationSummary, Tuning } from "../client-api";
import type { Device } from "../store";
import type { Contact } from "../trust";
import type { Gap } from "./gaps";
import type { Flight } from "./inflight";
import { type Link, OFFLINE } from "./link";

export interface Env {
  readonly hub: string;
  readonly origin: string;
  readonly username: string;
  readonly identity: IdentityKeyPair;
  /** base64url of `identity.publicKey`. */
  readonly identityKey: string;
  readonly fingerprint: string;
  readonly tuning: Tuning;
  readonly random: (n: number) => Uint8Array;
  readonly now: () => number;
}

export interface EngineState {
  readonly link: Link;
  /** The relay refused this device as replaced by another (§4.3): it does not reconnect. */
  readonly retired: boolean;
  /** The relay said this device was removed from our device list (§4.7): it stays retired. */
  readonly removed: boolean;
  /** This installation (§4.3); `claim` until the relay has welcomed it once. */
  readonly device: Device;
  /** Last frame-id / outbox sequence number used (unique among the frames in flight, §10.1). */
  readonly seq: number;
  readonly contacts: Map<string, Contact>;
  /** Online users and their relay-asserted identity keys (presence, §6.3). */
  readonly online: Map<string, string>;
  /** Who may see us online, as the relay's last `welcome` said (§6.3); null before one. */
  readonly presenceScope: PresenceScope | null;
  /** The relay's latest state of each group we are in or joining (§9.1). */
  readonly relayGroups: Map<string, GroupState>;
  /** Frame id → what it is waiting for (inflight.ts); persisted kinds are mirrored in the store. */
  readonly flights: Map<string, Flight>;
  /** Peer → ids of its texts we decrypted and have not receipted yet (§8.6). */
  readonly receiptsDue: Map<string, string[]>;
  /** Open delivery gaps (gaps.ts, §8.8, §9.5). In memory only. */
  readonly gaps: Map<string, Gap>;
  /** Gaps already reported (or being waited on): each is reported at most once. */
  readonly seenGaps: Set<string>;
  /** Per group, the latest epoch whose delivered commit we refused (§9.4, healing). */
  readonly refusedEpochs: Map<string, number>;
  /**
   * Per group, the parent epoch of our own commit the relay refused as `bad_frame`/`too_large`
   * (§9.2.4): rebuilding on the same state gives the same refusal, so we do not commit again on
   * that epoch; a new epoch from another committer clears it.
   */
  readonly unsendableCommits: Map<string, number>;
  /**
   * Per group, our commit the relay refused for want of room (`mailbox_full`, `rate_limited`,
   * §9.2.4): the same commit now would be refused again, so commits on that epoch wait for a
   * retry timer (`held`), each refusal doubling the wait.
   */
  readonly commitHolds: Map<string, CommitHold>;
  readonly summaries: Map<ConversationId, ConversationSummary>;
  /** Closed-group notices already shown (§9.7.5), so a repeated relay state shows one line. */
  readonly accessNotices: Set<string>;
}

export interface CommitHold {
  readonly epoch: number;
  /** Refusals in a row on this epoch (0 for the first). */
  readonly attempt: number;
  /** Waiting for the retry timer: no commit on `epoch` until it fires. */
  readonly held: boolean;
}

export function initialState(device: Device, seq: number): EngineState {
  return {
    link: OFFLINE,
    retired: false,
    removed: false,
    device,
    seq,
    contacts: new Map(),
    online: new Map(),
    presenceScope: null,
    relayGroups: new Map(),
    flights: new Map(),
    receiptsDue: new Map(),
    gaps: new Map(),
    seenGaps: new Set(),
    refusedEpochs: new Map(),
    unsendableCommits: new Map(),
    commitHolds: new Map(),
    summaries: new Map(),
    accessNotices: new Set(),
  };
}

/**
 * A draft for one step: every collection copied (values are immutable records, replaced and
 * never mutated), so the state the runner holds is untouched until the step's writes committed.
 */
export function draft(s: EngineState): Draft {
  return {
    ...s,
    contacts: new Map(s.contacts),
    online: new Map(s.online),
    relayGroups: new Map(s.relayGroups),
    flights: new Map(s.flights),
    receiptsDue: new Map(s.receiptsDue),
    gaps: new Map(s.gaps),
    seenGaps: new Set(s.seenGaps),
    refusedEpochs: new Map(s.refusedEpochs),
    unsendableCommits: new Map(s.unsendableCommits),
    commitHolds: new Map(s.commitHolds),
    summaries: new Map(s.summaries),
    accessNotices: new Set(s.accessNotices),
  };
}

/** The mutable view a step works on (its scalar fields are reassigned, never the input's). */
export type Draft = { -readonly [K in keyof EngineState]: EngineState[K] };
