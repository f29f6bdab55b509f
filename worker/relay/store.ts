/**
 * The relay's SQLite schema and every query it runs (PROTOCOL.md §7.3). All statements are fixed
 * strings with `?` bindings; variable-length id lists travel as one JSON array bound to
 * `json_each(?)`, so no SQL is ever built from input. Bytes are stored as canonical base64url
 * text, exactly as they travel, so nothing is re-encoded between wire and disk.
 */
import type { OneTimePrekey, SignedPrekey } from "../../shared/protocol";
import type { GroupRecord } from "./groups";
import type { ItemKind, MailboxRow, SenderHoldings } from "./mailbox";

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS users (
     username TEXT PRIMARY KEY,
     identity_key TEXT NOT NULL UNIQUE,
     spk_id INTEGER NOT NULL,
     spk_key TEXT NOT NULL,
     spk_sig TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     seen_at INTEGER NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS one_time_prekeys (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     username TEXT NOT NULL,
     id INTEGER NOT NULL,
     key TEXT NOT NULL,
     UNIQUE (username, id)
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
  // A table of its own so existing hubs need no ALTER; rows go with their group.
  `CREATE TABLE IF NOT EXISTS group_creators (
     grp TEXT PRIMARY KEY,
     creator_key TEXT NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS group_creators_key ON group_creators (creator_key)",
  // The sender of each stored group message (one row per payload, however many copies), so the
  // per-sender total (§7.3) counts messages without reading every copy; deleted with the payload.
  `CREATE TABLE IF NOT EXISTS group_payload_senders (
     payload INTEGER PRIMARY KEY,
     sender TEXT NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS group_payload_senders_sender ON group_payload_senders (sender)",
];

export interface UserRow {
  username: string;
  identityKey: string;
  signedPrekey: SignedPrekey;
}

export interface NewMailboxItem {
  recipient: string;
  sender: string;
  senderKey: string;
  ts: number;
  expiresAt: number;
  kind: ItemKind;
  group: string | null;
  epoch: number | null;
  payload: number;
  wrap: string | null;
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
function kind(v: SqlStorageValue | undefined): ItemKind {
  const k = str(v);
  if (k === "direct" || k === "group" || k === "commit") return k;
  throw new TypeError("store: bad item kind");
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

  constructor(private readonly sql: SqlStorage) {}

  /** Idempotent: run on every object start. */
  migrate(defaultGroups: readonly string[], now: number): void {
    this.#groups.clear();
    for (const stmt of SCHEMA) this.sql.exec(stmt);
    for (const g of defaultGroups) {
      this.sql.exec(
        "INSERT INTO groups (name, epoch, created_at) VALUES (?, 0, ?) ON CONFLICT (name) DO NOTHING",
        g,
        now,
      );
    }
  }

  // -- users / directory ----------------------------------------------------------------------

  getUser(username: string): UserRow | null {
    const rows = this.sql
      .exec(
        "SELECT username, identity_key, spk_id, spk_key, spk_sig FROM users WHERE username = ?",
        username,
      )
      .toArray();
    const r = rows[0];
    if (r === undefined) return null;
    return {
      username: str(r.username),
      identityKey: str(r.identity_key),
      signedPrekey: { id: num(r.spk_id), key: str(r.spk_key), sig: str(r.spk_sig) },
    };
  }

  /** Directory entries for a list of names, sorted by username; unknown names are skipped. */
  getUsers(usernames: readonly string[]): UserRow[] {
    if (usernames.length === 0) return [];
    return this.sql
      .exec(
        `SELECT username, identity_key, spk_id, spk_key, spk_sig FROM users
         WHERE username IN (SELECT value FROM json_each(?)) ORDER BY username`,
        JSON.stringify(usernames),
      )
      .toArray()
      .map((r) => ({
        username: str(r.username),
        identityKey: str(r.identity_key),
        signedPrekey: { id: num(r.spk_id), key: str(r.spk_key), sig: str(r.spk_sig) },
      }));
  }

  usernameOfKey(identityKey: string): string | null {
    const r = this.sql
      .exec("SELECT username FROM users WHERE identity_key = ?", identityKey)
      .toArray()[0];
    return r === undefined ? null : str(r.username);
  }

  countUsers(): number {
    return num(this.sql.exec("SELECT COUNT(*) AS n FROM users").one().n);
  }

  insertUser(username: string, identityKey: string, spk: SignedPrekey, now: number): void {
    this.sql.exec(
      `INSERT INTO users (username, identity_key, spk_id, spk_key, spk_sig, created_at, seen_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
      username,
      identityKey,
      spk.id,
      spk.key,
      spk.sig,
      now,
      now,
    );
  }

  setSignedPrekey(username: string, spk: SignedPrekey, now: number): void {
    this.sql.exec(
      "UPDATE users SET spk_id = ?, spk_key = ?, spk_sig = ?, seen_at = ? WHERE username = ?",
      spk.id,
      spk.key,
      spk.sig,
      now,
      username,
    );
  }

  countOneTimePrekeys(username: string): number {
    return num(
      this.sql.exec("SELECT COUNT(*) AS n FROM one_time_prekeys WHERE username = ?", username).one()
        .n,
    );
  }

  /** Store new one-time prekeys; an id the owner reuses replaces its earlier key. */
  putOneTimePrekeys(username: string, keys: readonly OneTimePrekey[]): void {
    for (const k of keys) {
      this.sql.exec(
        `INSERT INTO one_time_prekeys (username, id, key) VALUES (?, ?, ?)
         ON CONFLICT (username, id) DO UPDATE SET key = excluded.key`,
        username,
        k.id,
        k.key,
      );
    }
  }

  countNewOneTimePrekeyIds(username: string, keys: readonly OneTimePrekey[]): number {
    const ids = JSON.stringify(keys.map((k) => k.id));
    const existing = num(
      this.sql
        .exec(
          "SELECT COUNT(*) AS n FROM one_time_prekeys WHERE username = ? AND id IN (SELECT value FROM json_each(?))",
          username,
          ids,
        )
        .one().n,
    );
    return keys.length - existing;
  }

  /** Hand out the oldest one-time prekey and delete it in the same statement: at most once. */
  takeOneTimePrekey(username: string): OneTimePrekey | null {
    const r = this.sql
      .exec(
        `DELETE FROM one_time_prekeys WHERE seq =
           (SELECT seq FROM one_time_prekeys WHERE username = ? ORDER BY seq LIMIT 1)
         RETURNING id, key`,
        username,
      )
      .toArray()[0];
    return r === undefined ? null : { id: num(r.id), key: str(r.key) };
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

  deleteGroup(name: string): void {
    this.#groups.delete(name);
    this.sql.exec("DELETE FROM group_creators WHERE grp = ?", name);
    this.sql.exec("DELETE FROM group_members WHERE grp = ?", name);
    this.sql.exec("DELETE FROM groups WHERE name = ?", name);
  }

  /** Write the difference between two records of one group (only changed rows are touched). */
  saveGroup(before: GroupRecord | null, after: GroupRecord, now: number): void {
    this.#groups.delete(after.name);
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

  putItem(item: NewMailboxItem): number {
    const mid = num(
      this.sql
        .exec(
          `INSERT INTO mailbox (recipient, sender, sender_key, ts, expires_at, kind, grp, epoch, payload, wrap)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING mid`,
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
        )
        .one().mid,
    );
    this.sql.exec(
      `INSERT INTO mailbox_counts (recipient, n) VALUES (?, 1)
       ON CONFLICT (recipient) DO UPDATE SET n = n + 1`,
      item.recipient,
    );
    return mid;
  }

  /**
   * The same item for several recipients (a group fan-out), inserted in recipient order — so
   * mids ascend in that order, as with one putItem per recipient — in two statements instead of
   * two per recipient.
   */
  putItemForEach(recipients: readonly string[], item: Omit<NewMailboxItem, "recipient">): void {
    if (recipients.length === 0) return;
    const list = JSON.stringify(recipients);
    this.sql.exec(
      `INSERT INTO mailbox (recipient, sender, sender_key, ts, expires_at, kind, grp, epoch, payload, wrap)
       SELECT value, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM json_each(?) ORDER BY key`,
      item.sender,
      item.senderKey,
      item.ts,
      item.expiresAt,
      item.kind,
      item.group,
      item.epoch,
      item.payload,
      item.wrap,
      list,
    );
    this.sql.exec(
      `INSERT INTO mailbox_counts (recipient, n) SELECT value, 1 FROM json_each(?) WHERE true
       ON CONFLICT (recipient) DO UPDATE SET n = n + 1`,
      list,
    );
  }

  /** countMailbox for several recipients in one query. */
  countMailboxes(recipients: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of recipients) out.set(r, 0);
    for (const r of this.sql.exec(
      "SELECT recipient, n FROM mailbox_counts WHERE recipient IN (SELECT value FROM json_each(?))",
      JSON.stringify(recipients),
    )) {
      out.set(str(r.recipient), num(r.n));
    }
    return out;
  }

  #uncount(recipients: readonly string[]): void {
    const per = new Map<string, number>();
    for (const r of recipients) per.set(r, (per.get(r) ?? 0) + 1);
    for (const [recipient, k] of per) {
      this.sql.exec("UPDATE mailbox_counts SET n = n - ? WHERE recipient = ?", k, recipient);
      this.sql.exec("DELETE FROM mailbox_counts WHERE recipient = ? AND n <= 0", recipient);
    }
  }

  /**
   * Items stored for `recipient` (expired ones count until the alarm purges them, which it does
   * at their expiry time): one indexed row read.
   */
  countMailbox(recipient: string): number {
    const r = this.sql
      .exec("SELECT n FROM mailbox_counts WHERE recipient = ?", recipient)
      .toArray()[0];
    return r === undefined ? 0 : num(r.n);
  }

  /** Items already sent on a connection (mid ≤ cursor) and not yet acknowledged. */
  countInFlight(recipient: string, cursor: number, now: number): number {
    return num(
      this.sql
        .exec(
          "SELECT COUNT(*) AS n FROM mailbox WHERE recipient = ? AND mid <= ? AND expires_at > ?",
          recipient,
          cursor,
          now,
        )
        .one().n,
    );
  }

  /** The next items for `recipient` after `cursor`, oldest first. */
  itemsAfter(recipient: string, cursor: number, now: number, limit: number): MailboxRow[] {
    return this.sql
      .exec(
        `SELECT m.mid, m.sender, m.sender_key, m.ts, m.kind, m.grp, m.epoch, m.wrap, p.data
         FROM mailbox m JOIN payloads p ON p.id = m.payload
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
      }));
  }

  /** Delete acknowledged items; only the recipient's own ids match. */
  ack(
    recipient: string,
    mids: readonly number[],
  ): Array<{ mid: number; sender: string; kind: ItemKind }> {
    const rows = this.sql
      .exec(
        `DELETE FROM mailbox WHERE recipient = ? AND mid IN (SELECT value FROM json_each(?))
         RETURNING mid, sender, kind, payload`,
        recipient,
        JSON.stringify(mids),
      )
      .toArray();
    this.#uncount(rows.map(() => recipient));
    this.gcPayloads(rows.map((r) => num(r.payload)));
    return rows.map((r) => ({ mid: num(r.mid), sender: str(r.sender), kind: kind(r.kind) }));
  }

  /** Drop expired items (PROTOCOL.md §7.3: TTL); returns how many went. */
  purgeExpired(now: number): number {
    const rows = this.sql
      .exec("DELETE FROM mailbox WHERE expires_at <= ? RETURNING recipient, payload", now)
      .toArray();
    this.#uncount(rows.map((r) => str(r.recipient)));
    this.gcPayloads(rows.map((r) => num(r.payload)));
    return rows.length;
  }

  nextExpiry(): number | null {
    const r = this.sql.exec("SELECT MIN(expires_at) AS t FROM mailbox").one();
    return numOrNull(r.t);
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
    this.sql.exec(
      `DELETE FROM group_payload_senders WHERE payload IN (SELECT value FROM json_each(?))
       AND NOT EXISTS (SELECT 1 FROM mailbox WHERE mailbox.payload = group_payload_senders.payload)`,
      list,
    );
  }

  // -- quotas (PROTOCOL.md §4.3, §7.3, §7.5) --------------------------------------------------

  /**
   * What `sender` has stored (mailbox.ts `SenderHoldings`), with shares for `recipients` only.
   * Shares and direct items are counted from the rows themselves through the covering
   * `mailbox_sender` index, so they cannot drift from what is stored: a share is a seek of at
   * most maxMailboxPerSenderPerRecipient entries per recipient, the direct count at most
   * maxMailboxPerSender. Group messages are counted in `group_payload_senders` (one row per
   * message, not per copy), which is also bounded by maxMailboxPerSender.
   */
  senderHoldings(sender: string, recipients: readonly string[]): SenderHoldings {
    const perRecipient = new Map<string, number>();
    for (const r of this.sql.exec(
      `SELECT recipient, COUNT(*) AS n FROM mailbox
       WHERE sender = ? AND kind IN ('direct', 'group')
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
    const group = num(
      this.sql
        .exec("SELECT COUNT(*) AS n FROM group_payload_senders WHERE sender = ?", sender)
        .one().n,
    );
    return { messages: direct + group, perRecipient };
  }

  /** Record the sender of a group message's payload (after its copies are stored). */
  setGroupPayloadSender(payload: number, sender: string): void {
    this.sql.exec(
      "INSERT INTO group_payload_senders (payload, sender) VALUES (?, ?) ON CONFLICT (payload) DO NOTHING",
      payload,
      sender,
    );
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
   * Give an idle username to a new identity (PROTOCOL.md §4.3): the old identity's one-time
   * prekeys go (they were signed by nobody but handed out for it), the row takes the new keys.
   * Group memberships are the caller's business (they need pushes).
   */
  reclaimUser(username: string, identityKey: string, spk: SignedPrekey, now: number): void {
    this.sql.exec("DELETE FROM one_time_prekeys WHERE username = ?", username);
    this.sql.exec(
      `UPDATE users SET identity_key = ?, spk_id = ?, spk_key = ?, spk_sig = ?, created_at = ?,
       seen_at = ? WHERE username = ?`,
      identityKey,
      spk.id,
      spk.key,
      spk.sig,
      now,
      now,
      username,
    );
  }
}
