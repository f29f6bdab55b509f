/**
 * Tables made at first write (worker/relay/lazy-tables.ts): every statement answers exactly as it
 * would with the whole schema created up front, while only the tables written to exist; and a
 * new user's object holds only the tables its user's first connection wrote
 * (docs/PERFORMANCE.md "Idle memory on users' routes").
 */
import { describe, expect, it } from "vitest";
import { LazyTables } from "../../worker/relay/lazy-tables";
import { Store } from "../../worker/relay/store";
import { online } from "../support/clients";
import { NodeRelay } from "../support/node-relay";
import { NodeSql } from "../support/node-sql";

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS items (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     owner TEXT NOT NULL,
     body TEXT NOT NULL,
     UNIQUE (owner, body)
   )`,
  "CREATE INDEX IF NOT EXISTS items_owner ON items (owner, id)",
  `CREATE TABLE IF NOT EXISTS tags (
     item INTEGER NOT NULL,
     tag TEXT NOT NULL,
     PRIMARY KEY (item, tag)
   )`,
  `CREATE TABLE IF NOT EXISTS counters (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     n INTEGER NOT NULL
   )`,
];

/** Statements of every shape the relay's stores use, run in order against both databases. */
const SCRIPT: Array<[string, ...(string | number)[]]> = [
  ["SELECT id, body FROM items WHERE owner = ? ORDER BY id", "a"],
  ["SELECT COUNT(*) AS n FROM items WHERE owner = ?", "a"],
  ["SELECT COALESCE(MAX(id), 0) AS n FROM items"],
  ["SELECT MAX(n, COALESCE((SELECT MAX(id) FROM items), 0)) AS n FROM counters WHERE id = 1"],
  ["SELECT i.body, t.tag FROM items i JOIN tags t ON t.item = i.id ORDER BY i.id, t.tag"],
  ["SELECT i.body, t.tag FROM items i LEFT JOIN tags t ON t.item = i.id ORDER BY i.id, t.tag"],
  ["SELECT 1 AS yes WHERE NOT EXISTS (SELECT 1 FROM tags)"],
  [
    "SELECT owner, COUNT(*) AS n FROM items WHERE owner IN (SELECT value FROM json_each(?)) GROUP BY owner",
    '["a","b"]',
  ],
  ["UPDATE items SET body = body || '!' WHERE owner = ?", "a"],
  ["DELETE FROM tags WHERE item = ? RETURNING tag", 1],
  ["INSERT INTO items (owner, body) VALUES (?, ?)", "a", "one"],
  ["INSERT INTO items (owner, body) VALUES (?, ?)", "b", "two"],
  ["SELECT id, body FROM items WHERE owner = ? ORDER BY id", "a"],
  ["SELECT i.body, t.tag FROM items i LEFT JOIN tags t ON t.item = i.id ORDER BY i.id, t.tag"],
  ["SELECT MAX(n, COALESCE((SELECT MAX(id) FROM items), 0)) AS n FROM counters WHERE id = 1"],
  ["INSERT INTO counters (id, n) VALUES (1, ?) ON CONFLICT (id) DO NOTHING", 7],
  ["SELECT MAX(n, COALESCE((SELECT MAX(id) FROM items), 0)) AS n FROM counters WHERE id = 1"],
  ["INSERT INTO tags (item, tag) SELECT id, 'x' FROM items WHERE owner = ?", "a"],
  ["SELECT i.body, t.tag FROM items i JOIN tags t ON t.item = i.id ORDER BY i.id, t.tag"],
  ["UPDATE items SET body = body || '!' WHERE owner = ?", "a"],
  ["DELETE FROM tags WHERE item = ? RETURNING tag", 1],
  ["SELECT 1 AS yes WHERE NOT EXISTS (SELECT 1 FROM tags)"],
];

const tablesOf = (sql: NodeSql) =>
  sql
    .exec("SELECT name FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name")
    .toArray()
    .map((r) => String(r.name))
    .filter((n) => !n.startsWith("sqlite_"));

describe("tables made at first write", () => {
  it("answer every statement as the whole schema made up front does", () => {
    const eager = new NodeSql();
    for (const s of SCHEMA) eager.exec(s);
    const raw = new NodeSql();
    const lazy = new LazyTables(raw, SCHEMA);
    for (const [query, ...args] of SCRIPT) {
      const want = eager.exec(query, ...args).toArray();
      expect({ query, rows: lazy.exec(query, ...args).toArray() }).toEqual({ query, rows: want });
    }
    // Everything written to exists now, with its indexes, as the schema says.
    expect(tablesOf(raw)).toEqual(tablesOf(eager));
  });

  it("create a table and its indexes only when a statement writes to it", () => {
    const raw = new NodeSql();
    const lazy = new LazyTables(raw, SCHEMA);
    lazy.exec("SELECT * FROM items");
    lazy.exec("SELECT COUNT(*) AS n FROM tags");
    expect(lazy.exec("UPDATE items SET body = ?", "x").toArray()).toEqual([]);
    expect(lazy.exec("DELETE FROM tags RETURNING tag").toArray()).toEqual([]);
    expect(tablesOf(raw)).toEqual([]);
    expect(lazy.has("items")).toBe(false);
    lazy.exec("INSERT INTO items (owner, body) VALUES ('a', 'b')");
    expect(lazy.has("items")).toBe(true);
    expect(tablesOf(raw)).toEqual(["items", "items_owner"]);
    // A table from the object's earlier life is known at the start: no CREATE, rows seen.
    const again = new LazyTables(raw, SCHEMA);
    expect(again.has("items")).toBe(true);
    expect(again.exec("SELECT body FROM items").toArray()).toEqual([{ body: "b" }]);
  });

  it("keep SQLite's own errors for a table not yet made", () => {
    const lazy = new LazyTables(new NodeSql(), SCHEMA);
    expect(() => lazy.exec("SELECT nope FROM items")).toThrow(/no such column/);
    expect(() => lazy.exec("SELECT * FROM not_in_schema")).toThrow(/no such table/);
  });

  it("read the tables again when one went missing behind their back, and carry on", () => {
    const raw = new NodeSql();
    const lazy = new LazyTables(raw, SCHEMA);
    lazy.exec("INSERT INTO tags (item, tag) VALUES (1, 'x')");
    raw.exec("DROP TABLE tags");
    expect(lazy.exec("SELECT tag FROM tags").toArray()).toEqual([]);
    lazy.exec("INSERT INTO tags (item, tag) VALUES (2, 'y')");
    expect(lazy.exec("SELECT item FROM tags").toArray()).toEqual([{ item: 2 }]);
  });

  it("refuse a schema statement they do not understand", () => {
    expect(() => new LazyTables(new NodeSql(), ["CREATE VIEW v AS SELECT 1"])).toThrow(
      /not understood/,
    );
  });

  it("leave a started relay object with three tables, not the whole schema", () => {
    const raw = new NodeSql();
    new Store(raw).migrate(["lobby"], 1_000);
    expect(tablesOf(raw)).toEqual(["groups", "legacy_dropped", "mid_counter"]);
  });

  it("leave a new user's object with only the tables its first connection wrote", async () => {
    const relay = new NodeRelay("main", "https://parley.test", null, "contacts", true);
    await online(relay, "alice");
    const tables = Object.keys(relay.dumpTables())
      .filter((t) => t.startsWith("user/alice/"))
      .map((t) => t.slice("user/alice/".length))
      .filter((t) => !t.startsWith("sqlite_"))
      .sort();
    expect(tables).toEqual([
      "claimed",
      "groups",
      "legacy_dropped",
      "mid_counter",
      "one_time_kem_prekeys",
      "one_time_prekeys",
      "pq_prekeys",
      "prekey_owners",
      "signed_prekeys",
      "user_devices",
      "users",
    ]);
  });
});
