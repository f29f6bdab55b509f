/**
 * The public surface of the Parley protocol engine (docs/PROTOCOL.md §8–§10): what the PWA codes
 * against. Runtime-neutral: no DOM, no node:*. The engine never touches a socket or IndexedDB
 * itself — the caller injects a transport (one function), a `ClientStore` and a clock.
 *
 * Lifecycle, as the PWA's network module drives it:
 *   const client = await ParleyClient.create({ hub, origin, username, identity, store, transport, now });
 *   socket.onopen    = () => client.onConnected();
 *   socket.onmessage = (e) => { const r = parseServerFrame(e.data); if (r.ok) void client.onServerFrame(r.frame); };
 *   socket.onclose   = () => client.onDisconnected();
 *   client.subscribe((event) => ...);
 * The engine answers `hello` with `auth` by itself, uploads prekeys, acks deliveries, runs
 * handshakes and group commits; the UI only calls the verbs below and renders events.
 */
import type { IdentityKeyPair } from "../crypto";
import type {
  ClientFrame,
  DeviceEntry,
  ErrorCode,
  LinkOffer,
  PresenceScope,
  ServerFrame,
} from "../protocol";
import type { FileRef, Invite, ReceivedDmContent } from "./content";
import type { GroupPolicy } from "./group-access";
import type { MessageRef } from "./message-content";

// ---------------------------------------------------------------------------------------------
// Storage

/**
 * One step of an atomic batch. Values are JSON-able records, except identity CryptoKeys.
 * `expect` is a precondition: the whole batch is aborted, nothing written, and `batch` rejects
 * with `StorePreconditionError` unless the stored value of `key` equals `value` (JSON-equal;
 * `undefined` = absent) at the moment the writes are applied — checked inside the same atomic
 * step (PROTOCOL.md §10.2: the owner-generation check and the write-ahead state write).
 */
export type StoreOp =
  | { op: "put"; key: string; value: unknown }
  | { op: "delete"; key: string }
  | { op: "expect"; key: string; value: unknown };

/** A `batch` precondition (`expect` op) did not hold; the batch wrote nothing. */
export class StorePreconditionError extends Error {
  override name = "StorePreconditionError";
  constructor(readonly key: string) {
    super(`store precondition failed for ${key}`);
  }
}

/**
 * Async key/value storage the engine persists everything in (the PWA: one IndexedDB object
 * store; tests: `MemoryStore`). Keys are '/'-separated paths (e.g. "session/bob"). Values are
 * plain JSON-able objects (bytes already base64url) — except the identity record, whose
 * `privateKey` is a non-extractable CryptoKey that IndexedDB structured-clones as is.
 * The engine parses every value it reads back with a valibot schema; it never trusts storage.
 * `batch` must be atomic (one IndexedDB transaction), its `expect` preconditions included: the
 * engine relies on it for write-ahead persistence of ratchet state before a ciphertext leaves,
 * under the owner generation it holds (PROTOCOL.md §10.1–§10.2).
 */
