/**
 * The Directory object's SQLite schema and queries (PROTOCOL.md §7.4, §8.3.5): the one-time
 * prekeys, one-time KEM prekeys and PQ prekey of each user of one hub, whose entry they are
 * (`owner`: identity key and device, as the hub bound them), and the per-requester one-time
 * prekey quota. The hub's own tables (store.ts) keep the name ↔ identity bindings; this is the
 * only code that knows the directory's SQL. Fixed strings with `?` bindings, as in store.ts.
 */
import type { OneTimeKemPrekey, OneTimePrekey, PqPrekey } from "../../shared/protocol";

const SCHEMA = [
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
  constructor(readonly sql: Pick<SqlStorage, "exec">) {}

  /** Idempotent: run on every object start. */
  migrate(): void {
    for (const stmt of SCHEMA) this.sql.exec(stmt);
  }

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

  /** Every one-time key of the user (classic and KEM) and its PQ prekey. */
  wipe(username: string): void {
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
