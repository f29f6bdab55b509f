/**
 * The Directory object's SQLite schema and queries (PROTOCOL.md §4.3, §7.4, §8.3.5): the hub's
 * name ↔ identity bindings and the registrations they count toward; per directory entry (a
 * username, or a linked device's address) its signed prekey, one-time prekeys, one-time KEM
 * prekeys and PQ prekey, and whose entry they are (`owner`: identity key and device); and the
 * per-requester one-time prekey quota. This is the only code that knows the directory's SQL.
 * Fixed strings with `?` bindings, as in store.ts.
 */
import type {
  OneTimeKemPrekey,
  OneTimePrekey,
  PqPrekey,
  SignedPrekey,
} from "../../shared/protocol";
import { LazyTables } from "./lazy-tables";

/** A binding as the hub's object held it before the directory owned bindings (seeded once). */
export interface SeedEntry {
  /** A username, or a linked device's address (§4.7). */
  entry: string;
  /** The name's identity key; null for a device address, which binds no name. */
  identityKey: string | null;
  signedPrekey: SignedPrekey;
  boundAt: number;
}

/** This module's tables, made at first write (lazy-tables.ts). */
export const PREKEY_SCHEMA = [
  // Name ↔ identity (§4.3): one identity per name and one name per identity, hub-wide.
  `CREATE TABLE IF NOT EXISTS bindings (
     username TEXT PRIMARY KEY,
     identity_key TEXT NOT NULL UNIQUE,
     bound_at INTEGER NOT NULL
   )`,
  // Names whose user's object keeps their keys and judges their reclaim (users' routes, §4.1):
  // marked by that object's claim; the hub's route may not reclaim them.
  `CREATE TABLE IF NOT EXISTS routed_names (
     username TEXT PRIMARY KEY
   )`,
  // New names per client address bucket (§4.3), for the daily registration bound; rows older
  // than a day are purged a few per claim.
  `CREATE TABLE IF NOT EXISTS registrations (
     bucket TEXT NOT NULL,
     at INTEGER NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS registrations_bucket ON registrations (bucket, at)",
  "CREATE INDEX IF NOT EXISTS registrations_at ON registrations (at)",
  // The signed prekey of each entry: the username's (its current device's) or a linked
  // device's, under the device's address (§4.7).
  `CREATE TABLE IF NOT EXISTS signed_prekeys (
     entry TEXT PRIMARY KEY,
     id INTEGER NOT NULL,
     key TEXT NOT NULL,
     sig TEXT NOT NULL
   )`,
  // Whose keys the rows below are: "<identity key> <device>" of the binding that uploaded them.
  `CREATE TABLE IF NOT EXISTS prekey_owners (
     username TEXT PRIMARY KEY,
     owner TEXT NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS one_time_prekeys (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     username TEXT NOT NULL,
     id INTEGER NOT NULL,
     key TEXT NOT NULL,
     UNIQUE (username, id)
   )`,
  `CREATE TABLE IF NOT EXISTS pq_prekeys (
     username TEXT PRIMARY KEY,
     spk_id INTEGER NOT NULL,
     data TEXT NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS one_time_kem_prekeys (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     username TEXT NOT NULL,
     id INTEGER NOT NULL,
     key TEXT NOT NULL,
     sig TEXT NOT NULL,
     UNIQUE (username, id)
   )`,
  // The one-time prekey quota (key: owner username, newline, requester identity key; §7.4),
  // kept so a restart refills nothing (SECURITY.md L16). A row is garbage once full again.
  `CREATE TABLE IF NOT EXISTS opk_quota (
     key TEXT PRIMARY KEY,
     tokens REAL NOT NULL,
     at INTEGER NOT NULL,
     full_at INTEGER NOT NULL
   )`,
  "CREATE INDEX IF NOT EXISTS opk_quota_full ON opk_quota (full_at)",
];

function num(v: SqlStorageValue | undefined): number {
  if (typeof v !== "number") throw new TypeError("prekey-store: expected a number");
  return v;
}

function str(v: SqlStorageValue | undefined): string {
  if (typeof v !== "string") throw new TypeError("prekey-store: expected a string");
  return v;
}

export class PrekeyStore {
  /** The object's SQL, these tables made at first write (lazy-tables.ts). */
  readonly sql: LazyTables;

  /** `beforeCreate`: see LazyTables (a user's object marks its prekey tables as current). */
  constructor(sql: Pick<SqlStorage, "exec">, beforeCreate?: (table: string) => void) {
    this.sql = new LazyTables(sql, PREKEY_SCHEMA, beforeCreate);
  }

  // -- bindings and registrations (§4.3) -------------------------------------------------------

  /** The identity key bound to `username`, or null. */
  identityOf(username: string): string | null {
    const r = this.sql
      .exec("SELECT identity_key FROM bindings WHERE username = ?", username)
      .toArray()[0];
    return r === undefined ? null : str(r.identity_key);
  }

  /** The name `identityKey` is bound to, or null. */
  nameOf(identityKey: string): string | null {
    const r = this.sql
      .exec("SELECT username FROM bindings WHERE identity_key = ?", identityKey)
      .toArray()[0];
    return r === undefined ? null : str(r.username);
  }

  countBindings(): number {
    return num(this.sql.exec("SELECT COUNT(*) AS n FROM bindings").one().n);
  }

  /** Bind `username` to `identityKey`, replacing another identity's binding (a reclaim). */
  setBinding(username: string, identityKey: string, now: number): void {
    this.sql.exec(
      `INSERT INTO bindings (username, identity_key, bound_at) VALUES (?, ?, ?)
       ON CONFLICT (username) DO UPDATE SET identity_key = excluded.identity_key,
         bound_at = excluded.bound_at`,
      username,
      identityKey,
      now,
    );
  }

  deleteBinding(username: string): void {
    this.sql.exec("DELETE FROM bindings WHERE username = ?", username);
    this.sql.exec("DELETE FROM routed_names WHERE username = ?", username);
  }

  /** Whether `username`'s own object keeps it (users' routes, §4.1). */
  isRouted(username: string): boolean {
    return (
      this.sql.exec("SELECT 1 FROM routed_names WHERE username = ?", username).toArray().length > 0
    );
  }

  setRouted(username: string): void {
    this.sql.exec("INSERT OR IGNORE INTO routed_names (username) VALUES (?)", username);
  }

  /** New names registered from `bucket` at or after `since` (§4.3). */
  registrationsSince(bucket: string, since: number): number {
    return num(
      this.sql
        .exec("SELECT COUNT(*) AS n FROM registrations WHERE bucket = ? AND at >= ?", bucket, since)
        .one().n,
    );
  }

  recordRegistration(buckets: readonly string[], now: number): void {
    for (const b of buckets)
      this.sql.exec("INSERT INTO registrations (bucket, at) VALUES (?, ?)", b, now);
  }

  /** Drop up to `limit` registrations from before `before`: they no longer count. */
  purgeRegistrations(before: number, limit: number): number {
    return this.sql
      .exec(
        `DELETE FROM registrations WHERE rowid IN
           (SELECT rowid FROM registrations WHERE at < ? LIMIT ?) RETURNING 1`,
        before,
        limit,
      )
      .toArray().length;
  }

  getSignedPrekey(entry: string): SignedPrekey | null {
    const r = this.sql
      .exec("SELECT id, key, sig FROM signed_prekeys WHERE entry = ?", entry)
      .toArray()[0];
    return r === undefined ? null : { id: num(r.id), key: str(r.key), sig: str(r.sig) };
  }

  setSignedPrekey(entry: string, spk: SignedPrekey): void {
    this.sql.exec(
      `INSERT INTO signed_prekeys (entry, id, key, sig) VALUES (?, ?, ?, ?)
       ON CONFLICT (entry) DO UPDATE SET id = excluded.id, key = excluded.key, sig = excluded.sig`,
      entry,
      spk.id,
      spk.key,
      spk.sig,
    );
  }

  /** A name's linked devices' entries ("<name>.<device>", §4.7), keys and all. */
  wipeDevicesOf(username: string): void {
    const lo = `${username}.`;
    const hi = `${username}/`;
    this.sql.exec("DELETE FROM signed_prekeys WHERE entry > ? AND entry < ?", lo, hi);
    for (const table of [
      "one_time_prekeys",
      "one_time_kem_prekeys",
      "pq_prekeys",
      "prekey_owners",
    ]) {
      this.sql.exec(`DELETE FROM ${table} WHERE username > ? AND username < ?`, lo, hi);
    }
  }

  /**
   * Entries the hub's object held before the directory owned bindings: each taken unless the
   * directory already holds that name, identity or entry (what it holds is newer).
   */
  seed(entries: readonly SeedEntry[]): void {
    for (const e of entries) {
      if (e.identityKey !== null) {
        this.sql.exec(
          `INSERT INTO bindings (username, identity_key, bound_at) VALUES (?, ?, ?)
           ON CONFLICT DO NOTHING`,
          e.entry,
          e.identityKey,
          e.boundAt,
        );
      }
      this.sql.exec(
        `INSERT INTO signed_prekeys (entry, id, key, sig) VALUES (?, ?, ?, ?)
         ON CONFLICT (entry) DO NOTHING`,
        e.entry,
        e.signedPrekey.id,
        e.signedPrekey.key,
        e.signedPrekey.sig,
      );
    }
  }

  // -- per entry: whose keys, one-time and PQ prekeys (§7.4) -----------------------------------

  ownerOf(username: string): string | null {
    const r = this.sql
      .exec("SELECT owner FROM prekey_owners WHERE username = ?", username)
      .toArray()[0];
    return r === undefined ? null : str(r.owner);
  }

  setOwner(username: string, owner: string): void {
    this.sql.exec(
      `INSERT INTO prekey_owners (username, owner) VALUES (?, ?)
       ON CONFLICT (username) DO UPDATE SET owner = excluded.owner`,
      username,
      owner,
    );
  }

  /** Every prekey of the entry: signed, one-time (classic and KEM) and PQ. */
  wipe(username: string): void {
    this.sql.exec("DELETE FROM signed_prekeys WHERE entry = ?", username);
    this.sql.exec("DELETE FROM one_time_prekeys WHERE username = ?", username);
    this.sql.exec("DELETE FROM one_time_kem_prekeys WHERE username = ?", username);
    this.sql.exec("DELETE FROM pq_prekeys WHERE username = ?", username);
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
    const existing = num(
      this.sql
        .exec(
          "SELECT COUNT(*) AS n FROM one_time_prekeys WHERE username = ? AND id IN (SELECT value FROM json_each(?))",
          username,
          JSON.stringify(keys.map((k) => k.id)),
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

  /** Replace (or, with null, drop) the PQ half of the user's signed prekey (§8.3.5). */
  setPqPrekey(username: string, pq: PqPrekey | null): void {
    if (pq === null) {
      this.sql.exec("DELETE FROM pq_prekeys WHERE username = ?", username);
      return;
    }
    this.sql.exec(
      `INSERT INTO pq_prekeys (username, spk_id, data) VALUES (?, ?, ?)
       ON CONFLICT (username) DO UPDATE SET spk_id = excluded.spk_id, data = excluded.data`,
      username,
      pq.spkId,
      JSON.stringify(pq),
    );
  }

  /** The PQ prekey stored for signed prekey `spkId`, or null (none, or for another SPK). */
  getPqPrekey(username: string, spkId: number): PqPrekey | null {
    const r = this.sql
      .exec("SELECT spk_id, data FROM pq_prekeys WHERE username = ?", username)
      .toArray()[0];
    if (r === undefined || num(r.spk_id) !== spkId) return null;
    return JSON.parse(str(r.data)) as PqPrekey;
  }

  countOneTimeKemPrekeys(username: string): number {
    return num(
      this.sql
        .exec("SELECT COUNT(*) AS n FROM one_time_kem_prekeys WHERE username = ?", username)
        .one().n,
    );
  }

  countNewOneTimeKemPrekeyIds(username: string, keys: readonly OneTimeKemPrekey[]): number {
    const existing = num(
      this.sql
        .exec(
          "SELECT COUNT(*) AS n FROM one_time_kem_prekeys WHERE username = ? AND id IN (SELECT value FROM json_each(?))",
          username,
          JSON.stringify(keys.map((k) => k.id)),
        )
        .one().n,
    );
    return keys.length - existing;
  }

  /** Store new one-time KEM prekeys; an id the owner reuses replaces its earlier key. */
  putOneTimeKemPrekeys(username: string, keys: readonly OneTimeKemPrekey[]): void {
    for (const k of keys) {
      this.sql.exec(
        `INSERT INTO one_time_kem_prekeys (username, id, key, sig) VALUES (?, ?, ?, ?)
         ON CONFLICT (username, id) DO UPDATE SET key = excluded.key, sig = excluded.sig`,
        username,
        k.id,
        k.key,
        k.sig,
      );
    }
  }

  /** Hand out the oldest one-time KEM prekey and delete it in the same statement: at most once. */
  takeOneTimeKemPrekey(username: string): OneTimeKemPrekey | null {
    const r = this.sql
      .exec(
        `DELETE FROM one_time_kem_prekeys WHERE seq =
           (SELECT seq FROM one_time_kem_prekeys WHERE username = ? ORDER BY seq LIMIT 1)
         RETURNING id, key, sig`,
        username,
      )
      .toArray()[0];
    return r === undefined ? null : { id: num(r.id), key: str(r.key), sig: str(r.sig) };
  }

  // -- the one-time prekey quota (ratelimit.ts BucketStore) ------------------------------------

  loadQuota(key: string): { tokens: number; at: number } | null {
    const r = this.sql.exec("SELECT tokens, at FROM opk_quota WHERE key = ?", key).toArray()[0];
    return r === undefined ? null : { tokens: num(r.tokens), at: num(r.at) };
  }

  saveQuota(key: string, b: { tokens: number; at: number }, fullAt: number): void {
    this.sql.exec(
      `INSERT INTO opk_quota (key, tokens, at, full_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at,
         full_at = excluded.full_at`,
      key,
      b.tokens,
      b.at,
      fullAt,
    );
  }

  /** Drop up to `limit` quota rows that have refilled: they carry nothing. */
  purgeFullQuota(now: number, limit: number): number {
    return this.sql
      .exec(
        `DELETE FROM opk_quota WHERE key IN
           (SELECT key FROM opk_quota WHERE full_at <= ? LIMIT ?) RETURNING 1`,
        now,
        limit,
      )
      .toArray().length;
  }
}
