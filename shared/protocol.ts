/**
 * The wire contract between Parley clients and the relay (docs/PROTOCOL.md §4–§7).
 *
 * Every WebSocket frame is one JSON text message `{ v: 1, t: <type>, ... }`. Each type has a
 * strict runtime schema (valibot): unknown keys, missing keys, wrong types, non-canonical base64url
 * and oversize fields are all rejected. `parseClientFrame` / `parseServerFrame` are the only way
 * bytes from a socket become typed frames; nothing else in the code base calls JSON.parse on
 * socket data.
 */
import * as v from "valibot";
import { EncodingError, fromB64u } from "./encoding";

export const PROTOCOL_VERSION = 1 as const;

/** One table for every size and rate limit (PROTOCOL.md §7). */
export const LIMITS = {
  /**
   * Largest frame either side accepts, in UTF-8 bytes (§7.1). Sized for the two largest frames
   * post-quantum groups make: the worst-case commit (maxGroupSize members with 32-character
   * names, all leaving and re-joining at once, 1000 hybrid wraps of 1559 characters: ≈ 2.4 MB)
   * and the worst-case `group` state (2000 listed hybrid leaf keys, each with its 1184-byte
   * ML-KEM half: ≈ 4.1 MB). Below the 32 MiB limit of a WebSocket message received by a Durable
   * Object (local workerd enforces the same: 20 MiB accepted, 33 MiB closed with 1009).
   * test/shared/core-commit-size.test.ts builds both.
   */
  maxFrameBytes: 5 * 1024 * 1024,
  /** Largest opaque body (base64url characters) of a direct or group message. */
  maxBodyChars: 96 * 1024,
  /**
   * Largest opaque commit core (base64url characters). The worst case (§7.1) is 668 632
   * characters: 1000 roster entries of 256 bytes (name, identity key, signed hybrid leaf key
   * named by the hash of its ML-KEM half), 2000 names in added/removed, header, signature and tag
   * (437 782 characters), and in a closed group (§9.7.2) its signed state and one authorization
   * per removal (an admin's removal, 126 bytes, with its name). Stored as one SQLite value by the
   * relay, far below the 2 MB row limit.
   */
  maxCommitCoreChars: 672 * 1024,
  /**
   * Largest closed-group authorization (base64url characters, §9.7): a member's signed add is
   * 159 bytes with a 32-character inviter name (212 characters), a link join 112, a leave 89,
   * an admin's removal 126.
   */
  maxGroupAuthChars: 212,
  /**
   * Largest signed group state (base64url characters, §9.7.1): title ≤ 128 and description
   * ≤ 1024 UTF-8 bytes, ≤ 32 admins and ≤ 16 link keys, labels, signer and signature: 3 094
   * bytes at most.
   */
  maxGroupInfoChars: 4128,
  /**
   * Largest wrapped secret (base64url characters, §9.2.3): a hybrid wrap is version 1 + X-Wing
   * enc 1120 + secret 32 + tag 16 = 1169 bytes (1559 characters); an X25519 one 81 bytes.
   */
  maxWrapChars: 1560,
  maxNameLength: 32,
  maxHubLength: 32,
  maxClientIdLength: 64,
  maxGroupSize: 1000,
  maxGroupsPerHub: 256,
  maxGroupsPerUser: 64,
  maxUsersPerHub: 10_000,
  maxMailboxPerRecipient: 2000,
  /**
   * Commit items (the epoch secret a member needs to keep reading) may fill a mailbox past
   * maxMailboxPerRecipient up to this hard bound; direct and group items may not.
   */
  maxMailboxHardPerRecipient: 4000,
  /** Deliveries sent on one connection and not yet acknowledged; ack to receive more. */
  deliverWindow: 64,
  /**
   * Longest time a direct item sent before it is stored waits for its recipient's `ack` before
   * the relay stores it (§7.3 "Write-behind"); its sender's `accepted` comes at one or the other.
   */
  writeBehindMs: 100,
  /** Authenticated connections per hub; keeps a full `presence` frame under maxFrameBytes. */
  maxOnlinePerHub: 4000,
  mailboxTtlMs: 7 * 24 * 60 * 60 * 1000,
  /**
   * How long the relay remembers an accepted `send`/`group_send` id (§7.3 "Retries"): a retry
   * within this time is answered as the first was and stored once.
   */
  sendRetryWindowSec: 60 * 60,
  maxOneTimePrekeysPerUpload: 100,
  maxOneTimePrekeysStored: 200,
  /**
   * One-time ML-KEM-768 prekeys (§8.3.1): 50 per upload (~84 KB of frame) and 100 stored per
   * identity (~170 KB of relay storage), fewer than the 32-byte X25519 ones because each is 1184
   * bytes. Once they run out the last-resort KEM prekey is used (§8.3.5).
   */
  maxOneTimeKemPrekeysPerUpload: 50,
  maxOneTimeKemPrekeysStored: 100,
  oneTimePrekeysLowWatermark: 20,
  maxAckIds: 256,
  /** Token bucket per connection: sustained frames per second and burst size. */
  connRatePerSec: 40,
  connBurst: 120,
  /** Token bucket per identity (all of its connections together). */
  identityRatePerSec: 60,
  identityBurst: 180,
  /** A group message or commit costs one extra identity token per this many recipients. */
  fanoutRecipientsPerToken: 100,
  /** Frames refused for rate in one connection before the relay closes it as abusive. */
  maxRateViolations: 50,
  /** Frames refused as malformed in one connection before the relay closes it as abusive. */
  maxMalformed: 100,
  /** Seconds a client has to authenticate after `hello`. */
  authTimeoutSec: 20,
  /** Clients send `ping` at least this often; the relay answers without waking (auto-response). */
  pingIntervalSec: 30,
  /** A connection silent (no frame, no ping) this long is closed and leaves presence. */
  presenceTimeoutSec: 90,
  /** At most one `presence_delta` per recipient per this many milliseconds (§6.3). */
  presenceDeltaIntervalMs: 1000,
  /**
   * People one user has written to that the relay remembers for presence (§6.3): beyond this the
   * oldest is forgotten, so one sender cannot grow the relay's storage by writing to everyone.
   */
  maxPresenceContactsPerUser: 1000,
  /**
   * Direct and group items one sender may have stored for one recipient (of that recipient's
   * maxMailboxPerRecipient), so one sender cannot fill a victim's mailbox (PROTOCOL.md §7.3).
   */
  maxMailboxPerSenderPerRecipient: 500,
  /** Direct and group items one sender may have stored across all recipients (§7.3). */
  maxMailboxPerSender: 5000,
  /**
   * Commits one sender may have stored for one recipient (§7.3). Commits are not refused by the
   * message shares above (a member must get every epoch secret), so they get a share of their
   * own: with it no single sender can fill a mailbox, commits included.
   */
  maxCommitsPerSenderPerRecipient: 64,
  /** Bytes of commit cores one sender may have stored, each core counted once (§7.3). */
  maxCommitBytesPerSender: 32 * 1024 * 1024,
  /**
   * One-time prekeys (X25519 and ML-KEM) one requester may take from one user with `fetch_bundle`
   * (§7.4): a burst, then one per this many seconds. Past it the bundle has none and the
   * initiator uses the signed and last-resort prekeys, so a stranger cannot drain a user's stock.
   */
  oneTimePrekeyBurstPerRequester: 3,
  oneTimePrekeyRefillSec: 600,
  /**
   * Message requests (§7.3.1): direct items the relay stores for one recipient from senders it
   * has not accepted (`contact`) and shares no group with, all such senders together, and from
   * any one of them. Beyond either the sender gets `request_limit`; the recipient's contacts
   * still get through, so sybil identities cannot fill a mailbox against its contacts.
   */
  maxRequestItemsPerRecipient: 100,
  maxRequestItemsPerSender: 20,
  /** Contacts one user may have accepted or blocked with `contact` (§7.3.1). */
  maxContactsPerUser: 2000,
  /** Groups that exist and were created (first `join` of a new name) by one identity (§7.5). */
  maxGroupsCreatedPerIdentity: 8,
  /** Sockets waiting to authenticate from one client address: IPv4, or an IPv6 /64 (§4.1, §7.2). */
  maxPendingSocketsPerIp: 16,
  /** … from one IPv6 /56 (a subscriber's usual delegation), whatever its /64s (§7.2). */
  maxPendingSocketsPer56: 32,
  /** … from one IPv6 /48 (a site, or a free tunnel-broker allocation), whatever its /56s (§7.2). */
  maxPendingSocketsPer48: 64,
  /**
   * New usernames (first registration, or a reclaim) per client address in one day (§4.3): an
   * IPv4 address or IPv6 /64, and for IPv6 its /56 and /48. Without it one address could take
   * every name slot of a hub (maxUsersPerHub) in under a minute.
   */
  maxRegistrationsPerIpPerDay: 40,
  maxRegistrationsPer56PerDay: 80,
  maxRegistrationsPer48PerDay: 160,
  /** A username whose identity has not authenticated for this long may be reclaimed (§4.3). */
  usernameIdleReclaimMs: 180 * 24 * 60 * 60 * 1000,
  /** Longest Web Push endpoint URL a `push_subscribe` may register (§7.9). */
  maxPushEndpointChars: 1024,
  /** At most one push per device per this many milliseconds; a burst collapses (§7.9). */
  pushMinIntervalMs: 5000,
  /** RFC 8030 §5.2 TTL of a push: how long the push service keeps it for an offline device. */
  pushTtlSec: 24 * 60 * 60,
  /** Send attempts of one push (429, 5xx, network failure) before the relay gives it up (§7.9). */
  pushMaxAttempts: 5,
  /**
   * Largest attachment ciphertext (§7.10): a 100 MiB file once chunk-encrypted (§3.10, 56 header
   * bytes and a 16-byte tag per 16 KiB chunk).
   */
  maxBlobBytes: 104_857_600 + 56 + 16 * 6401,
  /** Default per-identity blob quota, reserved at ticket time (§7.10); BLOB_QUOTA_BYTES sets it. */
  blobQuotaBytes: 500 * 1024 * 1024,
  /** Blobs (stored, or reserved by a live ticket) one identity may hold at once (§7.10). */
  maxBlobsPerIdentity: 500,
  /** How long a stored blob is kept before the relay deletes it (§7.10); BLOB_TTL_SEC sets it. */
  blobTtlSec: 30 * 24 * 60 * 60,
  /** An upload ticket must be used within this time (§7.10). */
  blobTicketTtlSec: 10 * 60,
  /** A started upload must finish within this time, else it is deleted (§7.10). */
  blobUploadWindowSec: 60 * 60,
  /** Devices one identity may list in its signed device list (§4.6). */
  maxDevicesPerUser: 5,
  /** Revoked device ids a device list carries (the most recent; peers keep their union, §4.6). */
  maxRemovedDevices: 32,
  /** Longest device name in a device list, in UTF-16 code units (§4.6). */
  maxDeviceNameLength: 64,
  /** How long the relay keeps a link offer waiting for its answer (§4.8). */
  linkTtlSec: 10 * 60,
  /** Largest sealed link transfer (`LinkAnswer.ciphertext`), in base64url characters (§4.8). */
  maxLinkTransferChars: 256 * 1024,
  /** Contacts one link transfer may carry (§4.8). */
  maxLinkContacts: 2000,
} as const;