export interface ClientStore {
  get(key: string): Promise<unknown>;
  /** Entries whose key starts with `prefix`, in ascending key order. */
  list(prefix: string): Promise<Array<{ key: string; value: unknown }>>;
  batch(ops: readonly StoreOp[]): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Construction

export interface Transport {
  /** Hand one frame to the socket. Called only while connected (between onConnected/onDisconnected). */
  send(frame: ClientFrame): void;
}

export interface ParleyClientOptions {
  /** Hub name (the `?hub=` of /ws); must equal the relay's `hello.hub` or auth is refused. */
  hub: string;
  /** The page origin, e.g. "https://parley.example" — bound into the auth signature. */
  origin: string;
  username: string;
  /** Ed25519 identity (non-extractable private key), created once and kept by the caller's store. */
  identity: IdentityKeyPair;
  store: ClientStore;
  transport: Transport;
  /** Milliseconds since the epoch. Injected so tests control prekey rotation and timers. */
  now(): number;
  /** Optional randomness source (defaults to shared/crypto randomBytes). */
  random?: (n: number) => Uint8Array;
  /**
   * Optional timer (defaults to setTimeout) used for the fallback group committer and
   * handshake retries; returns a cancel function.
   */
  schedule?: (ms: number, fn: () => void) => () => void;
  /** Tuning knobs, mostly for tests; defaults are documented in PROTOCOL.md §9.6. */
  tuning?: Partial<Tuning>;
}

export interface Tuning {
  /** Commit a periodic update after this many messages sent by us in one epoch (default 100). */
  groupUpdateAfterMessages: number;
  /** Commit a periodic update when the epoch is this old, ms (default 24 h). */
  groupUpdateAfterMs: number;
  /** Delay per rank for fallback committers of a pending leave, ms (default 5000). */
  fallbackCommitDelayMs: number;
  /** Rotate the signed prekey when older than this, ms (default 7 days). */
  signedPrekeyRotateMs: number;
  /** Keep a replaced signed prekey's secret for this long, ms (default 14 days). */
  signedPrekeyGraceMs: number;
  /** One-time prekeys uploaded per batch (default 100 = LIMITS.maxOneTimePrekeysPerUpload). */
  oneTimePrekeyBatch: number;
}

// ---------------------------------------------------------------------------------------------
// Conversations and events

/** "dm:<username>" for 1:1 chats, "group:<name>" for groups. */
export type ConversationId = `dm:${string}` | `group:${string}`;

/**
 * How far a direct conversation's keys are (§8.2, §8.3): no session yet, waiting for the peer's
 * bundle, handshake messages in flight, or a session that can send. What the UI shows for it
 * (with the link state and the pins) is the PWA view model's decision (pwa/src/state/status.ts).
 */
export type SessionPhase = "none" | "fetching" | "handshaking" | "ready";

export interface ContactInfo {
  username: string;
  /** base64url Ed25519 public key as pinned (TOFU). */
  identityKey: string;
  /** Short fingerprint shown under the name (shared/crypto identityFingerprint). */
  fingerprint: string;
  verified: boolean;
  /** In a group summary: how many of the person's devices are members (§4.7), when more than one. */
  devices?: number;
}

export interface ConversationSummary {
  id: ConversationId;
  kind: "direct" | "group";
  /** Peer username (direct) or group name (group). */
  name: string;
  /**
   * A member's (direct: the peer's) announced identity key differs from the pinned one: sending
   * is blocked until the user accepts it (§8.7).
   */
  keyChanged: boolean;
  /** Direct chats only: how far the session is. */
  session?: SessionPhase;
  /**
   * Direct chats only (§8.11): `request` — the peer wrote first and we have neither written
   * back nor accepted (a message request: accept or block it); `blocked` — we blocked the peer.
   * Absent: a contact.
   */
  contact?: "request" | "blocked";
  /** Direct chats: the peer. Groups: the committed roster at `epoch`. */
  members: ContactInfo[];
  /** Groups only: our current epoch; -1 while we have not joined yet. */
  epoch?: number;
  /**
   * Groups only: the current epoch's authenticator (PROTOCOL.md §9.3), as digits members can
   * compare like a safety number: equal for everyone on one history, different across a fork.
   */
  authenticator?: string;
  /** Groups only: a removal is pending, sending is blocked until the next commit. */
  removalPending?: boolean;
  /** Groups only: we asked to join and wait for the commit. */
  joining?: boolean;
  /**
   * Groups only: the signed group state (§9.7.1); absent for a group without one (anyone on the
   * hub can join, as before closed groups).
   */
  access?: GroupAccessSummary;
  /**
   * Groups only: we asked to leave (perhaps while offline) and wait for the relay's `left`;
   * nothing can be sent meanwhile (§9.4, §10.1).
   */
  leaving?: boolean;
}

export interface GroupAccessSummary {
  title: string;
  description: string;
  policy: GroupPolicy;
  version: number;
  /** Usernames of the admins among the members (the creator first). */
  admins: string[];
  /** Whether we are an admin. */
  isAdmin: boolean;
  /** Invite links currently valid. */
  links: number;
  /** The last refused commit or relay change (§9.7.5), as shown. */
  refused?: string;
}

/** `read`: the peer's `read` content named it (1:1 only, when read receipts are on, §8.6.1). */
export type DeliveryState = "sending" | "sent" | "delivered" | "read" | "failed";

export interface ChatMessage {
  /** Client message id (random, inside the encrypted content; used for dedupe and receipts). */
  id: string;
  conversationId: ConversationId;
  /** Sender username (authenticated by the session / the group message signature). */
  from: string;
  direction: "in" | "out";
  text: string;
  /** An attachment (§8.6.1); `text` is then its caption, possibly empty. */
  file?: FileRef;
  /** Sender's clock (inside the encrypted content), ms. */
  sentAt: number;
  /** Our clock when received (in) or created (out), ms. */
  at: number;
  /** Outgoing only. */
  delivery?: DeliveryState;
  /** The message this one replies to (§8.6.1). */
  reply?: MessageRef;
  /** Disappearing timer, ms: removed this long after `at` on every device (§8.6.1). */
  exp?: number;
  /** 1:1 only: a closed-group invitation this text carries (§9.7.3). */
  invite?: Invite;
}

/**
 * A content that is not a text (§8.6.1): what it does to history is decided by the caller with
 * shared/core/messages.ts (edit, delete, react, timer), or shown (typing, read, unsupported).
 */
export type MessageAction = Exclude<
  ReceivedDmContent,
  { t: "text" | "file" | "receipt" | "retry" | "sync" | "devices" }
>;

/** What the UI may send besides a text (§8.6.1); the engine adds `id` and `ts`. */
export type OutgoingAction =
  | { t: "react"; target: MessageRef; emoji: string }
  | { t: "edit"; target: string; text: string }
  | { t: "delete"; target: string }
  | { t: "timer"; ms: number }
  | { t: "typing"; on: boolean }
  /**
   * We read these of the peer's messages: sent to the peer's devices (a read receipt) and to our
   * own other devices (§4.9); with `ownDevicesOnly`, only to ours — read receipts are off, but
   * our other devices still mark them read.
   */
  | { t: "read"; ids: string[]; ownDevicesOnly?: boolean };

export interface SendTextOptions {
  reply?: MessageRef;
  exp?: number;
}

export type SystemLineKind =
  | "joined"
  | "left"
  | "epoch"
  | "key_changed"
  | "key_accepted"
  | "verified"
  | "session_started"
  | "decrypt_failed"
  /** Messages from `username` the counters show were sent but never arrived (§8.8, §9.5). */
  | "missing"
  /** A message from `username` could not be decrypted: a new session is being made (§8.10). */
  | "repairing"
  /** `username` could not read `count` of our messages: they are sent again (§8.10). */
  | "resending"
  /**
   * The session just started with `username` is classical only: the peer publishes no
   * post-quantum keys (an older app), so it is not protected against a future quantum computer
   * (§8.3.5).
   */
  /** `username`'s signed device list names a new device (`text` names it, §4.6). */
  | "device_added"
  /** `username`'s signed device list no longer names a device (§4.6). */
  | "device_removed"
  /**
   * The relay served a device list for `username` that we refuse (§4.6): not signed by its
   * identity key, older than one we saw, two lists under one version, or a revoked device back.
   */
  | "device_list_refused"
  | "not_post_quantum"
  /**
   * Closed groups (§9.7.5): a commit or relay change refused for want of authorization (a member
   * added without an invitation, removed without its leave or an admin's removal, a forged
   * state), or the relay taking us out without either.
   */
  | "refused";

export interface SystemLine {
  conversationId: ConversationId;
  kind: SystemLineKind;
  /** Human-readable line, already worded for display. */
  text: string;
  /** Subject user, when there is one. */
  username?: string;
  epoch?: number;
  /** "resending": how many messages go out again. */
  count?: number;
  at: number;
}

/** An upload ticket (§7.10): PUT the ciphertext to /blob/{blob} with it before `expires`. */
export interface BlobTicket {
  blob: string;
  ticket: string;
  expires: number;
}

/** Typed engine errors (PROTOCOL.md §11); `code` is stable, `message` is for display/logs. */
export type CoreErrorCode =
  | "malformed"
  | "bad_signature"
  | "identity_mismatch"
  | "key_changed"
  | "replay"
  | "too_far"
  | "decrypt_failed"
  | "unknown_session"
  | "stale_state"
  | "stale_epoch"
  | "not_member"
  | "roster_mismatch"
  | "removal_pending"
  | "no_prekey"
  /**
   * A peer that publishes post-quantum prekeys was offered without them (a relay stripped them):
   * no session is started rather than a weaker one (§8.3.5).
   */
  | "downgrade"
  /** A signed prekey's replay cache is full: no new prekey sessions on it until rotation (§8.3.3). */
  | "prekey_limit"
  | "not_connected"
  /** A text over MAX_TEXT_CHARS (or too large once encoded): refused before encryption (§8.6). */
  | "too_long"
  /** A stored outbox entry that no longer parses: set aside, reported, never blocking (§10.1). */
  | "outbox_entry_invalid"
  /** A commit extends another history of the group than ours (§9.3): refused and shown. */
  | "fork"
  | "relay_error"
  /**
   * A closed group's commit or pending change lacks a valid authorization (§9.7): a member added
   * without an invitation, removed without its leave or an admin's removal, or a forged or
   * rolled-back group state. Refused, never applied.
   */
  | "not_authorized";

export type ParleyEvent =
  /** Authenticated with the relay (welcome received). */
  | { type: "ready"; username: string; fingerprint: string }
  /**
   * `retired`: the relay refused this device (`device_replaced`, §4.3): the identity was restored
   * on another device. Nothing is sent until `reclaimDevice`.
   */
  /**
   * `removed`: another device of ours removed this one from the device list (§4.7): the relay
   * closed it and refuses it from now on.
   */
  | { type: "connection"; state: "offline" | "connecting" | "online" | "retired" | "removed" }
  /**
   * Online users we may see (§6.3: people who wrote to us, members of our groups, and — if we
   * and they chose it — everyone on the hub), ourselves included.
   */
  | { type: "presence"; users: ContactInfo[] }
  /** Who may see us online (§6.3), from the relay's `welcome` or our own change. */
  | { type: "settings"; presence: PresenceScope }
  /** A conversation was created or changed (status, roster, epoch, flags). */
  | { type: "conversation"; conversation: ConversationSummary }
  /** A new incoming or outgoing message. */
  | { type: "message"; message: ChatMessage }
  /** Delivery state of an outgoing message changed. */
  | {
      type: "delivery";
      conversationId: ConversationId;
      messageId: string;
      state: DeliveryState;
      /** Unused since relay receipts carry no delivery state (§6); kept for compatibility. */
      by?: string;
    }
  | { type: "system"; line: SystemLine }
  /**
   * Our own identity's signed device list changed (§4.6): a device was linked or removed. Shown
   * prominently on every other device of ours: a device we did not link is a stolen key.
   */
  | {
      type: "own_devices";
      added: Array<{ id: string; name: string; addedAt: number }>;
      removed: Array<{ id: string; name: string; addedAt: number }>;
    }
  /**
   * A non-text content sent by `from` (`direction: "in"`, authenticated by the session or the
   * group signature) or by us (`"out"`, once encrypted and stored for sending).
   */
  | {
      type: "content";
      conversationId: ConversationId;
      from: string;
      direction: "in" | "out";
      content: MessageAction;
      at: number;
    }
  | {
      type: "error";
      code: CoreErrorCode;
      message: string;
      conversationId?: ConversationId;
      /** `relay_error` only: the relay's error code (PROTOCOL.md §6), typed. */
      relayCode?: ErrorCode;
    };

export type Listener = (event: ParleyEvent) => void;

/** A link offer fetched and checked against its code (§4.8.2), awaiting the user's yes. */
export interface LinkRequest {
  /** The code as typed, normalised (`XXXX-XXXX-XXXX-XXXX-XXXX`). */
  code: string;
  /** The name the new device gave itself: shown in the confirmation. */
  name: string;
  /** The new device's id. */
  device: string;
  offer: LinkOffer;
}

/** Our own devices as our accepted list names them (§4.6), and which one this is. */
export interface OwnDevices {
  devices: DeviceEntry[];
  thisDevice: string;
}

/** What the PWA calls. Implemented by `ParleyClient` in shared/core/client.ts. */
export interface ParleyClientApi {
  readonly username: string;
  readonly hub: string;
  /** base64url of our Ed25519 public key. */
  readonly identityKey: string;
  readonly fingerprint: string;

