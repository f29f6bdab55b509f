/**
 * The per-socket state that survives hibernation (PROTOCOL.md §4.1). workerd keeps it with the
 * socket while the object sleeps; after wake-up it is re-validated like any other input, and a
 * socket whose attachment does not parse is closed rather than trusted.
 */
import * as v from "valibot";
import {
  Challenge,
  HubName,
  LIMITS,
  Name,
  PublicKey,
  parseUnknown,
  Rendezvous,
} from "../../shared/protocol";
import { AddressBucket } from "./admission";

/**
 * Bound on group items remembered as acknowledged ahead of an older one still in flight, per
 * connection: they travel in the attachment, whose serialised size workerd caps at 2 KiB.
 * Past it the oldest are forgotten; such an item then counts as in flight again after the
 * object hibernates (until the client reconnects), and may be delivered again then (§7.3).
 */
export const MAX_ACKED_AHEAD = 64;

const Millis = v.pipe(v.number(), v.integer(), v.minValue(0));
/** Highest mailbox id already sent on this connection (0 = nothing yet). */
const Cursor = v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(Number.MAX_SAFE_INTEGER));
/** The page origin as the browser sent it: scheme://host[:port], nothing else. */
export const Origin = v.pipe(v.string(), v.maxLength(256), v.regex(/^https?:\/\/[^/\s?#]+$/));

/**
 * A linked device's mailbox address (§4.7): its username, ".", its 22-character device id. "." is
 * outside the name alphabet (§2.3), so no address is ever a username.
 */
export const MailboxAddress = v.pipe(
  v.string(),
  v.maxLength(LIMITS.maxNameLength + 23),
  v.regex(/^[a-z0-9][a-z0-9_-]*\.[A-Za-z0-9_-]{22}$/),
);

export const PendingAttachment = v.strictObject({
  v: v.literal(1),
  state: v.literal("pending"),
  hub: HubName,
  origin: Origin,
  challenge: Challenge,
  connectedAt: Millis,
  /**
   * Client address bucket (admission.ts), for the per-address bound on pending sockets. Optional
   * so sockets accepted before it existed still restore; those count only toward the global bound.
   */
  ip: v.optional(AddressBucket),
  /**
   * The link offer this socket waits on (PROTOCOL.md §4.8.3): its rendezvous (the offer is in the
   * object's storage) and when it expires, which replaces the auth timeout as its deadline.
   */
  link: v.optional(v.strictObject({ rendezvous: Rendezvous, expiresAt: Millis })),
  /**
   * The user whose object this socket reached (`/ws?hub=h&user=name`, docs/ARCHITECTURE.md
   * "User objects"): only that name authenticates on it. Absent: the hub's object.
   */
  user: v.optional(Name),
  /**
   * The rendezvous whose object this socket reached (`/ws?hub=h&link=r`, PROTOCOL.md §4.8.3): a
   * new device waiting to be linked, which offers there and authenticates on its user's route.
   */
  route: v.optional(Rendezvous),
});
export type PendingAttachment = v.InferOutput<typeof PendingAttachment>;

export const AuthedAttachment = v.strictObject({
  v: v.literal(1),
  state: v.literal("authed"),
  hub: HubName,
  origin: Origin,
  username: Name,
  identityKey: PublicKey,
  connectedAt: Millis,
  lastSeen: Millis,
  cursor: Cursor,
  /**
   * Group mids acknowledged on this connection above the user's group cursor (an older one is
   * still unacknowledged), so a connection restored after hibernation does not count them as
   * in flight again (delivery.ts). Optional: absent means none, as for older attachments.
   */
  ahead: v.optional(v.pipe(v.array(Cursor), v.maxLength(MAX_ACKED_AHEAD))),
  /**
   * The connection's mailbox address when it is a linked device other than the identity's
   * current one (PROTOCOL.md §4.7): `username "." device`. Absent: the username, as for every
   * single-device user.
   */
  address: v.optional(MailboxAddress),
  /**
   * The connection came by its user's route: this object holds only its user, so the other
   * users it names are reached through their own objects (hub.ts PeerGateway).
   */
  routed: v.optional(v.literal(true)),
});
export type AuthedAttachment = v.InferOutput<typeof AuthedAttachment>;

/** Where a connection's mailbox, delivery cursor and routing live (§4.7). */
export function addressOf(a: { username: string; address?: string | undefined }): string {
  return a.address ?? a.username;
}

export const Attachment = v.variant("state", [PendingAttachment, AuthedAttachment]);
export type Attachment = v.InferOutput<typeof Attachment>;

export function parseAttachment(value: unknown): Attachment | null {
  const r = parseUnknown(Attachment, value);
  return r.ok ? r.value : null;
}