/** Error codes with their fixed wire text: text never carries internal detail (PROTOCOL.md §6). */
export const ERRORS = {
  bad_frame: "Frame is not valid JSON or does not match its schema.",
  unknown_type: "Unknown frame type.",
  unsupported_version: "Unsupported protocol version.",
  too_large: "Frame exceeds the size limit.",
  not_authenticated: "Authenticate first.",
  already_authenticated: "Already authenticated.",
  auth_failed: "Authentication failed.",
  bad_signature: "Signature does not verify.",
  name_taken: "That username belongs to another identity in this hub.",
  identity_bound: "This identity already holds another username in this hub.",
  unknown_user: "No such user in this hub.",
  rate_limited: "Too many frames; slow down.",
  mailbox_full: "Recipient mailbox is full.",
  not_member: "Not a member of that group.",
  stale_epoch: "Epoch is not the group's current epoch.",
  roster_mismatch: "Member list does not match the roster after pending changes.",
  removal_pending: "A member removal is pending; commit it first.",
  leaf_changed: "A wrap is not sealed to the member's current leaf key.",
  group_full: "Group is full.",
  limit_reached: "A relay limit was reached.",
  registration_limited: "Too many new usernames from this network today.",
  replaced: "Another connection of this identity took over.",
  device_replaced: "This identity was restored on another device, which now receives its messages.",
  internal: "Internal relay error.",
  push_unavailable: "This relay does not send push notifications.",
  push_endpoint: "That push endpoint is not allowed.",
  push_key_changed: "The relay's push key changed; subscribe again with the current key.",
  blob_unavailable: "This relay does not store attachments.",
  blob_too_large: "The attachment exceeds the size limit.",
  blob_quota: "Attachment storage quota reached; wait for older attachments to expire.",
  invite_required: "This group is invite-only: joining needs an invitation.",
  not_admin: "Only an admin of that group, signing the removal itself, can remove a member.",
  request_limit:
    "The recipient does not take more messages from you until they reply or accept your request.",
  stale_device_list: "A device list with this version or a newer one is already stored.",
  unknown_device: "That user has no such device.",
  device_removed: "This device was removed from its identity's device list.",
  unknown_link: "No device is waiting to be linked under that code.",
  link_taken: "That link code is already in use; make a new one.",
  wrong_route: "This frame is not served on the route this connection opened.",
} as const;
export type ErrorCode = keyof typeof ERRORS;
export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[];

