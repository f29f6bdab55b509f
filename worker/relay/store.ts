/**
 * The relay's SQLite schema and every query it runs (PROTOCOL.md §7.3). All statements are fixed
 * strings with `?` bindings; variable-length id lists travel as one JSON array bound to
 * `json_each(?)`, so no SQL is ever built from input. Bytes are stored as canonical base64url
 * text, exactly as they travel, so nothing is re-encoded between wire and disk.
 */
import * as v from "valibot";
import {
  DeviceList,
  LEAF_QUEUE,
  type Leaf,
  type PresenceScope,
  userOfMember,
} from "../../shared/protocol";
import type { GroupRecord } from "./groups";
import type { SeedEntry } from "./key-directory";
import { LazyTables } from "./lazy-tables";
import type { CommitHoldings, MailboxKind, MailboxRow, SenderHoldings } from "./mailbox";
import type { PushState } from "./push";

/** Entries each read cache of the Store holds (usernames are unique, so a few hundred KB at most). */
const CACHE_MAX = 2048;

/**
 * Accepted sends a device's retries are recognised among (PROTOCOL.md §7.3 "Retries"): a retry
 * is a frame whose answer was lost in flight, so only the latest few matter.
 */
const SEND_IDS_KEPT = 16;

/** Mids leased per write for held items (holdItem): a restart skips at most this many. */
const MID_LEASE = 4096;

/**
 * Tables a hub's object kept before the hub's Directory object did (prekey-store.ts): dropped
 * once by an object that still has them (#dropLegacy).
 */
const LEGACY_TABLES = [
  "one_time_prekeys",
  "pq_prekeys",
  "one_time_kem_prekeys",
  "registrations",
] as const;

/** Put `key` in a bounded insertion-ordered cache, dropping the oldest entry past CACHE_MAX. */
function remember<K, V>(cache: Map<K, V>, key: K, value: V): void {
  if (cache.size >= CACHE_MAX) {
    const oldest = cache.keys().next();
    if (oldest.done !== true) cache.delete(oldest.value);
  }
  cache.set(key, value);
}