  /** The socket opened (before `hello`). */
  onConnected(): void;
  /** Feed one parsed relay frame. Never throws; failures become `error` events. */
  onServerFrame(frame: ServerFrame): Promise<void>;
  /** The socket closed: conversations go `offline`; state stays persisted. */
  onDisconnected(): void;
  /**
   * Stop for good: no timer fires and nothing more is written; resolves once what was running
   * has finished, after which the store may be re-keyed or cleared.
   */
  stop(): Promise<void>;

  /** Open (or return) the 1:1 conversation with `username`, starting a handshake if needed. */
  startChat(username: string): Promise<ConversationId>;
  /** Forget the 1:1 session (the pinned key stays); the next message starts a fresh handshake. */
  endChat(username: string): Promise<void>;
  /**
   * Make this device the identity's current one again (§4.3): the next auth claims it, and the
   * other device is retired in turn.
   */
  reclaimDevice(): Promise<void>;
  /** Encrypt and send; resolves with the client message id once persisted and handed over. */
  sendText(conversationId: ConversationId, text: string, opts?: SendTextOptions): Promise<string>;
  /**
   * Encrypt and send a reaction, edit, delete, timer change, typing state or read receipt
   * (§8.6.1); resolves with its content id. Typing and read go only over a usable session
   * (dropped otherwise, id ""); the others wait in the 1:1 queue like texts.
   */
  sendAction(conversationId: ConversationId, action: OutgoingAction): Promise<string>;
  /**
   * Send an attachment already encrypted and uploaded (§8.6.1; see attachments.ts), with an
   * optional caption and the options of a text (a reply; the conversation's disappearing timer,
   * which a file obeys like a text); resolves with the client message id like sendText.
   */
  sendFile(
    conversationId: ConversationId,
    file: FileRef,
    caption?: string,
    opts?: SendTextOptions,
  ): Promise<string>;
  /**
   * Ask the relay for an upload ticket for `size` ciphertext bytes (§7.10). Not a step: a
   * ticket is short-lived and changes no stored state. Rejects with `not_connected` offline,
   * `relay_error` (message: the relay's code, e.g. blob_quota) when refused.
   */
  requestBlobTicket(size: number): Promise<BlobTicket>;
  joinGroup(name: string): Promise<void>;
  leaveGroup(name: string): Promise<void>;
  /**
   * Create a closed group (§9.7.1): we are its first admin. `invite` (the default in the app):
   * only members' invitations and invite links let anyone in; `open`: anyone on the hub.
   */
  createGroup(
    name: string,
    opts: { title: string; description?: string; policy: GroupPolicy },
  ): Promise<void>;
  /** Send `username` an invitation: our signed add, in an end-to-end 1:1 text (§9.7.3). */
  inviteToGroup(group: string, username: string): Promise<void>;
  /** Join with an invitation received in a 1:1 text (§9.7.3). */
  acceptInvite(invite: Invite): Promise<void>;
  /** Join with an invite link's secret (the link's fragment, §9.7.3). */
  joinWithLink(group: string, secret: string): Promise<void>;
  /** Admins: a new invite link's secret (base64url), valid once our next commit lands. */
  createInviteLink(group: string): Promise<string>;
  /** Admins: every invite link stops working with our next commit. */
  revokeInviteLinks(group: string): Promise<void>;
  /** Admins: rename, describe or set the policy (§9.7.1). */
  setGroupInfo(
    group: string,
    change: { title?: string; description?: string; policy?: GroupPolicy },
  ): Promise<void>;
  /** Admins: make a member an admin too. */
  promoteMember(group: string, username: string): Promise<void>;
  /** Take admin rights from a member, or step down ourselves; one admin always remains (§9.7.1). */
  demoteMember(group: string, username: string): Promise<void>;
  /** Admins: remove a member (§9.7.4). */
  removeMember(group: string, username: string): Promise<void>;
  /** Accept a changed identity key for `username` (re-pins it; verification is cleared). */
  acceptKeyChange(username: string): Promise<void>;
  /** Accept a message request, or unblock (§8.11): the relay takes the peer as a contact. */
  acceptContact(username: string): Promise<void>;
  /** Block a peer (§8.11): the relay refuses its direct messages to us. */
  blockContact(username: string): Promise<void>;
  markVerified(username: string): Promise<void>;
  /** Who may see us online: people we talk to (default) or everyone on this hub (§6.3). */
  setPresence(scope: PresenceScope): Promise<void>;
  /** Our presence setting as the relay last reported it, or null before the first welcome. */
  presenceScope(): PresenceScope | null;
  /** 60-digit safety number for us and `username` (pinned key). */
  safetyNumber(username: string): Promise<string>;