/** WebSocket close codes the relay uses (4000–4999 are application codes, RFC 6455 §7.4.2). */
export const CLOSE = {
  normal: 1000,
  policy: 1008,
  tooBig: 1009,
  authTimeout: 4001,
  authFailed: 4002,
  replaced: 4003,
  deviceReplaced: 4005,
  idle: 4004,
  abusive: 4008,
} as const;

// ---------------------------------------------------------------------------------------------
// Field schemas

export const NAME_RE = /^[a-z0-9][a-z0-9_-]*$/;

/** Usernames, group names and hub names: lower-case ASCII, so one name has one spelling. */
export const Name = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(LIMITS.maxNameLength),
  v.regex(NAME_RE),
);
/**
 * A group member (§4.7, §9.1): a username (the identity's current device) or a linked device's
 * mailbox address, `username "." device` with the 22-character device id. `.` is outside the
 * name alphabet, so no address is a username and each address names one user.
 */
export const MEMBER_RE = /^[a-z0-9][a-z0-9_-]*(\.[A-Za-z0-9_-]{22})?$/;
export const MemberName = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(LIMITS.maxNameLength + 23),
  v.regex(MEMBER_RE),
  v.check((s) => {
    const dot = s.indexOf(".");
    return (dot < 0 ? s.length : dot) <= LIMITS.maxNameLength;
  }, "username part too long"),
);
/** The user a member name belongs to (§4.7): the part before the device id. */
export function userOfMember(member: string): string {
  const dot = member.indexOf(".");
  return dot < 0 ? member : member.slice(0, dot);
}
/** The device id of a linked device's member name, or null for a username (§4.7). */
export function deviceOfMember(member: string): string | null {
  const dot = member.indexOf(".");
  return dot < 0 ? null : member.slice(dot + 1);
}
export const HubName = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(LIMITS.maxHubLength),
  v.regex(NAME_RE),
);

function isCanonicalB64u(s: string, bytes?: number): boolean {
  try {
    const b = fromB64u(s);
    return bytes === undefined || b.length === bytes;
  } catch (e) {
    if (e instanceof EncodingError) return false;
    throw e;
  }
}

/** Canonical base64url of exactly `bytes` bytes. */
export function b64Bytes(bytes: number) {
  const chars = Math.ceil((bytes * 4) / 3);
  return v.pipe(
    v.string(),
    v.length(chars),
    v.check((s) => isCanonicalB64u(s, bytes), "non-canonical base64url"),
  );
}

/** Canonical base64url of at most `maxChars` characters (at least one byte). */
export function b64Max(maxChars: number) {
  return v.pipe(
    v.string(),
    v.minLength(2),
    v.maxLength(maxChars),
    v.check((s) => isCanonicalB64u(s), "non-canonical base64url"),
  );
}

export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;
export const CHALLENGE_BYTES = 32;

export const PublicKey = b64Bytes(PUBLIC_KEY_BYTES);
export const Signature = b64Bytes(SIGNATURE_BYTES);
/** A device (installation) id: random, not secret (§4.3). */
export const DEVICE_ID_BYTES = 16;
export const Challenge = b64Bytes(CHALLENGE_BYTES);
export const Body = b64Max(LIMITS.maxBodyChars);
/** `-0` is an integer ≥ 0 to JavaScript but not a natural number on the wire: refused (§2.3). */
const notNegativeZero = v.check<number, string>((n) => !Object.is(n, -0), "negative zero");
const U32 = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0xffffffff), notNegativeZero);
/** Epochs are JSON numbers; 2^53 is far beyond any group's life. */
const Epoch = v.pipe(
  v.number(),
  v.integer(),
  v.minValue(0),
  v.maxValue(Number.MAX_SAFE_INTEGER),
  notNegativeZero,
);
const Millis = v.pipe(v.number(), v.integer(), v.minValue(0), notNegativeZero);
/** Frame ids are printable ASCII (0x21–0x7e): one character is one byte, no lone surrogates. */
export const CLIENT_ID_RE = /^[\x21-\x7e]+$/;
const ClientId = v.pipe(
  v.string(),
  v.minLength(1),
  v.maxLength(LIMITS.maxClientIdLength),
  v.regex(CLIENT_ID_RE),
);
/** Relay-assigned message id: decimal sequence number as a string. */
const Mid = v.pipe(v.string(), v.regex(/^[0-9]{1,16}$/));
const V = v.literal(PROTOCOL_VERSION);

/** Signed X25519 prekey: sig = Ed25519(identity, lp("parley/v1/spk", id, key)) — §3.2. */
export const SignedPrekey = v.strictObject({ id: U32, key: PublicKey, sig: Signature });
export type SignedPrekey = v.InferOutput<typeof SignedPrekey>;
export const OneTimePrekey = v.strictObject({ id: U32, key: PublicKey });
export type OneTimePrekey = v.InferOutput<typeof OneTimePrekey>;
/** An ML-KEM-768 encapsulation key (FIPS 203 ek, §3.11). */
export const KEM_PUBLIC_KEY_BYTES = 1184;
export const KemPublicKey = b64Bytes(KEM_PUBLIC_KEY_BYTES);
/**
 * The post-quantum half of a signed prekey (§8.3.5): the identity-DH key and the last-resort
 * ML-KEM-768 prekey, for signed prekey `spkId`. sig = Ed25519(identity,
 * lp("parley/v2/pq-spk", spkId, spkKey, idh, kem)). Only with a signed prekey signed as v2.
 */
export const PqPrekey = v.strictObject({
  spkId: U32,
  idh: PublicKey,
  kem: KemPublicKey,
  sig: Signature,
});
export type PqPrekey = v.InferOutput<typeof PqPrekey>;
/** One-time ML-KEM-768 prekey: sig = Ed25519(identity, lp("parley/v2/kem-opk", id, key)). */
export const OneTimeKemPrekey = v.strictObject({ id: U32, key: KemPublicKey, sig: Signature });
export type OneTimeKemPrekey = v.InferOutput<typeof OneTimeKemPrekey>;

