/**
 * An object's tables made at their first write, so an object holds in memory only the tables it
 * uses (docs/PERFORMANCE.md "Tables made at first write").
 *
 * One relay class serves the hub's object, every user's object and every group's home, so its
 * schema is the union of what all three keep — about eighty tables and indexes — and a user's
 * object used to create all of them at its first start. Under workerd an object's tables cost it
 * memory for as long as it is resident, rows or not: creating that schema cost a new user's
 * object ~580 KiB (measured), and a Durable Object may not shrink SQLite's cache (`PRAGMA
 * cache_size` and `shrink_memory` are refused).
 *
 * So no table is created before a statement writes to it. Until then the table reads as empty,
 * exactly as if it existed: a statement that reads it runs with the table replaced by an empty
 * derived table of the same columns (`(SELECT NULL AS c1, … WHERE 0)`), so joins, aggregates
 * (`COUNT` → 0, `MAX` → NULL) and column errors are SQLite's own; an `UPDATE` or `DELETE` of it
 * changes nothing and is not run; an `INSERT` creates it first, with its indexes, as its schema
 * entries say. Statements are fixed strings (store.ts), so each one is planned once per process
 * and each rewritten form is one more fixed string.
 *
 * Which tables exist is read from `sqlite_master` when a view is made and kept per database, so
 * every view of one object's storage (its `Store`, its prekeys', its links', a test's) sees a
 * table another view created. After any other DDL (a migration's `DROP`, `ALTER … RENAME`) it is
 * read again, and a statement that fails because a table is missing (a rolled-back transaction
 * took a table the set still names) reads it again and runs once more.
 */

/** One table of a schema: its statements (the table's, then its indexes') and its columns. */
interface TableDef {
  ddl: string[];
  columns: string[];
}

type Verb = "read" | "insert" | "change" | "ddl";

interface Plan {
  verb: Verb;
  /** Schema tables the statement names, in order of first mention. */
  tables: string[];
  /** For `change` (UPDATE, DELETE): the table it changes. */
  target: string | null;
  /** The statement as run while the tables named by the key (comma-separated) are missing. */
  rewritten: Map<string, string>;
}

/** Plans by statement text, per schema (the statement set of a class is fixed and small). */
type Plans = Map<string, Plan>;

const schemas = new WeakMap<readonly string[], { defs: Map<string, TableDef>; plans: Plans }>();

/** The tables that exist, per database (the object's `SqlStorage`), shared by its views. */
const existingByDb = new WeakMap<object, Set<string>>();

/** Words after which a table name in FROM/JOIN is not followed by an alias. */
const NOT_ALIAS = new Set(
  [
    "WHERE",
    "JOIN",
    "LEFT",
    "INNER",
    "CROSS",
    "RIGHT",
    "FULL",
    "OUTER",
    "NATURAL",
    "ON",
    "USING",
    "ORDER",
    "GROUP",
    "HAVING",
    "LIMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WINDOW",
    "RETURNING",
    "SET",
    "INDEXED",
    "NOT",
  ].map((w) => w.toLowerCase()),
);

/** Table and index statements of a schema, grouped by table; columns from each CREATE TABLE. */
function parseSchema(schema: readonly string[]): Map<string, TableDef> {
  const defs = new Map<string, TableDef>();
  for (const stmt of schema) {
    const table = /^\s*CREATE TABLE IF NOT EXISTS (\w+)\s*\(([\s\S]*)\)[^)]*$/i.exec(stmt);
    if (table !== null) {
      const [, name = "", body = ""] = table;
      // Column definitions are the comma-separated parts that do not start a table constraint.
      const columns = splitTopLevel(body)
        .map((part) => part.trim())
        .filter((part) => !/^(PRIMARY|UNIQUE|CHECK|FOREIGN|CONSTRAINT)\b/i.test(part))
        .map((part) => /^(\w+)/.exec(part)?.[1] ?? "");
      if (columns.includes("")) throw new Error(`lazy-tables: unreadable columns of ${name}`);
      defs.set(name, { ddl: [stmt], columns });
      continue;
    }
    const index = /^\s*CREATE (?:UNIQUE )?INDEX IF NOT EXISTS \w+ ON (\w+)/i.exec(stmt);
    const def = index === null ? undefined : defs.get(index[1] ?? "");
    if (def === undefined) throw new Error(`lazy-tables: schema statement not understood: ${stmt}`);
    def.ddl.push(stmt);
  }
  return defs;
}

