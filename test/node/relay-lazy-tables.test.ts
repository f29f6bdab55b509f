/**
 * Tables made at first write (worker/relay/lazy-tables.ts): every statement answers exactly as it
 * would with the whole schema created up front, while only the tables written to exist; and a
 * new user's object holds only the tables its user's first connection wrote
 * (docs/PERFORMANCE.md "Idle memory on users' routes").
 */
import { describe, expect, it } from "vitest";
import { emptyDriver, LazyTables } from "../../worker/relay/lazy-tables";
import { PrekeyStore } from "../../worker/relay/prekey-store";
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
  // Rows from elsewhere than the first table: never answered without running.
  ["SELECT body FROM items UNION ALL SELECT 'z' AS body"],
  ["SELECT (SELECT COUNT(*) FROM items) AS n"],
  ["SELECT ? AS k WHERE NOT EXISTS (SELECT 1 FROM items)", "k"],
  ["INSERT INTO tags (item, tag) VALUES (?, ?)", 9, "orphan"],
  ["SELECT t.tag, i.body FROM items i RIGHT JOIN tags t ON t.item = i.id ORDER BY t.tag"],
  ["SELECT t.tag FROM tags t LEFT JOIN items i ON i.id = t.item ORDER BY t.tag"],
  ["SELECT t.tag FROM items i, tags t ORDER BY t.tag"],
  ["SELECT i.body FROM items i JOIN tags t ON t.item = i.id WHERE t.tag = ?", "orphan"],
  ["DELETE FROM tags WHERE item = ?", 9],
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
    // Twice, on two new databases: the second answers reads of never-written tables without
    // running them, where the first ran each once (below).
    const schema = [...SCHEMA];
    for (const round of [1, 2]) {
      const eager = new NodeSql();
      for (const s of schema) eager.exec(s);
      const raw = new NodeSql();
      const lazy = new LazyTables(raw, schema);
      for (const [query, ...args] of SCRIPT) {
        const want = eager.exec(query, ...args).toArray();
        expect({ round, query, rows: lazy.exec(query, ...args).toArray() }).toEqual({
          round,
          query,
          rows: want,
        });
      }
      // Everything written to exists now, with its indexes, as the schema says.
      expect(tablesOf(raw)).toEqual(tablesOf(eager));
    }
  });

  it("tell which reads have no rows while one table has none, from the text alone", () => {
    const defs = [...SCHEMA];
    const cases: Array<[string, string | null]> = [
      ["SELECT id, body FROM items WHERE owner = ? ORDER BY id", "items"],
      ["SELECT i.body, t.tag FROM items i LEFT JOIN tags t ON t.item = i.id", "items"],
      ["SELECT t.tag FROM tags t JOIN items i ON i.id = t.item WHERE i.owner = 'x'", "tags"],
      ["SELECT i.body FROM items i, tags t", "items"],
      ["SELECT owner FROM items GROUP BY owner ORDER BY owner LIMIT 3", "items"],
      ["SELECT body FROM items WHERE id IN (SELECT item FROM tags) AND body <> 'FROM x'", "items"],
      // A row out of none, or rows from elsewhere:
      ["SELECT COUNT(*) AS n FROM items", null],
      ["SELECT COALESCE(MAX(id), 0) AS n FROM items", null],
      ["SELECT owner FROM items GROUP BY owner HAVING owner <> ''", null],
      ["SELECT body FROM items UNION SELECT tag FROM tags", null],
      ["SELECT t.tag FROM items i RIGHT JOIN tags t ON t.item = i.id", null],
      ["SELECT t.tag FROM items i FULL JOIN tags t ON t.item = i.id", null],
      ["SELECT 1 AS yes WHERE NOT EXISTS (SELECT 1 FROM tags)", null],
      ["SELECT (SELECT body FROM items LIMIT 1) AS b", null],
      ["WITH x AS (SELECT id FROM items) SELECT id FROM x", null],
      ["SELECT s.id FROM (SELECT id FROM items) s", null],
      ["SELECT value FROM json_each(?) j JOIN items i ON i.owner = j.value", null],
      ["SELECT i.id FROM items i JOIN json_each(?) j ON j.value = i.owner", null],
      ["SELECT name FROM sqlite_master", null],
      ["SELECT 1 AS one -- FROM items\n", null],
      ["SELECT 1 AS one /* FROM items */", null],
      ["INSERT INTO items (owner, body) SELECT owner, body FROM items", null],
      ["DELETE FROM items", null],
    ];
    const parsed = new LazyTables(new NodeSql(), defs);
    expect(parsed.has("items")).toBe(false);
    for (const [query, want] of cases)
      expect({ query, driver: emptyDriver(query, defs) }).toEqual({ query, driver: want });
  });

  it("run a read of a never-written table once per process, then cost an object no statement", () => {
    const schema = [...SCHEMA];
    const run = () => {
      const raw = new NodeSql();
      const seen: string[] = [];
      const counting = {
        exec: (q: string, ...b: unknown[]) => {
          seen.push(q);
          return raw.exec(q, ...(b as SqlStorageValue[]));
        },
      } as unknown as NodeSql;
      const lazy = new LazyTables(counting, schema);
      const rows = lazy.exec("SELECT body FROM items WHERE owner = ?", "a").toArray();
      const joined = lazy.exec("SELECT t.tag FROM tags t JOIN items i ON i.id = t.item").toArray();
      return { rows, joined, statements: seen.filter((q) => !q.includes("sqlite_master")) };
    };
    const first = run();
    expect(first.rows).toEqual([]);
    expect(first.statements).toHaveLength(2);
    expect(first.statements[0]).toMatch(/SELECT NULL AS id/);
    // The next object of the process: both answered by the one statement that stands for all.
    const second = run();
    expect(second).toEqual({
      rows: [],
      joined: [],
      statements: ["SELECT NULL WHERE 0", "SELECT NULL WHERE 0"],
    });
    // An error SQLite raises on the text is raised every time, in every object.
    for (let i = 0; i < 2; i++) {
      const lazy = new LazyTables(new NodeSql(), schema);
      expect(() => lazy.exec("SELECT nope FROM items WHERE owner = ?", "a")).toThrow(
        /no such column/,
      );
    }
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

  it("leave a started relay object with one table, its default group's", () => {
    const raw = new NodeSql();
    new Store(raw).migrate(["lobby"], 1_000);
    expect(tablesOf(raw)).toEqual(["groups"]);
  });

  it("drop an old hub's prekey tables at its next start, once, and never a user's object's own", () => {
    // A hub's object from before the Directory object kept one-time prekeys itself.
    const old = new NodeSql();
    old.exec("CREATE TABLE one_time_prekeys (username TEXT, id INTEGER, key TEXT)");
    old.exec("INSERT INTO one_time_prekeys VALUES ('bob', 1, 'k')");
    old.exec("CREATE TABLE registrations (bucket TEXT, at INTEGER)");
    new Store(old).migrate(["lobby"], 1_000);
    expect(tablesOf(old)).toEqual(["groups", "legacy_dropped"]);
    // A user's object makes tables of those names for its own prekeys: marked as it makes them,
    // they outlive every later start.
    const mine = new NodeSql();
    const store = new Store(mine);
    store.migrate([], 1_000);
    expect(tablesOf(mine)).toEqual([]);
    new PrekeyStore(mine, (t) => store.keepAsCurrent(t)).putOneTimePrekeys("alice", [
      { id: 1, key: "k1" },
    ]);
    for (let start = 0; start < 2; start++) new Store(mine).migrate([], 2_000);
    expect(new PrekeyStore(mine).countOneTimePrekeys("alice")).toBe(1);
    expect(tablesOf(mine)).toContain("legacy_dropped");
  });

  it("keep every mid handed out above the next start's, with no counter row until the first", () => {
    const raw = new NodeSql();
    const first = new Store(raw);
    first.migrate([], 1_000);
    expect(tablesOf(raw)).not.toContain("mid_counter");
    const item = {
      recipient: "bob",
      sender: "alice",
      senderKey: "k",
      ts: 1,
      expiresAt: 9e12,
      kind: "direct" as const,
      group: null,
      epoch: null,
      wrap: null,
    };
    // A held item's mid is leased ahead (one write per block): never stored, never reused.
    const held = first.holdItem(item, "{}");
    expect(tablesOf(raw)).toContain("mid_counter");
    const again = new Store(raw);
    again.migrate([], 2_000);
    expect(again.nextMid()).toBeGreaterThan(held);
    // A stored item's mid is above the counter's too, after a start of an object without a row.
    const plain = new NodeSql();
    const s = new Store(plain);
    s.migrate([], 1_000);
    const stored = s.putItem({ ...item, payload: 1 });
    const next = new Store(plain);
    next.migrate([], 2_000);
    expect(next.nextMid()).toBe(stored + 1);
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