/** Per-join / per-update random bound into a leaf key's signature (§9.3). */
export const LEAF_NONCE_BYTES = 16;
/** ML-KEM-768 encapsulation key of a hybrid leaf key (§9.3, §3.13). */
export const LEAF_KEM_BYTES = 1184;
/** Leaf keys a member keeps published per group (the relay serves the oldest, §9.3). */
export const LEAF_QUEUE = 8;
/**
 * A member's group wrap key ("leaf key", PROTOCOL.md §9.3): an X25519 key made for one group,
 * signed by the member's identity key: sig = Ed25519(identity, lp("parley/v2/group-leaf", hub,
 * group, u64(epoch), u32(id), key, nonce)). Commits wrap to it; the member deletes its private
 * half once it has entered the epoch of the commit that used it.
 */
export const Leaf = v.strictObject({
  id: U32,
  key: PublicKey,
  /** The epoch the member was in when it made the key (0 for a join). */
  epoch: Epoch,
  nonce: b64Bytes(LEAF_NONCE_BYTES),
  sig: Signature,
  /**
   * A hybrid leaf key (§9.3): the ML-KEM-768 half of the member's X-Wing key (1184 bytes; the
   * X25519 half is `key`). The signature then covers its SHA-256 under "parley/v2/group-leaf-xwing".
   */
  kem: v.optional(b64Bytes(LEAF_KEM_BYTES)),
});
export type Leaf = v.InferOutput<typeof Leaf>;
const Leaves = v.pipe(v.array(Leaf), v.minLength(1), v.maxLength(LEAF_QUEUE));

export const Member = v.strictObject({
  username: MemberName,
  identityKey: PublicKey,
  /** The member's leaf key the next commit must wrap to (the oldest it has published, §9.3). */
  leaf: Leaf,
});
export type Member = v.InferOutput<typeof Member>;

/** A device name is shown to people: no control characters (C0 and DEL). */
function noControlChars(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}

/**
 * One device of an identity's signed device list (§4.6): its id (the `device` of its `auth`), its
 * own Ed25519 signing key, a name its owner chose, and when it was linked (ms).
 */
export const DeviceEntry = v.strictObject({
  id: b64Bytes(DEVICE_ID_BYTES),
  key: PublicKey,
  name: v.pipe(
    v.string(),
    v.minLength(1),
    v.maxLength(LIMITS.maxDeviceNameLength),
    v.check(noControlChars, "control character"),
  ),
  addedAt: Millis,
});
export type DeviceEntry = v.InferOutput<typeof DeviceEntry>;

/**
 * An identity's device list (§4.6), signed by the identity key:
 * sig = Ed25519(identity, lp("parley/v1/device-list", identityKey, u32 version, u32 n,
 * [id, key, name, u64 addedAt] × n, u32 m, [removed id] × m)). Devices and removed ids are in
 * ascending byte order (so each list has one spelling); clients check that and the signature.
 */
export const DeviceList = v.strictObject({
  identityKey: PublicKey,
  version: v.pipe(U32, v.minValue(1)),
  devices: v.pipe(v.array(DeviceEntry), v.minLength(1), v.maxLength(LIMITS.maxDevicesPerUser)),
  removed: v.pipe(v.array(b64Bytes(DEVICE_ID_BYTES)), v.maxLength(LIMITS.maxRemovedDevices)),
  sig: Signature,
});
export type DeviceList = v.InferOutput<typeof DeviceList>;

/** Link codes (§4.8): 8 Crockford base32 characters name the rendezvous, 12 are the secret. */
export const LINK_RENDEZVOUS_CHARS = 8;
export const LINK_SECRET_CHARS = 12;
/** X-Wing public key (§3.13): the new device's one-time link key. */
export const LINK_KEY_BYTES = 1216;
/** X-Wing ciphertext (§3.13): the `enc` of a sealed link transfer. */
export const LINK_ENC_BYTES = 1120;
export const LINK_MAC_BYTES = 32;

export const Rendezvous = v.pipe(
  v.string(),
  v.length(LINK_RENDEZVOUS_CHARS),
  v.regex(/^[0-9A-HJKMNP-TV-Z]+$/, "not Crockford base32"),
);

/**
 * A new device's request to be linked (§4.8.2): its device id and signing key (for the list),
 * its one-time X-Wing link key, the name it proposes, and a MAC keyed from the link code.
 */
export const LinkOffer = v.strictObject({
  device: b64Bytes(DEVICE_ID_BYTES),
  deviceKey: PublicKey,
  linkKey: b64Bytes(LINK_KEY_BYTES),
  name: DeviceEntry.entries.name,
  mac: b64Bytes(LINK_MAC_BYTES),
});
export type LinkOffer = v.InferOutput<typeof LinkOffer>;

/** The existing device's answer (§4.8.3): the transfer sealed to the link key, MAC'd with the code. */
export const LinkAnswer = v.strictObject({
  enc: b64Bytes(LINK_ENC_BYTES),
  ciphertext: b64Max(LIMITS.maxLinkTransferChars),
  mac: b64Bytes(LINK_MAC_BYTES),
});
export type LinkAnswer = v.InferOutput<typeof LinkAnswer>;

export const PresenceUser = v.strictObject({ username: Name, identityKey: PublicKey });
export type PresenceUser = v.InferOutput<typeof PresenceUser>;

/** An opaque closed-group authorization (§9.7): the relay stores and forwards it unread. */
export const GroupAuth = b64Max(LIMITS.maxGroupAuthChars);
/** The signed group state (§9.7.1): opaque to the relay except for its policy. */
export const GroupInfoBlob = b64Max(LIMITS.maxGroupInfoChars);
/** A pending join's or leave's authorization, by user (§9.7). */
export const PendingAuth = v.strictObject({ username: MemberName, auth: GroupAuth });
/**
 * Who may see a user online (§6.3): `contacts` — people the user wrote to and members of the
 * user's groups; `everyone` — also every other user of the hub who chose `everyone`.
 */
export const PRESENCE_SCOPES = ["contacts", "everyone"] as const;
export const PresenceScope = v.picklist(PRESENCE_SCOPES);
export type PresenceScope = v.InferOutput<typeof PresenceScope>;