  /** Our accepted device list (§4.6; empty before one exists) and this device's id. */
  ownDevices(): Promise<OwnDevices>;
  /**
   * The existing device, given the code the new device shows (§4.8.2): fetch its offer and check
   * it was made with this code. LinkError `bad_code`, `unknown_link` or `code_mismatch`.
   */
  fetchLinkOffer(code: string): Promise<LinkRequest>;
  /**
   * After the user confirmed the offered name: sign and store the next device list naming the
   * new device (the first list names this device too, as `thisDeviceName`), then answer with the
   * sealed transfer (§4.8.3: the identity seed, the list, the pinned contacts, and `history`, the
   * reference of an encrypted history archive the caller already uploaded, §4.8.5). Resolves
   * with the entry added. LinkError `too_many_devices`, `already_linked`, `unknown_link`.
   */
  approveLink(
    request: LinkRequest,
    opts: { identitySeed: Uint8Array; thisDeviceName: string; history?: FileRef },
  ): Promise<DeviceEntry>;
  /**
   * Sign and store the next list without device `id` (§4.7 "Removal"): the relay closes it and
   * refuses it from then on. LinkError `unknown_device` for this device or one not listed.
   */
  removeDevice(id: string): Promise<void>;

  conversations(): ConversationSummary[];
  presence(): ContactInfo[];
  contact(username: string): ContactInfo | undefined;
  subscribe(listener: Listener): () => void;
}