/** Split on commas outside parentheses. */
function splitTopLevel(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "," && depth === 0) {
      parts.push(s.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(s.slice(start));
  return parts;
}

function plan(query: string, defs: Map<string, TableDef>): Plan {
  const first = /^\s*(\w+)/.exec(query)?.[1]?.toUpperCase() ?? "";
  const verb: Verb =
    first === "SELECT" || first === "WITH"
      ? "read"
      : first === "INSERT" || first === "REPLACE"
        ? "insert"
        : first === "UPDATE" || first === "DELETE"
          ? "change"
          : "ddl";
  const tables: string[] = [];
  for (const m of query.matchAll(/\b(?:FROM|JOIN|INTO|UPDATE)\s+(\w+)/gi)) {
    const t = m[1] ?? "";
    if (defs.has(t) && !tables.includes(t)) tables.push(t);
  }
  let target: string | null = null;
  if (verb === "change") {
    target = /^\s*(?:UPDATE|DELETE\s+FROM)\s+(\w+)/i.exec(query)?.[1] ?? null;
  }
  return { verb, tables, target, rewritten: new Map() };
}

/** `query` with each of `missing` read as an empty table of its columns. */
function rewrite(query: string, missing: readonly string[], defs: Map<string, TableDef>): string {
  let out = query;
  for (const t of missing) {
    const cols = defs.get(t)?.columns ?? [];
    const empty = `(SELECT ${cols.map((c) => `NULL AS ${c}`).join(", ")} WHERE 0)`;
    out = out.replace(
      new RegExp(`\\b(FROM|JOIN)\\s+${t}\\b(\\s+(?:AS\\s+)?(\\w+))?`, "gi"),
      (_m, kw: string, tail: string | undefined, word: string | undefined) =>
        word !== undefined && !NOT_ALIAS.has(word.toLowerCase())
          ? `${kw} ${empty}${tail}`
          : `${kw} ${empty} AS ${t}${tail ?? ""}`,
    );
  }
  return out;
}

function isMissingTable(e: unknown): boolean {
  return e instanceof Error && /no such table/i.test(e.message);
}

/**
 * `sql` with the tables of `schema` made at first write. `schema` is a fixed array of
 * `CREATE TABLE IF NOT EXISTS` and `CREATE INDEX IF NOT EXISTS` statements (an index after its
 * table); every statement run through it is a fixed string.
 */
export class LazyTables implements Pick<SqlStorage, "exec"> {
  readonly #sql: Pick<SqlStorage, "exec">;
  readonly #defs: Map<string, TableDef>;
  readonly #plans: Plans;
  readonly #existing: Set<string>;

  constructor(sql: Pick<SqlStorage, "exec">, schema: readonly string[]) {
    this.#sql = sql;
    let parsed = schemas.get(schema);
    if (parsed === undefined) {
      parsed = { defs: parseSchema(schema), plans: new Map() };
      schemas.set(schema, parsed);
    }
    this.#defs = parsed.defs;
    this.#plans = parsed.plans;
    let existing = existingByDb.get(sql);
    if (existing === undefined) {
      existing = new Set();
      existingByDb.set(sql, existing);
    }
    this.#existing = existing;
    this.#readExisting();
  }

  /** Whether `table` has been created. */
  has(table: string): boolean {
    return this.#existing.has(table);
  }

  exec<T extends Record<string, SqlStorageValue>>(
    query: string,
    ...bindings: unknown[]
  ): SqlStorageCursor<T> {
    try {
      return this.#exec<T>(query, bindings);
    } catch (e) {
      if (!isMissingTable(e)) throw e;
      this.#readExisting();
      return this.#exec<T>(query, bindings);
    }
  }

  #exec<T extends Record<string, SqlStorageValue>>(
    query: string,
    bindings: unknown[],
  ): SqlStorageCursor<T> {
    let p = this.#plans.get(query);
    if (p === undefined) {
      p = plan(query, this.#defs);
      this.#plans.set(query, p);
    }
    if (p.verb === "ddl") {
      const cursor = this.#sql.exec<T>(query, ...bindings);
      this.#readExisting();
      return cursor;
    }
    // The common case, every table made, allocates nothing.
    let made = true;
    for (const t of p.tables) if (!this.#existing.has(t)) made = false;
    if (made) return this.#sql.exec<T>(query, ...bindings);
    const missing = p.tables.filter((t) => !this.#existing.has(t));
    if (p.verb === "read") {
      const key = missing.join(",");
      let q = p.rewritten.get(key);
      if (q === undefined) {
        q = rewrite(query, missing, this.#defs);
        p.rewritten.set(key, q);
      }
      return this.#sql.exec<T>(q, ...bindings);
    }
    if (p.verb === "change" && p.target !== null && !this.#existing.has(p.target)) {
      // Nothing to change in a table that was never written: not run, no rows, like SQLite.
      return this.#sql.exec<T>("SELECT NULL WHERE 0");
    }
    for (const t of missing) this.#create(t);
    return this.#sql.exec<T>(query, ...bindings);
  }

  #create(table: string): void {
    for (const stmt of this.#defs.get(table)?.ddl ?? []) this.#sql.exec(stmt);
    this.#existing.add(table);
  }

  #readExisting(): void {
    const rows = this.#sql.exec("SELECT name FROM sqlite_master WHERE type = 'table'").toArray();
    this.#existing.clear();
    for (const r of rows) this.#existing.add(String(r.name));
  }
}