/** This module's tables, made at first write (lazy-tables.ts). */
export const STORE_SCHEMA = [
  // The hub's copy of the bindings the Directory object decided (§4.3; key-directory.ts), for
  // the synchronous reads of every frame; the directory is the authority.
  `CREATE TABLE IF NOT EXISTS users (
     username TEXT PRIMARY KEY,
     identity_key TEXT NOT NULL UNIQUE,
     created_at INTEGER NOT NULL,
     seen_at INTEGER NOT NULL
   )`,
  // Bindings and signed prekeys this object held before the Directory object owned them, to be
  // handed to it once (Hub.#directoryReady), then deleted.
  `CREATE TABLE IF NOT EXISTS directory_seed (
     entry TEXT PRIMARY KEY,
     identity_key TEXT,
     spk_id INTEGER NOT NULL,
     spk_key TEXT NOT NULL,
     spk_sig TEXT NOT NULL,
     bound_at INTEGER NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS user_devices (
     username TEXT PRIMARY KEY,
     device TEXT NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS device_lists (
     username TEXT PRIMARY KEY,
     version INTEGER NOT NULL,
     list TEXT NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS groups (
     name TEXT PRIMARY KEY,
     epoch INTEGER NOT NULL,
     created_at INTEGER NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS group_members (
     grp TEXT NOT NULL,
     username TEXT NOT NULL,
     committed INTEGER NOT NULL,
     joining INTEGER NOT NULL,
     leaving INTEGER NOT NULL,
     PRIMARY KEY (grp, username)
   )`,
  "CREATE INDEX IF NOT EXISTS group_members_user ON group_members (username)",
  // Bodies and commit cores are stored once and shared by every recipient's mailbox row.
  `CREATE TABLE IF NOT EXISTS payloads (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     data TEXT NOT NULL
   )`,
  // AUTOINCREMENT: a mid is never reused, even after deletion, so clients can dedupe on it.
  `CREATE TABLE IF NOT EXISTS mailbox (
     mid INTEGER PRIMARY KEY AUTOINCREMENT,
     recipient TEXT NOT NULL,
     sender TEXT NOT NULL,
     sender_key TEXT NOT NULL,
     ts INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     kind TEXT NOT NULL,
     grp TEXT,
     epoch INTEGER,
     payload INTEGER NOT NULL,
     wrap TEXT
   )`,
  "CREATE INDEX IF NOT EXISTS mailbox_recipient ON mailbox (recipient, mid)",
  // The sending device of a direct row from an identity with a device list (PROTOCOL.md §4.9).
  // A table of its own so existing hubs need no ALTER; rows go with their mailbox row.
  `CREATE TABLE IF NOT EXISTS mailbox_devices (
     mid INTEGER PRIMARY KEY,
     device TEXT NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS mailbox_expiry ON mailbox (expires_at)",
  "CREATE INDEX IF NOT EXISTS mailbox_payload ON mailbox (payload)",
  // Per-sender quotas (PROTOCOL.md §7.3) count a sender's rows; covering, so no table reads.
  "CREATE INDEX IF NOT EXISTS mailbox_sender ON mailbox (sender, kind, recipient)",
  // Items stored per recipient, kept in step with `mailbox` by every insert and delete, so the
  // bound check of a 1,000-member fanout reads 1,000 rows, not up to 1,000 × 2,000.
  `CREATE TABLE IF NOT EXISTS mailbox_counts (
     recipient TEXT PRIMARY KEY,
     n INTEGER NOT NULL
   )`,
  // Who created each group (identity key), for maxGroupsCreatedPerIdentity (PROTOCOL.md §7.5).
  // The hub's copy of a group is the group object's record at `seq` (group-object.ts): the seq
  // it names in its next call. No row: 0 (a group copied from before group objects, or new).
  `CREATE TABLE IF NOT EXISTS group_seq (
     grp TEXT PRIMARY KEY,
     seq INTEGER NOT NULL
   )`,
  // A table of its own so existing hubs need no ALTER; rows go with their group.
  `CREATE TABLE IF NOT EXISTS group_creators (
     grp TEXT PRIMARY KEY,
     creator_key TEXT NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS group_creators_key ON group_creators (creator_key)",
  // Closed groups (PROTOCOL.md §9.7), per group: the latest signed group state a commit carried
  // (opaque but for its policy), and the authorization of each pending join and leave, passed
  // unread to committers. Tables of their own so existing hubs need no ALTER.
  `CREATE TABLE IF NOT EXISTS group_info (
     grp TEXT PRIMARY KEY,
     info TEXT NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS group_auth (
     grp TEXT NOT NULL,
     username TEXT NOT NULL,
     kind TEXT NOT NULL,
     auth TEXT NOT NULL,
     PRIMARY KEY (grp, username, kind)
   )`,
  // Per group and member: the leaf keys it published, oldest first (PROTOCOL.md §9.3), as JSON
  // {l: Leaf[], u: head used by an accepted commit}. Tables of their own: no ALTER on old hubs.
  `CREATE TABLE IF NOT EXISTS group_leaves (
     grp TEXT NOT NULL,
     username TEXT NOT NULL,
     queue TEXT NOT NULL,
     PRIMARY KEY (grp, username)
   )`,
  // Per group: the interim transcript hash the last accepted commit declared (§9.2).
  `CREATE TABLE IF NOT EXISTS group_interims (
     grp TEXT PRIMARY KEY,
     interim TEXT NOT NULL
   )`,
  // The hub's mid high-water mark (one row). Direct/commit rows and group messages draw their
  // mids from it, so mids stay unique across both tables and are never reused (§6.1, §7.3).
  `CREATE TABLE IF NOT EXISTS mid_counter (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     last INTEGER NOT NULL
   )`,
  // Group messages are stored once (PROTOCOL.md §7.3, "Group messages"): one row per message
  // with the roster snapshot it fans out to and the members it skipped (JSON array or NULL),
  // instead of one mailbox row per member. Each member's progress is its `group_acks` cursor.
  `CREATE TABLE IF NOT EXISTS group_log (
     mid INTEGER PRIMARY KEY,
     grp TEXT NOT NULL,
     epoch INTEGER NOT NULL,
     roster INTEGER NOT NULL,
     sender TEXT NOT NULL,
     sender_key TEXT NOT NULL,
     ts INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     data TEXT NOT NULL,
     skipped TEXT
   )`,
  // The one secondary index: every B-tree a message row touches is written out with the event's
  // commit, which was the largest share of a fan-out's cost after the mailbox rows themselves
  // (docs/PERFORMANCE.md). Expiry needs none (expires_at grows with mid: the oldest row expires
  // first), per-sender totals are counted once per object start (store.ts #sender).
  "CREATE INDEX IF NOT EXISTS group_log_roster ON group_log (roster, mid)",
  // Who a group message is for: the group's active members when it was sent. One snapshot per
  // roster (a commit makes a new one), shared by every message sent under it.
  `CREATE TABLE IF NOT EXISTS group_rosters (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     grp TEXT NOT NULL,
     members TEXT NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS group_rosters_grp ON group_rosters (grp)",
  `CREATE TABLE IF NOT EXISTS roster_members (
     roster INTEGER NOT NULL,
     username TEXT NOT NULL,
     PRIMARY KEY (roster, username)
   )`,
  "CREATE INDEX IF NOT EXISTS roster_members_user ON roster_members (username, roster)",
  // Per sending device (identity key and device id), its latest SEND_IDS_KEPT sends and group
  // sends accepted within sendRetryWindowSec (PROTOCOL.md §7.3 "Retries"), as JSON
  // [[id, {target, digest, mid, expiresAt}], ...] oldest first: a retry after a lost `accepted`
  // is answered again and stored once. One row per device, so the flush writes one row per
  // sending device, not one per send; `expires_at` is its newest entry's, for the purge.
  `CREATE TABLE IF NOT EXISTS send_recent (
     sender TEXT PRIMARY KEY,
     entries TEXT NOT NULL,
     expires_at INTEGER NOT NULL
   )`,
  // Per user: every group message for them with mid <= through is acknowledged (cumulative).
  `CREATE TABLE IF NOT EXISTS group_acks (
     username TEXT PRIMARY KEY,
     through INTEGER NOT NULL
   )`,
  // Presence (PROTOCOL.md §6.3): `recipient` may see `sender` online because `sender` wrote to
  // them; bounded per sender (LIMITS.maxPresenceContactsPerUser, oldest forgotten first).
  `CREATE TABLE IF NOT EXISTS presence_contacts (
     sender TEXT NOT NULL,
     recipient TEXT NOT NULL,
     at INTEGER NOT NULL,
     PRIMARY KEY (sender, recipient)
   )`,
  "CREATE INDEX IF NOT EXISTS presence_contacts_recipient ON presence_contacts (recipient)",
  "CREATE INDEX IF NOT EXISTS presence_contacts_age ON presence_contacts (sender, at)",
  // Presence across user objects (docs/ARCHITECTURE.md "User objects"): in a viewer's object,
  // the users another object announced online to it (it may see them, §6.3), one row each while
  // online; bounded per viewer (LIMITS.maxPresenceContactsPerUser, oldest dropped).
  `CREATE TABLE IF NOT EXISTS peer_presence (
     viewer TEXT NOT NULL,
     username TEXT NOT NULL,
     identity_key TEXT NOT NULL,
     at INTEGER NOT NULL,
     PRIMARY KEY (viewer, username)
   )`,
  // In a user's object: how many of its user's items each other user's object last said it
  // holds (`address`: that object's mailbox address), so the sender's total (§7.3
  // maxMailboxPerSender) is kept where the sender is (docs/ARCHITECTURE.md "User objects").
  `CREATE TABLE IF NOT EXISTS held_elsewhere (
     sender TEXT NOT NULL,
     address TEXT NOT NULL,
     n INTEGER NOT NULL,
     at INTEGER NOT NULL,
     PRIMARY KEY (sender, address)
   )`,
  // In a user's object: its user was last announced online to its viewers' objects, so a restart
  // that lost its connections announces it offline (presence.ts reconcile).
  `CREATE TABLE IF NOT EXISTS presence_announced (
     username TEXT PRIMARY KEY,
     hub TEXT NOT NULL
   )`,
  // Per-user relay settings (§6.3): who may see the user online; no row: the hub's default.
  `CREATE TABLE IF NOT EXISTS user_settings (
     username TEXT PRIMARY KEY,
     presence TEXT NOT NULL
   )`,
  // Web Push subscriptions, one per device of a user (PROTOCOL.md §7.9), with the push state
  // (push.ts PushState) so a pending push survives the object's restart.
  `CREATE TABLE IF NOT EXISTS push_subs (
     username TEXT NOT NULL,
     device TEXT NOT NULL,
     endpoint TEXT NOT NULL,
     p256dh TEXT NOT NULL,
     auth TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     pending INTEGER NOT NULL,
     due_at INTEGER NOT NULL,
     last_sent_at INTEGER NOT NULL,
     attempts INTEGER NOT NULL,
     PRIMARY KEY (username, device)
   )`,
  // Token buckets that must outlive the object (SECURITY.md L4, L16; ratelimit.ts BucketStore):
  // `kind` 'identity' (key: the identity key, its frame bucket, PROTOCOL.md §7.2); rows of kind
  // 'opk' that hubs stored before the key directory became its own object purge as they refill.
  // (key: owner username, newline, requester identity key; the one-time prekey quota, §7.4).
  // A row is garbage once it has refilled (`full_at`); the alarm deletes those.
  `CREATE TABLE IF NOT EXISTS rate_buckets (
     kind TEXT NOT NULL,
     key TEXT NOT NULL,
     tokens REAL NOT NULL,
     at INTEGER NOT NULL,
     full_at INTEGER NOT NULL,
     PRIMARY KEY (kind, key)
   )`,
  "CREATE INDEX IF NOT EXISTS rate_buckets_full ON rate_buckets (full_at)",
  // Message requests (PROTOCOL.md §7.3.1): what `owner` decided about direct messages from
  // `peer` ('accepted' or 'blocked'), set by the owner's `contact` frame.
  `CREATE TABLE IF NOT EXISTS contacts (
     owner TEXT NOT NULL,
     peer TEXT NOT NULL,
     state TEXT NOT NULL,
     at INTEGER NOT NULL,
     PRIMARY KEY (owner, peer)
   )`,
  // The hub's lobby on users' routes (presence.ts): the users online now who chose "everyone
  // on this hub" (§6.3), each told of the others by a call to its object.
  `CREATE TABLE IF NOT EXISTS lobby (
     username TEXT PRIMARY KEY,
     identity_key TEXT NOT NULL,
     at INTEGER NOT NULL
   )`,
  // A user's object: who the lobby says is online for `viewer` (both chose "everyone"); read
  // only while the viewer's own setting is "everyone", forgotten when it leaves the lobby.
  `CREATE TABLE IF NOT EXISTS lobby_seen (
     viewer TEXT NOT NULL,
     username TEXT NOT NULL,
     identity_key TEXT NOT NULL,
     PRIMARY KEY (viewer, username)
   )`,
  // A user's object: the users whose rows the hub's object handed over (Hub.handOver), once.
  `CREATE TABLE IF NOT EXISTS handed_over (
     username TEXT PRIMARY KEY,
     at INTEGER NOT NULL
   )`,
  // A user's object: the identity the Directory bound its name to at this object's claim
  // (key-directory.ts `routed`). While the name's copy is still that identity's, a reconnect is
  // judged here alone: only this object can rebind the name.
  `CREATE TABLE IF NOT EXISTS claimed (
     username TEXT PRIMARY KEY,
     identity_key TEXT NOT NULL
   )`,
  // Whether this object's tables from before the Directory object (below, #dropLegacy) are gone.
  `CREATE TABLE IF NOT EXISTS legacy_dropped (
     id INTEGER PRIMARY KEY CHECK (id = 1)
   )`,
  // A group's home (group-home.ts): the one hub and group this object is the home of.
  `CREATE TABLE IF NOT EXISTS home_of (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     hub TEXT NOT NULL,
     grp TEXT NOT NULL
   )`,
  // The hub's object: the groups that moved to their homes on users' routes (Hub.groupExport,
  // Hub.handOver). Their records stay, frozen, for the members who move later; the hub's route
  // serves them no more (PROTOCOL.md §4.1).
  `CREATE TABLE IF NOT EXISTS moved_groups (
     grp TEXT PRIMARY KEY,
     at INTEGER NOT NULL
   )`,
  // A user's object: the groups of its user's addresses a hand-over named, until each group's
  // home has taken the address in (Hub.#adoptAll); kept so a failed call is made again.
  `CREATE TABLE IF NOT EXISTS to_adopt (
     address TEXT NOT NULL,
     grp TEXT NOT NULL,
     identity_key TEXT NOT NULL,
     PRIMARY KEY (address, grp)
   )`,
  // A user's object, for each group of one of its devices (`address`) on users' routes: the
  // latest state its home sent (null: not in the group now), for `welcome`; and the highest mid
  // of the home's it stored, so an item the home sends again is recognised (group-home.ts).
  `CREATE TABLE IF NOT EXISTS member_groups (
     address TEXT NOT NULL,
     grp TEXT NOT NULL,
     state TEXT,
     through INTEGER NOT NULL,
     PRIMARY KEY (address, grp)
   )`,
];

/**
 * One group as the hub's object holds it, for its home on users' routes (Store.exportGroup):
 * the record, its creator, closed-group state (§9.7), leaf queues and transcript (§9.3), and the
 * bindings of everyone the record names.
 */
export interface GroupExport {
  record: GroupRecord;
  creator: string | null;
  info: string | null;
  auths: Array<{ username: string; kind: "join" | "leave"; auth: string }>;
  leaves: Array<[string, LeafQueue]>;
  interim: string | null;
  users: Array<{ username: string; identityKey: string }>;
}

/** One device's Web Push subscription and its push state (PROTOCOL.md §7.9). */
export interface PushSubRow {
  username: string;
  device: string;
  endpoint: string;
  p256dh: string;
  auth: string;
  state: PushState;
}

export interface UserRow {
  username: string;
  identityKey: string;
}

export interface NewMailboxItem {
  recipient: string;
  sender: string;
  senderKey: string;
  ts: number;
  expiresAt: number;
  kind: MailboxKind;
  group: string | null;
  epoch: number | null;
  payload: number;
  wrap: string | null;
  /** The sending device (§4.9); null when the sender has no device list. */
  senderDevice?: string | null;
}

/** A sender's stored items as the quotas count them (PROTOCOL.md §7.3). */
interface SenderTotals {
  /** Direct items per recipient. */
  shares: Map<string, number>;
  direct: number;
}

/** A member's published leaf keys in one group, oldest first; `u`: the head was used. */
export interface LeafQueue {
  l: Leaf[];
  u: boolean;
}

export interface NewGroupMessage {
  group: string;
  epoch: number;
  roster: number;
  sender: string;
  senderKey: string;
  ts: number;
  expiresAt: number;
  data: string;
  /** Roster members left out (full mailbox or sender share, §7.3). */
  skipped: readonly string[];
}

/** One stored group message as a recipient's drain reads it. */
export interface GroupLogRow {
  mid: number;
  group: string;
  epoch: number;
  sender: string;
  senderKey: string;
  ts: number;
  data: string;
}

function str(v: SqlStorageValue | undefined): string {
  if (typeof v !== "string") throw new TypeError("store: expected a text column");
  return v;
}
function num(v: SqlStorageValue | undefined): number {
  if (typeof v !== "number") throw new TypeError("store: expected an integer column");
  return v;
}
function strOrNull(v: SqlStorageValue | undefined): string | null {
  return v === null || v === undefined ? null : str(v);
}
function numOrNull(v: SqlStorageValue | undefined): number | null {
  return v === null || v === undefined ? null : num(v);
}
function kind(v: SqlStorageValue | undefined): MailboxKind {
  const k = str(v);
  if (k === "direct" || k === "commit") return k;
  throw new TypeError("store: bad item kind");
}

/**
 * The bounds of a user's member names in `group_members` (§4.7): the username itself, and the
 * addresses `username.device`, which sort strictly between `username.` and `username/`.
 */
function userRange(username: string): [string, string, string] {
  return [username, `${username}.`, `${username}/`];
}

/** An accepted `send`/`group_send` as a retry of it is recognised (PROTOCOL.md §7.3 "Retries"). */
export interface AcceptedSend {
  readonly target: string;
  readonly digest: string;
  readonly mid: number;
}

/** An accepted send as remembered until its retry window ends. */
type RecentSend = AcceptedSend & { readonly expiresAt: number };

const RecentSendsJson = v.array(
  v.tuple([
    v.string(),
    v.object({ target: v.string(), digest: v.string(), mid: v.number(), expiresAt: v.number() }),
  ]),
);

/**
 * A device's stored recent sends, re-parsed like anything read back (a row that does not parse
 * is an empty memory: at worst a retry is stored again, which clients dedupe).
 */
function recentSends(json: string): Map<string, RecentSend> {
  try {
    const r = v.safeParse(RecentSendsJson, JSON.parse(json));
    if (r.success) return new Map(r.output);
  } catch {
    // Not JSON: as not parsing.
  }
  return new Map();
}

export class Store {
  /**
   * Group records read through to SQLite once, then served from memory until this Store writes
   * that group again (saveGroup / deleteGroup / migrate are the only writers of the two group
   * tables). Why: every group_send reads its group, and the two queries were the largest single
   * cost of a fan-out after the mailbox itself (docs/PERFORMANCE.md). Unknown names are not
   * cached, so client-chosen names cannot grow the map; existing groups are bounded by
   * LIMITS.maxGroupsPerHub.
   */
  readonly #groups = new Map<string, GroupRecord>();
  /**
   * Roster snapshot id per cached group record (records are immutable and replaced on every
   * write, so a record maps to exactly one active-member list). Cleared when rosters are deleted.
   */
  #rosters = new WeakMap<GroupRecord, number>();
  /** `memberGroupStates` by address (users' routes). */
  readonly #memberGroups = new Map<string, Array<{ group: string; state: string }>>();
  /**
   * `memberGroup` by address and group (users' routes), null for none: read on every batch a
   * group's home sends (Hub.fromHome), which was 9% of a member object's CPU per group message
   * under fan-out. setMemberGroup is the only writer of `member_groups`.
   */
  readonly #memberGroup = new Map<string, { state: string | null; through: number } | null>();
  /**
   * The one-member roster snapshot a member object files a group's messages under, by group
   * and address (memberRosterOf); cleared with #rosters.
   */
  #memberRosters = new Map<string, number>();
  /** Positions noted and not yet written (notePosition), by address and group. */
  readonly #positions = new Map<string, { address: string; group: string; through: number }>();
  /** The highest mid handed out (mid_counter, kept in memory; see nextMid). */
  #lastMid = 0;
  /**
   * `mailbox_counts` mirrored in memory (null until first use), and per sender what the quota
   * checks need (loaded per sender on first use). Both are kept in step by every write below,
   * which is every write there is: the object is the only writer of its storage. Why: a group
   * fan-out checks the bounds of every recipient, and reading them was a fifth of the relay's
   * CPU per message (docs/PERFORMANCE.md). Storage stays the truth: both start empty on every
   * object start and are rebuilt from it.
   */
  #counts: Map<string, number> | null = null;
  readonly #senders = new Map<string, SenderTotals>();
  /** Group messages per sender as counted at the first #sender load (then kept in #senders). */
  #logBySender: Map<string, number> | null = null;
  /**
   * Directory rows and contact decisions read on every `send` (the recipient's binding, its
   * decision about the sender), cached because they change only through the writes below
   * (insertUser, reclaimUser; setContactState, deleteContacts), which update or
   * drop the entry. Bounded: at most CACHE_MAX entries each, oldest dropped first.
   */
  readonly #users = new Map<string, UserRow | null>();
  /** moved_groups, read once (groupMoved). */
  #moved: Set<string> | null = null;
  /**
   * Mailbox rows acknowledged and not yet deleted (ackLater), by mid, with the same per
   * recipient: they no longer count toward any bound (the mirrors above already dropped them, and
   * every count read from SQL discounts or first deletes them) and are never read back for
   * delivery. The flush deletes them within FLUSH_DELAY_MS; if the object dies first they are
   * still stored, counted and delivered again after the restart, which clients dedupe (§7.3).
   */
  readonly #acked = new Map<number, string>();
  readonly #ackedBy = new Map<string, Set<number>>();
  readonly #contacts = new Map<string, "accepted" | "blocked" | null>();
  /**
   * Each user's current device and stored device list, read on every `send` (§4.7, §4.9) and
   * cached like the rows above: they change only through setDevice, setDeviceList and
   * reclaimUser. Bounded the same way.
   */
  readonly #devices = new Map<string, string | null>();
  readonly #deviceLists = new Map<string, DeviceList | null>();

  /** Accepted sends per sending device, the latest SEND_IDS_KEPT (§7.3 "Retries"), by id. */
  readonly #sendIds = new Map<string, Map<string, RecentSend>>();
  /** Per sender: what other objects said they hold (held_elsewhere), cached; and unwritten. */
  readonly #held = new Map<string, Map<string, { n: number; at: number }>>();
  readonly #heldDirty = new Map<
    string,
    { sender: string; address: string; n: number; at: number }
  >();
  /** Devices recordSend changed and flushSends has not written yet. */
  readonly #unsavedSends = new Map<string, Map<string, RecentSend>>();
  /**
   * Direct items sent before they are stored (PROTOCOL.md §7.3 "Write-behind"), by mid: counted
   * toward every bound like rows, in memory only, until settleHeld writes them or releaseHeld
   * (their recipient acknowledged them) forgets them. Per recipient and per sender and recipient,
   * for the counts.
   */
  readonly #behind = new Map<number, { item: Omit<NewMailboxItem, "payload">; body: string }>();
  readonly #behindCounts = new Map<string, number>();
  readonly #behindShares = new Map<string, Map<string, number>>();
  /**
   * Group messages a member's object took from its group's home and sent before storing them
   * (users' routes, PROTOCOL.md §7.3 "Write-behind"), by mid, with the member's address: counted
   * by the delivery state (Deliveries), not here, until settleHeldGroup files them under the
   * member's one-member roster or releaseHeldGroup forgets them.
   */
  readonly #behindGroup = new Map<
    number,
    { address: string; m: Omit<NewGroupMessage, "roster" | "skipped"> }
  >();
  /**
   * Every mid up to this one may have been handed out: written to `mid_counter` before a held
   * item's mid passes it, so that after a restart no mid a recipient may already have seen (and
   * dedupes by, §7.3) is handed out again for another item, though the item was never stored.
   */
  #midLeased = 0;

  /** The object's SQL, its tables made at first write (lazy-tables.ts). */
  private readonly sql: LazyTables;

  /** Only `exec` is used: the Node tests' SQLite (test/support/node-sql.ts) provides just that. */
  constructor(sql: Pick<SqlStorage, "exec">) {
    this.sql = new LazyTables(sql, STORE_SCHEMA);
  }

  /** Idempotent: run on every object start. */
  migrate(defaultGroups: readonly string[], now: number): void {
    this.#groups.clear();
    this.#rosters = new WeakMap();
    this.#memberRosters = new Map();
    this.#memberGroups.clear();
    this.#memberGroup.clear();
    this.#positions.clear();
    this.#counts = null;
    this.#senders.clear();
    this.#logBySender = null;
    this.#users.clear();
    this.#contacts.clear();
    this.#devices.clear();
    this.#deviceLists.clear();
    this.#acked.clear();
    this.#ackedBy.clear();
    this.#behind.clear();
    this.#behindGroup.clear();
    this.#behindCounts.clear();
    this.#behindShares.clear();
    this.#dropLegacy();
    this.#moveBindingsOut();
    // Start the mid counter above every mid ever handed out: the AUTOINCREMENT high-water mark
    // of the mailbox (which includes deleted rows), the counter's row, and the largest stored
    // mid. The row is written at the first lease or floor kept (#raiseMidCounter), not here, so
    // an object that never handed out a mid holds no counter table.
    let floor = 0;
    if (this.sql.has("mailbox")) {
      try {
        const seq = this.sql
          .exec("SELECT seq FROM sqlite_sequence WHERE name = 'mailbox'")
          .toArray()[0]?.seq;
        if (typeof seq === "number") floor = seq;
      } catch {
        // sqlite_sequence not readable here: the stored mids below are the best bound there is.
      }
    }
    this.#lastMid = num(
      this.sql
        .exec(
          `SELECT MAX(?, COALESCE((SELECT last FROM mid_counter WHERE id = 1), 0),
             COALESCE((SELECT MAX(mid) FROM group_log), 0),
             COALESCE((SELECT MAX(mid) FROM mailbox), 0)) AS n`,
          floor,
        )
        .one().n,
    );
    this.#midLeased = this.#lastMid;
    for (const g of defaultGroups) {
      this.sql.exec(
        "INSERT INTO groups (name, epoch, created_at) VALUES (?, 0, ?) ON CONFLICT (name) DO NOTHING",
        g,
        now,
      );
    }
  }

  /**
   * One-time, one-time KEM and PQ prekeys and the registration counts moved to the hub's
   * Directory object (prekey-store.ts): what a hub stored here before is dropped, once (the next
   * `welcome` counts 0 and clients upload anew). Once only, because a user's object now keeps
   * its own user's prekeys in tables of the same names (key-directory.ts, users' routes).
   */
  #dropLegacy(): void {
    // Nothing to drop (a new object, or one that dropped them): no marker is written, so a new
    // object holds no table for it.
    const present = LEGACY_TABLES.filter((t) => this.sql.has(t));
    if (present.length === 0) return;
    if (this.sql.exec("SELECT 1 FROM legacy_dropped").toArray().length > 0) return;
    for (const t of present) this.sql.exec(`DROP TABLE IF EXISTS ${t}`);
    this.sql.exec("INSERT INTO legacy_dropped (id) VALUES (1)");
  }

  /**
   * `table` is about to be made for this object's own prekeys (a user's object, key-directory.ts):
   * if it has a legacy name, it is marked as not legacy first, in the same step, so #dropLegacy
   * never takes it at a later start.
   */
  keepAsCurrent(table: string): void {
    if ((LEGACY_TABLES as readonly string[]).includes(table))
      this.sql.exec("INSERT INTO legacy_dropped (id) VALUES (1) ON CONFLICT (id) DO NOTHING");
  }

  /**
   * A hub from before the Directory object owned bindings and signed prekeys kept them here
   * (`users` with its signed prekey, `device_prekeys`): they go to `directory_seed`, for the hub
   * to hand over before its next directory call, and the tables take their present shape.
   */
  #moveBindingsOut(): void {
    if (this.#has("users", "spk_id")) {
      this.sql.exec(
        `INSERT OR IGNORE INTO directory_seed (entry, identity_key, spk_id, spk_key, spk_sig, bound_at)
         SELECT username, identity_key, spk_id, spk_key, spk_sig, created_at FROM users`,
      );
      this.sql.exec(
        `CREATE TABLE users_next (
           username TEXT PRIMARY KEY,
           identity_key TEXT NOT NULL UNIQUE,
           created_at INTEGER NOT NULL,
           seen_at INTEGER NOT NULL
         )`,
      );
      this.sql.exec(
        `INSERT INTO users_next (username, identity_key, created_at, seen_at)
         SELECT username, identity_key, created_at, seen_at FROM users`,
      );
      this.sql.exec("DROP TABLE users");
      this.sql.exec("ALTER TABLE users_next RENAME TO users");
    }
    if (this.#has("device_prekeys", "address")) {
      this.sql.exec(
        `INSERT OR IGNORE INTO directory_seed (entry, identity_key, spk_id, spk_key, spk_sig, bound_at)
         SELECT address, NULL, spk_id, spk_key, spk_sig, 0 FROM device_prekeys`,
      );
      this.sql.exec("DROP TABLE device_prekeys");
    }
  }

  /** Whether `table` exists with column `column` (a probe that reads no row). */
  #has(table: "users" | "device_prekeys", column: string): boolean {
    try {
      this.sql.exec(`SELECT ${column} FROM ${table} LIMIT 0`);
      return true;
    } catch {
      return false;
    }
  }

  /** Up to `limit` entries still to hand to the Directory object (#moveBindingsOut). */
  directorySeed(limit: number): SeedEntry[] {
    return this.sql
      .exec(
        `SELECT entry, identity_key, spk_id, spk_key, spk_sig, bound_at FROM directory_seed
         ORDER BY entry LIMIT ?`,
        limit,
      )
      .toArray()
      .map((r) => ({
        entry: str(r.entry),
        identityKey: r.identity_key === null ? null : str(r.identity_key),
        signedPrekey: { id: num(r.spk_id), key: str(r.spk_key), sig: str(r.spk_sig) },
        boundAt: num(r.bound_at),
      }));
  }

  /** The directory holds these now. */
  seeded(entries: readonly SeedEntry[]): void {
    this.sql.exec(
      "DELETE FROM directory_seed WHERE entry IN (SELECT value FROM json_each(?))",
      JSON.stringify(entries.map((e) => e.entry)),
    );
  }

  // -- users / directory ----------------------------------------------------------------------

  getUser(username: string): UserRow | null {
    const hit = this.#users.get(username);
    if (hit !== undefined) return hit;
    const row = this.#readUser(username);
    remember(this.#users, username, row);
    return row;
  }

  #readUser(username: string): UserRow | null {
    const rows = this.sql
      .exec("SELECT username, identity_key FROM users WHERE username = ?", username)
      .toArray();
    const r = rows[0];
    if (r === undefined) return null;
    return { username: str(r.username), identityKey: str(r.identity_key) };
  }

  /** Directory entries for a list of names, sorted by username; unknown names are skipped. */
  getUsers(usernames: readonly string[]): UserRow[] {
    if (usernames.length === 0) return [];
    return this.sql
      .exec(
        `SELECT username, identity_key FROM users
         WHERE username IN (SELECT value FROM json_each(?)) ORDER BY username`,
        JSON.stringify(usernames),
      )
      .toArray()
      .map((r) => ({ username: str(r.username), identityKey: str(r.identity_key) }));
  }

  /** The name was bound (again) to `identityKey` by the directory: the hub's copy follows. */
  insertUser(username: string, identityKey: string, now: number): void {
    this.#users.delete(username);
    this.sql.exec(
      `INSERT INTO users (username, identity_key, created_at, seen_at) VALUES (?, ?, ?, ?)`,
      username,
      identityKey,
      now,
      now,
    );
  }

  /**
   * The send `id` of `sender` (an identity key and device) accepted within the retry window for
   * the same target with the same body digest (PROTOCOL.md §7.3 "Retries": a retry), or null —
   * a frame that differs in anything is a new one. From memory: a sender's row is read on its
   * first send since the object started, so a send costs no statement after that.
   */
  acceptedSend(
    sender: string,
    id: string,
    sent: Omit<AcceptedSend, "mid">,
    now: number,
  ): AcceptedSend | null {
    const hit = this.#sendIdsOf(sender).get(id);
    if (hit === undefined || hit.expiresAt <= now) return null;
    return hit.target === sent.target && hit.digest === sent.digest ? hit : null;
  }

  /**
   * Remember an accepted send until `expiresAt`. Written to storage by the next flush (one row
   * per sending device), not in the send's own write: if the object dies before, a retry of it
   * is stored again, and clients drop the second copy as a replay (§7.3 "Retries").
   */
  recordSend(sender: string, id: string, sent: AcceptedSend, expiresAt: number): void {
    const mine = this.#sendIdsOf(sender);
    // Replacing one of an earlier frame with this id (a client whose numbering started again).
    mine.delete(id);
    mine.set(id, { ...sent, expiresAt });
    if (mine.size > SEND_IDS_KEPT) {
      const oldest = mine.keys().next();
      if (oldest.done !== true) mine.delete(oldest.value);
    }
    this.#unsavedSends.set(sender, mine);
  }

  /**
   * The held item `mid` that `sender`'s frame `id` was recorded with (recordSend) was settled:
   * its record goes to storage with the next flush, unless a later frame took the id since.
   */
  sendSettled(sender: string, id: string, mid: number): void {
    const mine = this.#sendIds.get(sender);
    if (mine?.get(id)?.mid === mid) this.#unsavedSends.set(sender, mine);
  }

  /** Whether recordSend or sendSettled changed something flushSends has not written yet. */
  get sendsUnsaved(): boolean {
    return this.#unsavedSends.size > 0;
  }

  /** Write the devices whose sends recordSend remembered since the last flush. */
  flushSends(): void {
    if (this.#unsavedSends.size === 0) return;
    const rows = [...this.#unsavedSends].map(([sender, mine]) => {
      let expires = 0;
      for (const e of mine.values()) expires = Math.max(expires, e.expiresAt);
      // A held item's send (§7.3 "Write-behind") is not written while held: after a restart
      // its retry must be judged new, since the item itself may be gone. Its settling
      // (sendSettled) writes it with the next flush.
      const kept = [...mine].filter(([, e]) => !this.isHeld(e.mid));
      return [sender, JSON.stringify(kept), expires];
    });
    this.#unsavedSends.clear();
    this.sql.exec(
      `INSERT OR REPLACE INTO send_recent (sender, entries, expires_at)
       SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
       FROM json_each(?)`,
      JSON.stringify(rows),
    );
  }

  #sendIdsOf(sender: string): Map<string, RecentSend> {
    let mine = this.#sendIds.get(sender);
    if (mine === undefined) {
      const row = this.sql
        .exec("SELECT entries FROM send_recent WHERE sender = ?", sender)
        .toArray()[0];
      mine = row === undefined ? new Map() : recentSends(str(row.entries));
      remember(this.#sendIds, sender, mine);
    }
    return mine;
  }

  purgeSendIds(now: number): void {
    this.sql.exec("DELETE FROM send_recent WHERE expires_at <= ?", now);
  }

  /** The user authenticated (§4.3): the last time seen, for the reclaim rule. */
  sawUser(username: string, now: number): void {
    this.sql.exec("UPDATE users SET seen_at = ? WHERE username = ?", now, username);
  }

  /** The identity's current device id (PROTOCOL.md §4.3), or null before its first auth. */
  getDevice(username: string): string | null {
    const hit = this.#devices.get(username);
    if (hit !== undefined) return hit;
    const r = this.sql
      .exec("SELECT device FROM user_devices WHERE username = ?", username)
      .toArray()[0];
    const device = r === undefined ? null : str(r.device);
    remember(this.#devices, username, device);
    return device;
  }

  setDevice(username: string, device: string): void {
    this.#devices.delete(username);
    this.sql.exec(
      `INSERT INTO user_devices (username, device) VALUES (?, ?)
       ON CONFLICT (username) DO UPDATE SET device = excluded.device`,
      username,
      device,
    );
  }

  /**
   * The identity's signed device list as stored (PROTOCOL.md §4.6), or null. The text was
   * serialised from a parsed frame; it is parsed again here, so a damaged row reads as none.
   */
  getDeviceList(username: string): DeviceList | null {
    const hit = this.#deviceLists.get(username);
    if (hit !== undefined) return hit;
    const r = this.sql
      .exec("SELECT list FROM device_lists WHERE username = ?", username)
      .toArray()[0];
    let list: DeviceList | null = null;
    if (r !== undefined) {
      try {
        const parsed = v.safeParse(DeviceList, JSON.parse(str(r.list)));
        if (parsed.success) list = parsed.output;
      } catch {
        // A damaged row reads as none (above).
      }
    }
    remember(this.#deviceLists, username, list);
    return list;
  }

  setDeviceList(username: string, list: DeviceList): void {
    this.#deviceLists.delete(username);
    this.sql.exec(
      `INSERT INTO device_lists (username, version, list) VALUES (?, ?, ?)
       ON CONFLICT (username) DO UPDATE SET version = excluded.version, list = excluded.list`,
      username,
      list.version,
      JSON.stringify(list),
    );
  }

  // -- groups ---------------------------------------------------------------------------------

  getGroup(name: string): GroupRecord | null {
    // Records are readonly all the way down: the cached object can be handed out as is.
    const hit = this.#groups.get(name);
    if (hit !== undefined) return hit;
    const g = this.sql.exec("SELECT epoch FROM groups WHERE name = ?", name).toArray()[0];
    if (g === undefined) return null;
    const members: string[] = [];
    const pendingJoins: string[] = [];
    const pendingLeaves: string[] = [];
    for (const r of this.sql.exec(
      "SELECT username, committed, joining, leaving FROM group_members WHERE grp = ? ORDER BY username",
      name,
    )) {
      const u = str(r.username);
      if (r.committed === 1) members.push(u);
      if (r.joining === 1) pendingJoins.push(u);
      if (r.leaving === 1) pendingLeaves.push(u);
    }
    const record = { name, epoch: num(g.epoch), members, pendingJoins, pendingLeaves };
    this.#groups.set(name, record);
    return record;
  }

  countGroups(): number {
    return num(this.sql.exec("SELECT COUNT(*) AS n FROM groups").one().n);
  }

  /**
   * The group member names of `username` (§4.7): the username and each `username.device` any
   * group lists. `.` sorts just before `/`, so the range holds exactly the device addresses.
   */
  memberNamesOf(username: string): string[] {
    const rows = this.sql
      .exec(
        `SELECT DISTINCT username FROM group_members
         WHERE username = ? OR (username > ? AND username < ?) ORDER BY username`,
        ...userRange(username),
      )
      .toArray()
      .map((r) => str(r.username));
    return rows.includes(username) ? rows : [username, ...rows];
  }

  /** Groups the user is an active member of or has asked to join. */
  groupsOf(username: string): string[] {
    return this.sql
      .exec(
        `SELECT grp FROM group_members
         WHERE username = ? AND ((committed = 1 AND leaving = 0) OR joining = 1) ORDER BY grp`,
        username,
      )
      .toArray()
      .map((r) => str(r.grp));
  }

  /** The signed group state the last commit carried (§9.7.1), if any. */
  getGroupInfo(name: string): string | undefined {
    const r = this.sql.exec("SELECT info FROM group_info WHERE grp = ?", name).toArray()[0];
    return r === undefined ? undefined : str(r.info);
  }

  setGroupInfo(name: string, info: string): void {
    this.sql.exec(
      "INSERT INTO group_info (grp, info) VALUES (?, ?) ON CONFLICT (grp) DO UPDATE SET info = excluded.info",
      name,
      info,
    );
  }

  /** Pending joins' and leaves' authorizations of a group (§9.7.3, §9.7.4). */
  groupAuths(name: string): { username: string; kind: "join" | "leave"; auth: string }[] {
    return this.sql
      .exec("SELECT username, kind, auth FROM group_auth WHERE grp = ? ORDER BY username", name)
      .toArray()
      .map((r) => ({
        username: str(r.username),
        kind: str(r.kind) === "join" ? ("join" as const) : ("leave" as const),
        auth: str(r.auth),
      }));
  }

  /** Set (or with null, clear) one pending join's or leave's authorization. */
  setGroupAuth(name: string, username: string, kind: "join" | "leave", auth: string | null): void {
    if (auth === null)
      this.sql.exec(
        "DELETE FROM group_auth WHERE grp = ? AND username = ? AND kind = ?",
        name,
        username,
        kind,
      );
    else
      this.sql.exec(
        `INSERT INTO group_auth (grp, username, kind, auth) VALUES (?, ?, ?, ?)
         ON CONFLICT (grp, username, kind) DO UPDATE SET auth = excluded.auth`,
        name,
        username,
        kind,
        auth,
      );
  }

  /** A commit took every pending change: their authorizations go. */
  clearGroupAuths(name: string): void {
    this.sql.exec("DELETE FROM group_auth WHERE grp = ?", name);
  }

  // -- leaf keys and transcript (PROTOCOL.md §9.3) --------------------------------------------

  /** Every member's leaf queue of `grp`. */
  leafQueues(grp: string): Map<string, LeafQueue> {
    const out = new Map<string, LeafQueue>();
    for (const r of this.sql.exec("SELECT username, queue FROM group_leaves WHERE grp = ?", grp)) {
      out.set(str(r.username), JSON.parse(str(r.queue)) as LeafQueue);
    }
    return out;
  }

  #putLeafQueue(grp: string, user: string, q: LeafQueue): void {
    this.sql.exec(
      `INSERT INTO group_leaves (grp, username, queue) VALUES (?, ?, ?)
       ON CONFLICT (grp, username) DO UPDATE SET queue = excluded.queue`,
      grp,
      user,
      JSON.stringify(q),
    );
  }

  /** A join's leaf keys replace any the user had in the group. */
  setLeaves(grp: string, user: string, leaves: readonly Leaf[]): void {
    this.#putLeafQueue(grp, user, { l: [...leaves], u: false });
  }

  /** Fresh leaf keys: a used head goes, the newest LEAF_QUEUE are kept. */
  appendLeaves(grp: string, user: string, leaves: readonly Leaf[]): void {
    const row = this.sql
      .exec("SELECT queue FROM group_leaves WHERE grp = ? AND username = ?", grp, user)
      .toArray()[0];
    const q: LeafQueue = row === undefined ? { l: [], u: false } : JSON.parse(str(row.queue));
    const kept = q.u ? q.l.slice(1) : q.l;
    const ids = new Set(kept.map((l) => l.id));
    const all = [...kept, ...leaves.filter((l) => !ids.has(l.id))];
    this.#putLeafQueue(grp, user, { l: all.slice(-LEAF_QUEUE), u: false });
  }

  /**
   * An accepted commit used each member's head: it goes, except a member's last one, which is
   * kept (marked used) so the group can still commit while that member is away.
   */
  consumeLeafHeads(grp: string, users: readonly string[]): void {
    const qs = this.leafQueues(grp);
    for (const u of users) {
      const q = qs.get(u);
      if (q === undefined) continue;
      this.#putLeafQueue(
        grp,
        u,
        q.l.length > 1 ? { l: q.l.slice(1), u: false } : { ...q, u: true },
      );
    }
  }

  deleteLeaves(grp: string, user: string): void {
    this.sql.exec("DELETE FROM group_leaves WHERE grp = ? AND username = ?", grp, user);
  }

  getInterim(grp: string): string | null {
    const r = this.sql.exec("SELECT interim FROM group_interims WHERE grp = ?", grp).toArray()[0];
    return r === undefined ? null : str(r.interim);
  }

  setInterim(grp: string, interim: string): void {
    this.sql.exec(
      `INSERT INTO group_interims (grp, interim) VALUES (?, ?)
       ON CONFLICT (grp) DO UPDATE SET interim = excluded.interim`,
      grp,
      interim,
    );
  }

  deleteGroup(name: string): void {
    this.#groups.delete(name);
    this.sql.exec("DELETE FROM group_info WHERE grp = ?", name);
    this.sql.exec("DELETE FROM group_auth WHERE grp = ?", name);
    this.sql.exec("DELETE FROM group_leaves WHERE grp = ?", name);
    this.sql.exec("DELETE FROM group_interims WHERE grp = ?", name);
    this.sql.exec("DELETE FROM group_creators WHERE grp = ?", name);
    this.sql.exec("DELETE FROM group_seq WHERE grp = ?", name);
    this.sql.exec("DELETE FROM group_members WHERE grp = ?", name);
    this.sql.exec("DELETE FROM groups WHERE name = ?", name);
  }

  /** The group object's seq of the record this hub holds for `name` (group-object.ts). */
  getGroupSeq(name: string): number {
    const r = this.sql.exec("SELECT seq FROM group_seq WHERE grp = ?", name).toArray()[0];
    return r === undefined ? 0 : num(r.seq);
  }

  /**
   * Write the difference between two records of one group (only changed rows are touched), and
   * the group object's seq of `after` (group-object.ts).
   */
  saveGroup(before: GroupRecord | null, after: GroupRecord, now: number, seq: number): void {
    this.#groups.delete(after.name);
    this.sql.exec(
      `INSERT INTO group_seq (grp, seq) VALUES (?, ?) ON CONFLICT (grp) DO UPDATE SET seq = excluded.seq`,
      after.name,
      seq,
    );
    this.sql.exec(
      `INSERT INTO groups (name, epoch, created_at) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch`,
      after.name,
      after.epoch,
      now,
    );
    const flags = (g: GroupRecord | null, u: string): string =>
      g === null
        ? "000"
        : `${g.members.includes(u) ? 1 : 0}${g.pendingJoins.includes(u) ? 1 : 0}${g.pendingLeaves.includes(u) ? 1 : 0}`;
    const users = new Set<string>([
      ...(before?.members ?? []),
      ...(before?.pendingJoins ?? []),
      ...(before?.pendingLeaves ?? []),
      ...after.members,
      ...after.pendingJoins,
      ...after.pendingLeaves,
    ]);
    for (const u of users) {
      const was = flags(before, u);
      const now_ = flags(after, u);
      if (was === now_) continue;
      if (now_ === "000") {
        this.sql.exec("DELETE FROM group_members WHERE grp = ? AND username = ?", after.name, u);
      } else {
        this.sql.exec(
          `INSERT INTO group_members (grp, username, committed, joining, leaving) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (grp, username) DO UPDATE SET
             committed = excluded.committed, joining = excluded.joining, leaving = excluded.leaving`,
          after.name,
          u,
          Number(now_[0]),
          Number(now_[1]),
          Number(now_[2]),
        );
      }
    }
  }

  // -- mailbox --------------------------------------------------------------------------------

  putPayload(data: string): number {
    return num(this.sql.exec("INSERT INTO payloads (data) VALUES (?) RETURNING id", data).one().id);
  }

  /**
   * The next mid (never reused, unique across `mailbox` and `group_log`). Also above the
   * mailbox's own maximum, so a row inserted by AUTOINCREMENT elsewhere cannot collide.
   */
  nextMid(): number {
    // From memory, as for group messages (putGroupMessage): every insert goes through this
    // Store, the rows themselves record the mids handed out, and the high-water mark is written
    // before any mailbox or group row is deleted (#keepMidFloor), so after a restart (migrate)
    // the next mid is still above every mid ever handed out.
    return ++this.#lastMid;
  }

  /** Store a mailbox row under a new mid, or under `mid` handed out earlier by holdItem. */
  putItem(item: NewMailboxItem, mid = this.nextMid()): number {
    this.sql.exec(
      `INSERT INTO mailbox (mid, recipient, sender, sender_key, ts, expires_at, kind, grp, epoch, payload, wrap)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      mid,
      item.recipient,
      item.sender,
      item.senderKey,
      item.ts,
      item.expiresAt,
      item.kind,
      item.group,
      item.epoch,
      item.payload,
      item.wrap,
    );
    if (item.senderDevice !== undefined && item.senderDevice !== null)
      this.sql.exec(
        "INSERT INTO mailbox_devices (mid, device) VALUES (?, ?)",
        mid,
        item.senderDevice,
      );
    this.sql.exec(
      `INSERT INTO mailbox_counts (recipient, n) VALUES (?, 1)
       ON CONFLICT (recipient) DO UPDATE SET n = n + 1`,
      item.recipient,
    );
    if (this.#counts !== null) {
      this.#counts.set(item.recipient, (this.#counts.get(item.recipient) ?? 0) + 1);
    }
    const t = this.#senders.get(item.sender);
    if (t !== undefined && item.kind === "direct") {
      t.shares.set(item.recipient, (t.shares.get(item.recipient) ?? 0) + 1);
      t.direct++;
    }
    return mid;
  }

  /**
   * A direct item about to be sent before it is stored (§7.3 "Write-behind"): its mid, leased in
   * blocks of MID_LEASE (one small write per block), and its place in the counts.
   */
  holdItem(item: Omit<NewMailboxItem, "payload">, body: string): number {
    const mid = this.#leaseMid();
    this.#behind.set(mid, { item, body });
    this.#behindCounts.set(item.recipient, (this.#behindCounts.get(item.recipient) ?? 0) + 1);
    let shares = this.#behindShares.get(item.sender);
    if (shares === undefined) {
      shares = new Map();
      this.#behindShares.set(item.sender, shares);
    }
    shares.set(item.recipient, (shares.get(item.recipient) ?? 0) + 1);
    return mid;
  }

  /** The next mid, for an item held in memory: leased in blocks of MID_LEASE (one write each). */
  #leaseMid(): number {
    const mid = this.nextMid();
    if (mid > this.#midLeased) {
      this.#midLeased = mid + MID_LEASE;
      this.#raiseMidCounter(this.#midLeased);
    }
    return mid;
  }

  /**
   * A group message for the member `address` about to be sent before it is stored (users'
   * routes, §7.3 "Write-behind"): its mid, leased as holdItem's. Its roster is found when it is
   * stored: a roster no stored message names may be collected (gcRosters) meanwhile.
   */
  holdGroupMessage(address: string, m: Omit<NewGroupMessage, "roster" | "skipped">): number {
    const mid = this.#leaseMid();
    this.#behindGroup.set(mid, { address, m });
    return mid;
  }

  /** Store a held group message under its mid, for its member alone; false if not held. */
  settleHeldGroup(mid: number): boolean {
    const h = this.#behindGroup.get(mid);
    if (h === undefined) return false;
    this.putGroupMessage(
      { ...h.m, roster: this.memberRosterOf(h.m.group, h.address), skipped: [] },
      mid,
    );
    this.#behindGroup.delete(mid);
    return true;
  }

  /** A held group message's member acknowledged it: it is never stored. */
  releaseHeldGroup(mid: number): boolean {
    return this.#behindGroup.delete(mid);
  }

  /** Whether `mid` is a held item (holdItem) not yet settled or released. */
  isHeld(mid: number): boolean {
    return this.#behind.has(mid);
  }

  /** Store a held item as a row under its mid (payload, row, counts); false if not held. */
  settleHeld(mid: number): boolean {
    const h = this.#behind.get(mid);
    if (h === undefined) return false;
    // Written first: if storage refuses, the item is still held (and counted) for a later try.
    this.putItem({ ...h.item, payload: this.putPayload(h.body) }, mid);
    this.#unhold(mid);
    return true;
  }

  /** A held item's recipient acknowledged it: it stops counting and is never stored. */
  releaseHeld(mid: number): boolean {
    return this.#unhold(mid) !== undefined;
  }

  #unhold(mid: number): { item: Omit<NewMailboxItem, "payload">; body: string } | undefined {
    const h = this.#behind.get(mid);
    if (h === undefined) return undefined;
    this.#behind.delete(mid);
    const { recipient, sender } = h.item;
    const n = (this.#behindCounts.get(recipient) ?? 0) - 1;
    if (n > 0) this.#behindCounts.set(recipient, n);
    else this.#behindCounts.delete(recipient);
    const shares = this.#behindShares.get(sender);
    const k = (shares?.get(recipient) ?? 0) - 1;
    if (shares !== undefined) {
      if (k > 0) shares.set(recipient, k);
      else shares.delete(recipient);
      if (shares.size === 0) this.#behindShares.delete(sender);
    }
    return h;
  }

  #sender(sender: string): SenderTotals {
    let t = this.#senders.get(sender);
    if (t !== undefined) return t;
    t = { shares: new Map(), direct: 0 };
    // Counted from the rows: rows waiting for the flush must not be among them.
    this.flushAcked();
    for (const r of this.sql.exec(
      `SELECT recipient, COUNT(*) AS n FROM mailbox
       WHERE sender = ? AND kind = 'direct' GROUP BY recipient`,
      sender,
    )) {
      const n = num(r.n);
      t.shares.set(str(r.recipient), n);
      t.direct += n;
    }
    this.#senders.set(sender, t);
    return t;
  }

  /** Persist the mid high-water mark (before deleting rows that may hold the highest mid). */
  #keepMidFloor(): void {
    this.#raiseMidCounter(this.#lastMid);
  }

  /** Every mid up to `mid` may have been handed out: the counter's row holds at least that. */
  #raiseMidCounter(mid: number): void {
    this.sql.exec(
      `INSERT INTO mid_counter (id, last) VALUES (1, ?)
       ON CONFLICT (id) DO UPDATE SET last = MAX(last, excluded.last)`,
      mid,
    );
  }

  /** Group messages per sender, counted in one scan at first use, then kept in step. */
  #logCounts(): Map<string, number> {
    if (this.#logBySender === null) {
      // group_log has no sender index (see STORE_SCHEMA): one scan for every sender at once.
      this.#logBySender = new Map();
      for (const r of this.sql.exec(
        "SELECT sender, COUNT(*) AS n FROM group_log GROUP BY sender",
      )) {
        this.#logBySender.set(str(r.sender), num(r.n));
      }
    }
    return this.#logBySender;
  }

  #logRemoved(senders: Iterable<SqlStorageValue | undefined>): void {
    const m = this.#logBySender;
    if (m === null) return;
    for (const x of senders) {
      if (typeof x !== "string") continue;
      const left = (m.get(x) ?? 0) - 1;
      if (left > 0) m.set(x, left);
      else m.delete(x);
    }
  }

  /** countMailbox for several recipients in one query. */
  countMailboxes(recipients: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of recipients) out.set(r, 0);
    for (const r of this.sql.exec(
      "SELECT recipient, n FROM mailbox_counts WHERE recipient IN (SELECT value FROM json_each(?))",
      JSON.stringify(recipients),
    )) {
      const to = str(r.recipient);
      out.set(to, num(r.n) - (this.#ackedBy.get(to)?.size ?? 0));
    }
    return out;
  }

  #uncount(recipients: readonly string[], mirrored = false): void {
    const per = new Map<string, number>();
    for (const r of recipients) per.set(r, (per.get(r) ?? 0) + 1);
    for (const [recipient, k] of per) {
      if (!mirrored) this.#uncountMirror(recipient, k);
      this.sql.exec("UPDATE mailbox_counts SET n = n - ? WHERE recipient = ?", k, recipient);
      this.sql.exec("DELETE FROM mailbox_counts WHERE recipient = ? AND n <= 0", recipient);
    }
  }

  #uncountMirror(recipient: string, k: number): void {
    if (this.#counts === null) return;
    const left = (this.#counts.get(recipient) ?? 0) - k;
    if (left > 0) this.#counts.set(recipient, left);
    else this.#counts.delete(recipient);
  }

  /** Direct items of `sender` for `recipient` went: its share and total, if loaded (#senders). */
  #unshare(sender: string, recipient: string): void {
    const t = this.#senders.get(sender);
    if (t === undefined) return;
    const left = (t.shares.get(recipient) ?? 0) - 1;
    if (left > 0) t.shares.set(recipient, left);
    else t.shares.delete(recipient);
    t.direct = Math.max(0, t.direct - 1);
  }

  /**
   * Acknowledge rows the caller knows to be `recipient`'s (sent on its connection, with their
   * sender and kind): they stop counting now and are deleted by flushAcked. Returns those not
   * already acknowledged.
   */
  ackLater(
    recipient: string,
    rows: ReadonlyArray<{ mid: number; sender: string; kind: MailboxKind }>,
  ): Array<{ mid: number; sender: string; kind: MailboxKind }> {
    const out: Array<{ mid: number; sender: string; kind: MailboxKind }> = [];
    const fresh = rows.filter((r) => !this.#acked.has(r.mid));
    if (fresh.length === 0) return out;
    // Only rows still stored (one read, no write): a row sent and then purged at its expiry
    // before the acknowledgement came is gone, and counted out already.
    const stored = new Set(
      this.sql
        .exec(
          "SELECT mid FROM mailbox WHERE recipient = ? AND mid IN (SELECT value FROM json_each(?))",
          recipient,
          JSON.stringify(fresh.map((r) => r.mid)),
        )
        .toArray()
        .map((r) => num(r.mid)),
    );
    let mine = this.#ackedBy.get(recipient);
    for (const r of fresh) {
      if (!stored.has(r.mid)) continue;
      this.#acked.set(r.mid, recipient);
      if (mine === undefined) {
        mine = new Set();
        this.#ackedBy.set(recipient, mine);
      }
      mine.add(r.mid);
      this.#uncountMirror(recipient, 1);
      if (r.kind === "direct") this.#unshare(r.sender, recipient);
      out.push(r);
    }
    return out;
  }

  /** Delete the rows ackLater took (one write for all of them); their mirrors moved already. */
  flushAcked(): void {
    if (this.#acked.size === 0) return;
    const mids = [...this.#acked.keys()];
    this.#acked.clear();
    this.#ackedBy.clear();
    this.#keepMidFloor();
    const rows = this.sql
      .exec(
        `DELETE FROM mailbox WHERE mid IN (SELECT value FROM json_each(?))
         RETURNING mid, recipient, payload`,
        JSON.stringify(mids),
      )
      .toArray();
    this.#forgetDevices(rows.map((r) => num(r.mid)));
    this.#uncount(
      rows.map((r) => str(r.recipient)),
      true,
    );
    this.gcPayloads(rows.map((r) => num(r.payload)));
  }

  /**
   * Items stored for `recipient` (expired ones count until the alarm purges them, which it does
   * at their expiry time): one indexed row read.
   */
  countMailbox(recipient: string): number {
    // The mirror already discounts rows waiting for the flush; held items count as rows.
    return (this.#mailboxCounts().get(recipient) ?? 0) + (this.#behindCounts.get(recipient) ?? 0);
  }

  /** The `mailbox_counts` mirror, read from storage on first use. */
  #mailboxCounts(): Map<string, number> {
    if (this.#counts === null) {
      this.#counts = new Map();
      for (const r of this.sql.exec("SELECT recipient, n FROM mailbox_counts WHERE n > 0")) {
        const to = str(r.recipient);
        const n = num(r.n) - (this.#ackedBy.get(to)?.size ?? 0);
        if (n > 0) this.#counts.set(to, n);
      }
    }
    return this.#counts;
  }

  /** The next items for `recipient` after `cursor`, oldest first. */
  itemsAfter(recipient: string, cursor: number, now: number, limit: number): MailboxRow[] {
    const acked = this.#ackedBy.get(recipient);
    const rows = this.#itemsAfter(recipient, cursor, now, limit + (acked?.size ?? 0));
    return (acked === undefined ? rows : rows.filter((r) => !acked.has(r.mid))).slice(0, limit);
  }

  #itemsAfter(recipient: string, cursor: number, now: number, limit: number): MailboxRow[] {
    return this.sql
      .exec(
        `SELECT m.mid, m.sender, m.sender_key, m.ts, m.kind, m.grp, m.epoch, m.wrap, p.data, d.device
         FROM mailbox m JOIN payloads p ON p.id = m.payload
         LEFT JOIN mailbox_devices d ON d.mid = m.mid
         WHERE m.recipient = ? AND m.mid > ? AND m.expires_at > ?
         ORDER BY m.mid LIMIT ?`,
        recipient,
        cursor,
        now,
        limit,
      )
      .toArray()
      .map((r) => ({
        mid: num(r.mid),
        sender: str(r.sender),
        senderKey: str(r.sender_key),
        ts: num(r.ts),
        kind: kind(r.kind),
        group: strOrNull(r.grp),
        epoch: numOrNull(r.epoch),
        wrap: strOrNull(r.wrap),
        data: str(r.data),
        senderDevice: strOrNull(r.device),
      }));
  }

  /** Delete acknowledged items; only the recipient's own ids match. */
  ack(
    recipient: string,
    mids: readonly number[],
  ): Array<{ mid: number; sender: string; kind: MailboxKind }> {
    // Rows ackLater took are acknowledged already: they are the flush's to delete.
    const fresh = mids.filter((m) => !this.#acked.has(m));
    if (fresh.length === 0) return [];
    this.#keepMidFloor();
    const rows = this.sql
      .exec(
        `DELETE FROM mailbox WHERE recipient = ? AND mid IN (SELECT value FROM json_each(?))
         RETURNING mid, sender, kind, payload`,
        recipient,
        JSON.stringify(fresh),
      )
      .toArray();
    this.#forgetDevices(rows.map((r) => num(r.mid)));
    this.#uncount(rows.map(() => recipient));
    this.gcPayloads(rows.map((r) => num(r.payload)));
    for (const r of rows) if (r.kind === "direct") this.#unshare(str(r.sender), recipient);
    return rows.map((r) => ({ mid: num(r.mid), sender: str(r.sender), kind: kind(r.kind) }));
  }

  /** The sending devices of deleted mailbox rows go with them (§4.9). */
  #forgetDevices(mids: readonly number[]): void {
    if (mids.length === 0) return;
    this.sql.exec(
      "DELETE FROM mailbox_devices WHERE mid IN (SELECT value FROM json_each(?))",
      JSON.stringify(mids),
    );
  }

  /** Drop expired items (PROTOCOL.md §7.3: TTL); returns how many went. */
  purgeExpired(now: number): number {
    this.flushAcked();
    this.#keepMidFloor();
    const rows = this.sql
      .exec("DELETE FROM mailbox WHERE expires_at <= ? RETURNING mid, recipient, payload", now)
      .toArray();
    this.#forgetDevices(rows.map((r) => num(r.mid)));
    this.#uncount(rows.map((r) => str(r.recipient)));
    this.gcPayloads(rows.map((r) => num(r.payload)));
    if (rows.length > 0) this.#senders.clear();
    return rows.length;
  }

  nextExpiry(): number | null {
    const r = this.sql
      .exec(
        `SELECT MIN(t) AS t FROM (SELECT MIN(expires_at) AS t FROM mailbox
         UNION ALL SELECT expires_at FROM (SELECT expires_at FROM group_log ORDER BY mid LIMIT 1))`,
      )
      .one();
    return numOrNull(r.t);
  }

  /** Items of `recipient` already sent on a connection (mid <= cursor) and still stored. */
  itemsThrough(
    recipient: string,
    cursor: number,
    now: number,
    limit: number,
  ): Array<{ mid: number; sender: string; kind: MailboxKind }> {
    const acked = this.#ackedBy.get(recipient);
    return this.sql
      .exec(
        `SELECT mid, sender, kind FROM mailbox WHERE recipient = ? AND mid <= ? AND expires_at > ?
         ORDER BY mid LIMIT ?`,
        recipient,
        cursor,
        now,
        limit + (acked?.size ?? 0),
      )
      .toArray()
      .map((r) => ({ mid: num(r.mid), sender: str(r.sender), kind: kind(r.kind) }))
      .filter((r) => acked === undefined || !acked.has(r.mid))
      .slice(0, limit);
  }

  // -- the hand-over from the hub's route to a user's (Hub.handOver) ---------------------------

  /** The mailbox addresses of `username` that hold items: its own and its linked devices'. */
  mailboxAddressesOf(username: string): string[] {
    return this.sql
      .exec(
        `SELECT DISTINCT recipient FROM mailbox
         WHERE recipient = ? OR (recipient > ? AND recipient < ?) ORDER BY recipient`,
        ...userRange(username),
      )
      .toArray()
      .map((r) => str(r.recipient));
  }

  /** Every decision `owner` made about other users' direct messages (§7.3.1). */
  contactsOf(owner: string): Array<{ peer: string; state: "accepted" | "blocked" }> {
    return this.sql
      .exec("SELECT peer, state FROM contacts WHERE owner = ? ORDER BY peer", owner)
      .toArray()
      .flatMap((r) => {
        const st = r.state;
        return st === "accepted" || st === "blocked" ? [{ peer: str(r.peer), state: st }] : [];
      });
  }

  handedOver(username: string): boolean {
    return (
      this.sql.exec("SELECT 1 FROM handed_over WHERE username = ?", username).toArray().length > 0
    );
  }

  setHandedOver(username: string, now: number): void {
    this.sql.exec("INSERT OR IGNORE INTO handed_over (username, at) VALUES (?, ?)", username, now);
  }

  /** Has `group` moved from this hub's object to its home (Hub.groupExport)? From memory. */
  groupMoved(group: string): boolean {
    if (this.#moved === null)
      this.#moved = new Set(
        this.sql
          .exec("SELECT grp FROM moved_groups")
          .toArray()
          .map((r) => str(r.grp)),
      );
    return this.#moved.has(group);
  }

  markMoved(groups: readonly string[], now: number): void {
    for (const g of groups) {
      if (this.groupMoved(g)) continue;
      this.sql.exec("INSERT OR IGNORE INTO moved_groups (grp, at) VALUES (?, ?)", g, now);
      this.#moved?.add(g);
    }
  }

  /** Everything the hub's object keeps of one group but its log: what its home takes over. */
  exportGroup(name: string): GroupExport | null {
    const record = this.getGroup(name);
    if (record === null) return null;
    const involved = [
      ...new Set([...record.members, ...record.pendingJoins, ...record.pendingLeaves]),
    ];
    const creator = this.sql
      .exec("SELECT creator_key FROM group_creators WHERE grp = ?", name)
      .toArray()[0];
    return {
      record,
      creator: creator === undefined ? null : str(creator.creator_key),
      info: this.getGroupInfo(name) ?? null,
      auths: this.groupAuths(name),
      leaves: [...this.leafQueues(name)],
      interim: this.getInterim(name),
      users: this.getUsers([...new Set(involved.map(userOfMember))]).map((u) => ({
        username: u.username,
        identityKey: u.identityKey,
      })),
    };
  }

  /** A group's home: store what the hub's object held of its group (exportGroup), at seq 0. */
  importGroup(x: GroupExport, now: number): void {
    const name = x.record.name;
    for (const u of x.users) this.rememberMember(u.username, u.identityKey, now);
    this.saveGroup(null, x.record, now, 0);
    if (x.creator !== null) this.setGroupCreator(name, x.creator);
    if (x.info !== null) this.setGroupInfo(name, x.info);
    for (const a of x.auths) this.setGroupAuth(name, a.username, a.kind, a.auth);
    for (const [user, q] of x.leaves) this.#putLeafQueue(name, user, q);
    if (x.interim !== null) this.setInterim(name, x.interim);
  }

  /** A user's object: the (address, group) pairs still to be taken in by their homes. */
  toAdopt(username: string, identityKey: string): Array<{ address: string; group: string }> {
    return this.sql
      .exec(
        `SELECT address, grp FROM to_adopt
         WHERE (address = ? OR (address > ? AND address < ?)) AND identity_key = ?
         ORDER BY address, grp`,
        ...userRange(username),
        identityKey,
      )
      .toArray()
      .map((r) => ({ address: str(r.address), group: str(r.grp) }));
  }

  /** Mark (with the identity the hand-over was for) or with null clear one pair to adopt. */
  setToAdopt(address: string, group: string, identityKey: string | null): void {
    if (identityKey !== null)
      this.sql.exec(
        "INSERT OR IGNORE INTO to_adopt (address, grp, identity_key) VALUES (?, ?, ?)",
        address,
        group,
        identityKey,
      );
    else this.sql.exec("DELETE FROM to_adopt WHERE address = ? AND grp = ?", address, group);
  }

  /** The identity the Directory bound `username` to at this object's claim, or null. */
  claimedIdentity(username: string): string | null {
    const r = this.sql
      .exec("SELECT identity_key FROM claimed WHERE username = ?", username)
      .toArray()[0];
    return r === undefined ? null : str(r.identity_key);
  }

  setClaimed(username: string, identityKey: string): void {
    this.sql.exec(
      `INSERT INTO claimed (username, identity_key) VALUES (?, ?)
       ON CONFLICT (username) DO UPDATE SET identity_key = excluded.identity_key`,
      username,
      identityKey,
    );
  }

  // -- the lobby: "everyone on this hub" on users' routes (presence.ts) -------------------------

  /** In the lobby: `username` is online as `identityKey` (false: the lobby is full). */
  lobbyPut(username: string, identityKey: string, now: number, max: number): boolean {
    const known =
      this.sql.exec("SELECT 1 FROM lobby WHERE username = ?", username).toArray().length > 0;
    if (!known && num(this.sql.exec("SELECT COUNT(*) AS n FROM lobby").one().n) >= max)
      return false;
    this.sql.exec(
      `INSERT INTO lobby (username, identity_key, at) VALUES (?, ?, ?)
       ON CONFLICT (username) DO UPDATE SET identity_key = excluded.identity_key, at = excluded.at`,
      username,
      identityKey,
      now,
    );
    return true;
  }

  /** In the lobby: `username` left it; whether it was there. */
  lobbyDelete(username: string): boolean {
    const was =
      this.sql.exec("SELECT 1 FROM lobby WHERE username = ?", username).toArray().length > 0;
    if (was) this.sql.exec("DELETE FROM lobby WHERE username = ?", username);
    return was;
  }

  lobbyMembers(): Array<{ username: string; identityKey: string }> {
    return this.sql
      .exec("SELECT username, identity_key FROM lobby ORDER BY username")
      .toArray()
      .map((r) => ({ username: str(r.username), identityKey: str(r.identity_key) }));
  }

  /** In a user's object: the lobby says `username` is online (or not) for `viewer`. */
  setLobbySeen(viewer: string, username: string, state: { identityKey: string } | null): void {
    if (state === null)
      this.sql.exec("DELETE FROM lobby_seen WHERE viewer = ? AND username = ?", viewer, username);
    else
      this.sql.exec(
        `INSERT INTO lobby_seen (viewer, username, identity_key) VALUES (?, ?, ?)
         ON CONFLICT (viewer, username) DO UPDATE SET identity_key = excluded.identity_key`,
        viewer,
        username,
        state.identityKey,
      );
  }

  lobbySeen(viewer: string, username: string): { identityKey: string } | null {
    return this.#seenBy("lobby_seen", viewer, username);
  }

  lobbySeenOf(viewer: string): Array<{ username: string; identityKey: string }> {
    return this.sql
      .exec("SELECT username, identity_key FROM lobby_seen WHERE viewer = ?", viewer)
      .toArray()
      .map((r) => ({ username: str(r.username), identityKey: str(r.identity_key) }));
  }

  /** Forget what the lobby said to `viewer` (it left the lobby); the names it forgot. */
  clearLobbySeen(viewer: string): string[] {
    const names = this.lobbySeenOf(viewer).map((r) => r.username);
    this.sql.exec("DELETE FROM lobby_seen WHERE viewer = ?", viewer);
    return names;
  }

  // -- groups on users' routes (group-home.ts) -------------------------------------------------

  /** The hub and group this object is the home of, if it is one. */
  homeOf(): { hub: string; group: string } | null {
    const r = this.sql.exec("SELECT hub, grp FROM home_of WHERE id = 1").toArray()[0];
    return r === undefined ? null : { hub: str(r.hub), group: str(r.grp) };
  }

  setHomeOf(hub: string, group: string): void {
    this.sql.exec("INSERT OR REPLACE INTO home_of (id, hub, grp) VALUES (1, ?, ?)", hub, group);
  }

  /**
   * A group's home keeps each member's binding as its user's object authenticated it (for the
   * roster's identity keys and signature checks): a name bound again to another identity
   * replaces the old binding, as the directory's reclaim does (§4.3).
   */
  rememberMember(username: string, identityKey: string, now: number): void {
    if (this.getUser(username)?.identityKey === identityKey) return;
    this.sql.exec(
      "DELETE FROM users WHERE username = ? OR identity_key = ?",
      username,
      identityKey,
    );
    this.#users.clear();
    this.insertUser(username, identityKey, now);
  }

  /**
   * The states of the groups `address` is in on users' routes, by group name. From memory after
   * the first read: a recipient's `enqueue` reads them for every sender that is not a contact.
   */
  memberGroupStates(address: string): Array<{ group: string; state: string }> {
    const hit = this.#memberGroups.get(address);
    if (hit !== undefined) return hit;
    const rows = this.sql
      .exec(
        "SELECT grp, state FROM member_groups WHERE address = ? AND state IS NOT NULL ORDER BY grp",
        address,
      )
      .toArray()
      .map((r) => ({ group: str(r.grp), state: str(r.state) }));
    remember(this.#memberGroups, address, rows);
    return rows;
  }

  /** A user's object: the user's member addresses (name, linked devices) in some group. */
  memberAddressesOf(username: string): string[] {
    return this.sql
      .exec(
        `SELECT DISTINCT address FROM member_groups
         WHERE (address = ? OR (address > ? AND address < ?)) AND state IS NOT NULL
         ORDER BY address`,
        ...userRange(username),
      )
      .toArray()
      .map((r) => str(r.address));
  }

  memberGroup(address: string, group: string): { state: string | null; through: number } | null {
    const key = `${address}\n${group}`;
    const hit = this.#memberGroup.get(key);
    if (hit !== undefined) return hit;
    const r = this.sql
      .exec(
        "SELECT state, through FROM member_groups WHERE address = ? AND grp = ?",
        address,
        group,
      )
      .toArray()[0];
    const row = r === undefined ? null : { state: strOrNull(r.state), through: num(r.through) };
    remember(this.#memberGroup, key, row);
    return row;
  }

  /**
   * A member's position (`member_groups.through`) may move up to `through`: written by
   * flushPositions, never lowered. Group messages taken write-behind from a home settle one by
   * one; their positions are recorded with the next flush, not each in its own step.
   */
  notePosition(address: string, group: string, through: number): void {
    const key = `${address}\n${group}`;
    const p = this.#positions.get(key);
    if (p === undefined) this.#positions.set(key, { address, group, through });
    else p.through = Math.max(p.through, through);
  }

  /** Write the positions notePosition gathered (the delivery flush's work). */
  flushPositions(): void {
    if (this.#positions.size === 0) return;
    for (const [key, p] of this.#positions) {
      this.sql.exec(
        "UPDATE member_groups SET through = MAX(through, ?) WHERE address = ? AND grp = ?",
        p.through,
        p.address,
        p.group,
      );
      const held = this.#memberGroup.get(key);
      if (held !== undefined && held !== null && held.through < p.through)
        remember(this.#memberGroup, key, { state: held.state, through: p.through });
    }
    this.#positions.clear();
  }

  setMemberGroup(address: string, group: string, state: string | null, through: number): void {
    const key = `${address}\n${group}`;
    const held = this.#memberGroup.get(key);
    // Most writes only move `through` (a home's batch of messages): the state, up to a whole
    // roster, is not written again then.
    if (held !== undefined && held !== null && held.state === state)
      this.sql.exec(
        "UPDATE member_groups SET through = ? WHERE address = ? AND grp = ?",
        through,
        address,
        group,
      );
    else {
      this.#memberGroups.delete(address);
      this.sql.exec(
        `INSERT INTO member_groups (address, grp, state, through) VALUES (?, ?, ?, ?)
         ON CONFLICT (address, grp) DO UPDATE SET state = excluded.state, through = excluded.through`,
        address,
        group,
        state,
        through,
      );
    }
    remember(this.#memberGroup, key, { state, through });
  }

  // -- group log (PROTOCOL.md §7.3, "Group messages") -----------------------------------------

  /**
   * The roster snapshot for the active members of `g` (sorted, as in the record): reused while
   * the record is unchanged, found again by content after a restart, created otherwise.
   */
  rosterOf(g: GroupRecord, active: readonly string[]): number {
    const hit = this.#rosters.get(g);
    if (hit !== undefined) return hit;
    const id = this.#rosterByContent(g.name, JSON.stringify(active));
    this.#rosters.set(g, id);
    return id;
  }

  /**
   * The snapshot of the one-member roster `[address]` of `group`: a member's object files each
   * message its group's home hands it under it (users' routes). Found by content once, then
   * from memory: each message made a new record for it, which missed rosterOf's cache.
   */
  memberRosterOf(group: string, address: string): number {
    const key = `${group}\n${address}`;
    const hit = this.#memberRosters.get(key);
    if (hit !== undefined) return hit;
    const id = this.#rosterByContent(group, JSON.stringify([address]));
    remember(this.#memberRosters, key, id);
    return id;
  }

  #rosterByContent(group: string, members: string): number {
    const found = this.sql
      .exec("SELECT id FROM group_rosters WHERE grp = ? AND members = ?", group, members)
      .toArray()[0];
    if (found !== undefined) return num(found.id);
    const id = num(
      this.sql
        .exec("INSERT INTO group_rosters (grp, members) VALUES (?, ?) RETURNING id", group, members)
        .one().id,
    );
    this.sql.exec(
      "INSERT INTO roster_members (roster, username) SELECT ?, value FROM json_each(?)",
      id,
      members,
    );
    return id;
  }

  /** Store one group message (once, for all its recipients); returns its mid. */
  putGroupMessage(m: NewGroupMessage, mid = ++this.#lastMid): number {
    // The counter is this object's alone (every insert goes through this Store), so the next
    // mid comes from memory. The stored row itself records it; the high-water mark is written
    // before any group message is deleted (#keepMidFloor), so a mid is never handed out twice.
    // `mid`: one handed out earlier by holdGroupMessage.
    this.sql.exec(
      `INSERT INTO group_log (mid, grp, epoch, roster, sender, sender_key, ts, expires_at, data, skipped)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      mid,
      m.group,
      m.epoch,
      m.roster,
      m.sender,
      m.senderKey,
      m.ts,
      m.expiresAt,
      m.data,
      m.skipped.length === 0 ? null : JSON.stringify(m.skipped),
    );
    const counts = this.#logBySender;
    if (counts !== null) counts.set(m.sender, (counts.get(m.sender) ?? 0) + 1);
    return mid;
  }

  /**
   * Unexpired group messages for `user` with after < mid <= upTo, oldest first: those whose
   * roster snapshot lists the user, not sent by the user, and not skipped for the user.
   */
  groupItemsFor(
    user: string,
    after: number,
    upTo: number,
    now: number,
    limit: number,
  ): GroupLogRow[] {
    return this.sql
      .exec(
        `SELECT g.mid, g.grp, g.epoch, g.sender, g.sender_key, g.ts, g.data
         FROM roster_members r JOIN group_log g ON g.roster = r.roster
         WHERE r.username = ? AND g.mid > ? AND g.mid <= ? AND g.expires_at > ? AND g.sender != ?
           AND (g.skipped IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(g.skipped) WHERE value = ?))
         ORDER BY g.mid LIMIT ?`,
        user,
        after,
        upTo,
        now,
        user,
        user,
        limit,
      )
      .toArray()
      .map((r) => ({
        mid: num(r.mid),
        group: str(r.grp),
        epoch: num(r.epoch),
        sender: str(r.sender),
        senderKey: str(r.sender_key),
        ts: num(r.ts),
        data: str(r.data),
      }));
  }

  /**
   * Group messages stored for `user` and not acknowledged (mid > through), by sender. Expired
   * ones count until the alarm purges them, as mailbox items do (§7.3).
   */
  groupPendingBySender(user: string, through: number): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of this.sql.exec(
      `SELECT g.sender, COUNT(*) AS n FROM roster_members r JOIN group_log g ON g.roster = r.roster
       WHERE r.username = ? AND g.mid > ? AND g.sender != ?
         AND (g.skipped IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(g.skipped) WHERE value = ?))
       GROUP BY g.sender`,
      user,
      through,
      user,
      user,
    )) {
      out.set(str(r.sender), num(r.n));
    }
    return out;
  }

  /**
   * `groupPendingBySender` for many users at once (a fan-out's recipients after a wake-up), each
   * from its own cursor: one statement instead of one per user.
   */
  groupPendingBySenderFor(
    users: ReadonlyArray<readonly [string, number]>,
  ): Map<string, Map<string, number>> {
    const out = new Map<string, Map<string, number>>();
    for (const [u] of users) out.set(u, new Map());
    if (users.length === 0) return out;
    for (const r of this.sql.exec(
      `WITH who(u, through) AS (
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))
       SELECT who.u AS u, g.sender AS sender, COUNT(*) AS n
       FROM who JOIN roster_members r ON r.username = who.u
       JOIN group_log g ON g.roster = r.roster AND g.mid > who.through
       WHERE g.sender != who.u
         AND (g.skipped IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(g.skipped) WHERE value = who.u))
       GROUP BY who.u, g.sender`,
      JSON.stringify(users),
    )) {
      out.get(str(r.u))?.set(str(r.sender), num(r.n));
    }
    return out;
  }

  /** Persisted group acknowledgement cursors of `users` (absent: 0). */
  groupThroughs(users: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    if (users.length === 0) return out;
    for (const r of this.sql.exec(
      "SELECT username, through FROM group_acks WHERE username IN (SELECT value FROM json_each(?))",
      JSON.stringify(users),
    )) {
      out.set(str(r.username), num(r.through));
    }
    return out;
  }

  /** The persisted group acknowledgement cursor of `user` (0 if none). */
  groupThrough(user: string): number {
    const r = this.sql.exec("SELECT through FROM group_acks WHERE username = ?", user).toArray()[0];
    return r === undefined ? 0 : num(r.through);
  }

  /** Persist group acknowledgement cursors (they only ever move forward). */
  saveGroupThroughs(cursors: ReadonlyArray<readonly [string, number]>): void {
    if (cursors.length === 0) return;
    this.sql.exec(
      `INSERT INTO group_acks (username, through)
       SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?) WHERE true
       ON CONFLICT (username) DO UPDATE SET through = MAX(through, excluded.through)`,
      JSON.stringify(cursors),
    );
  }

  /**
   * Delete group messages every recipient has acknowledged (persisted cursors only), among
   * `mids`, or among all stored ones when `mids` is null. Exact: a message stays while any
   * member of its roster other than the sender and not skipped has a cursor below it.
   */
  gcGroupLog(mids: readonly number[] | null): number {
    if (mids !== null && mids.length === 0) return 0;
    this.#keepMidFloor();
    const done = `NOT EXISTS (
         SELECT 1 FROM roster_members r LEFT JOIN group_acks a ON a.username = r.username
         WHERE r.roster = group_log.roster AND r.username != group_log.sender
           AND COALESCE(a.through, 0) < group_log.mid
           AND (group_log.skipped IS NULL
                OR NOT EXISTS (SELECT 1 FROM json_each(group_log.skipped) WHERE value = r.username)))`;
    const rows =
      mids === null
        ? this.sql.exec(`DELETE FROM group_log WHERE ${done} RETURNING sender`).toArray()
        : this.sql
            .exec(
              `DELETE FROM group_log WHERE mid IN (SELECT value FROM json_each(?)) AND ${done} RETURNING sender`,
              JSON.stringify(mids),
            )
            .toArray();
    this.#logRemoved(rows.map((r) => r.sender));
    return rows.length;
  }

  /** Delete group messages known to be acknowledged by every recipient. */
  deleteGroupMessages(mids: readonly number[]): void {
    if (mids.length === 0) return;
    this.#keepMidFloor();
    const rows = this.sql
      .exec(
        "DELETE FROM group_log WHERE mid IN (SELECT value FROM json_each(?)) RETURNING sender",
        JSON.stringify(mids),
      )
      .toArray();
    this.#logRemoved(rows.map((r) => r.sender));
  }

  /**
   * Delete roster snapshots no stored message refers to, except those of the current records
   * (kept in memory); returns how many went. Forgets the in-memory ids if any went.
   */
  gcRosters(): number {
    const gone = this.sql
      .exec(
        `DELETE FROM group_rosters WHERE NOT EXISTS
           (SELECT 1 FROM group_log WHERE group_log.roster = group_rosters.id) RETURNING id`,
      )
      .toArray();
    if (gone.length > 0) {
      this.sql.exec(
        `DELETE FROM roster_members WHERE roster IN (SELECT value FROM json_each(?))`,
        JSON.stringify(gone.map((r) => num(r.id))),
      );
      this.#rosters = new WeakMap();
      this.#memberRosters = new Map();
    }
    return gone.length;
  }

  /** Drop expired group messages (§7.3: TTL); returns how many went. */
  purgeExpiredGroupLog(now: number): number {
    this.#keepMidFloor();
    const rows = this.sql
      .exec("DELETE FROM group_log WHERE expires_at <= ? RETURNING sender", now)
      .toArray();
    this.#logRemoved(rows.map((r) => r.sender));
    return rows.length;
  }

  /** Delete payloads no mailbox row refers to any more. */
  gcPayloads(ids: readonly number[]): void {
    if (ids.length === 0) return;
    const list = JSON.stringify([...new Set(ids)]);
    this.sql.exec(
      `DELETE FROM payloads WHERE id IN (SELECT value FROM json_each(?))
       AND NOT EXISTS (SELECT 1 FROM mailbox WHERE mailbox.payload = payloads.id)`,
      list,
    );
  }

  // -- quotas (PROTOCOL.md §4.3, §7.3, §7.5) --------------------------------------------------

  /**
   * What `sender` has stored (mailbox.ts `SenderHoldings`), with shares for `recipients` only,
   * recounted in SQL: the reference the in-memory `fanoutHoldings` the relay uses is tested
   * against (test/workers/relay-store-mirror.test.ts).
   * Shares and direct items are counted from the rows themselves through the covering
   * `mailbox_sender` index, so they cannot drift from what is stored: a share is a seek of at
   * most maxMailboxPerSenderPerRecipient entries per recipient, the direct count at most
   * maxMailboxPerSender. Group messages are counted once each, however many copies (the group
   * log's, counted in memory: #logCounts).
   */
  senderHoldings(sender: string, recipients: readonly string[]): SenderHoldings {
    // The reference counts rows as stored: rows waiting for the flush go first.
    this.flushAcked();
    const perRecipient = new Map<string, number>();
    for (const r of this.sql.exec(
      `SELECT recipient, COUNT(*) AS n FROM mailbox
       WHERE sender = ? AND kind = 'direct'
         AND recipient IN (SELECT value FROM json_each(?))
       GROUP BY recipient`,
      sender,
      JSON.stringify(recipients),
    )) {
      perRecipient.set(str(r.recipient), num(r.n));
    }
    const direct = num(
      this.sql
        .exec("SELECT COUNT(*) AS n FROM mailbox WHERE sender = ? AND kind = 'direct'", sender)
        .one().n,
    );
    const logged = this.#logCounts().get(sender) ?? 0;
    return { messages: direct + logged, perRecipient };
  }

  /**
   * What `sender` has stored of commits (mailbox.ts `CommitHoldings`), for `recipients`. Read from
   * SQL: commits are rare (one per epoch per group), and the per-recipient count is a seek of the
   * covering `mailbox_sender` index.
   */
  commitHoldings(sender: string, recipients: readonly string[]): CommitHoldings {
    // Counted from the rows: rows waiting for the flush go first (a commit writes anyway).
    this.flushAcked();
    const perRecipient = new Map<string, number>();
    for (const r of this.sql.exec(
      `SELECT recipient, COUNT(*) AS n FROM mailbox
       WHERE sender = ? AND kind = 'commit'
         AND recipient IN (SELECT value FROM json_each(?))
       GROUP BY recipient`,
      sender,
      JSON.stringify(recipients),
    )) {
      perRecipient.set(str(r.recipient), num(r.n));
    }
    const bytes = num(
      this.sql
        .exec(
          `SELECT COALESCE(SUM(LENGTH(data)), 0) AS n FROM payloads WHERE id IN
             (SELECT DISTINCT payload FROM mailbox WHERE sender = ? AND kind = 'commit')`,
          sender,
        )
        .one().n,
    );
    return { bytes, perRecipient };
  }

  /**
   * Everything a group fan-out's bounds need (PROTOCOL.md §7.3), from memory: each recipient's
   * stored mailbox rows (absent: none), the sender's direct items per recipient, and the sender's
   * stored messages. Group copies are counted in delivery.ts and added by the caller.
   */
  fanoutHoldings(
    sender: string,
    recipients: readonly string[],
  ): { stored: Map<string, number>; holdings: SenderHoldings } {
    const counts = this.#mailboxCounts();
    const t = this.#sender(sender);
    const stored = new Map<string, number>();
    const perRecipient = new Map<string, number>();
    // Held items (holdItem) count as the rows they may become.
    const behind = this.#behindShares.get(sender);
    let held = 0;
    for (const n of behind?.values() ?? []) held += n;
    for (const to of recipients) {
      const n = (counts.get(to) ?? 0) + (this.#behindCounts.get(to) ?? 0);
      if (n > 0) stored.set(to, n);
      const share = (t.shares.get(to) ?? 0) + (behind?.get(to) ?? 0);
      if (share > 0) perRecipient.set(to, share);
    }
    const messages = t.direct + held + (this.#logCounts().get(sender) ?? 0);
    return { stored, holdings: { messages, perRecipient } };
  }

  /** Existing groups the identity created (maxGroupsCreatedPerIdentity). */
  countGroupsCreatedBy(identityKey: string): number {
    return num(
      this.sql
        .exec("SELECT COUNT(*) AS n FROM group_creators WHERE creator_key = ?", identityKey)
        .one().n,
    );
  }

  /** Record who created a group (call right after the group's first saveGroup). */
  setGroupCreator(name: string, identityKey: string): void {
    this.sql.exec(
      "INSERT INTO group_creators (grp, creator_key) VALUES (?, ?) ON CONFLICT (grp) DO NOTHING",
      name,
      identityKey,
    );
  }

  /** When the user last authenticated (or uploaded a signed prekey); null if unknown. */
  userSeenAt(username: string): number | null {
    const r = this.sql.exec("SELECT seen_at FROM users WHERE username = ?", username).toArray()[0];
    return r === undefined ? null : num(r.seen_at);
  }

  /**
   * Is the user on the committed roster (a member, leaving or not) of a group in which someone
   * else is an active member or a pending joiner, i.e. someone who can still commit?
   */
  onCommittedRoster(username: string): boolean {
    return (
      this.sql
        .exec(
          `SELECT 1 FROM group_members m WHERE m.username = ? AND m.committed = 1 AND EXISTS (
             SELECT 1 FROM group_members o WHERE o.grp = m.grp AND o.username != m.username
               AND ((o.committed = 1 AND o.leaving = 0) OR o.joining = 1)) LIMIT 1`,
          username,
        )
        .toArray().length > 0
    );
  }

  /**
   * Give an idle username to a new identity (PROTOCOL.md §4.3): the row takes the new keys. The
   * old identity's one-time prekeys are the directory object's to drop (key-directory.ts: keys
   * are held for the owner that uploaded them); group memberships are the caller's business.
   */
  /** The operator releases a name: its directory row goes (its one-time prekeys are the directory object's). */
  deleteUser(username: string): void {
    this.#users.delete(username);
    this.sql.exec("DELETE FROM users WHERE username = ?", username);
  }

  reclaimUser(username: string, identityKey: string, now: number): void {
    // The old identity's device list is signed by a key the name no longer has (§4.6); its
    // linked devices' directory entries went with the directory's reclaim (key-directory.ts).
    this.sql.exec("DELETE FROM device_lists WHERE username = ?", username);
    this.#deviceLists.delete(username);
    this.#users.delete(username);
    this.sql.exec(
      "UPDATE users SET identity_key = ?, created_at = ?, seen_at = ? WHERE username = ?",
      identityKey,
      now,
      now,
      username,
    );
  }

  // -- presence relations and settings (PROTOCOL.md §6.3) -------------------------------------

  /**
   * Remember that `sender` wrote to `recipient`; true if that is new. Beyond `max` remembered
   * recipients the sender's oldest are forgotten (returned too, so their views can be updated).
   */
  addPresenceContact(
    sender: string,
    recipient: string,
    now: number,
    max: number,
  ): { added: boolean; forgotten: string[] } {
    const known =
      this.sql
        .exec(
          "UPDATE presence_contacts SET at = ? WHERE sender = ? AND recipient = ? RETURNING 1",
          now,
          sender,
          recipient,
        )
        .toArray().length > 0;
    if (known) return { added: false, forgotten: [] };
    this.sql.exec(
      "INSERT INTO presence_contacts (sender, recipient, at) VALUES (?, ?, ?)",
      sender,
      recipient,
      now,
    );
    const forgotten = this.sql
      .exec(
        `DELETE FROM presence_contacts WHERE sender = ? AND recipient IN (
           SELECT recipient FROM presence_contacts WHERE sender = ?
           ORDER BY at DESC, recipient LIMIT -1 OFFSET ?) RETURNING recipient`,
        sender,
        sender,
        max,
      )
      .toArray()
      .map((r) => str(r.recipient));
    return { added: true, forgotten };
  }

  /** Another object announced `username` to `viewer` as online (`state`) or offline (null). */
  setPeerPresence(
    viewer: string,
    username: string,
    state: { identityKey: string } | null,
    now: number,
    max: number,
  ): void {
    if (state === null) {
      this.sql.exec(
        "DELETE FROM peer_presence WHERE viewer = ? AND username = ?",
        viewer,
        username,
      );
      return;
    }
    this.sql.exec(
      `INSERT INTO peer_presence (viewer, username, identity_key, at) VALUES (?, ?, ?, ?)
       ON CONFLICT (viewer, username) DO UPDATE SET identity_key = excluded.identity_key,
         at = excluded.at`,
      viewer,
      username,
      state.identityKey,
      now,
    );
    this.sql.exec(
      `DELETE FROM peer_presence WHERE viewer = ? AND username IN (
         SELECT username FROM peer_presence WHERE viewer = ?
         ORDER BY at DESC, username LIMIT -1 OFFSET ?)`,
      viewer,
      viewer,
      max,
    );
  }

  /** The users other objects announced online to `viewer`. */
  peerPresenceOf(viewer: string): Array<{ username: string; identityKey: string }> {
    return this.sql
      .exec("SELECT username, identity_key FROM peer_presence WHERE viewer = ?", viewer)
      .toArray()
      .map((r) => ({ username: str(r.username), identityKey: str(r.identity_key) }));
  }

  /** `username` as announced online to `viewer` by its object, or null. */
  peerPresence(viewer: string, username: string): { identityKey: string } | null {
    return this.#seenBy("peer_presence", viewer, username);
  }

  /** One row of a presence table a viewer reads (`peer_presence` or `lobby_seen`). */
  #seenBy(
    table: "peer_presence" | "lobby_seen",
    viewer: string,
    username: string,
  ): { identityKey: string } | null {
    // Two fixed statements, chosen by name: no SQL is built from input.
    const sql =
      table === "peer_presence"
        ? "SELECT identity_key FROM peer_presence WHERE viewer = ? AND username = ?"
        : "SELECT identity_key FROM lobby_seen WHERE viewer = ? AND username = ?";
    const r = this.sql.exec(sql, viewer, username).toArray()[0];
    return r === undefined ? null : { identityKey: str(r.identity_key) };
  }

  /**
   * `address`'s object holds `n` items of `sender` (as it said at `at`). In memory at once,
   * written by the next `flushHeld` (the relay's 200 ms flush): one figure per send and per
   * acknowledgement would be a write each on the 1:1 path.
   */
  setHeld(sender: string, address: string, n: number, at: number): void {
    const mine = this.#heldOf(sender);
    if (n > 0) mine.set(address, { n, at });
    else mine.delete(address);
    this.#heldDirty.set(`${sender}\n${address}`, { sender, address, n, at });
  }

  /**
   * Items of `sender` other objects hold, as they last said since `since`: an older report
   * counts nothing, as every item it counted has expired by now (LIMITS.mailboxTtlMs).
   */
  heldElsewhere(sender: string, since: number): number {
    let total = 0;
    for (const { n, at } of this.#heldOf(sender).values()) if (at >= since) total += n;
    return total;
  }

  /** Write the figures `setHeld` changed since the last flush. */
  flushHeld(): void {
    if (this.#heldDirty.size === 0) return;
    const rows = [...this.#heldDirty.values()].map((h) => [h.sender, h.address, h.n, h.at]);
    this.#heldDirty.clear();
    // Each statement only when it has rows: under steady traffic every figure is positive, and
    // a statement costs the object's thread as much as the rows it writes (a busy profile).
    const gone = rows.filter((r) => Number(r[2]) <= 0);
    const kept = rows.filter((r) => Number(r[2]) > 0);
    if (gone.length > 0)
      this.sql.exec(
        `DELETE FROM held_elsewhere WHERE (sender, address) IN (
           SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))`,
        JSON.stringify(gone),
      );
    if (kept.length > 0)
      this.sql.exec(
        `INSERT OR REPLACE INTO held_elsewhere (sender, address, n, at)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]')
         FROM json_each(?)`,
        JSON.stringify(kept),
      );
  }

  #heldOf(sender: string): Map<string, { n: number; at: number }> {
    let mine = this.#held.get(sender);
    if (mine === undefined) {
      mine = new Map(
        this.sql
          .exec("SELECT address, n, at FROM held_elsewhere WHERE sender = ?", sender)
          .toArray()
          .map((r) => [str(r.address), { n: num(r.n), at: num(r.at) }]),
      );
      // Figures not written yet are newer than the rows (the cache may have dropped them).
      for (const h of this.#heldDirty.values())
        if (h.sender === sender) mine.set(h.address, { n: h.n, at: h.at });
      remember(this.#held, sender, mine);
    }
    return mine;
  }

  /** Record that `username` of `hub` was last announced online (null: offline). */
  setAnnounced(username: string, hub: string | null): void {
    if (hub !== null)
      this.sql.exec(
        "INSERT OR IGNORE INTO presence_announced (username, hub) VALUES (?, ?)",
        username,
        hub,
      );
    else this.sql.exec("DELETE FROM presence_announced WHERE username = ?", username);
  }

  announcedUsers(): Array<{ username: string; hub: string }> {
    return this.sql
      .exec("SELECT username, hub FROM presence_announced")
      .toArray()
      .map((r) => ({ username: str(r.username), hub: str(r.hub) }));
  }

  /** Users `sender` wrote to (they may see `sender` online). */
  presenceRecipientsOf(sender: string): string[] {
    return this.sql
      .exec("SELECT recipient FROM presence_contacts WHERE sender = ?", sender)
      .toArray()
      .map((r) => str(r.recipient));
  }

  /** Users who wrote to `recipient` (`recipient` may see them online). */
  presenceSendersTo(recipient: string): string[] {
    return this.sql
      .exec("SELECT sender FROM presence_contacts WHERE recipient = ?", recipient)
      .toArray()
      .map((r) => str(r.sender));
  }

  hasPresenceContact(sender: string, recipient: string): boolean {
    return (
      this.sql
        .exec(
          "SELECT 1 FROM presence_contacts WHERE sender = ? AND recipient = ?",
          sender,
          recipient,
        )
        .toArray().length > 0
    );
  }

  /** Forget every presence relation of `username` (its name went to another identity, §4.3). */
  deletePresenceContacts(username: string): string[] {
    return this.sql
      .exec(
        `DELETE FROM presence_contacts WHERE sender = ? OR recipient = ?
         RETURNING CASE WHEN sender = ? THEN recipient ELSE sender END AS other`,
        username,
        username,
        username,
      )
      .toArray()
      .map((r) => str(r.other));
  }

  /**
   * Active members of the groups any device of `username` is an active member of (§4.7: the
   * username and its `username.device` addresses), those devices excluded.
   */
  coMembersOf(username: string): string[] {
    return this.sql
      .exec(
        `SELECT DISTINCT o.username FROM group_members m JOIN group_members o ON o.grp = m.grp
         WHERE (m.username = ? OR (m.username > ? AND m.username < ?))
           AND m.committed = 1 AND m.leaving = 0
           AND o.committed = 1 AND o.leaving = 0
           AND o.username != ? AND NOT (o.username > ? AND o.username < ?)`,
        ...userRange(username),
        ...userRange(username),
      )
      .toArray()
      .map((r) => str(r.username));
  }

  /** Are both users (any of their devices, §4.7) active members of one group? */
  shareGroup(a: string, b: string): boolean {
    return (
      this.sql
        .exec(
          `SELECT 1 FROM group_members m JOIN group_members o ON o.grp = m.grp
           WHERE (m.username = ? OR (m.username > ? AND m.username < ?))
             AND m.committed = 1 AND m.leaving = 0
             AND (o.username = ? OR (o.username > ? AND o.username < ?))
             AND o.committed = 1 AND o.leaving = 0 LIMIT 1`,
          ...userRange(a),
          ...userRange(b),
        )
        .toArray().length > 0
    );
  }

  /** The user's own presence setting, or null (the hub's default applies). */
  presenceSetting(username: string): PresenceScope | null {
    const r = this.sql
      .exec("SELECT presence FROM user_settings WHERE username = ?", username)
      .toArray()[0];
    const v = r?.presence;
    return v === "contacts" || v === "everyone" ? v : null;
  }

  setPresenceSetting(username: string, scope: PresenceScope | null): void {
    if (scope === null) this.sql.exec("DELETE FROM user_settings WHERE username = ?", username);
    else
      this.sql.exec(
        `INSERT INTO user_settings (username, presence) VALUES (?, ?)
         ON CONFLICT (username) DO UPDATE SET presence = excluded.presence`,
        username,
        scope,
      );
  }

  // -- Web Push subscriptions (PROTOCOL.md §7.9) ----------------------------------------------

  pushSubs(): PushSubRow[] {
    return this.sql
      .exec(
        `SELECT username, device, endpoint, p256dh, auth, pending, due_at, last_sent_at, attempts
         FROM push_subs`,
      )
      .toArray()
      .map((r) => ({
        username: str(r.username),
        device: str(r.device),
        endpoint: str(r.endpoint),
        p256dh: str(r.p256dh),
        auth: str(r.auth),
        state: {
          pending: num(r.pending) === 1,
          dueAt: num(r.due_at),
          lastSentAt: num(r.last_sent_at),
          attempts: num(r.attempts),
        },
      }));
  }

  /** Insert or replace `row.device`'s subscription and drop the user's other devices' ones. */
  putPushSub(row: PushSubRow, now: number): void {
    this.sql.exec(
      "DELETE FROM push_subs WHERE username = ? AND device <> ?",
      row.username,
      row.device,
    );
    this.sql.exec(
      `INSERT INTO push_subs (username, device, endpoint, p256dh, auth, created_at, pending, due_at,
         last_sent_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (username, device) DO UPDATE SET endpoint = excluded.endpoint,
         p256dh = excluded.p256dh, auth = excluded.auth, created_at = excluded.created_at`,
      row.username,
      row.device,
      row.endpoint,
      row.p256dh,
      row.auth,
      now,
      row.state.pending ? 1 : 0,
      row.state.dueAt,
      row.state.lastSentAt,
      row.state.attempts,
    );
  }

  savePushState(username: string, device: string, st: PushState): void {
    this.sql.exec(
      `UPDATE push_subs SET pending = ?, due_at = ?, last_sent_at = ?, attempts = ?
       WHERE username = ? AND device = ?`,
      st.pending ? 1 : 0,
      st.dueAt,
      st.lastSentAt,
      st.attempts,
      username,
      device,
    );
  }

  /** Delete one device's subscription, or (device null) every subscription of the user. */
  deletePushSub(username: string, device: string | null): void {
    if (device === null) this.sql.exec("DELETE FROM push_subs WHERE username = ?", username);
    else this.sql.exec("DELETE FROM push_subs WHERE username = ? AND device = ?", username, device);
  }

  // -- rate buckets that survive the object (SECURITY.md L4, L16) -----------------------------

  loadBucket(kind: "identity", key: string): { tokens: number; at: number } | null {
    const r = this.sql
      .exec("SELECT tokens, at FROM rate_buckets WHERE kind = ? AND key = ?", kind, key)
      .toArray()[0];
    return r === undefined ? null : { tokens: num(r.tokens), at: num(r.at) };
  }

  saveBucket(
    kind: "identity",
    key: string,
    b: { tokens: number; at: number },
    fullAt: number,
  ): void {
    this.sql.exec(
      `INSERT INTO rate_buckets (kind, key, tokens, at, full_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (kind, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at,
         full_at = excluded.full_at`,
      kind,
      key,
      b.tokens,
      b.at,
      fullAt,
    );
  }

  /** Delete buckets that have refilled by `now` (they say no more than a missing row). */
  purgeFullBuckets(now: number): number {
    return this.sql.exec("DELETE FROM rate_buckets WHERE full_at <= ? RETURNING 1", now).toArray()
      .length;
  }

  // -- message requests (PROTOCOL.md §7.3.1) ---------------------------------------------------

  /** What `owner` decided about `peer`: 'accepted', 'blocked', or null (nothing). */
  contactState(owner: string, peer: string): "accepted" | "blocked" | null {
    const key = `${owner}\n${peer}`;
    const hit = this.#contacts.get(key);
    if (hit !== undefined) return hit;
    const r = this.sql
      .exec("SELECT state FROM contacts WHERE owner = ? AND peer = ?", owner, peer)
      .toArray()[0];
    const st = r?.state;
    const state = st === "accepted" || st === "blocked" ? st : null;
    remember(this.#contacts, key, state);
    return state;
  }

  /**
   * Record `owner`'s decision about `peer` (null: forget it). False if it would be a new entry
   * past `max` entries for `owner`.
   */
  setContactState(
    owner: string,
    peer: string,
    state: "accepted" | "blocked" | null,
    now: number,
    max: number,
  ): boolean {
    this.#contacts.delete(`${owner}\n${peer}`);
    if (state === null) {
      this.sql.exec("DELETE FROM contacts WHERE owner = ? AND peer = ?", owner, peer);
      return true;
    }
    const updated =
      this.sql
        .exec(
          "UPDATE contacts SET state = ?, at = ? WHERE owner = ? AND peer = ? RETURNING 1",
          state,
          now,
          owner,
          peer,
        )
        .toArray().length > 0;
    if (updated) return true;
    const n = num(
      this.sql.exec("SELECT COUNT(*) AS n FROM contacts WHERE owner = ?", owner).one().n,
    );
    if (n >= max) return false;
    this.sql.exec(
      "INSERT INTO contacts (owner, peer, state, at) VALUES (?, ?, ?, ?)",
      owner,
      peer,
      state,
      now,
    );
    return true;
  }

  /** Forget every decision by or about `username` (its name went to another identity, §4.3). */
  deleteContacts(username: string): void {
    this.#contacts.clear();
    this.sql.exec("DELETE FROM contacts WHERE owner = ? OR peer = ?", username, username);
  }

  /**
   * How `owner` takes direct messages from `peer` (§7.3.1): 'blocked' (refused), 'contact'
   * (`owner` accepted `peer`, or both are active members of a group) or 'request' (a stranger:
   * the small share). One row read for an accepted contact, the common case.
   */
  senderStanding(owner: string, peer: string): "blocked" | "contact" | "request" {
    const st = this.contactState(owner, peer);
    if (st === "blocked") return "blocked";
    if (st === "accepted" || this.shareGroup(owner, peer)) return "contact";
    return "request";
  }

  /**
   * Direct items stored for `recipient` from senders it has not accepted and shares no group with: its
   * message requests (§7.3.1). One pass over the recipient's rows, grouped by sender first.
   */
  countRequests(recipient: string): number {
    // Counted from the rows themselves: rows waiting for the flush go first (rare: only at the
    // edge of a stranger's share).
    this.flushAcked();
    return num(
      this.sql
        .exec(
          `SELECT COALESCE(SUM(m.n), 0) AS n FROM (
             SELECT sender, COUNT(*) AS n FROM mailbox
             WHERE recipient = ? AND kind = 'direct' GROUP BY sender) m
           WHERE NOT EXISTS (SELECT 1 FROM contacts c
                             WHERE c.owner = ? AND c.peer = m.sender AND c.state = 'accepted')
             AND NOT EXISTS (SELECT 1 FROM group_members x JOIN group_members y ON y.grp = x.grp
                             WHERE x.username = ? AND x.committed = 1 AND x.leaving = 0
                               AND y.username = m.sender AND y.committed = 1 AND y.leaving = 0)`,
          recipient,
          recipient,
          recipient,
        )
        .one().n,
    );
  }
}