/** The relay's view of one group: committed roster and the changes waiting for a commit. */
export const GroupState = v.strictObject({
  group: Name,
  epoch: Epoch,
  members: v.pipe(v.array(Member), v.maxLength(LIMITS.maxGroupSize)),
  pendingJoins: v.pipe(v.array(Member), v.maxLength(LIMITS.maxGroupSize)),
  pendingLeaves: v.pipe(v.array(MemberName), v.maxLength(LIMITS.maxGroupSize)),
  /** Closed groups (§9.7): the latest signed group state a commit carried. */
  info: v.optional(GroupInfoBlob),
  /** Closed groups (§9.7.3): the authorization each pending joiner sent with its `join`. */
  joinAuths: v.optional(v.pipe(v.array(PendingAuth), v.maxLength(LIMITS.maxGroupSize))),
  /** Closed groups (§9.7.4): the signed leave or admin removal of each pending leave. */
  leaveAuths: v.optional(v.pipe(v.array(PendingAuth), v.maxLength(LIMITS.maxGroupSize))),
  /**
   * The interim transcript hash the last accepted commit declared (§9.2), zeros before the
   * first: what a joiner that commits itself chains from. Relay-held, so a lie is a fork every
   * member refuses, never a silent one.
   */
  interim: b64Bytes(32),
});
export type GroupState = v.InferOutput<typeof GroupState>;

// ---------------------------------------------------------------------------------------------
// Client → relay frames (PROTOCOL.md §5)

export const AuthFrame = v.strictObject({
  v: V,
  t: v.literal("auth"),
  username: Name,
  identityKey: PublicKey,
  signedPrekey: SignedPrekey,
  /**
   * The installation's random 16-byte id (§4.3): an identity has one current device on the
   * relay; another device's auth is refused with `device_replaced` unless it `claim`s the
   * identity (a restore from backup), which makes it current and drops the old device's
   * one-time prekeys.
   */
  device: b64Bytes(DEVICE_ID_BYTES),
  claim: v.boolean(),
  /**
   * The post-quantum prekey for `signedPrekey` (§8.3.5); a client whose signed prekey is signed
   * as v2 sends it in every auth. Not part of the auth transcript: it carries its own signature.
   */
  pqPrekey: v.optional(PqPrekey),
  /**
   * Ed25519 over lp("parley/v1/auth", hub, origin, challenge, username, identityKey, spk.id,
   * spk.key, spk.sig, device, u32 claim) — see shared/auth.ts.
   */
  sig: Signature,
});

export const UploadPrekeysFrame = v.strictObject({
  v: V,
  t: v.literal("upload_prekeys"),
  id: ClientId,
  signedPrekey: v.optional(SignedPrekey),
  oneTimePrekeys: v.pipe(v.array(OneTimePrekey), v.maxLength(LIMITS.maxOneTimePrekeysPerUpload)),
  /** Post-quantum one-time prekeys (§8.3.5). */
  oneTimeKemPrekeys: v.optional(
    v.pipe(v.array(OneTimeKemPrekey), v.maxLength(LIMITS.maxOneTimeKemPrekeysPerUpload)),
  ),
});

/**
 * Publish the identity's signed device list (§4.6). The relay keeps the newest one per username
 * (a version not above the stored one → `stale_device_list`) and serves it in `bundle` and
 * `welcome`; it checks the signature only so it cannot be made to store junk — clients verify.
 */
export const DevicesFrame = v.strictObject({
  v: V,
  t: v.literal("devices"),
  id: ClientId,
  list: DeviceList,
});

export const FetchBundleFrame = v.strictObject({
  v: V,
  t: v.literal("fetch_bundle"),
  id: ClientId,
  username: Name,
  /**
   * One device of `username` (§4.7): its current device, or a linked device on its stored list
   * that has connected. Absent: the current device, as for a single-device user.
   */
  device: v.optional(b64Bytes(DEVICE_ID_BYTES)),
});

export const SendFrame = v.strictObject({
  v: V,
  t: v.literal("send"),
  id: ClientId,
  to: Name,
  /**
   * One device of `to` (§4.7): its current device, or one on its stored device list. Absent: the
   * current device, as for a single-device user.
   */
  device: v.optional(b64Bytes(DEVICE_ID_BYTES)),
  body: Body,
});

export const AckFrame = v.strictObject({
  v: V,
  t: v.literal("ack"),
  mids: v.pipe(v.array(Mid), v.minLength(1), v.maxLength(LIMITS.maxAckIds)),
});

/**
 * Ask to join (§9.3): `leaves` are fresh leaf keys made for this join (their nonces are its
 * per-join random); the relay replaces any it held for us with them.
 */
export const JoinFrame = v.strictObject({
  v: V,
  t: v.literal("join"),
  id: ClientId,
  group: Name,
  /**
   * Closed groups (§9.7.3): a member's signed add or an invite-link join, passed unread to the
   * committer. An invite-only group's join without one is refused (`invite_required`).
   */
  auth: v.optional(GroupAuth),
  leaves: Leaves,
});
/** More leaf keys for a group we are in or joining (§9.3), appended to the relay's queue. */
export const LeafFrame = v.strictObject({
  v: V,
  t: v.literal("leaf"),
  id: ClientId,
  group: Name,
  leaves: Leaves,
});
export const LeaveFrame = v.strictObject({
  v: V,
  t: v.literal("leave"),
  id: ClientId,
  group: Name,
  /** Closed groups (§9.7.4): the leaver's signed leave, passed unread to the committer. */
  auth: v.optional(GroupAuth),
  /**
   * Another member of the sender's identity leaves instead (§4.7): one of its other devices —
   * a device its list removed, or all of a person's devices when the person leaves.
   */
  member: v.optional(MemberName),
});
/**
 * An admin removes a member (§9.7.4): the relay takes `user` out as its own `leave` would, with
 * `auth` (the admin's signed removal) as the leave's authorization. Members check it.
 */
export const RemoveFrame = v.strictObject({
  v: V,
  t: v.literal("remove"),
  id: ClientId,
  group: Name,
  user: MemberName,
  auth: GroupAuth,
});

/** `leaf`: the id of the recipient's leaf key the wrap is sealed to (§9.3). */
export const Wrap = v.strictObject({
  to: MemberName,
  leaf: U32,
  wrap: b64Max(LIMITS.maxWrapChars),
});

