/**
 * The relay's protocol logic for one hub (PROTOCOL.md §4–§7), independent of the Durable Object
 * lifecycle: the object hands it sessions and raw frames, it answers through `Session.send`.
 *
 * Rules that make it safe against hostile clients:
 * - every frame goes through a rate check and `parseClientFrame` before anything else (an `ack`
 *   that frees deliveries is the one frame exempt from the rate check, see `message`);
 * - the only `await`s are signature verification and calls to other objects (the key directory,
 *   group objects, blob ledgers); every storage read/modify/write around them is synchronous,
 *   and what a decision read before such a call is read again after it, so handlers never
 *   interleave inside a decision (a Durable Object runs one event at a time between awaits);
 * - no handler throws: failures become typed error frames (`errorFrame`).
 */
import { deviceListVerifies } from "../../shared/core/devices";
import { policyOf, relayMayRemove } from "../../shared/core/group-access";
import { leafMessage } from "../../shared/core/group-schedule";
import { ed25519VerifyMany } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import {
  CLOSE,
  type ClientFrame,
  type DeliverItem,
  type DeviceList,
  type ErrorCode,
  errorFrame,
  type FrameOf,
  type GroupState,
  LIMITS,
  type LinkOffer,
  type ParseResult,
  PROTOCOL_VERSION,
  type PresenceScope,
  type PresenceUser,
  parseServerFrame,
  type ServerFrame,
  userOfMember,
} from "../../shared/protocol";
import { admissionBuckets, registrationBuckets, UNKNOWN_ADDRESS } from "./admission";
import { type AuthedAttachment, addressOf, type PendingAttachment } from "./attachment";
import { verifyAuthFrame, verifySignedPrekey } from "./auth";
import { Coalescer } from "./coalesce";
import { Deliveries, groupDeliverText } from "./delivery";
import {
  checkPublishedList,
  deviceAddress,
  linkedDevice,
  sendAddress,
  sendingDevice,
} from "./device-lists";
import { prekeysLow, usernameReclaimable } from "./directory";
import { fastGroupDeliver, parseClientFrameFast } from "./fastframe";
import {
  HomeLinks,
  type HomeReceipt,
  type MemberBinding,
  memberAttachment,
  replySession,
} from "./group-home";
import type { GroupCallResult, GroupGateway, GroupOp } from "./group-object";
import { MembershipPushes } from "./group-push";
import * as groups from "./groups";
import {
  type ClaimResult,
  type DirectoryGateway,
  type KeyDirectory,
  prekeyOwner,
} from "./key-directory";
import type { LinkStore } from "./links";
import type { MailboxKind, MailboxRow, SenderHoldings } from "./mailbox";
import {
  commitRoom,
  expiryOf,
  mailboxHasRoom,
  parseMids,
  requestHasRoom,
  senderRoom,
} from "./mailbox";
import { groupPeersOf, Presence } from "./presence";
import { type PushConfig, Pushes } from "./push-send";
import { type Bucket, BucketMap, fanoutCost } from "./ratelimit";
import type { Session, SessionRegistry } from "./session";
import type {
  GroupExport,
  GroupLogRow,
  NewGroupMessage,
  PushSubRow,
  Store,
  UserRow,
} from "./store";

/** Entries per call handing this object's former bindings to the Directory object. */
const SEED_BATCH = 500;

/**
 * Longest an acknowledgement of a sender's items waits before this object tells the sender's
 * object what it still holds of them (docs/ARCHITECTURE.md "User objects"), ms.
 */
export const HELD_DELAY_MS = 100;

/**
 * Longest a sender's object waits for the recipient's object to settle a send it took
 * write-behind (`EnqueueResult.later`, PROTOCOL.md §7.3 "Write-behind") before it sends the frame
 * there again itself, ms. Settling takes writeBehindMs plus HELD_DELAY_MS and a call; a wait this
 * long means the recipient's object restarted and lost the held item, or the report was lost.
 */
export const SETTLE_WAIT_MS = 5_000;

/**
 * Sends awaiting their settling at most, per object, and their bodies' characters (each is kept
 * to be sent again): past either, a send is stored first.
 */
const MAX_AWAITING = 1024;
const MAX_AWAITING_CHARS = 4 * 1024 * 1024;

/**
 * A direct item the recipient's object took write-behind for a sender in another object, now
 * settled (acknowledged or stored): the sender's object answers `accepted` for it.
 */
export interface SettledSend {
  /** The `send` frame's id. */
  id: string;
  mid: number;
}

/**
 * A sender whose items an address of this object acknowledged, or whose write-behind items for
 * it settled (Hub.#heldReports).
 */
interface HeldReport {
  hub: string;
  sender: string;
  /** The mailbox address the items were for. */
  address: string;
  settled: SettledSend[];
}

/**
 * What a member's object holds of one group's messages that it took write-behind from the
 * group's home (Hub.#fromHomes): the home's mid of each one still held, to this object's mid, in
 * order; the highest home mid taken (held or stored); and the home's mids settled (acknowledged
 * or stored) that the home has not been told of yet.
 */
interface FromHome {
  hub: string;
  group: string;
  address: string;
  held: Map<number, number>;
  taken: number;
  settled: string[];
}

/** Entries of Hub.#fromHomes kept idle at most (each a few numbers). */
const MAX_FROM_HOMES = 1024;

/** A send taken write-behind by another user's object, awaiting its settling (Hub.#awaiting). */
interface Awaiting {
  s: Session;
  hub: string;
  e: DirectEnqueue;
  /** The recipient's mailbox address and the item's mid there. */
  address: string;
  mid: number;
  at: number;
}

/** Sockets that have not authenticated yet, per hub; more are refused with HTTP 503. */
export const MAX_PENDING_SOCKETS = 1000;

/** A group's interim transcript hash before its first commit (PROTOCOL.md §9.3). */
const ZERO_INTERIM = toB64u(new Uint8Array(32));

/** The `devices` field of a `bundle` or `welcome`: the stored list, if it is this identity's. */
function devicesOf(list: DeviceList | null, identityKey: string): { devices?: DeviceList } {
  return list !== null && list.identityKey === identityKey ? { devices: list } : {};
}

/** The device id of a linked device's connection (its address is "<name>.<device>", §4.7). */
function deviceOf(a: AuthedAttachment): string | null {
  return a.address === undefined ? null : a.address.slice(a.username.length + 1);
}

/** Groups every hub has from the start (PROTOCOL.md §7.5). */
export const DEFAULT_GROUPS = ["broadcast"] as const;

type Frame<T extends ClientFrame["t"]> = FrameOf<ClientFrame, T>;
/** The prekey calls of an entry (key-directory.ts), wherever its keys live. */
type KeyCalls = Pick<DirectoryGateway, "bind" | "upload" | "take">;
/** A `link_answer`'s sealed answer, handed on unread (§4.8.3). */
export type LinkAnswer = Frame<"link_answer">["answer"];

export interface HubDeps {
  store: Store;
  sessions: SessionRegistry;
  /** Monotonic milliseconds (the object guarantees it never goes backwards). */
  now(): number;
  /** Ask for the alarm to run no later than `at` (ms). */
  wakeAt(at: number): void;
  /** Last time the runtime auto-answered a ping on this socket, if ever (ms). */
  lastAutoPong(s: Session): number | null;
  /** The relay's Web Push settings (PROTOCOL.md §7.9); absent or null: push is off. */
  push?: PushConfig | null;
  /** Where upload tickets come from (PROTOCOL.md §7.10); absent or null: no attachments. */
  blobs?: BlobGateway | null;
  /** The presence scope of users of `hub` who chose none (presence.ts presenceDefaults). */
  presenceDefault?: (hub: string) => PresenceScope;
  /**
   * The hub's key directory object (key-directory.ts): its bindings and registrations; on the
   * hub's route also every entry's prekeys and their quota.
   */
  directory: DirectoryGateway;
  /**
   * This object's own key store (key-directory.ts over its own storage): in a user's object, the
   * prekeys of its user's entries and their quota (PROTOCOL.md §4.1). Absent: none here.
   */
  ownKeys?: () => KeyDirectory;
  /** The hub's group objects (group-object.ts): each group's roster, epoch and commits (§7.5). */
  groups: GroupGateway;
  /** Link offers waiting for their answer (links.ts, PROTOCOL.md §4.8.3). */
  links: LinkStore;
  /**
   * The other users' objects, for connections that came by their user's route (`routed`);
   * absent or null: every user is in this object.
   */
  peers?: PeerGateway | null;
}

/**
 * What the hub's object held for a user who now takes its own route (`Hub.handOver`): the items
 * not yet acknowledged at each of its mailbox addresses, in mid order, and its decisions, device
 * and list, and presence setting.
 */
export interface HandOver {
  items: Array<{ address: string; row: MailboxRow } | { address: string; group: GroupLogRow }>;
  /**
   * The groups the user's addresses are in (or asked to join) on the hub's route, which moved
   * to their homes with this answer: each address is to be taken in by its group's home.
   */
  groups: Array<{ address: string; group: string }>;
  contacts: Array<{ peer: string; state: "accepted" | "blocked" }>;
  device: string | null;
  deviceList: DeviceList | null;
  presence: PresenceScope | null;
  /** The Web Push subscriptions of the user's devices (§7.9), by mailbox address. */
  pushSubs: PushSubRow[];
}

/** The recipient's answer to a direct item (`Hub.enqueue`). */
export type EnqueueResult =
  | {
      ok: true;
      mid: number;
      stored: boolean;
      /** The recipient's mailbox address, and how many items of the sender it holds now. */
      held: { address: string; n: number };
      /**
       * Sent before it was stored (§7.3 "Write-behind"): the sender's answer comes later,
       * through the `answer` given to `enqueue`, once the item is acknowledged or stored.
       */
      later?: true;
    }
  | { ok: false; code: ErrorCode };

/** A bundle asked of the object holding `username` (`Hub.bundle`, PROTOCOL.md §4.7, §7.4). */
export interface BundleQuery {
  username: string;
  device?: string;
  /** The requester's identity key: the one-time prekey quota is per requester (§7.4). */
  requester: string;
  now: number;
}

export type BundleAnswer =
  | { ok: true; bundle: Omit<FrameOf<ServerFrame, "bundle">, "v" | "t" | "id"> }
  | { ok: false; code: ErrorCode };

/**
 * Calls to the object of another user of the hub (docs/ARCHITECTURE.md "User objects"): each is
 * the body of one `Hub` method run there, on plain data. Any of them may reject, as a Durable
 * Object RPC may (the object restarted, the call timed out); the gateway makes an idempotent
 * call once more when the runtime failed it (worker/relay.ts `retryableCallError`), and
 * otherwise the caller answers `internal`, and the client's outbox sends the frame again, which
 * the keyed retry stores once (§7.3).
 */
export interface PeerGateway {
  /** `Hub.enqueue` in the object of `e.to`. */
  enqueue(hub: string, e: DirectEnqueue): Promise<EnqueueResult>;
  /**
   * `Hub.held` in the object of `to`: how many of `to`'s items the calling object still holds
   * for `address` (the sender's total, §7.3), after acknowledgements, and which of `to`'s sends
   * taken write-behind there are settled. Best effort: a lost report is put right by the answer
   * to `to`'s next send there, and a send not reported settled is sent again (SETTLE_WAIT_MS).
   */
  held(
    hub: string,
    to: string,
    address: string,
    n: number,
    settled: readonly SettledSend[],
  ): Promise<void>;
  /** `Hub.bundle` in the object of `q.username`. */
  bundle(hub: string, q: BundleQuery): Promise<BundleAnswer>;
  /** `Hub.known` in the object of `username`. */
  known(hub: string, username: string): Promise<boolean>;
  /** `Hub.peerPresence` in the object of `viewer`: `user` online as `state`, or offline (§6.3). */
  presence(hub: string, viewer: string, user: string, state: PresenceUser | null): Promise<void>;
  /**
   * `Hub.fromMember` in the home of `group` (group-home.ts): one group frame of `member`'s,
   * answered with the frames its connection gets in answer.
   */
  toHome(hub: string, group: string, member: MemberBinding, text: string): Promise<string[]>;
  /** `Hub.fromHome` in the object of `member` (an address): what the home of `group` sends it. */
  fromHome(hub: string, group: string, member: string, texts: string[]): Promise<HomeReceipt>;
  /** `Hub.lobby` in the hub's lobby (`hub + "/everyone"`, §6.3): who else is there. */
  lobby(hub: string, user: string, state: PresenceUser | null): Promise<PresenceUser[]>;
  /** `Hub.lobbyPresence` in the object of `viewer`: the lobby's word on `user`. */
  lobbyPresence(
    hub: string,
    viewer: string,
    user: string,
    state: PresenceUser | null,
  ): Promise<void>;
  /**
   * `Hub.handOver` in the hub's object (`idFromName(hub)`): what it held for `username`;
   * `busy`: one of the user's groups has a step in flight there, ask again.
   */
  handOver(hub: string, username: string, identityKey: string): Promise<HandOver | null | "busy">;
  /**
   * `Hub.groupExport` in the hub's object: its group `group`, which moves to its home with this
   * answer (null: it holds none; `busy`: a step of it is in flight there, ask again).
   */
  groupExport(hub: string, group: string): Promise<GroupExport | null | "busy">;
  /**
   * `Hub.adopt` in the home of `group`: take member `m` in after its hand-over (the home first
   * takes the group from the hub's object, if it never held it), and open its link at once.
   * Answers the group's state for `m` (null: not in the group).
   */
  adopt(hub: string, group: string, m: MemberBinding): Promise<GroupState | null>;
  /** `Hub.deviceRemoved` in the home of `group`: `m`'s list dropped its device `at` (§4.7). */
  deviceRemoved(hub: string, group: string, m: MemberBinding, at: string): Promise<void>;
  /** `Hub.nameReclaimed` in the home of `group`: `m`'s name went to another identity (§4.3). */
  nameReclaimed(hub: string, group: string, m: MemberBinding): Promise<boolean>;
  /** `Hub.homeRoom` in the home of `group`: the object of `member` (an address) has room again. */
  homeRoom(hub: string, group: string, member: string): Promise<void>;
  /**
   * `Hub.homeSettled` in the home of `group`: the object of `member` (an address) settled these
   * items it took write-behind (§7.3 "Write-behind"), by the home's mids.
   */
  homeSettled(hub: string, group: string, member: string, mids: string[]): Promise<void>;
  /** `Hub.linkOffered` in the object of `rendezvous` (`hub + "/l/" + rendezvous`, §4.8.3). */
  linkOffered(hub: string, rendezvous: string): Promise<LinkOffer | null>;
  /** `Hub.linkAnswered` in the object of `rendezvous`. */
  linkAnswered(hub: string, rendezvous: string, answer: LinkAnswer): Promise<boolean>;
}

/** The frames a user's object forwards to the group's home (group-home.ts). */
type GroupFrame = Frame<"join" | "leaf" | "leave" | "remove" | "commit" | "group_send">;
const GROUP_FRAMES: ReadonlySet<ClientFrame["t"]> = new Set([
  "join",
  "leaf",
  "leave",
  "remove",
  "commit",
  "group_send",
]);
function isGroupFrame(f: ClientFrame): f is GroupFrame {
  return GROUP_FRAMES.has(f.t);
}

/**
 * The per-identity blob ledgers, seen from a hub (worker/blobs.ts): `owner` names the identity
 * (hub and identity key), so its quota follows the device key, not the username.
 */
export interface BlobGateway {
  mint(
    owner: string,
    size: number,
  ): Promise<
    | { ok: true; owner: string; blob: string; token: string; expires: number }
    | { ok: false; code: "blob_too_large" | "blob_quota" }
  >;
}

/**
 * A direct item as the recipient's side takes it (`Hub.enqueue`, PROTOCOL.md §7.3): plain data,
 * everything the recipient decides on, so that it can be one call between objects.
 */
export interface DirectEnqueue {
  /** The sender's username and identity key, as its connection authenticated them. */
  from: string;
  fromKey: string;
  /** The sending device named in the `deliver` (§4.9), or null. */
  fromDevice: string | null;
  /** The sending device's retry key: identity key and device (§7.3 "Retries"). */
  key: string;
  /** The `send` frame's id. */
  id: string;
  to: string;
  /** One device of the recipient (§4.7); absent: its current device. */
  device?: string;
  body: string;
  now: number;
  /**
   * Set by a sender's object in another object than the recipient's: the hub to call it back
   * at, which lets the recipient's object take the item write-behind (§7.3): it answers `later`,
   * and reports the item settled to the sender's object (`PeerGateway.held`).
   */
  behind?: string;
}

export class Hub {
  readonly #d: HubDeps;
  /**
   * Frame tokens per identity (PROTOCOL.md §7.2), kept in storage so a restart or eviction does
   * not refill them (SECURITY.md L4): written when a bucket has fallen a quarter of its burst
   * below what is stored, so a restart gives back at most that and honest traffic writes nothing.
   */
  readonly #identityBuckets: BucketMap;
  /** Who may see whom online, and the deltas (presence.ts, PROTOCOL.md §6.3). */
  readonly presence: Presence;
  /** What is in flight where, and group acknowledgement cursors (delivery.ts). */
  readonly deliveries: Deliveries;
  /** Bounded join/leave pushes per group (group-push.ts, PROTOCOL.md §7.5). */
  readonly #membership = new MembershipPushes();
  /**
   * Joins and leaf refills of a group whose signatures are still being checked (an await that
   * lets other frames in). A commit for that group waits for them, so the group sees its frames
   * in the order they arrived: a member's rejoin (leave, then join) is not overtaken by another
   * member's commit of the leave, which would make the join a stranger's (PROTOCOL.md §9.4).
   */
  readonly #checking = new Map<string, Set<Promise<void>>>();
  /**
   * Per group, the tail of its group-object steps (`#serial`): one call per group at a time, so
   * each names the seq of the copy the hub holds when it is made (group-object.ts).
   */
  readonly #groupChains = new Map<string, Promise<void>>();
  /** Web Push subscriptions and sends (push-send.ts, PROTOCOL.md §7.9). */
  readonly pushes: Pushes;
  /**
   * `send`, `group_send` and (on the hub's route) `ack` steps that arrive together run in one
   * event, one commit (coalesce.ts). Each still stores before it answers or delivers (§7.3; a
   * direct item sent write-behind is answered once acknowledged or stored), and its connection's
   * next frame waits for it (`message`), so per-connection order holds.
   */
  readonly #coalesced = new Coalescer();
  /**
   * Senders in other users' objects whose items an address here acknowledged: each sender's
   * object is told what this object still holds of its items (the sender's total, §7.3) once per
   * sender and address within HELD_DELAY_MS, not once per acknowledgement (that was a second
   * call between objects per 1:1 message, beside the `enqueue`).
   */
  readonly #heldReports = new Map<string, HeldReport>();
  #heldTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * Sends of this object's connections that another user's object took write-behind (§7.3),
   * by recipient address and mid, oldest first: each is answered `accepted` when that object
   * reports it settled (`held`), or sent there again after SETTLE_WAIT_MS.
   */
  readonly #awaiting = new Map<string, Awaiting>();
  #awaitingChars = 0;
  #awaitTimer: ReturnType<typeof setTimeout> | null = null;
  /**
   * This object as a group's home on users' routes (group-home.ts): its hub and group, from its
   * first call on; null for a hub's or a user's object.
   */
  #homeRow: { hub: string; group: string } | null | undefined = undefined;
  /** A home taking its group from the hub's object (#takeFromHub), while the call is out. */
  #adopting: Promise<void> | null = null;
  /** In a user's object: the audience of each group state it holds (#fanoutAt). */
  readonly #audiences = new Map<string, { state: string; n: number }>();
  /** In a user's object: the homes it answered `later` (no room), per member address. */
  readonly #full = new Map<string, Set<string>>();
  /**
   * In a user's object: the group messages it took write-behind from their homes (§7.3
   * "Write-behind"), per member address and group (#takeFromHome).
   */
  readonly #fromHomes = new Map<string, FromHome>();
  #fromHomesTimer: ReturnType<typeof setTimeout> | null = null;
  /** A home's links to its members' objects (group-home.ts). */
  readonly #links: HomeLinks;
  /** The directory holds every binding this object kept before it owned them (#directoryReady). */
  #seeded = false;
  #seeding: Promise<void> | null = null;