export const CommitFrame = v.strictObject({
  v: V,
  t: v.literal("commit"),
  id: ClientId,
  group: Name,
  parentEpoch: Epoch,
  /**
   * The new roster, exactly: the relay checks it against committed + pending changes. A name
   * twice is `bad_frame` (§5): the list must have one meaning, not one up to duplicates.
   */
  members: v.pipe(
    v.array(MemberName),
    v.minLength(1),
    v.maxLength(LIMITS.maxGroupSize),
    v.check((names) => new Set(names).size === names.length, "duplicate member"),
  ),
  /** Opaque signed commit core (PROTOCOL.md §9.2); the relay never looks inside. */
  core: b64Max(LIMITS.maxCommitCoreChars),
  /** One HPKE-wrapped epoch secret per new member; each member receives only its own. */
  wraps: v.pipe(v.array(Wrap), v.minLength(1), v.maxLength(LIMITS.maxGroupSize)),
  /**
   * Closed groups (§9.7.1): the signed group state the core carries, for the relay to keep (it
   * reads the policy) and hand to joiners. Members trust only the copy inside the core.
   */
  info: v.optional(GroupInfoBlob),
  /**
   * Closed groups (§9.7.3): pending joiners this commit leaves out because their invitation does
   * not check out; the relay drops their joins (and tells them `left`).
   */
  refused: v.optional(
    v.pipe(v.array(MemberName), v.minLength(1), v.maxLength(LIMITS.maxGroupSize)),
  ),
  /** The commit's interim transcript hash (§9.2), public; served to joiners as `interim`. */
  interim: b64Bytes(32),
});

export const GroupSendFrame = v.strictObject({
  v: V,
  t: v.literal("group_send"),
  id: ClientId,
  group: Name,
  epoch: Epoch,
  body: Body,
});

/** Uncompressed P-256 point (SEC 1 §2.3.3): the VAPID key and a subscription's p256dh. */
export const P256_PUBLIC_KEY_BYTES = 65;
/** RFC 8291 §3.2 authentication secret of a push subscription. */
export const PUSH_AUTH_BYTES = 16;

/**
 * Register this device's Web Push subscription (PROTOCOL.md §7.9): the fields of the browser's
 * `PushSubscription.toJSON()`, plus the VAPID key it was made with, so a subscription made
 * under a rotated key is refused (`push_key_changed`) instead of failing at every push.
 */
export const PushSubscribeFrame = v.strictObject({
  v: V,
  t: v.literal("push_subscribe"),
  id: ClientId,
  endpoint: v.pipe(v.string(), v.minLength(1), v.maxLength(LIMITS.maxPushEndpointChars)),
  keys: v.strictObject({
    p256dh: b64Bytes(P256_PUBLIC_KEY_BYTES),
    auth: b64Bytes(PUSH_AUTH_BYTES),
  }),
  vapidKey: b64Bytes(P256_PUBLIC_KEY_BYTES),
});

/** Forget this device's push subscription (§7.9). */
export const PushUnsubscribeFrame = v.strictObject({
  v: V,
  t: v.literal("push_unsubscribe"),
  id: ClientId,
});

/**
 * Ask for an upload ticket (PROTOCOL.md §7.10): the right to PUT one blob of exactly `size`
 * ciphertext bytes. Charged to this identity's quota until the blob expires.
 */
export const BlobUploadFrame = v.strictObject({
  v: V,
  t: v.literal("blob_upload"),
  id: ClientId,
  size: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(Number.MAX_SAFE_INTEGER)),
});

/** The user's relay settings (§6.3): who may see this user online. */
export const SettingsFrame = v.strictObject({
  v: V,
  t: v.literal("settings"),
  id: ClientId,
  presence: PresenceScope,
});

/**
 * Message requests (§7.3.1): what this user decided about direct messages from `user`.
 * `accepted` — they are a contact, their messages take the ordinary mailbox share; `blocked` —
 * the relay refuses their direct messages to this user (`request_limit`); `none` — forget the
 * decision (a stranger again).
 */
export const CONTACT_STATES = ["accepted", "blocked", "none"] as const;
export const ContactFrame = v.strictObject({
  v: V,
  t: v.literal("contact"),
  id: ClientId,
  user: Name,
  state: v.picklist(CONTACT_STATES),
});
export type ContactState = (typeof CONTACT_STATES)[number];

/**
 * Linking a device (§4.8). `link_offer` is the one frame besides `auth` and `ping` a socket may
 * send before it authenticates: the new device waits on it for the answer. `link_fetch` and
 * `link_answer` come from an authenticated device of the identity that links it.
 */
export const LinkOfferFrame = v.strictObject({
  v: V,
  t: v.literal("link_offer"),
  id: ClientId,
  rendezvous: Rendezvous,
  offer: LinkOffer,
});
export const LinkFetchFrame = v.strictObject({
  v: V,
  t: v.literal("link_fetch"),
  id: ClientId,
  rendezvous: Rendezvous,
});
export const LinkAnswerFrame = v.strictObject({
  v: V,
  t: v.literal("link_answer"),
  id: ClientId,
  rendezvous: Rendezvous,
  answer: LinkAnswer,
});

export const PingFrame = v.strictObject({ v: V, t: v.literal("ping") });
/**
 * The exact text of a keep-alive ping and its answer. The relay answers this byte string without
 * waking its Durable Object (WebSocket auto-response); clients should send exactly PING_TEXT every
 * LIMITS.pingIntervalSec. Any other spelling of a ping frame is still answered, but wakes the relay.
 */
export const PING_TEXT = '{"v":1,"t":"ping"}';
export const PONG_TEXT = '{"v":1,"t":"pong"}';

export const ClientFrame = v.variant("t", [
  AuthFrame,
  UploadPrekeysFrame,
  DevicesFrame,
  FetchBundleFrame,
  SendFrame,
  AckFrame,
  JoinFrame,
  LeafFrame,
  LeaveFrame,
  RemoveFrame,
  CommitFrame,
  GroupSendFrame,
  PushSubscribeFrame,
  PushUnsubscribeFrame,
  BlobUploadFrame,
  SettingsFrame,
  ContactFrame,
  LinkOfferFrame,
  LinkFetchFrame,
  LinkAnswerFrame,
  PingFrame,
]);
export type ClientFrame = v.InferOutput<typeof ClientFrame>;
export type ClientFrameType = ClientFrame["t"];
export const CLIENT_FRAME_TYPES = ClientFrame.options.map((o) => o.entries.t.literal);

// ---------------------------------------------------------------------------------------------
// Relay → client frames (PROTOCOL.md §6)

export const HelloFrame = v.strictObject({
  v: V,
  t: v.literal("hello"),
  hub: HubName,
  challenge: Challenge,
  time: Millis,
});

export const WelcomeFrame = v.strictObject({
  v: V,
  t: v.literal("welcome"),
  username: Name,
  identityKey: PublicKey,
  oneTimePrekeysRemaining: v.pipe(v.number(), v.integer(), v.minValue(0)),
  groups: v.pipe(v.array(GroupState), v.maxLength(LIMITS.maxGroupsPerUser)),
  /** This user's presence setting in force (§6.3): its own choice, else the hub's default. */
  presence: v.optional(PresenceScope),
  /** This identity's stored device list (§4.6), if it published one. */
  devices: v.optional(DeviceList),
  /** A linked device's mailbox address (§4.7): its name as a group member. Absent: `username`. */
  address: v.optional(MemberName),
  /** To a linked device: the id of its identity's current device, the member `username` (§4.7). */
  current: v.optional(b64Bytes(DEVICE_ID_BYTES)),
  /**
   * Every group this member is in or joining, whether its state is in `groups` or follows as a
   * `group` frame (§6.2): a group a client holds that is not named was left while it was away.
   */
  memberOf: v.optional(v.pipe(v.array(Name), v.maxLength(LIMITS.maxGroupsPerUser))),
});