  constructor(deps: HubDeps) {
    this.#d = deps;
    const stored = (kind: "identity") => ({
      load: (key: string) => deps.store.loadBucket(kind, key),
      save: (key: string, b: Bucket, fullAt: number) => deps.store.saveBucket(kind, key, b, fullAt),
    });
    this.#identityBuckets = new BucketMap(
      { ratePerSec: LIMITS.identityRatePerSec, burst: LIMITS.identityBurst },
      LIMITS.maxOnlinePerHub * 2,
      stored("identity"),
      LIMITS.identityBurst / 4,
    );
    this.pushes = new Pushes({
      store: deps.store,
      sessions: deps.sessions,
      now: () => deps.now(),
      wakeAt: (at) => deps.wakeAt(at),
      config: deps.push ?? null,
    });
    this.presence = new Presence({
      store: deps.store,
      sessions: deps.sessions,
      now: () => deps.now(),
      wakeAt: (at) => deps.wakeAt(at),
      hubDefault: deps.presenceDefault ?? (() => "contacts"),
      announce:
        deps.peers === undefined || deps.peers === null
          ? null
          : (hub, viewer, user, state) =>
              (deps.peers as PeerGateway).presence(hub, viewer, user, state),
      lobby:
        deps.peers === undefined || deps.peers === null
          ? null
          : (hub, user, state) => (deps.peers as PeerGateway).lobby(hub, user, state),
    });
    this.deliveries = new Deliveries({
      store: deps.store,
      sessions: deps.sessions,
      now: () => deps.now(),
    });
    this.#links = new HomeLinks({
      sessions: deps.sessions,
      deliveries: this.deliveries,
      now: () => deps.now(),
      wakeAt: (at) => deps.wakeAt(at),
      send: (member, texts) => {
        const home = this.#home as { hub: string; group: string };
        return (deps.peers as PeerGateway).fromHome(home.hub, home.group, member, texts);
      },
      stateFor: (member) => this.#stateFor(member),
      // A link is no user's presence: closing one tells nobody anything (§6.3).
      closed: (s) => {
        this.deliveries.closed(s);
        deps.sessions.remove(s);
      },
      settleWaitMs: SETTLE_WAIT_MS,
    });
  }

  // -- lifecycle ------------------------------------------------------------------------------

  /** A socket was accepted: the attachment to store and the `hello` to send (PROTOCOL.md §4.1). */
  hello(
    hub: string,
    origin: string,
    challenge: string,
    ip: string,
    user?: string,
    link?: string,
  ): {
    att: PendingAttachment;
    frame: FrameOf<ServerFrame, "hello">;
  } {
    const now = this.#d.now();
    // The alarm closes it with 4001 if it has not authenticated by then (see `alarm`).
    this.#d.wakeAt(now + LIMITS.authTimeoutSec * 1000);
    return {
      att: {
        v: 1,
        state: "pending",
        hub,
        origin,
        challenge,
        connectedAt: now,
        ip,
        ...(user !== undefined ? { user } : {}),
        ...(link !== undefined ? { route: link } : {}),
      },
      frame: { v: PROTOCOL_VERSION, t: "hello", hub, challenge, time: now },
    };
  }

  /**
   * One message from a socket. Never rejects. The rate check happens on arrival; handling is
   * chained per connection so frames are answered strictly in the order they were sent, even
   * when one of them awaits a signature check (PROTOCOL.md §6.1).
   */
  message(s: Session, raw: unknown): Promise<void> {
    if (s.closed) return Promise.resolve();
    let ack: Frame<"ack"> | null = null;
    try {
      // An ack is flow control for the relay's own deliveries, not traffic: it is charged only
      // if it acknowledges nothing (#ack). Charging every ack let the relay's delivery rate push
      // a client draining a full mailbox over its bucket and get it closed as abusive (§7.2).
      ack = s.authed !== null ? ackFrame(raw) : null;
      if (ack === null && !this.#admit(s, this.#d.now())) return Promise.resolve();
    } catch (e) {
      return Promise.resolve(this.#internal(s, e, undefined));
    }
    const run = s.tail.then(() => this.#handle(s, raw, ack));
    s.tail = run;
    return run;
  }

  async #handle(s: Session, raw: unknown, ack: Frame<"ack"> | null): Promise<void> {
    if (s.closed) return;
    let id: string | undefined;
    try {
      // An ack was parsed already (before admission): it is not parsed twice. The two hot frame
      // types take a fast path that accepts exactly what the reference accepts (fastframe.ts).
      const parsed: ParseResult<ClientFrame> =
        ack !== null ? { ok: true, frame: ack } : parseClientFrameFast(raw);
      if (!parsed.ok) {
        s.malformed++;
        s.send(errorFrame(parsed.code, parsed.id));
        if (s.malformed > LIMITS.maxMalformed) this.#closeAbusive(s, "malformed frames");
        return;
      }
      const frame = parsed.frame;
      id = "id" in frame ? frame.id : undefined;
      await this.#dispatch(s, frame, this.#d.now());
    } catch (e) {
      this.#internal(s, e, id);
    }
  }

  #internal(s: Session, e: unknown, id: string | undefined): void {
    // A bug, not bad input (bad input is answered with its own code). Log the kind of failure
    // for the operator; the client learns nothing internal.
    console.error("relay: handler failed", e instanceof Error ? e.name : typeof e);
    s.send(errorFrame("internal", id));
  }

  /**
   * May the object accept one more socket from client address bucket `ip` (admission.ts)?
   * Unauthenticated sockets are bounded per source — the address, and for IPv6 also its /56 and
   * /48 — so no source takes the whole budget (refused: `ok: false`, HTTP 503). When the budget
   * of MAX_PENDING_SOCKETS is full anyway (many sources), the newcomer still gets in and the
   * longest-waiting unauthenticated socket is closed instead (`evict`): an honest client
   * authenticates within a round trip or two, so a flood of idle handshakes can slow newcomers
   * down but never lock out everyone, registered users reconnecting included (PROTOCOL.md §4.1,
   * §7.2).
   */
  admit(ip: string = UNKNOWN_ADDRESS): { ok: true; evict: Session | null } | { ok: false } {
    const buckets = admissionBuckets(ip);
    const counts = buckets.map(() => 0);
    let pending = 0;
    let oldest: Session | null = null;
    for (const s of this.#d.sessions.all()) {
      const a = s.att;
      if (s.closed || a.state !== "pending") continue;
      pending++;
      if (oldest === null || a.connectedAt < oldest.att.connectedAt) oldest = s;
      if (a.ip === undefined) continue;
      const theirs = a.ip === ip ? buckets : admissionBuckets(a.ip);
      for (const [i, b] of buckets.entries()) {
        if (theirs.some((t) => t.key === b.key)) counts[i] = (counts[i] ?? 0) + 1;
      }
    }
    if (buckets.some((b, i) => (counts[i] ?? 0) >= b.max)) return { ok: false };
    return { ok: true, evict: pending >= MAX_PENDING_SOCKETS ? oldest : null };
  }

  /** The socket closed (or errored). */
  closed(s: Session): void {
    const a = s.att;
    if (a.state === "pending" && a.link !== undefined) this.#d.links.delete(a.link.rendezvous);
    s.closed = true;
    this.deliveries.closed(s);
    this.#d.sessions.remove(s);
    this.#wentOffline(s);
  }

  /** If `s` was its user's last routed connection (now retired or removed), the user is offline. */
  #wentOffline(s: Session): void {
    const a = s.authed;
    // Presence is the identity's (§4.7, §6.3): online while any of its devices is connected.
    if (a === null || this.#d.sessions.userOnline(a.username)) return;
    this.presence.disconnected(a.username);
    this.presence.changed(a.username, a.routed === true ? a.hub : null);
  }

  /**
   * Periodic duties (PROTOCOL.md §4.5, §7.3): purge expired mail, close connections that never
   * authenticated or went silent (so presence has no ghosts when a close never arrives). Returns
   * when the alarm should run next, or null.
   */
  alarm(): number | null {
    const now = this.#d.now();
    const { store } = this.#d;
    store.purgeExpired(now);
    store.purgeSendIds(now);
    store.purgeFullBuckets(now);
    if (store.purgeExpiredGroupLog(now) > 0) {
      // The per-user group counters included what just expired: recount on next use.
      this.deliveries.invalidatePending();
      // And a full collection pass: a message whose last acknowledgement was not seen as such
      // (an out-of-order acknowledgement forgotten past MAX_ACKED_AHEAD) goes here at the latest.
      store.gcGroupLog(null);
    }
    // Snapshots of rosters no stored message refers to any more.
    store.gcRosters();
    this.#d.links.purge(now);
    // A home whose link dropped or which restarted sends its members what they lack.
    this.#relink(null, now);
    let next = store.nextExpiry();
    const earliest = (t: number) => {
      next = next === null ? t : Math.min(next, t);
    };
    // Pushes due now are sent by the caller after this (sendPushes); later ones wake it again.
    const push = this.pushes.nextDue();
    if (push !== null && push > now) earliest(push);
    for (const s of this.#d.sessions.all()) {
      if (s.closed || this.#links.has(s)) continue;
      const a = s.att;
      if (a.state === "pending") {
        // A socket waiting for a link answer (§4.8.3) waits as long as its offer lives.
        const deadline = a.link?.expiresAt ?? a.connectedAt + LIMITS.authTimeoutSec * 1000;
        if (now >= deadline) s.close(CLOSE.authTimeout, "auth timeout");
        else earliest(deadline);
      } else {
        const deadline = this.#lastActive(s) + LIMITS.presenceTimeoutSec * 1000;
        if (now >= deadline) {
          s.close(CLOSE.idle, "idle");
          this.#d.sessions.retire(s);
          this.#wentOffline(s);
        } else earliest(deadline);
      }
    }
    // Membership pushes held back by a group's bound (§7.5).
    const membership = this.#flushMembership(now);
    if (membership !== null) earliest(membership);
    // A member's object that had no room is asked again at its backed-off time (group-home.ts).
    const waiting = this.#links.nextWaiting(now);
    if (waiting !== null) earliest(waiting);
    // A user's object that lost its connections without announcing it (§6.3).
    this.presence.reconcile();
    // Deltas and announcements held back by the one-per-interval bound (§6.3).
    const presence = this.presence.flush();
    if (presence !== null) earliest(presence);
    return next;
  }

  // -- admission ------------------------------------------------------------------------------

  /** Rate limits (PROTOCOL.md §7.2): per connection, then per identity once authenticated. */
  #admit(s: Session, now: number): boolean {
    const a = s.authed;
    const ok = s.takeToken(now) && (a === null || this.#identityBuckets.take(a.identityKey, now));
    if (ok) {
      // In memory, persisted by the next flush (Session.update): the idle check reads memory. To
      // the second: the idle bound is presenceTimeoutSec, and this runs for every frame.
      if (a !== null && now >= a.lastSeen + 1000) {
        s.update({ ...a, lastSeen: now });
        this.deliveries.touch(s);
      }
      return true;
    }
    s.rateViolations++;
    if (s.rateViolations > LIMITS.maxRateViolations) this.#closeAbusive(s, "rate");
    else s.send(errorFrame("rate_limited"));
    return false;
  }

  /** Take the extra identity tokens a fanout costs (PROTOCOL.md §7.2); false if they are not there. */
  #chargeFanout(a: AuthedAttachment, recipients: number, now: number): boolean {
    const cost = fanoutCost(recipients, LIMITS.fanoutRecipientsPerToken);
    return cost === 0 || this.#identityBuckets.take(a.identityKey, now, cost);
  }

  /** Close an abusive connection (PROTOCOL.md §7.2) and take it out of routing and presence now. */
  #closeAbusive(s: Session, reason: string): void {
    s.close(CLOSE.abusive, reason);
    this.#d.sessions.retire(s);
    this.#wentOffline(s);
  }

  async #dispatch(s: Session, frame: ClientFrame, now: number): Promise<void> {
    if (frame.t === "ping") {
      s.send({ v: PROTOCOL_VERSION, t: "pong" });
      return;
    }
    const a = s.att;
    if (a.state === "pending") {
      if (frame.t === "link_offer") {
        // An offer waits on the hub's route or on its own rendezvous's (§4.8.3).
        if (a.user !== undefined || (a.route !== undefined && a.route !== frame.rendezvous))
          s.send(errorFrame("wrong_route", frame.id));
        else this.#linkOffer(s, a, frame, now);
        return;
      }
      if (frame.t !== "auth") {
        s.send(errorFrame("not_authenticated", "id" in frame ? frame.id : undefined));
        return;
      }
      if (a.route !== undefined) {
        // A rendezvous's object holds no user: the linked device authenticates on its user's.
        s.send(errorFrame("wrong_route"));
        return;
      }
      await this.#auth(s, a, frame);
      return;
    }
    if (a.routed === true && isGroupFrame(frame)) {
      await this.#toHome(s, a, frame);
      return;
    }
    if (isGroupFrame(frame) && this.#movedAway(s, frame.group, frame.id)) return;
    switch (frame.t) {
      case "auth":
        s.send(errorFrame("already_authenticated"));
        return;
      case "upload_prekeys":
        await this.#uploadPrekeys(s, a, frame);
        return;
      case "fetch_bundle":
        await this.#fetchBundle(s, a, frame, now);
        return;
      case "devices":
        await this.#devices(s, a, frame, now);
        return;
      case "send":
        if (this.#peerOf(a, frame.to) !== null) await this.#sendToPeer(s, a, frame);
        else await this.#coalesced.run(() => this.#send(s, a, frame, this.#d.now()));
        return;
      case "ack":
        // On the hub's route, after the sends that came with it: nobody waits on an ack but
        // the relay's memory and the senders of write-behind items, for `accepted` (§7.3). A
        // user's own object has no other connections' frames to join, and there a timer per
        // ack, which the connection's next frame waits for, put each user's sends behind
        // timers a busy object runs late (bench: 1:1 p50 at 50 clients ~0.6 s instead of 15 ms).
        if (a.routed === true) this.#ack(s, a, frame);
        else await this.#coalesced.run(() => this.#ack(s, a, frame), true);
        return;
      case "join":
        await this.#inOrder(frame.group, async () => {
          if (await this.#leavesValid(s, a, frame)) await this.#join(s, a, frame, now);
        });
        return;
      case "leaf":
        await this.#inOrder(frame.group, async () => {
          if (await this.#leavesValid(s, a, frame)) this.#leaf(s, a, frame, now);
        });
        return;
      case "leave":
        await this.#leave(s, a, frame, now);
        return;
      case "remove":
        await this.#remove(s, a, frame, now);
        return;
      case "commit": {
        const pending = this.#checking.get(frame.group);
        if (pending !== undefined) await Promise.allSettled([...pending]);
        await this.#serial(frame.group, () => this.#commit(s, a, frame, now));
        return;
      }
      case "group_send":
        await this.#coalesced.run(() => this.#groupSend(s, a, frame, this.#d.now()));
        return;
      case "push_subscribe":
      case "push_unsubscribe":
        this.#pushSubscription(s, a, frame);
        return;
      case "blob_upload":
        await this.#blobUpload(s, a, frame);
        return;
      case "settings":
        this.presence.setScope(a.username, frame.presence, a.routed === true ? a.hub : null);
        s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
        return;
      case "contact":
        await this.#contact(s, a, frame, now);
        return;
      case "link_offer":
        s.send(errorFrame("already_authenticated", frame.id));
        return;
      case "link_fetch":
        if (this.#d.peers !== undefined && this.#d.peers !== null && a.routed === true)
          await this.#linkFetchAt(s, a.hub, frame, this.#d.peers);
        else this.#linkFetch(s, frame, now);
        return;
      case "link_answer":
        if (this.#d.peers !== undefined && this.#d.peers !== null && a.routed === true)
          await this.#linkAnswerAt(s, a.hub, frame, this.#d.peers);
        else this.#linkAnswer(s, frame, now);
        return;
    }
  }

  // -- linking a device (PROTOCOL.md §4.8.3) --------------------------------------------------

  /**
   * A new device leaves its offer and waits on this socket, which stays unauthenticated (and
   * counted as such by `admit`) until the offer expires. One offer per socket.
   */
  #linkOffer(s: Session, a: PendingAttachment, frame: Frame<"link_offer">, now: number): void {
    if (a.link !== undefined) {
      s.send(errorFrame("limit_reached", frame.id));
      return;
    }
    const expiresAt = now + LIMITS.linkTtlSec * 1000;
    if (!this.#d.links.put(frame.rendezvous, frame.offer, now, expiresAt)) {
      s.send(errorFrame("link_taken", frame.id));
      return;
    }
    s.save({ ...a, link: { rendezvous: frame.rendezvous, expiresAt } });
    this.#d.wakeAt(expiresAt);
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
  }

  /** The offer under a rendezvous, for the device that was shown its code. */
  #linkFetch(s: Session, frame: Frame<"link_fetch">, now: number): void {
    this.#answerFetch(s, frame, this.linkOffered(frame.rendezvous, now));
  }

  /**
   * The offer waiting under `rendezvous` in this object (a live socket waits on it), or null; on
   * users' routes the rendezvous's own object, called by the user's (§4.8.3).
   */
  linkOffered(rendezvous: string, now: number): LinkOffer | null {
    return this.#linkWaiter(rendezvous, now) === null ? null : this.#d.links.get(rendezvous, now);
  }

  /** Hand `answer` to the socket waiting under `rendezvous`; false: none waits (§4.8.3). */
  linkAnswered(rendezvous: string, answer: LinkAnswer, now: number): boolean {
    const waiter = this.#linkWaiter(rendezvous, now);
    if (waiter === null) return false;
    waiter.send({ v: PROTOCOL_VERSION, t: "link_answered", rendezvous, answer });
    return true;
  }

  /** On a user's route: the offer comes from the rendezvous's object. */
  async #linkFetchAt(
    s: Session,
    hub: string,
    frame: Frame<"link_fetch">,
    peers: PeerGateway,
  ): Promise<void> {
    let offer: LinkOffer | null;
    try {
      offer = await peers.linkOffered(hub, frame.rendezvous);
    } catch (e) {
      console.error("relay: rendezvous call failed", e instanceof Error ? e.name : typeof e);
      s.send(errorFrame("internal", frame.id));
      return;
    }
    this.#answerFetch(s, frame, offer);
  }

  /** On a user's route: the answer goes to the rendezvous's object, where the device waits. */
  async #linkAnswerAt(
    s: Session,
    hub: string,
    frame: Frame<"link_answer">,
    peers: PeerGateway,
  ): Promise<void> {
    let handed: boolean;
    try {
      handed = await peers.linkAnswered(hub, frame.rendezvous, frame.answer);
    } catch (e) {
      console.error("relay: rendezvous call failed", e instanceof Error ? e.name : typeof e);
      s.send(errorFrame("internal", frame.id));
      return;
    }
    s.send(
      handed
        ? { v: PROTOCOL_VERSION, t: "accepted", id: frame.id }
        : errorFrame("unknown_link", frame.id),
    );
  }

  #answerFetch(s: Session, frame: Frame<"link_fetch">, offer: LinkOffer | null): void {
    if (offer === null) {
      s.send(errorFrame("unknown_link", frame.id));
      return;
    }
    s.send({
      v: PROTOCOL_VERSION,
      t: "link_offered",
      id: frame.id,
      rendezvous: frame.rendezvous,
      offer,
    });
  }

  /**
   * Hand an answer to the waiting socket. The offer stays until that socket authenticates or
   * closes: an answer the new device refuses (not made with its code) does not end the wait.
   */
  #linkAnswer(s: Session, frame: Frame<"link_answer">, now: number): void {
    // The waiting socket's attachment says when its offer expires: no storage read needed.
    s.send(
      this.linkAnswered(frame.rendezvous, frame.answer, now)
        ? { v: PROTOCOL_VERSION, t: "accepted", id: frame.id }
        : errorFrame("unknown_link", frame.id),
    );
  }

  /** The live unauthenticated socket waiting under `rendezvous` with an unexpired offer, if any. */
  #linkWaiter(rendezvous: string, now: number): Session | null {
    for (const w of this.#d.sessions.all()) {
      const link = w.att.state === "pending" ? w.att.link : undefined;
      if (!w.closed && link?.rendezvous === rendezvous && link.expiresAt > now) return w;
    }
    return null;
  }

  // -- attachments (PROTOCOL.md §7.10) -------------------------------------------------------

  /**
   * An upload ticket from the sender's own blob ledger. Nothing of the hub's storage is read or
   * written here, so the await (a call to another object) cannot split a decision.
   */
  async #blobUpload(s: Session, a: AuthedAttachment, frame: Frame<"blob_upload">): Promise<void> {
    const gateway = this.#d.blobs;
    if (gateway === undefined || gateway === null) {
      s.send(errorFrame("blob_unavailable", frame.id));
      return;
    }
    if (frame.size > LIMITS.maxBlobBytes) {
      s.send(errorFrame("blob_too_large", frame.id));
      return;
    }
    let r: Awaited<ReturnType<BlobGateway["mint"]>>;
    try {
      r = await gateway.mint(`${a.hub}/${a.identityKey}`, frame.size);
    } catch (e) {
      console.error("relay: blob ledger unreachable", e instanceof Error ? e.name : typeof e);
      s.send(errorFrame("blob_unavailable", frame.id));
      return;
    }
    if (s.closed) return;
    if (!r.ok) {
      s.send(errorFrame(r.code, frame.id));
      return;
    }
    s.send({
      v: PROTOCOL_VERSION,
      t: "blob_ticket",
      id: frame.id,
      blob: r.blob,
      ticket: `${r.owner}.${r.token}`,
      expires: r.expires,
    });
  }

  // -- authentication (PROTOCOL.md §4) --------------------------------------------------------

  async #auth(s: Session, a: PendingAttachment, frame: Frame<"auth">): Promise<void> {
    // A user's route takes that user only: its object holds no one else (ARCHITECTURE "User
    // objects"), so a connection can never make it act for another name.
    if (a.user !== undefined && frame.username !== a.user) return this.#authFail(s, "auth_failed");
    // Frames of one connection are handled one at a time (see `message`), so a second `auth`
    // cannot race this one; it will find the session authenticated.
    const verified = await verifyAuthFrame(
      { hub: a.hub, origin: a.origin, challenge: fromB64u(a.challenge) },
      frame,
    );
    // Everything below is synchronous: no other event can interleave with the name claim.
    if (s.closed) return;
    // The socket stops waiting for a link answer (§4.8.3) whether or not it authenticates.
    if (a.link !== undefined) this.#d.links.delete(a.link.rendezvous);
    if (!verified.ok) return this.#authFail(s, verified.code);
    // The PQ prekey belongs to the signed prekey it names (§8.3.5); its signature is the
    // initiator's to check, as the relay could strip or swap it anyway.
    if (frame.pqPrekey !== undefined && frame.pqPrekey.spkId !== frame.signedPrekey.id) {
      return this.#authFail(s, "bad_frame");
    }
    // A user's object meeting its user for the first time takes over what the hub's object held
    // for that identity (a user of the hub's route before): before the device decision, which
    // reads the device and list it brings.
    const { store } = this.#d;
    const peers = this.#d.peers;
    if (
      a.user !== undefined &&
      peers !== undefined &&
      peers !== null &&
      store.getUser(frame.username) === null &&
      !store.handedOver(frame.username)
    ) {
      let h: HandOver | null | "busy";
      try {
        h = await peers.handOver(a.hub, frame.username, frame.identityKey);
      } catch (e) {
        // Not taken now, taken at the next authentication: nothing is lost, nothing reordered.
        console.error("relay: hand-over failed", e instanceof Error ? e.name : typeof e);
        return this.#authFail(s, "internal");
      }
      if (s.closed) return;
      // Nothing for this identity (a new user, or another identity's claim that the directory
      // will refuse): nothing is marked, so the name's own identity still gets what is there.
      if (h === "busy") return this.#authFail(s, "internal");
      if (h !== null && !store.handedOver(frame.username))
        this.#takeHandOver(frame.username, frame.identityKey, h);
    }
    if (a.user !== undefined && peers !== undefined && peers !== null) {
      if (!(await this.#adoptAll(s, a.hub, frame))) {
        if (!s.closed) this.#authFail(s, "internal");
        return;
      }
    }
    return this.#authBound(s, a, frame, false);
  }

  /**
   * `auth` after the transcript checked out (§4.3). What only this object knows is judged here
   * synchronously on its copy of the bindings: whether another identity's name was abandoned,
   * which device of the identity is current or listed, the online bound. The Directory object
   * then decides the binding itself (key-directory.ts `claim`: the name's holder, one name per
   * identity, the registration bounds, the user count), and the copy follows its answer.
   * `leftGroups`: the groups of an abandoned name were left already (a reclaim, below), so the
   * decision is made again after those calls, on what storage holds then.
   */
  async #authBound(
    s: Session,
    a: PendingAttachment,
    frame: Frame<"auth">,
    leftGroups: boolean,
  ): Promise<void> {
    const now = this.#d.now();
    const { store, sessions } = this.#d;
    const owner = store.getUser(frame.username);
    // Another identity holds the name: refused, unless that identity abandoned it (§4.3).
    const reclaim = owner !== null && owner.identityKey !== frame.identityKey;
    if (
      reclaim &&
      !usernameReclaimable(
        {
          online: sessions.userOnline(frame.username),
          seenAt: store.userSeenAt(frame.username),
          undelivered: this.#stored(frame.username),
        },
        now,
      )
    ) {
      return this.#authFail(s, "name_taken");
    }
    const device = this.#deviceDecision(frame, reclaim);
    if (device.kind === "refused") return this.#authFail(s, device.code, CLOSE.deviceReplaced);
    if (device.kind === "linked") return await this.#authLinked(s, a, frame, device.address, now);
    if (reclaim) {
      // The abandoned identity leaves every group first, so no roster carries the name over to
      // the new key. While a committed roster still lists it the name is not handed over: the
      // group state would show the leaver under the new key, and members' clients refuse to
      // commit past a changed key, so the removal could never be committed (§4.3, §8.7).
      // Its linked devices' memberships (`username.device`, §4.7) go too: the group state lists
      // a member under its user's key.
      const names = store.memberNamesOf(frame.username);
      if (!leftGroups && names.some((n) => store.groupsOf(n).length > 0)) {
        // Leaving goes through each group's object (an await): decide everything again after.
        for (const n of names)
          if (!(await this.#leaveAll(a.hub, n, now))) return this.#authFail(s, "internal");
        if (s.closed) return;
        return this.#authBound(s, a, frame, true);
      }
      if (names.some((n) => store.onCommittedRoster(n))) return this.#authFail(s, "name_taken");
      // On the name's own route its groups are at their homes (§4.1): the same rules, on the
      // states this object keeps of them.
      if (a.user !== undefined && !leftGroups) {
        const held = store.memberAddressesOf(frame.username);
        if (held.length > 0) {
          const listed = await this.#reclaimHomes(a.hub, owner, held);
          if (listed === null) return this.#authFail(s, "internal");
          if (s.closed) return;
          if (listed) return this.#authFail(s, "name_taken");
          return this.#authBound(s, a, frame, true);
        }
      }
    }
    // The directory binds the name (a new one, or a reclaim, counts toward the daily bound of
    // the address it comes from) and, on the hub's route, takes the signed and PQ prekeys; it
    // drops the one-time prekeys of another identity or device, whose secrets stay there, so a
    // first message made with one could never be opened here (§4.3); the welcome's count of 0
    // then asks for more. On a user's route the user's object keeps the keys (below), and once
    // the directory bound the name to this identity at this object's claim, only this object can
    // bind it again: a reconnect of that identity is judged here alone (§4.1).
    const routed = a.user !== undefined;
    let claimed: ClaimResult;
    if (
      routed &&
      owner !== null &&
      !reclaim &&
      store.claimedIdentity(frame.username) === frame.identityKey
    )
      claimed = { ok: true, registered: false, remaining: 0 };
    else
      try {
        if (!(await this.#directoryReady(a.hub))) return this.#authFail(s, "internal");
        claimed = await this.#d.directory.claim(a.hub, {
          username: frame.username,
          identityKey: frame.identityKey,
          device: frame.device,
          signedPrekey: frame.signedPrekey,
          pq: frame.pqPrekey ?? null,
          reclaimable: reclaim,
          // A reconnecting user always fits (§4.3 step 6).
          full:
            sessions.online(frame.username) === undefined &&
            sessions.onlineCount() >= LIMITS.maxOnlinePerHub,
          buckets: registrationBuckets(a.ip ?? UNKNOWN_ADDRESS),
          now,
          ...(routed ? { routed: true as const } : {}),
        });
      } catch (e) {
        console.error("relay: directory claim failed", e instanceof Error ? e.name : typeof e);
        if (!s.closed) this.#authFail(s, "internal");
        return;
      }
    if (s.closed) return;
    if (!claimed.ok) return this.#authFail(s, claimed.code);
    // Another connection may have bound the name or taken the device during that call: the
    // copy is judged again, and it follows the directory (which bound the name to this
    // identity) in the same synchronous step.
    const held = store.getUser(frame.username);
    if (
      held !== null &&
      held.identityKey !== frame.identityKey &&
      held.identityKey !== (reclaim ? owner.identityKey : null)
    )
      return this.#authFail(s, "name_taken");
    const again = this.#deviceDecision(
      frame,
      held !== null && held.identityKey !== frame.identityKey,
    );
    if (again.kind === "refused") return this.#authFail(s, again.code, CLOSE.deviceReplaced);
    // Listed meanwhile beside the current device: the client reconnects and is judged afresh.
    if (again.kind === "linked") return this.#authFail(s, "internal");
    if (held === null) store.insertUser(frame.username, frame.identityKey, now);
    else if (held.identityKey !== frame.identityKey) {
      store.reclaimUser(frame.username, frame.identityKey, now);
      // Who the old identity talked to, and its presence setting, are not the new one's (§6.3);
      // nor whom it accepted or blocked, or who accepted or blocked it (§7.3.1).
      this.presence.forget(frame.username);
      store.deleteContacts(frame.username);
      // A push subscription belongs to a device of an identity (§7.9): another identity taking
      // the name ends the old one's notifications.
      this.pushes.forgetUser(frame.username);
    } else store.sawUser(frame.username, now);
    let remaining = claimed.remaining;
    if (routed) {
      // The user's object keeps its user's keys (§4.1): the name's entry takes this device's
      // signed and PQ prekeys, dropping another identity's or device's one-time prekeys as the
      // directory does; an earlier identity's linked devices' entries go with it.
      const keys = this.ownKeys();
      if (held !== null && held.identityKey !== frame.identityKey) {
        keys.store.wipeDevicesOf(frame.username);
        // The abandoned identity's groups, which its homes were told to let go (#reclaimHomes),
        // are not the new identity's.
        for (const address of store.memberAddressesOf(frame.username))
          for (const { group } of store.memberGroupStates(address))
            store.setMemberGroup(
              address,
              group,
              null,
              store.memberGroup(address, group)?.through ?? 0,
            );
      }
      remaining = keys.bind(
        frame.username,
        prekeyOwner(frame.identityKey, frame.device),
        frame.signedPrekey,
        frame.pqPrekey ?? null,
      );
      if (store.claimedIdentity(frame.username) !== frame.identityKey)
        store.setClaimed(frame.username, frame.identityKey);
    }
    const takeover = again.current !== null && again.current !== frame.device;
    if (again.current !== frame.device) store.setDevice(frame.username, frame.device);
    // ...and another device taking the identity ends the old device's.
    if (held === null || held.identityKey === frame.identityKey)
      this.pushes.deviceChanged(frame.username, frame.device);
    const current = sessions.online(frame.username);
    // One live connection per identity (PROTOCOL.md §4.4): the newest wins. A connection of the
    // device just replaced is told so: it must not reconnect and take the identity back.
    if (current !== undefined && current !== s) {
      const code = takeover ? "device_replaced" : "replaced";
      current.send(errorFrame(code));
      current.close(takeover ? CLOSE.deviceReplaced : CLOSE.replaced, code);
      sessions.retire(current);
    }
    const att: AuthedAttachment = {
      v: 1,
      state: "authed",
      hub: a.hub,
      origin: a.origin,
      username: frame.username,
      identityKey: frame.identityKey,
      connectedAt: a.connectedAt,
      lastSeen: now,
      cursor: 0,
      ...(a.user !== undefined ? { routed: true as const } : {}),
    };
    // Online before this connection, by another device of the identity (§6.3)?
    const wasOnline = sessions.userOnline(frame.username);
    s.save(att);
    sessions.bind(s);
    this.presence.setHub(a.hub);
    this.#welcome(s, att, remaining);
    this.presence.snapshot(s);
    if (!wasOnline) this.presence.changed(frame.username, a.user !== undefined ? a.hub : null);
    this.pushes.connected(frame.username);
    this.deliveries.start(s);
    this.#d.wakeAt(now + LIMITS.presenceTimeoutSec * 1000);
  }

  /**
   * Which device of the identity this `auth` is (§4.3, §4.7), on the copy as it is now: the
   * identity's current device (`current`, null for a name it does not hold yet), a device its
   * signed list names beside the current one, or refused — one current device per identity,
   * another gets in only by claiming it, and a listed device takes the place of a current device
   * the list no longer names, as a claim.
   */
  #deviceDecision(
    frame: Frame<"auth">,
    reclaim: boolean,
  ):
    | { kind: "current"; current: string | null }
    | { kind: "linked"; address: string }
    | { kind: "refused"; code: "device_removed" | "device_replaced" } {
    const { store } = this.#d;
    const bound = !reclaim && store.getUser(frame.username) !== null;
    const device = bound ? store.getDevice(frame.username) : null;
    const list = bound ? store.getDeviceList(frame.username) : null;
    const linked = linkedDevice(frame.username, list, frame.identityKey, frame.device, device);
    if (linked.kind === "removed") return { kind: "refused", code: "device_removed" };
    if (linked.kind === "linked") return { kind: "linked", address: linked.address };
    const claim = frame.claim || linked.kind === "promote";
    if (device !== null && device !== frame.device && !claim)
      return { kind: "refused", code: "device_replaced" };
    return { kind: "current", current: device };
  }

  /**
   * Bindings and signed prekeys this object kept before the Directory object owned them
   * (store.ts `directory_seed`) are handed over before the first directory call that reads
   * them; false if the directory could not be reached (the caller answers `internal`).
   */
  async #directoryReady(hub: string): Promise<boolean> {
    if (this.#seeded) return true;
    this.#seeding ??= (async () => {
      try {
        for (;;) {
          const batch = this.#d.store.directorySeed(SEED_BATCH);
          if (batch.length === 0) break;
          await this.#d.directory.seed(hub, batch);
          this.#d.store.seeded(batch);
        }
        this.#seeded = true;
      } catch (e) {
        console.error("relay: directory seed failed", e instanceof Error ? e.name : typeof e);
      } finally {
        this.#seeding = null;
      }
    })();
    await this.#seeding;
    return this.#seeded;
  }

  /** This object's own key store (a user's object); its absence is a wiring bug. */
  ownKeys(): KeyDirectory {
    const keys = this.#d.ownKeys?.();
    if (keys === undefined) throw new Error("user's object without its own key store");
    return keys;
  }

  /**
   * Where the prekeys of this object's entries live (key-directory.ts): in the object itself when
   * it is a user's (`own`, PROTOCOL.md §4.1), else in the hub's directory object, after the
   * bindings this object kept are handed to it. Rejects when the directory cannot be reached.
   */
  async #keys(hub: string, own: boolean): Promise<KeyCalls> {
    if (!own) {
      if (!(await this.#directoryReady(hub))) throw new Error("directory seed");
      return this.#d.directory;
    }
    const keys = this.ownKeys();
    // Each runs synchronously when called, as one step of this object.
    return {
      bind: async (_h, entry, owner, spk, pq) => keys.bind(entry, owner, spk, pq),
      upload: async (_h, entry, owner, k, kem, spk) => keys.upload(entry, owner, k, kem, spk),
      take: async (_h, entry, owner, requester, now) => keys.take(entry, owner, requester, now),
    };
  }

  /**
   * Hand the new binding of a linked device's directory entry (its address, §4.7) to the
   * directory object; the one-time prekeys left, or null when the call failed or the socket
   * closed meanwhile (the client was told and reconnects, §4.3).
   */
  async #bindKeys(
    s: Session,
    hub: string,
    entry: string,
    frame: Frame<"auth">,
    own: boolean,
  ): Promise<number | null> {
    let remaining: number;
    try {
      remaining = await (await this.#keys(hub, own)).bind(
        hub,
        entry,
        prekeyOwner(frame.identityKey, frame.device),
        frame.signedPrekey,
        frame.pqPrekey ?? null,
      );
    } catch (e) {
      console.error("relay: directory bind failed", e instanceof Error ? e.name : typeof e);
      if (!s.closed) this.#authFail(s, "internal");
      return null;
    }
    return s.closed ? null : remaining;
  }

  /**
   * A linked device other than the identity's current one (§4.7): authenticated beside the
   * identity's other connections, routed by its own mailbox address. Its signed prekey and PQ
   * prekey (checked with the transcript) become its own directory entry, under its address, so
   * peers can fetch its bundle (`fetch_bundle{device}`); the identity's own entry, presence and
   * push subscription are unchanged. Its own older connection, if any, is replaced.
   */
  async #authLinked(
    s: Session,
    a: PendingAttachment,
    frame: Frame<"auth">,
    address: string,
    now: number,
  ): Promise<void> {
    const { sessions, store } = this.#d;
    if (
      sessions.online(address) === undefined &&
      sessions.onlineCount() >= LIMITS.maxOnlinePerHub
    ) {
      this.#authFail(s, "limit_reached");
      return;
    }
    // The directory entry of this device: its PQ prekey kept, the one-time prekeys of another
    // owner of the address dropped (as for the current device's binding).
    const remaining = await this.#bindKeys(s, a.hub, address, frame, a.user !== undefined);
    if (remaining === null) return;
    // The list may have dropped the device, or the name changed hands, during that call.
    const again = linkedDevice(
      frame.username,
      store.getDeviceList(frame.username),
      frame.identityKey,
      frame.device,
      store.getDevice(frame.username),
    );
    if (
      store.getUser(frame.username)?.identityKey !== frame.identityKey ||
      again.kind !== "linked"
    ) {
      this.#authFail(
        s,
        again.kind === "removed" ? "device_removed" : "device_replaced",
        CLOSE.deviceReplaced,
      );
      return;
    }
    const previous = sessions.online(address);
    if (previous !== undefined && previous !== s) {
      previous.send(errorFrame("replaced"));
      previous.close(CLOSE.replaced, "replaced");
      sessions.retire(previous);
    }
    const att: AuthedAttachment = {
      v: 1,
      state: "authed",
      hub: a.hub,
      origin: a.origin,
      username: frame.username,
      identityKey: frame.identityKey,
      connectedAt: a.connectedAt,
      lastSeen: now,
      cursor: 0,
      address,
      ...(a.user !== undefined ? { routed: true as const } : {}),
    };
    const wasOnline = sessions.userOnline(frame.username);
    s.save(att);
    sessions.bind(s);
    this.presence.setHub(a.hub);
    this.#welcome(s, att, remaining);
    this.presence.snapshot(s);
    // The identity is online while any of its devices is (§4.7, §6.3).
    if (!wasOnline) this.presence.changed(frame.username, a.user !== undefined ? a.hub : null);
    this.pushes.connected(address);
    this.deliveries.start(s);
    this.#d.wakeAt(now + LIMITS.presenceTimeoutSec * 1000);
  }

  /**
   * `leave` every group `username` is active in or joining, pushing each change; false if a group
   * object could not be reached (the leaves made so far stand).
   */
  async #leaveAll(
    hub: string,
    username: string,
    now: number,
    removedBy?: MemberBinding,
  ): Promise<boolean> {
    for (const name of this.#d.store.groupsOf(username)) {
      // A group that moved to its home is not this object's to change (§4.1). A removed device
      // (`removedBy`: the identity that removed it) is taken out there, as on a user's route;
      // an abandoned name's groups stay listed here, so its reclaim is refused (`name_taken`).
      if (this.#home === null && this.#d.store.groupMoved(name)) {
        const peers = this.#d.peers;
        if (removedBy !== undefined && peers !== undefined && peers !== null)
          await peers.deviceRemoved(hub, name, removedBy, username).catch((e: unknown) => {
            console.error("relay: home call failed", e instanceof Error ? e.name : typeof e);
          });
        continue;
      }
      const ok = await this.#serial(name, async () => {
        const g = this.#d.store.getGroup(name);
        if (g === null) return true;
        const r = await this.#applyLeave(hub, g, { t: "leave", user: username }, now);
        if (r.ok && r.push !== null) this.#pushGroup(r.push);
        return r.ok || r.code !== "internal";
      });
      if (!ok) return false;
    }
    return true;
  }

  /**
   * On the hub's route, a group that moved to its home on users' routes (`Hub.groupExport`) is
   * served no more: `wrong_route`, so its members take their users' routes (PROTOCOL.md §4.1).
   */
  #movedAway(s: Session, group: string, id: string): boolean {
    if (this.#home !== null || s.att.state !== "authed" || s.att.routed === true) return false;
    if (!this.#d.store.groupMoved(group)) return false;
    s.send(errorFrame("wrong_route", id));
    return true;
  }

  #authFail(s: Session, code: ErrorCode, close: number = CLOSE.authFailed): void {
    // The challenge was single-use: a failed attempt ends the connection (PROTOCOL.md §4.3).
    s.send(errorFrame(code));
    s.close(close, code);
  }

  /** The identity's current device id, for a linked device's `welcome` (§4.7). */
  #currentOf(username: string): { current?: string } {
    const current = this.#d.store.getDevice(username);
    return current === null ? {} : { current };
  }

  #welcome(s: Session, a: AuthedAttachment, remaining: number): void {
    const { store } = this.#d;
    // Group states can be large (up to maxGroupSize members each): the welcome carries as many
    // as fit in half a frame and the rest follow as `group` frames (PROTOCOL.md §6.2).
    const inWelcome: GroupState[] = [];
    const after: GroupState[] = [];
    let budget = LIMITS.maxFrameBytes / 2;
    // Each device is its own group member, under its mailbox address (§4.7, §9.1). On a user's
    // route its object keeps the latest state each home sent (group-home.ts).
    const cached = a.routed === true ? store.memberGroupStates(addressOf(a)) : null;
    const names = cached === null ? store.groupsOf(addressOf(a)) : cached.map((c) => c.group);
    const states = (cached ?? names).slice(0, LIMITS.maxGroupsPerUser).map((c) => {
      if (typeof c !== "string") return JSON.parse(c.state) as GroupState;
      const g = store.getGroup(c);
      return g === null ? null : this.#groupState(g);
    });
    for (const state of states) {
      if (state === null) continue;
      const size = JSON.stringify(state).length;
      if (after.length === 0 && size <= budget) {
        inWelcome.push(state);
        budget -= size;
      } else after.push(state);
    }
    s.send({
      v: PROTOCOL_VERSION,
      t: "welcome",
      username: a.username,
      identityKey: a.identityKey,
      oneTimePrekeysRemaining: remaining,
      groups: inWelcome,
      memberOf: names.slice(0, LIMITS.maxGroupsPerUser),
      presence: this.presence.scope(a.username),
      ...devicesOf(store.getDeviceList(a.username), a.identityKey),
      ...(a.address === undefined ? {} : { address: a.address, ...this.#currentOf(a.username) }),
    });
    for (const state of after) s.send({ v: PROTOCOL_VERSION, t: "group", state });
    if (prekeysLow(remaining)) s.send({ v: PROTOCOL_VERSION, t: "prekeys_low", remaining });
  }

  #lastActive(s: Session): number {
    const a = s.att;
    const seen = a.state === "authed" ? a.lastSeen : a.connectedAt;
    return Math.max(seen, this.#d.lastAutoPong(s) ?? 0);
  }

  // -- key directory (PROTOCOL.md §7.4) -------------------------------------------------------

  async #uploadPrekeys(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"upload_prekeys">,
  ): Promise<void> {
    const { store } = this.#d;
    if (frame.signedPrekey !== undefined) {
      const ok = await verifySignedPrekey(fromB64u(a.identityKey), frame.signedPrekey);
      if (s.closed) return;
      if (!ok) {
        s.send(errorFrame("bad_signature", frame.id));
        return;
      }
    }
    // A linked device's keys are its own entry, under its mailbox address (§4.7).
    const owner = prekeyOwner(a.identityKey, deviceOf(a) ?? store.getDevice(a.username));
    // The key store takes all of it or nothing (key-directory.ts `upload`).
    const keys = await this.#keys(a.hub, a.routed === true);
    const r = await keys.upload(
      a.hub,
      a.address ?? a.username,
      owner,
      frame.oneTimePrekeys,
      frame.oneTimeKemPrekeys ?? [],
      frame.signedPrekey ?? null,
    );
    if (s.closed) return;
    if (!r.ok) {
      s.send(errorFrame(r.code, frame.id));
      return;
    }
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
  }

  /**
   * Store the identity's newer signed device list (§4.6). The signature is checked first; the
   * stored list is read and replaced after the await, in one synchronous step, so two lists
   * racing cannot both pass the version check.
   */
  async #devices(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"devices">,
    now: number,
  ): Promise<void> {
    const verified = await deviceListVerifies(frame.list);
    if (s.closed) return;
    const { store } = this.#d;
    const check = checkPublishedList({
      identityKey: a.identityKey,
      stored: store.getDeviceList(a.username),
      list: frame.list,
      verified,
    });
    if (!check.ok) {
      s.send(errorFrame(check.code, frame.id));
      return;
    }
    const before = store.getDeviceList(a.username);
    store.setDeviceList(a.username, frame.list);
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
    const current = store.getDevice(a.username);
    // The identity's other connected devices are told at once (§4.6), listed ones included.
    for (const d of frame.list.devices) {
      const at = d.id === current ? a.username : deviceAddress(a.username, d.id);
      const other = this.#d.sessions.online(at);
      if (other !== undefined && other !== s)
        other.send({ v: PROTOCOL_VERSION, t: "device_list", list: frame.list });
    }
    // A device the new list drops loses its connection at once (§4.7) and is refused from now on.
    const kept = new Set(frame.list.devices.map((d) => d.id));
    const removed: string[] = [];
    for (const d of before?.devices ?? []) {
      if (kept.has(d.id)) continue;
      const at = d.id === current ? a.username : deviceAddress(a.username, d.id);
      removed.push(at);
      const gone = this.#d.sessions.online(at);
      // A removed device is woken no more (§7.9), connected or not.
      this.pushes.forget(at);
      if (gone === undefined || gone === s) continue;
      gone.send(errorFrame("device_removed"));
      gone.close(CLOSE.deviceReplaced, "device_removed");
      this.#d.sessions.retire(gone);
    }
    // ...and is taken out of its groups (§4.7): its leave is pending until a member commits it.
    // In a closed group members commit it only with its signed leave, which the identity's
    // other devices send (`leave{device}`, §9.7.4); until then nobody sends in the group.
    for (const at of removed) {
      if (a.routed === true) await this.#leaveHomes(a, at);
      else await this.#leaveAll(a.hub, at, now, bindingOf(a));
    }
  }

  /**
   * On a user's route, take a removed device of the user out of its groups (§4.7) at their homes,
   * as the hub's `#leaveAll` does (no signed leave: the identity's other devices send that,
   * §9.7.4). A home that cannot be reached keeps the device until that signed leave comes.
   */
  /**
   * A name reclaimed on its own route (§4.3): each of the abandoned identity's member addresses
   * leaves each group it is in, at the group's home (`nameReclaimed`). Whether a committed
   * roster still lists one of them (the name is not handed over then), or null if a home could
   * not be reached (the claim is refused `internal`, and the next one asks again).
   */
  async #reclaimHomes(
    hub: string,
    old: UserRow,
    addresses: readonly string[],
  ): Promise<boolean | null> {
    const peers = this.#d.peers;
    if (peers === undefined || peers === null) return null;
    let listed = false;
    for (const address of addresses)
      for (const { group } of this.#d.store.memberGroupStates(address)) {
        const m = memberBinding(old.username, old.identityKey, address);
        try {
          if (await peers.nameReclaimed(hub, group, m)) listed = true;
        } catch (e) {
          console.error("relay: home call failed", e instanceof Error ? e.name : typeof e);
          return null;
        }
      }
    return listed;
  }

  /**
   * In a group's home: the name of member `m` (its binding as its name's object held it) was
   * reclaimed by another identity, so `m` leaves, as on the hub's route (`#leaveAll`); asked
   * again at each claim, so a leave already pending is not made twice. Whether the committed
   * roster still lists `m` beside someone else (`onCommittedRoster`, as on the hub's route: the
   * name is not handed over then). Only the name's own object calls this, after it judged the
   * name abandoned (§4.3).
   */
  async nameReclaimed(hub: string, group: string, m: MemberBinding): Promise<boolean> {
    const home = this.#home;
    // Not a home yet: no such group. Another group's home: a relay bug, answered as "listed".
    if (home === null) return false;
    if (home.hub !== hub || home.group !== group) return true;
    const now = this.#d.now();
    const address = m.address ?? m.username;
    this.#relink(memberAttachment(hub, m, now), now);
    return this.#serial(group, async () => {
      const { store } = this.#d;
      const g = store.getGroup(group);
      if (g === null) return false;
      if (!g.pendingLeaves.includes(address)) {
        const r = await this.#applyLeave(hub, g, { t: "leave", user: address }, now);
        if (r.ok && r.push !== null) this.#pushGroup(r.push);
      }
      return store.onCommittedRoster(address);
    });
  }

  async #leaveHomes(a: AuthedAttachment, at: string): Promise<void> {
    const peers = this.#d.peers;
    if (peers === undefined || peers === null || at === addressOf(a)) return;
    for (const { group } of this.#d.store.memberGroupStates(at)) {
      try {
        await peers.deviceRemoved(a.hub, group, bindingOf(a), at);
      } catch (e) {
        console.error("relay: home call failed", e instanceof Error ? e.name : typeof e);
      }
    }
  }

  /**
   * In a group's home: the device `at` of member `m`'s identity was removed from its list, and
   * leaves the group as on the hub's route (`#leaveAll`); `m` is the removing device, as its
   * user's object authenticated it.
   */
  async deviceRemoved(hub: string, group: string, m: MemberBinding, at: string): Promise<void> {
    // From the hub's route, the group may not be taken over yet (`#takeFromHub`).
    const home = await this.#takeFromHub(hub, group);
    if (home === null || home.hub !== hub || home.group !== group) return;
    if (userOfMember(at) !== m.username || at === (m.address ?? m.username)) return;
    const now = this.#d.now();
    this.#d.store.rememberMember(m.username, m.identityKey, now);
    this.#relink(memberAttachment(hub, m, now), now);
    await this.#serial(group, async () => {
      const g = this.#d.store.getGroup(group);
      if (g === null) return;
      const r = await this.#applyLeave(hub, g, { t: "leave", user: at }, now);
      if (r.ok && r.push !== null) this.#pushGroup(r.push);
    });
  }

  /**
   * In a group's home: the object of member `address` has room again after answering `later`
   * (its device acknowledged items), so its link opens now rather than at its backed-off time.
   * It only makes the home send again what it holds for that member.
   */
  homeRoom(hub: string, group: string, address: string): void {
    const home = this.#home;
    if (home === null || home.hub !== hub || home.group !== group) return;
    this.#links.wake(address);
    this.#relink(null, this.#d.now());
  }

  /**
   * In a group's home: the object of member `address` settled items it took write-behind from
   * this home (§7.3 "Write-behind"): acknowledged on the member's link as a client's `ack`, so
   * the home's copies go and the link's window opens.
   */
  homeSettled(hub: string, group: string, address: string, mids: readonly string[]): void {
    const home = this.#home;
    if (home === null || home.hub !== hub || home.group !== group) return;
    this.#links.settled(address, mids);
  }

  async #fetchBundle(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"fetch_bundle">,
    now: number,
  ): Promise<void> {
    const q: BundleQuery = {
      username: frame.username,
      ...(frame.device !== undefined ? { device: frame.device } : {}),
      requester: a.identityKey,
      now,
    };
    // Another user's bundle on a user's route is that user's object's to give (its device list
    // and current device are there); its call may reject like any other (answered `internal`).
    const peers = this.#peerOf(a, frame.username);
    const r =
      peers === null
        ? await this.bundle(a.hub, q, a.routed === true)
        : await peers.bundle(a.hub, q);
    if (s.closed) return;
    if (!r.ok) {
      s.send(errorFrame(r.code, frame.id));
      return;
    }
    s.send({ v: PROTOCOL_VERSION, t: "bundle", id: frame.id, ...r.bundle });
  }

  /**
   * One device's bundle of `q.username` (§4.7, §7.4), from this object's copy of the user and
   * the directory's prekeys; a one-time prekey taken tells the owner's connection when few are
   * left. The body of `fetch_bundle`, and of the call from another user's object.
   */
  async bundle(hub: string, q: BundleQuery, own: boolean): Promise<BundleAnswer> {
    const { store, sessions } = this.#d;
    const user = store.getUser(q.username);
    if (user === null) return { ok: false, code: "unknown_user" };
    // One device's bundle (§4.7): the current device's is the username's entry; a listed linked
    // device's is its own, under its address, once it has connected (its signed prekey).
    const current = store.getDevice(q.username);
    const entry =
      q.device === undefined
        ? q.username
        : sendAddress(
            q.username,
            q.device,
            current,
            store.getDeviceList(q.username),
            user.identityKey,
          );
    if (entry === null) return { ok: false, code: "unknown_device" };
    // The prekeys, with the per-requester quota, are the key store's (key-directory.ts, §7.4):
    // the user's own object's on its route, the directory object's on the hub's; asked for the
    // owner this object has bound, so keys of an earlier identity or device of the name are never
    // handed out with this identity key.
    const keys = await this.#keys(hub, own);
    const {
      signedPrekey: spk,
      oneTimePrekey,
      pqPrekey,
      oneTimeKemPrekey,
      remaining,
    } = await keys.take(
      hub,
      entry,
      prekeyOwner(user.identityKey, entry === q.username ? current : (q.device ?? null)),
      q.requester,
      q.now,
    );
    // A linked device that never connected has no signed prekey yet (§4.7).
    if (spk === null) return { ok: false, code: "unknown_device" };
    if (oneTimePrekey !== null) {
      const owner = sessions.online(entry);
      if (owner !== undefined && prekeysLow(remaining)) {
        owner.send({ v: PROTOCOL_VERSION, t: "prekeys_low", remaining });
      }
    }
    return {
      ok: true,
      bundle: {
        username: user.username,
        ...(q.device !== undefined ? { device: q.device } : {}),
        identityKey: user.identityKey,
        signedPrekey: spk,
        oneTimePrekey,
        pqPrekey,
        oneTimeKemPrekey,
        ...devicesOf(store.getDeviceList(q.username), user.identityKey),
      },
    };
  }

  // -- 1:1 routing and the mailbox (PROTOCOL.md §7.3) -----------------------------------------

  /**
   * The sender's half of a `send` (§7.3): who sends, from which device, under which retry key;
   * the recipient's half (`enqueue`) decides and stores. Here the two meet in one object (the
   * hub's route, or a user writing to its own other device); between users' objects `enqueue` is
   * the call from the sender's object to the recipient's (#sendToPeer), keyed for retries by
   * `key`.
   */
  #send(s: Session, a: AuthedAttachment, frame: Frame<"send">, now: number): void {
    const answer = (mid: number) => {
      if (!s.closed) s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id, mid: String(mid) });
    };
    const r = this.enqueue(this.#direct(a, frame, now), answer);
    if (!r.ok) {
      s.send(errorFrame(r.code, frame.id));
      return;
    }
    if (r.later !== true) answer(r.mid);
    // The recipient may now see the sender online (§6.3): the sender chose to write to them.
    // A copy to one's own other device (§4.7) is no such choice.
    const own = frame.to === a.username && frame.device !== undefined;
    if (r.stored && !own) this.presence.wrote(a.username, frame.to, now);
  }

  /** The sender's half of a `send` as the recipient's half takes it (`enqueue`). */
  #direct(a: AuthedAttachment, frame: Frame<"send">, now: number): DirectEnqueue {
    const { store } = this.#d;
    return {
      from: a.username,
      fromKey: a.identityKey,
      fromDevice: sendingDevice(a, store.getDevice(a.username), store.getDeviceList(a.username)),
      key: this.#sendKey(a),
      id: frame.id,
      to: frame.to,
      ...(frame.device !== undefined ? { device: frame.device } : {}),
      body: frame.body,
      now,
    };
  }

  /**
   * Who holds `username` when it is not this object (a user's route, and another user): the
   * gateway to call, or null when the step is this object's.
   */
  #peerOf(a: AuthedAttachment, username: string): PeerGateway | null {
    if (a.routed !== true || username === a.username) return null;
    const peers = this.#d.peers ?? null;
    if (peers === null) throw new Error("routed connection without peers");
    return peers;
  }

  /**
   * A `send` to another user's object (docs/ARCHITECTURE.md "User objects"): the recipient's half
   * runs there, keyed for retries as here (§7.3 "Retries"), so a call whose answer is lost, sent
   * again by the client's outbox after `internal`, is stored once.
   */
  async #sendToPeer(s: Session, a: AuthedAttachment, frame: Frame<"send">): Promise<void> {
    const peers = this.#peerOf(a, frame.to) as PeerGateway;
    const { store } = this.#d;
    const now = this.#d.now();
    // The sender's total (§7.3): what this object holds of the sender's, and what the other
    // objects last said they hold.
    const total =
      this.#holdings(a.username, []).messages +
      store.heldElsewhere(a.username, now - LIMITS.mailboxTtlMs);
    if (total >= LIMITS.maxMailboxPerSender) {
      s.send(errorFrame("mailbox_full", frame.id));
      return;
    }
    // The recipient's object may take it write-behind (§7.3) while this one has room to
    // remember the sends that await their settling.
    const e = this.#direct(a, frame, now);
    if (
      this.#awaiting.size < MAX_AWAITING &&
      this.#awaitingChars + e.body.length <= MAX_AWAITING_CHARS
    )
      e.behind = a.hub;
    const r = await this.#callEnqueue(peers, s, a.hub, e);
    if (r === null) return;
    // Written even if the connection closed meanwhile: the recipient's object holds the item.
    store.setHeld(a.username, r.held.address, r.held.n, this.#d.now());
    this.deliveries.persistSoon();
    if (r.later === true) this.#await(s, a.hub, e, r.held.address, r.mid);
    else this.#accepted(s, frame.id, r.mid);
    // The recipient may now see the sender online (§6.3), told in its object.
    if (r.stored && !s.closed) this.presence.wrote(a.username, frame.to, now, a.hub);
  }

  /**
   * `enqueue` in the recipient's object; a refusal, or a call that rejected (`internal`: the
   * client's outbox sends the frame again, §10.1), is answered on `s` here, and gives null.
   */
  async #callEnqueue(
    peers: PeerGateway,
    s: Session,
    hub: string,
    e: DirectEnqueue,
  ): Promise<Extract<EnqueueResult, { ok: true }> | null> {
    let r: EnqueueResult;
    try {
      r = await peers.enqueue(hub, e);
    } catch (err) {
      console.error("relay: enqueue call failed", err instanceof Error ? err.name : typeof err);
      if (!s.closed) s.send(errorFrame("internal", e.id));
      return null;
    }
    if (!r.ok) {
      if (!s.closed) s.send(errorFrame(r.code, e.id));
      return null;
    }
    return r;
  }

  #accepted(s: Session, id: string, mid: number): void {
    if (!s.closed) s.send({ v: PROTOCOL_VERSION, t: "accepted", id, mid: String(mid) });
  }

  /** Remember a send taken write-behind by the recipient's object until it is settled. */
  #await(s: Session, hub: string, e: DirectEnqueue, address: string, mid: number): void {
    const key = `${address} ${mid}`;
    this.#unawait(key);
    this.#awaiting.set(key, { s, hub, e, address, mid, at: this.#d.now() });
    this.#awaitingChars += e.body.length;
    this.#awaitTimer ??= setTimeout(() => this.#awaitDue(), SETTLE_WAIT_MS);
  }

  /**
   * The sends reported settled by the object holding `address`: each is answered now. A report
   * for a send not awaited here (answered already, or this object restarted, which closed the
   * connection: its client sends the frame again) changes nothing.
   */
  #settledHere(address: string, settled: readonly SettledSend[]): void {
    for (const x of settled) {
      const key = `${address} ${x.mid}`;
      const w = this.#awaiting.get(key);
      if (w === undefined || w.e.id !== x.id) continue;
      this.#unawait(key);
      this.#accepted(w.s, w.e.id, w.mid);
    }
  }

  #unawait(key: string): void {
    const w = this.#awaiting.get(key);
    if (w === undefined) return;
    this.#awaiting.delete(key);
    this.#awaitingChars -= w.e.body.length;
  }

  /**
   * Sends not reported settled within SETTLE_WAIT_MS: the recipient's object restarted (and lost
   * the held item) or its report was lost. Each is sent there again, to be stored first; the
   * recipient's object recognises a retry (§7.3 "Retries"), so an item it still holds or
   * settled is stored once and answered with its mid, and a lost one is stored as new. A send
   * whose connection closed is left to its client, which sends it again on its next (§10.1).
   */
  #awaitDue(): void {
    this.#awaitTimer = null;
    const now = this.#d.now();
    const peers = this.#d.peers;
    for (const [key, w] of this.#awaiting) {
      if (w.at + SETTLE_WAIT_MS > now) break;
      this.#unawait(key);
      if (w.s.closed || peers === undefined || peers === null) continue;
      const { behind: _, ...e } = w.e;
      void this.#callEnqueue(peers, w.s, w.hub, e).then((r) => {
        if (r !== null) this.#accepted(w.s, e.id, r.mid);
      });
    }
    const next = this.#awaiting.values().next();
    if (next.done !== true)
      this.#awaitTimer = setTimeout(
        () => this.#awaitDue(),
        Math.max(1, next.value.at + SETTLE_WAIT_MS - now),
      );
  }

  /**
   * The object of `user` announced it to `viewer`, this object's user (§6.3): that object
   * decided `viewer` may see it.
   */
  peerPresence(viewer: string, user: string, state: PresenceUser | null): void {
    if (!this.known(viewer)) return;
    this.presence.fromPeer(viewer, user, state);
  }

  /**
   * The hub's lobby on users' routes (§6.3 "everyone on this hub"): `user` is online as `state`
   * among the users who chose "everyone", or left it (null). Each of the others is told by a
   * call to its object (best effort: a lost call is put right at that user's next change), and
   * the one who entered is answered with them. Bounded by maxOnlinePerHub: past it a user is not
   * listed, and sees nobody here.
   */
  lobby(hub: string, user: string, state: PresenceUser | null): PresenceUser[] {
    const { store } = this.#d;
    const peers = this.#d.peers;
    const listed =
      state === null
        ? store.lobbyDelete(user)
        : store.lobbyPut(user, state.identityKey, this.#d.now(), LIMITS.maxOnlinePerHub);
    if (!listed) return [];
    const others = store.lobbyMembers().filter((m) => m.username !== user);
    if (peers !== undefined && peers !== null)
      for (const o of others)
        peers.lobbyPresence(hub, o.username, user, state).catch((e: unknown) => {
          console.error("relay: lobby call failed", e instanceof Error ? e.name : typeof e);
        });
    return state === null ? [] : others;
  }

  /** The lobby's word on `user` for `viewer`, a user of this object (§6.3). */
  lobbyPresence(viewer: string, user: string, state: PresenceUser | null): void {
    this.presence.fromLobby(viewer, user, state);
  }

  /**
   * Another user's object holds `n` of `to`'s items for `address` now (PeerGateway.held): the
   * figure the sender's total counts (§7.3).
   */
  held(to: string, address: string, n: number, settled: readonly SettledSend[] = []): void {
    if (!this.known(to)) return;
    this.#d.store.setHeld(to, address, n, this.#d.now());
    this.deliveries.persistSoon();
    this.#settledHere(address, settled);
  }

  /** Whether this object holds `username` (a user's object holds its own name only). */
  known(username: string): boolean {
    return this.#d.store.getUser(username) !== null;
  }

  /**
   * The recipient's half of a direct item (§7.3, §7.3.1, §4.7): resolve the recipient's device,
   * recognise a retry (§7.3 "Retries": the same key, id, target and body as an item accepted
   * within the window gets the same mid and is stored once), apply the recipient's decision
   * about the sender and the mailbox bounds, then store, hand to the recipient's connection and
   * wake its device. `stored` is false for a retry. Synchronous: a decision and its write are
   * one step, so no other item can take the room it was judged to have. `answer`, given when the
   * sender's connection is in this object, lets the item go write-behind (§7.3): the result is
   * then `later`, and `answer` runs once the item is acknowledged or stored.
   */
  enqueue(e: DirectEnqueue, answer?: (mid: number) => void): EnqueueResult {
    const { store } = this.#d;
    const user = store.getUser(e.to);
    if (user === null) return { ok: false, code: "unknown_user" };
    // One device of the recipient (§4.7): its mailbox address, or the username's.
    const to =
      e.device === undefined
        ? e.to
        : sendAddress(
            e.to,
            e.device,
            store.getDevice(e.to),
            store.getDeviceList(e.to),
            user.identityKey,
          );
    if (to === null) return { ok: false, code: "unknown_device" };
    const sent = { target: `d:${to}`, digest: bodyDigest(e.body) };
    const prior = store.acceptedSend(e.key, e.id, sent, e.now);
    // A retry of a send still held (sent, neither acknowledged nor stored): stored now, so that
    // the answer below can never outrun the item's only copy.
    if (prior !== null && store.isHeld(prior.mid)) this.#settleForRetry(prior.mid);
    const heldAt = (n: number) => ({ address: to, n });
    if (prior !== null)
      return {
        ok: true,
        mid: prior.mid,
        stored: false,
        held: heldAt(this.#holdings(e.from, [to]).perRecipient.get(to) ?? 0),
      };
    // Message requests (§7.3.1): a sender the recipient blocked, or one it neither accepted nor
    // shares a group with past the small share for such senders, is refused before the bounds
    // that apply to everyone, so strangers cannot use up the mailbox of the recipient's contacts.
    // A copy to one's own other device (§4.7) is no request.
    const own = e.to === e.from && e.device !== undefined;
    let standing = own ? "contact" : store.senderStanding(e.to, e.from);
    // On a user's route the groups are their homes': a member of one of the recipient's groups
    // is known from the states this object keeps (§7.3.1 "shares a group").
    if (standing === "request" && groupPeersOf(store, e.to).includes(e.from)) standing = "contact";
    if (standing === "blocked") return { ok: false, code: "request_limit" };
    const holdings = this.#holdings(e.from, [to]);
    if (
      standing === "request" &&
      !requestHasRoom(holdings.perRecipient.get(to) ?? 0, () => store.countRequests(e.to))
    ) {
      return { ok: false, code: "request_limit" };
    }
    if (!mailboxHasRoom("direct", this.#stored(to))) return { ok: false, code: "mailbox_full" };
    // Per-sender quotas (§7.3): refused to this sender only; nothing stored is ever dropped.
    const quota = senderRoom("direct", holdings, [to]);
    if (quota.fits.length === 0 || !quota.totalOk) return { ok: false, code: "mailbox_full" };
    const from = { username: e.from, identityKey: e.fromKey };
    // A sender in another object hears of the settling by a report (§7.3 "Write-behind").
    const behind = e.behind;
    const reply =
      answer ??
      (behind === undefined
        ? undefined
        : (mid: number) => this.#settledLater(behind, e.from, to, { id: e.id, mid }));
    if (reply !== undefined && standing === "contact" && this.deliveries.canSendNow(to)) {
      const mid = this.#sendBehind(e, to, sent, reply);
      return {
        ok: true,
        mid,
        stored: true,
        later: true,
        held: heldAt((holdings.perRecipient.get(to) ?? 0) + 1),
      };
    }
    const payload = store.putPayload(e.body);
    const mid = this.#enqueue(from, to, "direct", payload, null, null, null, e.now, e.fromDevice);
    store.recordSend(e.key, e.id, { ...sent, mid }, e.now + LIMITS.sendRetryWindowSec * 1000);
    this.deliveries.persistSoon();
    this.#offer(from, to, mid, e.now, { kind: "direct", body: e.body }, e.fromDevice);
    // Each device has its own subscription (§7.9): the item wakes the device it is for.
    this.pushes.queued([to], e.now);
    return {
      ok: true,
      mid,
      stored: true,
      held: heldAt((holdings.perRecipient.get(to) ?? 0) + 1),
    };
  }

  /**
   * A direct item sent before it is stored (§7.3 "Write-behind"): the recipient's connection is
   * caught up with room, so the `deliver` goes out now, in this step, with no write to wait for;
   * the item is counted as stored (Store.holdItem) and its sender keeps it in its outbox until
   * `answer` runs — when the recipient acknowledges it (never stored) or when it is stored
   * (within writeBehindMs, or at once if the recipient's connection closes or the send is
   * retried). It is remembered for retries at once, in memory; in storage once settled.
   */
  #sendBehind(
    e: DirectEnqueue,
    to: string,
    sent: { target: string; digest: string },
    answer: (mid: number) => void,
  ): number {
    const { store } = this.#d;
    const mid = store.holdItem(
      {
        senderDevice: e.fromDevice,
        recipient: to,
        sender: e.from,
        senderKey: e.fromKey,
        ts: e.now,
        expiresAt: expiryOf(e.now),
        kind: "direct",
        group: null,
        epoch: null,
        wrap: null,
      },
      e.body,
    );
    // Remembered for retries at once (Store.flushSends keeps it out of storage while held).
    const until = e.now + LIMITS.sendRetryWindowSec * 1000;
    store.recordSend(e.key, e.id, { ...sent, mid }, until);
    const from = { username: e.from, identityKey: e.fromKey };
    const text = this.#deliverText(
      from,
      mid,
      e.now,
      { kind: "direct", body: e.body },
      e.fromDevice,
    );
    this.deliveries.sendBehind(
      to,
      { mid, group: false, sender: e.from, kind: "direct" },
      text,
      (stored) => {
        store.sendSettled(e.key, e.id, mid);
        if (stored) this.#d.wakeAt(expiryOf(e.now));
        this.deliveries.persistSoon();
        answer(mid);
      },
    );
    this.pushes.queued([to], e.now);
    return mid;
  }

  /**
   * Message requests (§7.3.1): the user's decision about `frame.user`. Accepting makes them a
   * contact (the ordinary mailbox share); blocking refuses their direct messages; `none` forgets.
   */
  async #contact(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"contact">,
    now: number,
  ): Promise<void> {
    const { store } = this.#d;
    const peers = this.#peerOf(a, frame.user);
    const known =
      frame.user !== a.username &&
      (peers === null ? this.known(frame.user) : await peers.known(a.hub, frame.user));
    if (s.closed) return;
    if (!known) {
      s.send(errorFrame("unknown_user", frame.id));
      return;
    }
    const state = frame.state === "none" ? null : frame.state;
    if (!store.setContactState(a.username, frame.user, state, now, LIMITS.maxContactsPerUser)) {
      s.send(errorFrame("limit_reached", frame.id));
      return;
    }
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
  }

  /**
   * Whose `send`/`group_send` ids these are (§7.3 "Retries"): a client numbers its frames per
   * store, and a store is one device of one identity, so a reclaimed name or a device taking the
   * identity over, which number from 1 again, never meet the previous holder's.
   */
  #sendKey(a: AuthedAttachment): string {
    return `${a.identityKey}.${deviceOf(a) ?? this.#d.store.getDevice(a.username) ?? ""}`;
  }

  /** Items stored for `username`: mailbox rows plus unacknowledged group messages (§7.3). */
  #stored(username: string): number {
    return this.#d.store.countMailbox(username) + this.deliveries.groupPending(username).total;
  }

  /** The sender's holdings (store.ts, from memory) with its unacknowledged group copies added. */
  #holdings(sender: string, recipients: readonly string[]): SenderHoldings {
    const h = this.#d.store.fanoutHoldings(sender, recipients).holdings;
    const perRecipient = new Map(h.perRecipient);
    for (const to of recipients) {
      const n = this.deliveries.groupPending(to).bySender.get(sender) ?? 0;
      if (n > 0) perRecipient.set(to, (perRecipient.get(to) ?? 0) + n);
    }
    return { messages: h.messages - this.deliveries.deleting(sender), perRecipient };
  }

  /** Hand a just-stored mailbox row to the recipient's connection (built, not read back). */
  #offer(
    from: Pick<AuthedAttachment, "username" | "identityKey">,
    to: string,
    mid: number,
    now: number,
    item: DeliverItem,
    fromDevice: string | null = null,
  ): void {
    this.deliveries.offer(
      to,
      {
        mid,
        group: false,
        sender: from.username,
        kind: item.kind === "commit" ? "commit" : "direct",
      },
      this.#deliverText(from, mid, now, item, fromDevice),
    );
  }

  /** The `deliver` frame of a mailbox item, serialised. */
  #deliverText(
    from: Pick<AuthedAttachment, "username" | "identityKey">,
    mid: number,
    now: number,
    item: DeliverItem,
    fromDevice: string | null,
  ): string {
    const frame: FrameOf<ServerFrame, "deliver"> = {
      v: PROTOCOL_VERSION,
      t: "deliver",
      mid: String(mid),
      from: from.username,
      fromKey: from.identityKey,
      ...(fromDevice !== null ? { fromDevice } : {}),
      ts: now,
      item,
    };
    return JSON.stringify(frame);
  }

  #enqueue(
    from: Pick<AuthedAttachment, "username" | "identityKey">,
    recipient: string,
    kind: MailboxKind,
    payload: number,
    group: string | null,
    epoch: number | null,
    wrap: string | null,
    now: number,
    senderDevice: string | null = null,
  ): number {
    const mid = this.#d.store.putItem({
      senderDevice,
      recipient,
      sender: from.username,
      senderKey: from.identityKey,
      ts: now,
      expiresAt: expiryOf(now),
      kind,
      group,
      epoch,
      payload,
      wrap,
    });
    this.#d.wakeAt(expiryOf(now));
    return mid;
  }

  #ack(s: Session, a: AuthedAttachment, frame: Frame<"ack">): void {
    const done = this.deliveries.ack(s, parseMids(frame.mids));
    // Acks skip admission (message()); one that frees nothing pays like any other frame.
    if (!done.any && !this.#admit(s, this.#d.now())) return;
    // No frame goes to the sender (§7.3: delivery is confirmed end to end, §8.6). A sender in
    // another object is told what this one still holds of its items, for its total (#heldLater).
    for (const r of done.rows)
      if (r.kind === "direct" && this.#peerOf(a, r.sender) !== null) this.#heldLater(a, r.sender);
    if (done.any) this.#roomAgain(a);
    this.deliveries.drain(s);
  }

  /** Report to `sender`'s object, within HELD_DELAY_MS, what this one holds of its (#heldReports). */
  #heldLater(a: AuthedAttachment, sender: string): void {
    this.#report(a.hub, sender, addressOf(a));
  }

  /** Report to `sender`'s object that its send taken write-behind for `address` settled. */
  #settledLater(hub: string, sender: string, address: string, settled: SettledSend): void {
    this.#report(hub, sender, address).settled.push(settled);
  }

  #report(hub: string, sender: string, address: string): HeldReport {
    const key = `${sender} ${address}`;
    let r = this.#heldReports.get(key);
    if (r === undefined) {
      r = { hub, sender, address, settled: [] };
      this.#heldReports.set(key, r);
    }
    this.#heldTimer ??= setTimeout(() => this.sendHeldReports(), HELD_DELAY_MS);
    return r;
  }

  /** Whether reports are waiting for their timers (#heldReports; to homes, #fromHomes). */
  get heldReportsPending(): boolean {
    return this.#heldReports.size > 0 || this.#fromHomesTimer !== null;
  }

  /** Send every waiting report now (the timers' work; also for tests). */
  sendHeldReports(): void {
    if (this.#fromHomesTimer !== null) this.#sendHomeReports();
    if (this.#heldTimer !== null) clearTimeout(this.#heldTimer);
    this.#heldTimer = null;
    const all = [...this.#heldReports.values()];
    this.#heldReports.clear();
    // Only a user's route reports (#peerOf), and its object has its peers.
    const peers = this.#d.peers;
    if (peers === undefined || peers === null) return;
    for (const p of all) {
      // What this object holds of the sender's for that address now, not at the first ack.
      const n = this.#holdings(p.sender, [p.address]).perRecipient.get(p.address) ?? 0;
      void peers.held(p.hub, p.sender, p.address, n, p.settled).catch(() => {
        // Best effort: the sender's figure for this address is put right by the answer to its
        // next send here, or expires; its object sends the unreported settled sends again.
      });
    }
  }

  // -- groups (PROTOCOL.md §7.5) ----------------------------------------------------------------

  #groupState(g: groups.GroupRecord): GroupState {
    // A member is a device (§4.7): its identity key is its user's.
    const names = [...new Set([...g.members, ...g.pendingJoins].map(userOfMember))];
    const users = new Map(this.#d.store.getUsers(names).map((u) => [u.username, u]));
    const leaves = this.#d.store.leafQueues(g.name);
    // Each member with the leaf key the next commit must wrap to: its oldest (§9.3).
    const member = (name: string) => {
      const u = users.get(userOfMember(name));
      const leaf = leaves.get(name)?.l[0];
      return u === undefined || leaf === undefined
        ? []
        : [{ username: name, identityKey: u.identityKey, leaf }];
    };
    // Closed groups (§9.7): the state and the pending authorizations, passed on unread.
    const info = this.#d.store.getGroupInfo(g.name);
    const auths = this.#d.store.groupAuths(g.name);
    const pick = (kind: "join" | "leave", names: readonly string[]) =>
      auths
        .filter((x) => x.kind === kind && names.includes(x.username))
        .map((x) => ({ username: x.username, auth: x.auth }));
    const joinAuths = pick("join", g.pendingJoins);
    const leaveAuths = pick("leave", g.pendingLeaves);
    return {
      group: g.name,
      epoch: g.epoch,
      members: g.members.flatMap(member),
      pendingJoins: g.pendingJoins.flatMap(member),
      pendingLeaves: [...g.pendingLeaves],
      ...(info === undefined ? {} : { info }),
      ...(joinAuths.length === 0 ? {} : { joinAuths }),
      ...(leaveAuths.length === 0 ? {} : { leaveAuths }),
      interim: this.#d.store.getInterim(g.name) ?? ZERO_INTERIM,
    };
  }

  /** Is `g` invite-only? Read from the signed state its last commit carried (§9.7.1). */
  #inviteOnly(hub: string, name: string): boolean {
    return policyOf(this.#d.store.getGroupInfo(name), hub, name) === "invite";
  }
  /**
   * Leaf keys must be signed by the sender's identity for this hub and group (§9.3): one bad
   * key in a roster would make every honest committer refuse to commit.
   */
  /** Run `step` (a join or leaf refill of `group`) as one a commit of the group waits for. */
  async #inOrder(group: string, step: () => Promise<void>): Promise<void> {
    let set = this.#checking.get(group);
    if (set === undefined) {
      set = new Set();
      this.#checking.set(group, set);
    }
    const p = step();
    set.add(p);
    try {
      await p;
    } finally {
      set.delete(p);
      if (set.size === 0) this.#checking.delete(group);
    }
  }

  async #leavesValid(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"join"> | Frame<"leaf">,
  ): Promise<boolean> {
    const ik = fromB64u(a.identityKey);
    const ok = await ed25519VerifyMany(
      frame.leaves.map((l) => ({
        publicKey: ik,
        message: leafMessage(a.hub, frame.group, l),
        signature: fromB64u(l.sig),
      })),
    );
    if (s.closed) return false;
    if (ok.every(Boolean) && new Set(frame.leaves.map((l) => l.id)).size === frame.leaves.length)
      return true;
    s.send(errorFrame("bad_signature", frame.id));
    return false;
  }

  /** More leaf keys for a group the user is in or joining (§9.3). */
  #leaf(s: Session, a: AuthedAttachment, frame: Frame<"leaf">, _now: number): void {
    if (this.#movedAway(s, frame.group, frame.id)) return;
    const { store } = this.#d;
    const g = store.getGroup(frame.group);
    const member = addressOf(a);
    if (g === null || !groups.isInvolved(g, member)) {
      s.send(errorFrame("not_member", frame.id));
      return;
    }
    store.appendLeaves(g.name, member, frame.leaves);
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
  }

  #pushGroup(g: groups.GroupRecord): void {
    const state = this.#groupState(g);
    const text = JSON.stringify({ v: PROTOCOL_VERSION, t: "group", state } satisfies ServerFrame);
    // Recorded for every push, so a held membership push can tell whether anything changed.
    const changed = this.#membership.pushing(g.name, text);
    if (!changed && this.#pushingMembership) return;
    for (const u of groups.audience(g)) this.#d.sessions.online(u)?.sendText(text);
  }

  /** Set while a join/leave push is made: an unchanged state is then not pushed again. */
  #pushingMembership = false;

  /** A join or leave changed `g`: push it now, or once the group's push bucket allows (§7.5). */
  #membershipChanged(g: groups.GroupRecord, now: number): void {
    if (!this.#membership.request(g.name, now)) {
      const at = this.#membership.nextDue();
      if (at !== null) this.#d.wakeAt(at);
      return;
    }
    this.#pushingMembership = true;
    try {
      this.#pushGroup(g);
    } finally {
      this.#pushingMembership = false;
    }
  }

  /** Push the held membership changes that are due; returns when the next one is, or null. */
  #flushMembership(now: number): number | null {
    for (const name of this.#membership.due(now)) {
      const g = this.#d.store.getGroup(name);
      if (g === null) {
        this.#membership.forget(name);
        continue;
      }
      this.#pushingMembership = true;
      try {
        this.#pushGroup(g);
      } finally {
        this.#pushingMembership = false;
      }
    }
    return this.#membership.nextDue();
  }

  /**
   * Run `step` (a join, leave, removal or commit of `group`) after the group's earlier ones: it
   * reads the hub's copy, calls the group object and writes what it answers, with nothing of the
   * same group in between (group-object.ts).
   */
  async #serial<T>(group: string, step: () => Promise<T>): Promise<T> {
    const before = this.#groupChains.get(group) ?? Promise.resolve();
    const run = before.then(step);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#groupChains.set(group, tail);
    try {
      return await run;
    } finally {
      if (this.#groupChains.get(group) === tail) this.#groupChains.delete(group);
    }
  }

  /**
   * Apply `op` to `group` at its object, naming the seq of the hub's copy (call inside `#serial`).
   * A group the hub has no copy of starts empty there. A rejected call is made once more (the same
   * call is idempotent, group-object.ts); null: the object could not be reached.
   */
  async #callGroup(
    hub: string,
    group: string,
    op: GroupOp,
  ): Promise<Exclude<GroupCallResult, { t: "resync" }> | null> {
    const { store } = this.#d;
    // A home's group has its own sequencer: the hub's route's sequencer of a group stops with
    // the hub's copy when the group moves to its home (PROTOCOL.md §4.1).
    const at = this.#home === null ? hub : `${hub}/gh`;
    // A step that waited its turn may find its group moved to its home since (§4.1).
    if (this.#home === null && store.groupMoved(group)) return null;
    for (let attempt = 0; attempt < 3; attempt++) {
      const held = store.getGroup(group);
      const seq = store.getGroupSeq(group);
      try {
        if (held === null) await this.#d.groups.seed(at, group, seq, groups.emptyGroup(group));
        const r = await this.#d.groups.apply(at, group, seq, op);
        if (r.t !== "resync") return r;
        // A group the object does not know yet (copied from before group objects): hand it over.
        await this.#d.groups.seed(at, group, seq, held ?? groups.emptyGroup(group));
      } catch (e) {
        console.error("relay: group call failed", e instanceof Error ? e.name : typeof e);
      }
    }
    return null;
  }

  async #join(s: Session, a: AuthedAttachment, frame: Frame<"join">, now: number): Promise<void> {
    await this.#serial(frame.group, () => this.#joinStep(s, a, frame, now));
  }

  async #joinStep(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"join">,
    now: number,
  ): Promise<void> {
    const { store } = this.#d;
    // Each device is its own member (§4.7, §9.1): a linked device joins under its address.
    const member = addressOf(a);
    let g = store.getGroup(frame.group);
    const existed = g !== null;
    if (g === null) {
      // Creating a group takes a hub-wide slot: bound them per identity too, so a few
      // identities cannot hold every slot of maxGroupsPerHub (§7.5).
      if (
        store.countGroups() >= LIMITS.maxGroupsPerHub ||
        store.countGroupsCreatedBy(a.identityKey) >= LIMITS.maxGroupsCreatedPerIdentity
      ) {
        s.send(errorFrame("limit_reached", frame.id));
        return;
      }
      g = groups.emptyGroup(frame.group);
    }
    if (!groups.isInvolved(g, member) && store.groupsOf(member).length >= LIMITS.maxGroupsPerUser) {
      s.send(errorFrame("limit_reached", frame.id));
      return;
    }
    // Invite-only (§9.7.3): a join needs an invitation, which members check; the relay only
    // refuses the join without one early. A committed member (a rejoin) needs none, nor does
    // another device of one (members check that it is on its user's device list, §9.7.2).
    if (
      existed &&
      frame.auth === undefined &&
      !g.members.some((m) => userOfMember(m) === a.username) &&
      this.#inviteOnly(a.hub, g.name)
    ) {
      s.send(errorFrame("invite_required", frame.id));
      return;
    }
    // A membership change is pushed to every member: charged like a fan-out to them (§7.2).
    if (!this.#chargeFanout(a, groups.audience(g).length, now)) {
      s.send(errorFrame("rate_limited", frame.id));
      return;
    }
    // The machine's answer on the hub's copy; a join that changes nothing needs no call.
    const local = groups.join(g, member, LIMITS.maxGroupSize);
    if (!local.ok) {
      s.send(errorFrame(local.code, frame.id));
      return;
    }
    let next = local.group;
    if (local.changed) {
      const r = await this.#callGroup(a.hub, frame.group, {
        t: "join",
        user: member,
        maxGroupSize: LIMITS.maxGroupSize,
      });
      if (r === null || r.t === "refused") {
        s.send(errorFrame(r === null ? "internal" : r.code, frame.id));
        return;
      }
      next = r.group;
      if (r.changed) store.saveGroup(existed ? g : null, next, now, r.seq);
    }
    if (next.pendingJoins.includes(member))
      store.setGroupAuth(next.name, member, "join", frame.auth ?? null);
    if (!existed) store.setGroupCreator(next.name, a.identityKey);
    // A join's fresh leaf keys replace any earlier ones (§9.3); an active member's queue is
    // left alone (its join is a duplicate).
    if (next.pendingJoins.includes(member)) store.setLeaves(next.name, member, frame.leaves);
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
    // Always tell the joiner the state (also when it was already in), so it can commit; the
    // others hear of it within the group's membership push bound (§7.5).
    s.send({ v: PROTOCOL_VERSION, t: "group", state: this.#groupState(next) });
    if (local.changed) this.#membershipChanged(next, now);
  }

  async #leave(s: Session, a: AuthedAttachment, frame: Frame<"leave">, now: number): Promise<void> {
    await this.#serial(frame.group, async () => {
      const { store } = this.#d;
      const g = store.getGroup(frame.group);
      if (g === null) {
        s.send(errorFrame("not_member", frame.id));
        return;
      }
      if (!this.#chargeFanout(a, groups.audience(g).length, now)) {
        s.send(errorFrame("rate_limited", frame.id));
        return;
      }
      // Another device of ours (§4.7): one our list removed, or all of a person's devices when
      // the person leaves, with its signed leave (every device holds the identity key).
      const self = addressOf(a);
      const member = frame.member ?? self;
      if (frame.member !== undefined && (userOfMember(member) !== a.username || member === self)) {
        s.send(errorFrame("not_member", frame.id));
        return;
      }
      const r = await this.#applyLeave(a.hub, g, { t: "leave", user: member }, now, frame.auth);
      if (!r.ok) {
        s.send(errorFrame(r.code, frame.id));
        return;
      }
      let push = r.push;
      // Already leaving (the relay took the removed device out on its own, §4.7): the signed
      // leave that arrives now is what members need to commit it (§9.7.4).
      if (
        push === null &&
        frame.auth !== undefined &&
        g.pendingLeaves.includes(member) &&
        !store.groupAuths(g.name).some((x) => x.kind === "leave" && x.username === member)
      ) {
        store.setGroupAuth(g.name, member, "leave", frame.auth);
        push = g;
      }
      s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
      // The member that left is told, with the signed leave another device sent for it.
      const left: ServerFrame = {
        v: PROTOCOL_VERSION,
        t: "left",
        group: frame.group,
        ...(frame.member !== undefined && frame.auth !== undefined ? { auth: frame.auth } : {}),
      };
      this.#d.sessions.online(member)?.send(left);
      if (push !== null) this.#membershipChanged(push, now);
    });
  }

  /**
   * An admin removes a member (§7.5, §9.7.4): taken out as its own `leave` would, the admin's
   * signed removal kept as the leave's authorization. The relay takes it only when the sender
   * signed it and is an admin of the state it holds (`not_admin`); members check it again.
   */
  async #remove(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"remove">,
    now: number,
  ): Promise<void> {
    const g = this.#d.store.getGroup(frame.group);
    const active = g === null ? [] : groups.activeMembers(g);
    const self = addressOf(a);
    if (g === null || !active.includes(self) || frame.user === self) {
      s.send(errorFrame("not_member", frame.id));
      return;
    }
    // A member is a device (§4.7): its key is its user's.
    const member = this.#d.store.getUser(userOfMember(frame.user));
    if (!active.includes(frame.user) || member === null) {
      s.send(errorFrame("unknown_user", frame.id));
      return;
    }
    const allowed = await relayMayRemove({
      hub: a.hub,
      group: frame.group,
      info: this.#d.store.getGroupInfo(frame.group),
      member: { name: frame.user, ik: member.identityKey },
      senderIk: a.identityKey,
      auth: frame.auth,
    });
    if (!allowed) {
      s.send(errorFrame("not_admin", frame.id));
      return;
    }
    await this.#serial(frame.group, async () => {
      // Re-read: the verification awaited, and another frame may have changed the group since.
      const now2 = this.#d.store.getGroup(frame.group);
      if (now2 === null || !groups.activeMembers(now2).includes(frame.user)) {
        s.send(errorFrame("unknown_user", frame.id));
        return;
      }
      const op: GroupOp = { t: "remove", user: frame.user, by: self };
      const r = await this.#applyLeave(a.hub, now2, op, now, frame.auth);
      if (!r.ok) {
        s.send(errorFrame(r.code, frame.id));
        return;
      }
      s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
      this.#d.sessions
        .online(frame.user)
        ?.send({ v: PROTOCOL_VERSION, t: "left", group: frame.group, auth: frame.auth });
      if (r.push !== null) this.#pushGroup(r.push);
    });
  }

  /**
   * Take a user out of `g` (the hub's copy) as its `leave` would, at the group's object, and store
   * the result; returns what to push. Call inside `#serial`; `internal`: the object was unreachable.
   */
  async #applyLeave(
    hub: string,
    g: groups.GroupRecord,
    op: GroupOp & { t: "leave" | "remove" },
    now: number,
    auth?: string,
  ): Promise<{ ok: true; push: groups.GroupRecord | null } | { ok: false; code: ErrorCode }> {
    const { store } = this.#d;
    const user = op.user;
    const local = groups.leave(g, user);
    if (!local.ok) return local;
    if (!local.changed) return { ok: true, push: null };
    const called = await this.#callGroup(hub, g.name, op);
    if (called === null) return { ok: false, code: "internal" };
    if (called.t === "refused") return { ok: false, code: called.code };
    const r = { group: called.group, changed: called.changed };
    // A dropped join takes its invitation along; a leave keeps its authorization (§9.7.4).
    store.setGroupAuth(g.name, user, "join", null);
    if (r.group.pendingLeaves.includes(user) && !g.pendingLeaves.includes(user))
      store.setGroupAuth(g.name, user, "leave", auth ?? null);
    const abandoned =
      groups.isAbandoned(r.group) && !(DEFAULT_GROUPS as readonly string[]).includes(g.name);
    // A group nobody is in or joining can never commit again: free its slot (maxGroupsPerHub).
    if (abandoned) store.deleteGroup(g.name);
    else if (r.changed) store.saveGroup(g, r.group, now, called.seq);
    if (r.changed)
      if (this.#home === null)
        this.presence.groupChanged(groups.activeMembers(g), groups.activeMembers(r.group));
    return { ok: true, push: r.changed && !abandoned ? r.group : null };
  }

  /**
   * Sequence a commit (§7.5): checked on the hub's copy first, so a refusal costs no call and
   * comes in the same order of checks as ever; then applied by the group's object, the single
   * writer of its epochs; then stored and delivered here (call inside `#serial`).
   */
  async #commit(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"commit">,
    now: number,
  ): Promise<void> {
    const { store } = this.#d;
    const g = store.getGroup(frame.group);
    if (g === null) {
      s.send(errorFrame("not_member", frame.id));
      return;
    }
    // The committer is the name bound to this connection, never one the frame names (§4.3).
    const sender = { username: addressOf(a), identityKey: a.identityKey };
    const req: groups.CommitRequest = {
      committer: sender.username,
      parentEpoch: frame.parentEpoch,
      members: frame.members,
      wrapsTo: frame.wraps.map((w) => w.to),
      inviteOnly: this.#inviteOnly(a.hub, g.name),
      refused: frame.refused ?? [],
    };
    const local = groups.commit(g, req);
    if (!local.ok) {
      s.send(errorFrame(local.code, frame.id));
      return;
    }
    // Each wrap must be sealed to the member's current leaf key (§9.3): a committer that read the
    // roster before a member's fresh keys arrived rebuilds on the state sent here.
    const leaves = store.leafQueues(g.name);
    if (frame.wraps.some((w) => leaves.get(w.to)?.l[0]?.id !== w.leaf)) {
      s.send({ v: PROTOCOL_VERSION, t: "group", state: this.#groupState(g) });
      s.send(errorFrame("leaf_changed", frame.id));
      return;
    }
    // All-or-nothing: a member who could not receive its wrap would be locked out of the epoch.
    for (const w of frame.wraps) {
      if (!mailboxHasRoom("commit", this.#stored(w.to))) {
        s.send(errorFrame("mailbox_full", frame.id));
        return;
      }
    }
    // The sender's own commit bounds (§7.3): a share per recipient and a storage total.
    const to = frame.wraps.map((w) => w.to);
    if (!commitRoom(store.commitHoldings(sender.username, to), to, frame.core.length)) {
      s.send(errorFrame("mailbox_full", frame.id));
      return;
    }
    if (!this.#chargeFanout(a, frame.wraps.length, now)) {
      s.send(errorFrame("rate_limited", frame.id));
      return;
    }
    const called = await this.#callGroup(a.hub, g.name, { t: "commit", req });
    if (called === null || called.t === "refused") {
      s.send(errorFrame(called === null ? "internal" : called.code, frame.id));
      return;
    }
    // Read again after the call: other senders may have filled a recipient's mailbox meanwhile.
    // Not storing the result is safe: the object undoes what the hub never applied (its next
    // call names the old seq), so no member learns of an epoch it holds no secret for.
    if (
      frame.wraps.some((w) => !mailboxHasRoom("commit", this.#stored(w.to))) ||
      !commitRoom(store.commitHoldings(sender.username, to), to, frame.core.length)
    ) {
      s.send(errorFrame("mailbox_full", frame.id));
      return;
    }
    const r = { group: called.group, dropped: called.dropped };
    store.saveGroup(g, r.group, now, called.seq);
    // Closed groups (§9.7): the commit took every pending change; its state is the group's now.
    store.clearGroupAuths(g.name);
    if (frame.info !== undefined) store.setGroupInfo(g.name, frame.info);
    if (this.#home === null)
      this.presence.groupChanged(groups.activeMembers(g), groups.activeMembers(r.group));
    store.consumeLeafHeads(g.name, to);
    for (const u of leaves.keys())
      if (!groups.isInvolved(r.group, u)) store.deleteLeaves(g.name, u);
    store.setInterim(g.name, frame.interim);
    const payload = store.putPayload(frame.core);
    const mids = frame.wraps.map((w) =>
      this.#enqueue(sender, w.to, "commit", payload, g.name, r.group.epoch, w.wrap, now),
    );
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
    this.#pushGroup(r.group);
    // Joiners the committer left out (their invitation did not check out, §9.7.3) are dropped.
    for (const u of r.dropped)
      this.#d.sessions.online(u)?.send({ v: PROTOCOL_VERSION, t: "left", group: g.name });
    frame.wraps.forEach((w, i) => {
      const item: DeliverItem = {
        kind: "commit",
        group: g.name,
        epoch: r.group.epoch,
        core: frame.core,
        wrap: w.wrap,
      };
      this.#offer(sender, w.to, mids[i] as number, now, item);
    });
  }

  #groupSend(s: Session, a: AuthedAttachment, frame: Frame<"group_send">, now: number): void {
    const { store } = this.#d;
    // Checked again here: a frame that waited (coalesced) may find its group moved since.
    if (this.#movedAway(s, frame.group, frame.id)) return;
    const sender = this.#sendKey(a);
    const sent = { target: `g:${frame.group}`, digest: bodyDigest(frame.body) };
    // A retry (§7.3 "Retries") is answered as the first was, before any check: the group may
    // have moved on since it was stored.
    if (store.acceptedSend(sender, frame.id, sent, now) !== null) {
      s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
      return;
    }
    const g = store.getGroup(frame.group);
    const member = addressOf(a);
    if (g === null) {
      s.send(errorFrame("not_member", frame.id));
      return;
    }
    const r = groups.checkGroupSend(g, member, frame.epoch);
    if (!r.ok) {
      s.send(errorFrame(r.code, frame.id));
      return;
    }
    if (!this.#chargeFanout(a, r.recipients.length, now)) {
      s.send(errorFrame("rate_limited", frame.id));
      return;
    }
    // A full mailbox drops this one copy (the member sees a gap in the sender's counter);
    // refusing the whole send would let one absent member silence the group. So does a member
    // already holding maxMailboxPerSenderPerRecipient items from this sender (§7.3).
    // One statement for the stored rows and shares (most recipients have none), the group
    // copies from memory (delivery.ts).
    const { stored, holdings } = store.fanoutHoldings(member, r.recipients);
    this.deliveries.preload(r.recipients);
    const perRecipient = new Map(holdings.perRecipient);
    const withRoom: string[] = [];
    for (const to of r.recipients) {
      const copies = this.deliveries.groupPending(to);
      const share = copies.bySender.get(member) ?? 0;
      if (share > 0) perRecipient.set(to, (perRecipient.get(to) ?? 0) + share);
      if (mailboxHasRoom("group", (stored.get(to) ?? 0) + copies.total)) withRoom.push(to);
    }
    const messages = holdings.messages - this.deliveries.deleting(member);
    const quota = senderRoom("group", { messages, perRecipient }, withRoom);
    // At the sender's total the message is refused for everyone: it is one stored message.
    if (!quota.totalOk) {
      s.send(errorFrame("mailbox_full", frame.id));
      return;
    }
    const delivered = quota.fits;
    if (delivered.length === 0) {
      // Nobody to store it for: nothing is stored and it counts toward nothing (§7.3).
      s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
      return;
    }
    // Stored once, with the roster snapshot it fans out to (PROTOCOL.md §7.3 "Group messages");
    // no leave is pending here (checkGroupSend), so the active members are the whole roster.
    const fits = new Set(delivered);
    const row = {
      group: g.name,
      epoch: g.epoch,
      roster: store.rosterOf(g, groups.activeMembers(g)),
      sender: member,
      senderKey: a.identityKey,
      ts: now,
      expiresAt: expiryOf(now),
      data: frame.body,
      skipped: r.recipients.filter((to) => !fits.has(to)),
    };
    const mid = store.putGroupMessage(row);
    store.recordSend(sender, frame.id, { ...sent, mid }, now + LIMITS.sendRetryWindowSec * 1000);
    this.deliveries.persistSoon();
    this.#d.wakeAt(row.expiresAt);
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
    // One frame for every recipient: serialised once, sent to each caught-up connection.
    this.deliveries.fanout(delivered, mid, member, groupDeliverText({ ...row, mid }));
    // Members with no connection are woken by a push (§7.9); commits wake nobody (no message).
    this.pushes.queued(delivered, now);
  }

  /**
   * A retry of a send whose item is still held: store it now. If storage refuses, the retry is
   * answered `internal` (the handler's catch), which the sender's outbox keeps the frame for
   * (§10.1); answering `accepted` would let the answer outrun the item's only copy.
   */
  #settleForRetry(mid: number): void {
    if (!this.deliveries.settle(mid)) throw new Error("a held item could not be stored");
  }

  // -- the hand-over from the hub's route (docs/ARCHITECTURE.md "Moving a user") ---------------

  /**
   * In the hub's object: what it holds for `username`, if that name is bound here to
   * `identityKey` (only the identity's own authenticated connection, on its user's route, asks).
   * Nothing is deleted: the user no longer connects here, and what is left expires as any item.
   */
  handOver(username: string, identityKey: string, now: number): HandOver | null | "busy" {
    const { store } = this.#d;
    if (store.getUser(username)?.identityKey !== identityKey) return null;
    // The user's groups move to their homes with this answer, so that what it holds of them
    // here (the items below) is all there will be: a step in flight would add more after it.
    const memberNames = store.memberNamesOf(username);
    const moving = memberNames.flatMap((address) =>
      store.groupsOf(address).map((group) => ({ address, group })),
    );
    const names = [...new Set(moving.map((m) => m.group))];
    if (names.some((g) => this.#groupChains.has(g))) return "busy";
    const addresses = new Set([username, ...store.mailboxAddressesOf(username), ...memberNames]);
    // Items sent write-behind (§7.3) are stored first, so that the rows read below are all
    // there is; if storage refuses, the hand-over waits for another try.
    for (const address of addresses) if (!this.deliveries.settleFor(address)) return "busy";
    store.markMoved(names, now);
    const items: HandOver["items"] = [];
    const bound = LIMITS.maxMailboxHardPerRecipient;
    for (const address of addresses) {
      for (const row of store.itemsAfter(address, 0, now, bound)) items.push({ address, row });
      const through = store.groupThrough(address);
      for (const group of store.groupItemsFor(
        address,
        through,
        Number.MAX_SAFE_INTEGER,
        now,
        bound,
      ))
        items.push({ address, group });
    }
    const midOf = (x: HandOver["items"][number]) => ("row" in x ? x.row.mid : x.group.mid);
    items.sort((x, y) => midOf(x) - midOf(y));
    return {
      items,
      groups: moving,
      contacts: store.contactsOf(username),
      device: store.getDevice(username),
      deviceList: store.getDeviceList(username),
      presence: store.presenceSetting(username),
      pushSubs: this.pushes.subscriptionsOf(username),
    };
  }

  /**
   * In the hub's object: its group `group`, for the group's home, which takes it over (§4.1).
   * The group moves with this answer: from then on the hub's route serves it no more, and its
   * record here stays as it is, for the members who move later (their hand-overs name it).
   */
  groupExport(group: string, now: number): GroupExport | null | "busy" {
    if (this.#groupChains.has(group)) return "busy";
    this.#d.store.markMoved([group], now);
    return this.#d.store.exportGroup(group);
  }

  /**
   * In a user's object: store what the hub's object handed over, in its order, in one
   * synchronous step with the mark that it was taken (so it is taken once).
   */
  #takeHandOver(username: string, identityKey: string, h: HandOver): void {
    const { store } = this.#d;
    const now = this.#d.now();
    for (const c of h.contacts)
      store.setContactState(username, c.peer, c.state, now, LIMITS.maxContactsPerUser);
    if (h.deviceList !== null && store.getDeviceList(username) === null)
      store.setDeviceList(username, h.deviceList);
    if (h.device !== null && store.getDevice(username) === null)
      store.setDevice(username, h.device);
    if (h.presence !== null) store.setPresenceSetting(username, h.presence);
    // A device that is not running (a phone with the app closed) would otherwise get no push for
    // what now comes here until it starts and subscribes again on this route.
    for (const sub of h.pushSubs) this.pushes.adopt(sub);
    for (const it of h.items) {
      if ("row" in it) {
        const r = it.row;
        store.putItem({
          senderDevice: r.senderDevice ?? null,
          recipient: it.address,
          sender: r.sender,
          senderKey: r.senderKey,
          ts: r.ts,
          expiresAt: expiryOf(r.ts),
          kind: r.kind,
          group: r.group,
          epoch: r.epoch,
          payload: store.putPayload(r.data),
          wrap: r.wrap,
        });
        this.#d.wakeAt(expiryOf(r.ts));
      } else {
        const g = it.group;
        store.putGroupMessage({
          group: g.group,
          epoch: g.epoch,
          roster: store.memberRosterOf(g.group, it.address),
          sender: g.sender,
          senderKey: g.senderKey,
          ts: g.ts,
          expiresAt: expiryOf(g.ts),
          data: g.data,
          skipped: [],
        });
        this.#d.wakeAt(expiryOf(g.ts));
      }
    }
    // Its groups' homes take its addresses in next (#adoptAll), before anything else is decided.
    for (const m of h.groups) store.setToAdopt(m.address, m.group, identityKey);
    this.deliveries.invalidatePending();
    store.setHandedOver(username, now);
  }

  /**
   * In a user's object, at each authentication of the identity a hand-over was for: each of its
   * groups' homes takes its address in (`Hub.adopt`; the first also takes the group from the
   * hub's object) and answers the state, kept for `welcome`. False: a home could not be reached;
   * what is left is asked again at the next authentication.
   */
  async #adoptAll(s: Session, hub: string, frame: Frame<"auth">): Promise<boolean> {
    const { store } = this.#d;
    const peers = this.#d.peers as PeerGateway;
    for (const { address, group } of store.toAdopt(frame.username, frame.identityKey)) {
      const m = memberBinding(frame.username, frame.identityKey, address);
      let state: GroupState | null;
      try {
        state = await peers.adopt(hub, group, m);
      } catch (e) {
        console.error("relay: adoption failed", e instanceof Error ? e.name : typeof e);
        return false;
      }
      if (s.closed) return false;
      // The link the home opened may have brought the state already (a `fromHome` call).
      if (state !== null && store.memberGroup(address, group) === null) {
        const text = JSON.stringify({ v: PROTOCOL_VERSION, t: "group", state });
        this.#takeFromHome(hub, group, address, [text], null);
      }
      store.setToAdopt(address, group, null);
    }
    return true;
  }

  // -- groups on users' routes (group-home.ts) -------------------------------------------------

  /**
   * A user's object forwards its user's group frame to the group's home, which answers with what
   * the connection gets in answer; what the home sends the member besides comes by `fromHome`.
   * One frame at a time per connection (the connection's frames wait for this one, `message`).
   */
  async #toHome(s: Session, a: AuthedAttachment, frame: GroupFrame): Promise<void> {
    const { store } = this.#d;
    const address = addressOf(a);
    // The per-user group bound (§7.5) is the member object's: it knows all of its user's groups.
    if (
      frame.t === "join" &&
      store.memberGroup(address, frame.group)?.state == null &&
      store.memberGroupStates(address).length >= LIMITS.maxGroupsPerUser
    ) {
      s.send(errorFrame("limit_reached", frame.id));
      return;
    }
    // The fan-out charge (§7.2) comes from the identity's one bucket, here, as on the hub's
    // route: each home charges a bucket of its own too, which alone would give a user in k big
    // groups k buckets.
    const fanout = this.#fanoutAt(address, frame);
    if (fanout > 0 && !this.#chargeFanout(a, fanout, this.#d.now())) {
      s.send(errorFrame("rate_limited", frame.id));
      return;
    }
    // A join to a group whose state this object does not hold yet has an audience it learns
    // only from the answer: charged then (below), into debt if need be. Every frame's admission
    // takes a token from the same bucket, so the identity's next frames wait until the refill
    // pays the debt: joining many big groups one after another costs what it does on the hub's
    // route, not a fresh bucket at each home.
    const firstJoin = frame.t === "join" && fanout === 0;
    let texts: string[];
    try {
      texts = await (this.#d.peers as PeerGateway).toHome(
        a.hub,
        frame.group,
        bindingOf(a),
        JSON.stringify(frame),
      );
    } catch (e) {
      // The outbox sends it again (§7.3 "Retries"), as after any `internal`.
      console.error("relay: home call failed", e instanceof Error ? e.name : typeof e);
      s.send(errorFrame("internal", frame.id));
      return;
    }
    this.#takeFromHome(a.hub, frame.group, address, texts, s);
    if (firstJoin) {
      const cost = fanoutCost(this.#fanoutAt(address, frame), LIMITS.fanoutRecipientsPerToken);
      if (cost > 0) this.#identityBuckets.debit(a.identityKey, this.#d.now(), cost);
    }
  }

  /**
   * The recipients a member's group frame fans out to, as far as its user's object knows (the
   * charges of the hub's route, §7.2): a commit's wraps; for a `group_send`, `join` or `leave`
   * the audience of the group's last state here, without the sender for a message (none before
   * a join's first state: its home charges that one alone).
   */
  #fanoutAt(address: string, frame: GroupFrame): number {
    if (frame.t === "commit") return frame.wraps.length;
    if (frame.t !== "group_send" && frame.t !== "join" && frame.t !== "leave") return 0;
    const held = this.#d.store.memberGroupStates(address).find((x) => x.group === frame.group);
    if (held === undefined) return 0;
    const key = `${address}\n${frame.group}`;
    let seen = this.#audiences.get(key);
    // Parsed once per state (up to maxGroupSize members), not once per message.
    if (seen?.state !== held.state) {
      const st = JSON.parse(held.state) as GroupState;
      seen = { state: held.state, n: st.members.length + st.pendingJoins.length };
      this.#audiences.set(key, seen);
    }
    return frame.t === "group_send" ? Math.max(0, seen.n - 1) : seen.n;
  }

  /** This object's group, if it is a group's home (read once; the schema is there by then). */
  get #home(): { hub: string; group: string } | null {
    if (this.#homeRow === undefined) this.#homeRow = this.#d.store.homeOf();
    return this.#homeRow;
  }

  /** What the home of `group` sends to the member `address` of this user's object (a call). */
  fromHome(hub: string, group: string, address: string, texts: readonly string[]): HomeReceipt {
    // A member still on the hub's route (its group moved with another member): nothing is
    // stored before its hand-over, which comes first in its order (§7.3); its `adopt` then
    // opens the link again.
    const user = userOfMember(address);
    const { store } = this.#d;
    if (store.getUser(user) === null && !store.handedOver(user))
      return { done: [], later: true, held: [] };
    const r = this.#takeFromHome(hub, group, address, texts, null);
    // What settled since the home last heard rides on this answer (#homeItemSettled).
    const t = this.#fromHomes.get(`${address}\n${group}`);
    if (t !== undefined && t.settled.length > 0) {
      const done = new Set(r.done);
      for (const m of t.settled) if (!done.has(m)) r.done.push(m);
      t.settled = [];
    }
    return r;
  }

  /**
   * Take the home's frames for `address`, in order: a `deliver` of a commit or group message is
   * stored in this object's mailbox (once: the home's mids only grow), or a group message for a
   * caught-up connection held and sent before it is stored (§7.3 "Write-behind"); a state is kept
   * for `welcome`; all reach the member's connection. `reply`: the connection whose frame these
   * answer, which gets the answers. The home's other frames (presence) are not the member's.
   * The answer acknowledges what this object holds now (`done`) and names what it took
   * write-behind (`held`), settled later.
   */
  #takeFromHome(
    hub: string,
    group: string,
    address: string,
    texts: readonly string[],
    reply: Session | null,
  ): HomeReceipt {
    const { store, sessions } = this.#d;
    const now = this.#d.now();
    const held = store.memberGroup(address, group);
    const key = `${address}\n${group}`;
    const taken = this.#fromHomes.get(key);
    let state = held?.state ?? null;
    // Above the stored position: what this object holds in memory (taken write-behind).
    let through = Math.max(held?.through ?? 0, taken?.taken ?? 0);
    const done: string[] = [];
    const behind: string[] = [];
    let later = false;
    let stored = false;
    for (const text of texts) {
      let f: ServerFrame | null = fastGroupDeliver(text);
      if (f === null) {
        const parsed = parseServerFrame(text);
        if (!parsed.ok) {
          console.error("relay: home sent a bad frame", parsed.code);
          continue;
        }
        f = parsed.frame;
      }
      const to = reply ?? sessions.online(address);
      if (f.t === "deliver") {
        if (f.item.kind === "direct" || f.item.group !== group) continue;
        const mid = Number(f.mid);
        if (mid > through) {
          const r = this.#storeFromHome(hub, address, f, now, reply === null);
          if (r === "later") {
            // No room for a commit yet: nothing after it may overtake it (§7.3 order).
            later = true;
            break;
          }
          through = mid;
          if (r === "held") {
            behind.push(f.mid);
            continue;
          }
          stored = true;
        } else {
          // Sent again (the home opened the link again): a copy still held here is stored
          // first, so that this answer never outruns this object's only copy. Storage refused:
          // not answered, so the home sends it again.
          const local = taken?.held.get(mid);
          if (local !== undefined && this.deliveries.holds(local) && !this.deliveries.settle(local))
            continue;
        }
        done.push(f.mid);
      } else if (f.t === "group" && f.state.group === group) {
        const next = JSON.stringify(f.state);
        // A state the member has already (a link opened again) is not news.
        if (next !== state || reply !== null) to?.sendText(text);
        state = next;
      } else if (f.t === "left" && f.group === group) {
        state = null;
        to?.sendText(text);
      } else if ((f.t === "accepted" || f.t === "error") && reply !== null) {
        reply.sendText(text);
      }
    }
    const t = this.#fromHomes.get(key);
    if (t !== undefined) t.taken = Math.max(t.taken, through);
    // The recorded position moves in the same step as a message stored here (so that a lost
    // answer is never stored twice); what settles later is recorded by the next flush
    // (#homeItemSettled).
    this.#keepMemberGroup(
      hub,
      address,
      group,
      held,
      state,
      stored ? this.#storedThrough(key, through) : 0,
    );
    if (later) {
      const homes = this.#full.get(address) ?? new Set<string>();
      this.#full.set(address, homes.add(group));
    }
    return { done, later, held: behind };
  }

  /**
   * The home position a member object's row may record for `key`: every home mid up to it is
   * stored here or acknowledged by the member. A message still held is not: if this object dies,
   * the home must send it again, and a recorded position would have it taken as known.
   */
  #storedThrough(key: string, through: number): number {
    const t = this.#fromHomes.get(key);
    if (t === undefined) return through;
    const first = t.held.keys().next();
    return first.done === true ? Math.max(t.taken, through) : first.value - 1;
  }

  /** Write a member's group row if its state or stored position changed. */
  #keepMemberGroup(
    hub: string,
    address: string,
    group: string,
    held: { state: string | null; through: number } | null,
    state: string | null,
    through: number,
  ): void {
    const { store } = this.#d;
    if (held !== null && state === held.state && through <= held.through) return;
    const user = userOfMember(address);
    const peers = state === (held?.state ?? null) ? null : groupPeersOf(store, user);
    store.setMemberGroup(address, group, state, Math.max(through, held?.through ?? 0));
    // Who shares a group with the user decides who sees it online (§6.3).
    if (peers !== null)
      this.presence.groupPeersChanged(hub, user, peers, groupPeersOf(store, user));
  }

  /**
   * A group message this object took write-behind for `key` settled (acknowledged by the member,
   * or stored): the home hears of it with this object's next answer to it, or within
   * HELD_DELAY_MS by a call of its own (#sendHomeReports).
   */
  #homeItemSettled(key: string, homeMid: number): void {
    const t = this.#fromHomes.get(key);
    if (t === undefined) return;
    t.held.delete(homeMid);
    t.settled.push(String(homeMid));
    // Recorded with the next flush (FLUSH_DELAY_MS), not in this step: one write per flush,
    // however many messages settle; an object that dies first gets the unreported ones again,
    // as new.
    this.#d.store.notePosition(t.address, t.group, this.#storedThrough(key, 0));
    this.deliveries.persistSoon();
    this.#fromHomesTimer ??= setTimeout(() => this.#sendHomeReports(), HELD_DELAY_MS);
  }

  #sendHomeReports(): void {
    if (this.#fromHomesTimer !== null) clearTimeout(this.#fromHomesTimer);
    this.#fromHomesTimer = null;
    const peers = this.#d.peers;
    if (peers === undefined || peers === null) return;
    for (const t of this.#fromHomes.values()) {
      if (t.settled.length === 0) continue;
      const mids = t.settled;
      t.settled = [];
      void peers.homeSettled(t.hub, t.group, t.address, mids).catch(() => {
        // Best effort: the home sends what it heard nothing of again after SETTLE_WAIT_MS,
        // and this object answers it from what it holds (#takeFromHome).
      });
    }
  }

  /**
   * `a`'s device acknowledged items: each home this object answered `later` for its address
   * (no room) is told there is room now. Best effort: a lost call leaves the home to its
   * backed-off retry (group-home.ts MAX_RELINK_MS), and an answer of `later` again puts the
   * home back on the list.
   */
  #roomAgain(a: AuthedAttachment): void {
    const address = addressOf(a);
    const homes = this.#full.get(address);
    const peers = this.#d.peers;
    if (homes === undefined || peers === undefined || peers === null) return;
    this.#full.delete(address);
    for (const group of homes)
      void peers.homeRoom(a.hub, group, address).catch(() => {
        // The home asks again at its backed-off time.
      });
  }

  /**
   * Store one item the home sends and hand it to the member's connection (§7.3). A group message
   * that finds the mailbox full is dropped, as the hub drops that copy (the member sees a gap);
   * a commit waits for room up to the hard bound (`later`), as a member without it is locked out.
   * `mayHold`: a group message for a caught-up connection may be held and sent before it is
   * stored (`held`, §7.3 "Write-behind"); the home keeps its copy until it settles.
   */
  #storeFromHome(
    hub: string,
    address: string,
    f: FrameOf<ServerFrame, "deliver">,
    now: number,
    mayHold: boolean,
  ): "done" | "held" | "later" {
    const { store } = this.#d;
    const it = f.item;
    const from = { username: f.from, identityKey: f.fromKey };
    if (it.kind === "commit") {
      // The hard bound, and the committer's own bounds on commits (§7.3): its share of this
      // mailbox and the bytes of its cores here. Past either the commit waits at its home, where
      // the committer's next commits for this member then meet the home's own share and are
      // refused: one sender's commits cannot fill a mailbox on a user's route either.
      if (
        !mailboxHasRoom("commit", this.#stored(address)) ||
        !commitRoom(store.commitHoldings(f.from, [address]), [address], it.core.length)
      )
        return "later";
      const payload = store.putPayload(it.core);
      const mid = this.#enqueue(from, address, "commit", payload, it.group, it.epoch, it.wrap, now);
      this.#offer(from, address, mid, now, it);
    } else if (it.kind === "group") {
      // A full mailbox, or the sender's full share of it (§7.3: one sender never fills a
      // mailbox by itself), drops this copy, as the hub's fan-out skips such a member; the
      // home's own shares count only what it holds until members' objects take it.
      if (
        !mailboxHasRoom("group", this.#stored(address)) ||
        senderRoom("group", this.#holdings(f.from, [address]), [address]).fits.length === 0
      )
        return "done";
      const row = {
        group: it.group,
        epoch: it.epoch,
        sender: f.from,
        senderKey: f.fromKey,
        ts: f.ts,
        expiresAt: expiryOf(now),
        data: it.body,
      };
      if (mayHold && this.deliveries.canSendNow(address)) {
        this.#holdFromHome(hub, address, Number(f.mid), row);
        this.pushes.queued([address], now);
        return "held";
      }
      const mid = store.putGroupMessage({
        ...row,
        roster: store.memberRosterOf(it.group, address),
        skipped: [],
      });
      this.#d.wakeAt(row.expiresAt);
      this.deliveries.fanout([address], mid, f.from, groupDeliverText({ ...row, mid }));
      this.pushes.queued([address], now);
    }
    this.deliveries.persistSoon();
    return "done";
  }

  /**
   * Send a group message from its home to the member's caught-up connection before it is
   * stored (§7.3 "Write-behind"; Deliveries.sendBehindGroup): this object's copy is in memory
   * only, the home's is kept until the member acknowledges it or this object stores it.
   */
  #holdFromHome(
    hub: string,
    address: string,
    homeMid: number,
    row: Omit<NewGroupMessage, "roster" | "skipped">,
  ): void {
    const key = `${address}\n${row.group}`;
    let t = this.#fromHomes.get(key);
    if (t === undefined) {
      // Kept while this object runs (the position it knows the home's messages up to); past
      // MAX_FROM_HOMES, idle entries go first (a message sent again is then stored again, which
      // the member's client dedupes, §7.3).
      if (this.#fromHomes.size >= MAX_FROM_HOMES)
        for (const [k, x] of this.#fromHomes)
          if (x.held.size === 0 && x.settled.length === 0) this.#fromHomes.delete(k);
      t = { hub, group: row.group, address, held: new Map(), taken: 0, settled: [] };
      this.#fromHomes.set(key, t);
    }
    const mid = this.#d.store.holdGroupMessage(address, row);
    t.held.set(homeMid, mid);
    t.taken = Math.max(t.taken, homeMid);
    this.deliveries.sendBehindGroup(
      address,
      { mid, group: true, sender: row.sender },
      groupDeliverText({ ...row, mid }),
      (stored) => {
        if (stored) this.#d.wakeAt(row.expiresAt);
        this.deliveries.persistSoon();
        this.#homeItemSettled(key, homeMid);
      },
    );
  }

  /**
   * One group frame of member `m`, forwarded by its user's object to this object, the home of
   * `group` (group-home.ts): run by the same steps as on a hub's connection of `m`'s, and
   * answered with what that connection would have been sent in answer.
   */
  async fromMember(hub: string, group: string, m: MemberBinding, text: string): Promise<string[]> {
    const { store } = this.#d;
    // A member's `group_send`, the common frame here, takes the fast path (fastframe.ts).
    const parsed = parseClientFrameFast(text);
    const id = parsed.ok ? ("id" in parsed.frame ? parsed.frame.id : undefined) : parsed.id;
    const home = await this.#takeFromHub(hub, group);
    if (home === null) return [JSON.stringify(errorFrame("internal", id))];
    const now = this.#d.now();
    // Only the objects of this hub call here, and each names its own user's group: anything
    // else is a relay bug, answered as one.
    if (
      home.hub !== hub ||
      home.group !== group ||
      !parsed.ok ||
      !isGroupFrame(parsed.frame) ||
      parsed.frame.group !== group
    ) {
      console.error("relay: a home was sent what is not its group's");
      return [JSON.stringify(errorFrame("internal", id))];
    }
    store.rememberMember(m.username, m.identityKey, now);
    const att = memberAttachment(hub, m, now);
    this.#relink(att, now);
    const r = replySession(att, now);
    try {
      await this.#dispatch(r.s, parsed.frame, now);
    } catch (e) {
      this.#internal(r.s, e, id);
    }
    return r.out;
  }

  /**
   * A home's first act: take the group of its name from the hub's route, if the hub's object
   * holds one (`Hub.groupExport`; it then serves it no more), so a group name is one group's on
   * both routes and a group moves with its members (PROTOCOL.md §4.1). Once only: the home's
   * mark (`home_of`) is written with what it took. Null: the hub's object could not be reached
   * or had a step of the group in flight; the caller answers `internal` and is asked again.
   */
  async #takeFromHub(hub: string, group: string): Promise<{ hub: string; group: string } | null> {
    const held = this.#home;
    if (held !== null) return held;
    const peers = this.#d.peers;
    if (this.#adopting === null) {
      const run = (async () => {
        const x =
          peers === undefined || peers === null ? null : await peers.groupExport(hub, group);
        if (x === "busy") throw new Error("group busy at the hub's object");
        if (this.#home !== null) return;
        if (x !== null) this.#d.store.importGroup(x, this.#d.now());
        this.#d.store.setHomeOf(hub, group);
        this.#homeRow = { hub, group };
      })().finally(() => {
        if (this.#adopting === run) this.#adopting = null;
      });
      this.#adopting = run;
    }
    try {
      await this.#adopting;
    } catch (e) {
      console.error(
        "relay: taking a group from the hub failed",
        e instanceof Error ? e.name : typeof e,
      );
      return null;
    }
    return this.#home;
  }

  /**
   * In a group's home: member `m`, whose object took its user over from the hub's route, is
   * taken in (its link opens now, even if it was waiting after a `later`); its state answered.
   */
  async adopt(hub: string, group: string, m: MemberBinding): Promise<GroupState | null> {
    const home = await this.#takeFromHub(hub, group);
    if (home === null) throw new Error("the hub's object could not be reached");
    const { store } = this.#d;
    // Only the binding the hub's object handed over (the name's identity then) is taken in.
    if (home.hub !== hub || home.group !== group) return null;
    if (store.getUser(m.username)?.identityKey !== m.identityKey) return null;
    const address = m.address ?? m.username;
    const now = this.#d.now();
    this.#links.wake(address);
    this.#relink(memberAttachment(hub, m, now), now);
    return this.#stateFor(address);
  }

  /**
   * Open the links of a home to every member of its group (and to `caller`) that has none, before
   * a step stores anything for them (group-home.ts).
   */
  #relink(caller: AuthedAttachment | null, now: number): void {
    const home = this.#home;
    if (home === null) return;
    const { store } = this.#d;
    const g = store.getGroup(home.group);
    const involved = g === null ? [] : [...new Set([...g.members, ...g.pendingJoins])];
    const open = new Map<string, AuthedAttachment>();
    if (caller !== null && this.#links.missing([addressOf(caller)]).length > 0)
      open.set(addressOf(caller), caller);
    const missing = this.#links.due(this.#links.missing(involved), now).filter((x) => !open.has(x));
    if (missing.length > 0) {
      const keys = new Map(
        store
          .getUsers([...new Set(missing.map(userOfMember))])
          .map((u) => [u.username, u.identityKey]),
      );
      for (const address of missing) {
        const username = userOfMember(address);
        const identityKey = keys.get(username);
        if (identityKey === undefined) continue;
        open.set(
          address,
          memberAttachment(home.hub, memberBinding(username, identityKey, address), now),
        );
      }
    }
    this.#links.open(open);
  }

  /** The home's group as `member` is to see it when its link opens; null: not in it. */
  #stateFor(member: string): GroupState | null {
    const home = this.#home;
    const g = home === null ? null : this.#d.store.getGroup(home.group);
    if (g === null || !(g.members.includes(member) || g.pendingJoins.includes(member))) return null;
    return this.#groupState(g);
  }

  // -- Web Push subscriptions (PROTOCOL.md §7.9) -----------------------------------------------

  /** Sends due Web Pushes; the lifecycle calls it after `alarm`. Never rejects. */
  sendPushes(): Promise<void> {
    return this.pushes.sendDue().catch((e: unknown) => {
      console.error("relay: push round failed", e instanceof Error ? e.name : typeof e);
    });
  }

  #pushSubscription(
    s: Session,
    a: AuthedAttachment,
    frame: Frame<"push_subscribe"> | Frame<"push_unsubscribe">,
  ): void {
    // A subscription is the device's, under its mailbox address (§4.7, §7.9).
    const address = addressOf(a);
    if (frame.t === "push_unsubscribe") {
      this.pushes.forget(address);
    } else {
      // The current device's id is the stored one (§4.3, §4.4); a linked device's is in its address.
      const device = deviceOf(a) ?? this.#d.store.getDevice(a.username);
      const refused = device === null ? "internal" : this.pushes.subscribe(address, device, frame);
      if (refused !== null) {
        s.send(errorFrame(refused, frame.id));
        return;
      }
    }
    s.send({ v: PROTOCOL_VERSION, t: "accepted", id: frame.id });
  }
}

/** A connection's member binding, as its user's object hands it to a group's home. */
function bindingOf(a: AuthedAttachment): MemberBinding {
  return memberBinding(a.username, a.identityKey, addressOf(a));
}

/** The binding of member `address` (the username, or a linked device's address, §4.7). */
function memberBinding(username: string, identityKey: string, address: string): MemberBinding {
  return { username, identityKey, ...(address === username ? {} : { address }) };
}

/**
 * What tells a retried `send`/`group_send` from a new frame with the same id (§7.3 "Retries"): a
 * retry is the same bytes, and a new ciphertext never is. The body's length and a 53-bit string
 * hash (cyrb53): not a cryptographic digest — only the sender could make two of its bodies
 * collide, and only to have its own second frame taken for a retry. SHA-256 here cost ~200 µs
 * of workerd CPU per send under `npm run bench`, this ~1 µs.
 */
function bodyDigest(body: string): string {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < body.length; i++) {
    const c = body.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return `${body.length}.${(4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)}`;
}

/** Longest text the cheap pre-admission ack check parses (256 mids fit in ~5 KB). */
const MAX_ACK_TEXT = 8192;

/** The `ack` frame this raw socket message is, if it is one. Bounded work: safe before admission. */
function ackFrame(raw: unknown): Frame<"ack"> | null {
  if (typeof raw !== "string" || raw.length > MAX_ACK_TEXT || !raw.includes('"ack"')) return null;
  const r = parseClientFrameFast(raw);
  return r.ok && r.frame.t === "ack" ? r.frame : null;
}