/** The users online that this user may see (§6.3), once after `welcome`. */
export const PresenceFrame = v.strictObject({
  v: V,
  t: v.literal("presence"),
  users: v.pipe(v.array(PresenceUser), v.maxLength(LIMITS.maxUsersPerHub)),
});

/** What changed since the last `presence` or `presence_delta` (§6.3). */
export const PresenceDeltaFrame = v.strictObject({
  v: V,
  t: v.literal("presence_delta"),
  online: v.pipe(v.array(PresenceUser), v.maxLength(LIMITS.maxUsersPerHub)),
  offline: v.pipe(v.array(Name), v.maxLength(LIMITS.maxUsersPerHub)),
});

export const BundleFrame = v.strictObject({
  v: V,
  t: v.literal("bundle"),
  id: ClientId,
  username: Name,
  /** The device of `fetch_bundle.device`, echoed; absent when none was named (§4.7). */
  device: v.optional(b64Bytes(DEVICE_ID_BYTES)),
  identityKey: PublicKey,
  signedPrekey: SignedPrekey,
  oneTimePrekey: v.nullable(OneTimePrekey),
  /** The stored post-quantum prekey of this signed prekey, if any (§8.3.5). */
  pqPrekey: v.optional(v.nullable(PqPrekey)),
  /** A one-time KEM prekey, handed out once, while any are left (§8.3.5). */
  oneTimeKemPrekey: v.optional(v.nullable(OneTimeKemPrekey)),
  /** The user's signed device list (§4.6), when it published one. */
  devices: v.optional(DeviceList),
});

export const AcceptedFrame = v.strictObject({
  v: V,
  t: v.literal("accepted"),
  id: ClientId,
  mid: v.optional(Mid),
});

export const DirectItem = v.strictObject({ kind: v.literal("direct"), body: Body });
export const GroupItem = v.strictObject({
  kind: v.literal("group"),
  group: Name,
  epoch: Epoch,
  body: Body,
});
export const CommitItem = v.strictObject({
  kind: v.literal("commit"),
  group: Name,
  epoch: Epoch,
  core: b64Max(LIMITS.maxCommitCoreChars),
  wrap: b64Max(LIMITS.maxWrapChars),
});
export const DeliverItem = v.variant("kind", [DirectItem, GroupItem, CommitItem]);
export type DeliverItem = v.InferOutput<typeof DeliverItem>;

export const DeliverFrame = v.strictObject({
  v: V,
  t: v.literal("deliver"),
  mid: Mid,
  /**
   * Sender as authenticated by the relay: a hint only, clients verify inner signatures. A
   * username for a `direct` item; for a group item or commit the sending member (§9.1), which
   * may be a linked device's address (§4.7).
   */
  from: MemberName,
  fromKey: PublicKey,
  /**
   * The sending device (§4.9), when the sender's identity has a stored device list: which of its
   * pairwise sessions the recipient decrypts with. A hint like `from`: the recipient refuses a
   * device its accepted list does not name.
   */
  fromDevice: v.optional(b64Bytes(DEVICE_ID_BYTES)),
  ts: Millis,
  item: DeliverItem,
});

export const ReceiptFrame = v.strictObject({
  v: V,
  t: v.literal("receipt"),
  mid: Mid,
  by: Name,
});

export const GroupFrame = v.strictObject({ v: V, t: v.literal("group"), state: GroupState });
export const LeftFrame = v.strictObject({
  v: V,
  t: v.literal("left"),
  group: Name,
  /** Closed groups (§9.7.4): an admin removed us; its signed removal, for us to check and show. */
  auth: v.optional(GroupAuth),
});

export const PrekeysLowFrame = v.strictObject({
  v: V,
  t: v.literal("prekeys_low"),
  remaining: v.pipe(v.number(), v.integer(), v.minValue(0)),
});

export const ErrorFrame = v.strictObject({
  v: V,
  t: v.literal("error"),
  id: v.optional(ClientId),
  code: v.picklist(ERROR_CODES),
  message: v.pipe(v.string(), v.maxLength(200)),
});

export const PongFrame = v.strictObject({ v: V, t: v.literal("pong") });

/** A blob id (§7.10): 32 random bytes, base64url. It is the download capability. */
export const BlobId = b64Bytes(32);
/** An upload ticket (§7.10): the owner object's id (64 hex) "." 32 random bytes, base64url. */
export const BLOB_TICKET_RE = /^[0-9a-f]{64}\.[A-Za-z0-9_-]{43}$/;
export const BlobTicket = v.pipe(v.string(), v.regex(BLOB_TICKET_RE));

/**
 * Errors of the blob routes (PUT/GET /blob/{id}, §7.10): HTTP status and fixed text, answered
 * as JSON `{ "error": code, "message": text }`. Text never carries internal detail.
 */
export const BLOB_HTTP_ERRORS = {
  bad_request: [400, "Malformed blob id, ticket or length."],
  ticket_invalid: [403, "The upload ticket is not valid for this blob (or was used already)."],
  ticket_expired: [403, "The upload ticket has expired; ask for a new one."],
  not_found: [404, "No such blob; it may have expired."],
  length_required: [411, "Content-Length is required."],
  size_mismatch: [400, "The body's length is not the size the ticket was issued for."],
  blob_too_large: [413, "The attachment exceeds the size limit."],
  range_not_satisfiable: [416, "The requested range is outside the blob."],
  blob_unavailable: [503, "This relay does not store attachments."],
} as const satisfies Record<string, readonly [number, string]>;
export type BlobHttpError = keyof typeof BLOB_HTTP_ERRORS;

/** Answer to `blob_upload` (§7.10): PUT /blob/{blob} with this ticket before `expires`. */
export const BlobTicketFrame = v.strictObject({
  v: V,
  t: v.literal("blob_ticket"),
  id: ClientId,
  blob: BlobId,
  ticket: BlobTicket,
  expires: Millis,
});

/**
 * Our identity's device list changed (§4.6): sent to the identity's other connected devices
 * when one of them stores a newer list, so each can show the change at once.
 */
export const DeviceListFrame = v.strictObject({
  v: V,
  t: v.literal("device_list"),
  list: DeviceList,
});

/** The offer waiting under a rendezvous, answering `link_fetch` (§4.8.3). */
export const LinkOfferedFrame = v.strictObject({
  v: V,
  t: v.literal("link_offered"),
  id: ClientId,
  rendezvous: Rendezvous,
  offer: LinkOffer,
});
/** An answer to the offer this (unauthenticated) socket made (§4.8.3). */
export const LinkAnsweredFrame = v.strictObject({
  v: V,
  t: v.literal("link_answered"),
  rendezvous: Rendezvous,
  answer: LinkAnswer,
});

export const ServerFrame = v.variant("t", [
  HelloFrame,
  WelcomeFrame,
  PresenceFrame,
  PresenceDeltaFrame,
  BundleFrame,
  AcceptedFrame,
  DeliverFrame,
  ReceiptFrame,
  GroupFrame,
  LeftFrame,
  PrekeysLowFrame,
  ErrorFrame,
  PongFrame,
  BlobTicketFrame,
  DeviceListFrame,
  LinkOfferedFrame,
  LinkAnsweredFrame,
]);
export type ServerFrame = v.InferOutput<typeof ServerFrame>;
export type ServerFrameType = ServerFrame["t"];

export type FrameOf<U extends { t: string }, T extends U["t"]> = Extract<U, { t: T }>;

// ---------------------------------------------------------------------------------------------
// The one boundary parser

export type ParseResult<F> =
  | { ok: true; frame: F }
  | { ok: false; code: ErrorCode; id?: string | undefined };

const utf8Encoder = new TextEncoder();

/** Frames are WebSocket *text* messages (§4): a binary message is refused, whatever it holds. */
function rawToText(raw: unknown): string | null {
  return typeof raw === "string" ? raw : null;
}

/**
 * Whether some object in `text` — JSON that already parsed — has the same key twice (after
 * unescaping). `JSON.parse` keeps the last one silently, so a frame could mean one thing to this
 * parser and another to a different one; a frame must have exactly one meaning (§5).
 */
export function hasDuplicateKeys(text: string): boolean {
  // One entry per open container: the keys seen so far (object) or null (array).
  const stack: Array<Set<string> | null> = [];
  let keyNext = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // The closing quote: the next `"` after an even run of backslashes. Found with indexOf,
      // not a character loop: a frame is mostly the characters of its base64url body.
      let j = text.indexOf('"', i + 1);
      for (;;) {
        if (j < 0) return false; // not JSON (callers parse first): nothing more to find
        let b = j - 1;
        while (text.charCodeAt(b) === 0x5c) b--;
        if ((j - 1 - b) % 2 === 0) break;
        j = text.indexOf('"', j + 1);
      }
      const keys = stack[stack.length - 1];
      if (keyNext && keys) {
        const inner = text.slice(i + 1, j);
        const key = inner.includes("\\") ? (JSON.parse(text.slice(i, j + 1)) as string) : inner;
        if (keys.has(key)) return true;
        keys.add(key);
        keyNext = false;
      }
      i = j;
    } else if (c === 0x7b) {
      stack.push(new Set());
      keyNext = true;
    } else if (c === 0x5b) {
      stack.push(null);
      keyNext = false;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
    } else if (c === 0x2c) {
      keyNext = stack[stack.length - 1] != null;
    }
  }
  return false;
}

function byteLength(raw: unknown): number {
  if (typeof raw === "string") {
    // Cheap upper bound first: a UTF-16 unit never encodes to more than 3 UTF-8 bytes.
    if (raw.length * 3 <= LIMITS.maxFrameBytes) return raw.length;
    return utf8Encoder.encode(raw).length;
  }
  if (raw instanceof ArrayBuffer) return raw.byteLength;
  if (ArrayBuffer.isView(raw)) return raw.byteLength;
  return 0;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Best-effort id of a rejected frame so the error can be correlated; never trusted otherwise. */
function salvageId(obj: unknown): string | undefined {
  if (typeof obj !== "object" || obj === null) return undefined;
  const id = (obj as Record<string, unknown>).id;
  // Echoed only if it is a valid id itself: the error frame must pass the client's parser too.
  return typeof id === "string" && id.length <= LIMITS.maxClientIdLength && CLIENT_ID_RE.test(id)
    ? id
    : undefined;
}

function parseWith<F>(
  raw: unknown,
  schema: v.GenericSchema<unknown, F>,
  knownTypes: readonly string[],
): ParseResult<F> {
  if (byteLength(raw) > LIMITS.maxFrameBytes) return { ok: false, code: "too_large" };
  const text = rawToText(raw);
  if (text === null) return { ok: false, code: "bad_frame" };
  const obj = safeJson(text);
  if (typeof obj !== "object" || obj === null || Array.isArray(obj) || hasDuplicateKeys(text)) {
    return { ok: false, code: "bad_frame" };
  }
  const id = salvageId(obj);
  const rec = obj as Record<string, unknown>;
  if (rec.v !== PROTOCOL_VERSION) return { ok: false, code: "unsupported_version", id };
  if (typeof rec.t !== "string" || !knownTypes.includes(rec.t)) {
    return { ok: false, code: "unknown_type", id };
  }
  const result = v.safeParse(schema, obj);
  if (!result.success) return { ok: false, code: "bad_frame", id };
  return { ok: true, frame: result.output };
}

const SERVER_FRAME_TYPES = ServerFrame.options.map((o) => o.entries.t.literal);

/** Parse a frame a client sent (relay side). Accepts a socket message: string or bytes. */
export function parseClientFrame(raw: unknown): ParseResult<ClientFrame> {
  return parseWith(raw, ClientFrame, CLIENT_FRAME_TYPES);
}

/** Parse a frame the relay sent (client side). The relay is untrusted: same rigour. */
export function parseServerFrame(raw: unknown): ParseResult<ServerFrame> {
  return parseWith(raw, ServerFrame, SERVER_FRAME_TYPES);
}

/** Build the error frame for a code: fixed text, optional correlation id. */
export function errorFrame(code: ErrorCode, id?: string): FrameOf<ServerFrame, "error"> {
  return id === undefined
    ? { v: PROTOCOL_VERSION, t: "error", code, message: ERRORS[code] }
    : { v: PROTOCOL_VERSION, t: "error", id, code, message: ERRORS[code] };
}

/** Parse any value against a schema once, at a trust boundary (IndexedDB, attachments). */
export function parseUnknown<T>(
  schema: v.GenericSchema<unknown, T>,
  value: unknown,
): { ok: true; value: T } | { ok: false } {
  const r = v.safeParse(schema, value);
  return r.success ? { ok: true, value: r.output } : { ok: false };
}
