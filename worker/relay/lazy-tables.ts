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
 * A read that can have no rows while a never-written table has none (its first table, in a
 * statement of the plain shape `emptyDriver` accepts) is not run at all: it answers no rows
 * through one fixed statement. workerd prepares and keeps every statement text an object runs,
 * for the object's life, and a new user's object ran ~20 such reads at its first connection:
 * not running them saves it ~55 KiB (measured). Once per process the rewritten form does run, so
 * that an error SQLite raises on the text (an unknown column) is raised as before, everywhere.
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
  /** A read that has no rows while this table has none (emptyDriver); else null. */
  driver: string | null;
  /** Keys of `rewritten` whose statement SQLite has prepared and run without error. */
  checked: Set<string>;
}

/** Plans by statement text, per schema (the statement set of a class is fixed and small). */
type Plans = Map<string, Plan>;

const schemas = new WeakMap<readonly string[], { defs: Map<string, TableDef>; plans: Plans }>();

/** A schema's tables and plans, parsed once per process. */
function parsed(schema: readonly string[]): { defs: Map<string, TableDef>; plans: Plans } {
  let p = schemas.get(schema);
  if (p === undefined) {
    p = { defs: parseSchema(schema), plans: new Map() };
    schemas.set(schema, p);
  }
  return p;
}

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
  const driver = verb === "read" ? driverOf(query, defs) : null;
  return { verb, tables, target, rewritten: new Map(), driver, checked: new Set() };
}

/**
 * Aggregate functions: at a query's top level they make one row out of none. (With two or more
 * arguments `max` and `min` are scalar; they are left out all the same.)
 */
const AGGREGATES = new Set([
  "count",
  "max",
  "min",
  "sum",
  "total",
  "avg",
  "group_concat",
  "string_agg",
  "json_group_array",
  "json_group_object",
]);

/** Top-level words after which rows may come from elsewhere than the first table. */
const NOT_PLAIN = new Set(["union", "except", "intersect", "right", "full", "having", "with"]);

/** Words after which the FROM clause of a query's top level has ended. */
const FROM_ENDS = new Set(["where", "group", "order", "limit", "window"]);

/**
 * The table whose emptiness makes `query` return no rows whatever its bindings, or null when
 * that cannot be told from its text. That table is the first of the top-level FROM clause of a
 * plain SELECT whose every top-level FROM and JOIN item is a schema table, with no compound
 * operator, no RIGHT or FULL join (which keep rows of a later table), no aggregate (anywhere, to
 * be sure of the top level) and no HAVING (which make a row out of none): each row of such a
 * query takes a row of its first table. Statements that call JSON functions are left out, as
 * SQLite may evaluate those on their bound arguments before reading any row, and fail; so are
 * statements with comments, whose words this reading would take for SQL.
 */
export function emptyDriver(query: string, schema: readonly string[]): string | null {
  return driverOf(query, parsed(schema).defs);
}

function driverOf(query: string, defs: Map<string, TableDef>): string | null {
  if (query.includes("--") || query.includes("/*")) return null;
  const tokens = query.match(/'(?:[^']|'')*'|\w+|[^\s\w]/g) ?? [];
  if (tokens[0]?.toLowerCase() !== "select") return null;
  let depth = 0;
  let inFrom = false;
  let expectTable = false;
  let driver: string | null = null;
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i] ?? "";
    const word = tok.toLowerCase();
    if (word.startsWith("json_")) return null;
    // Anywhere, not only at depth 0: `COALESCE(MAX(x), 0)` aggregates at the top level too.
    if (AGGREGATES.has(word) && tokens[i + 1] === "(") return null;
    if (tok === "(") {
      if (expectTable) return null;
      depth++;
      continue;
    }
    if (tok === ")") {
      depth--;
      continue;
    }
    if (depth > 0) continue;
    if (expectTable) {
      if (!defs.has(tok)) return null;
      driver ??= tok;
      expectTable = false;
      continue;
    }
    if (NOT_PLAIN.has(word)) return null;
    if (word === "from") {
      if (driver !== null) return null;
      inFrom = true;
      expectTable = true;
    } else if (inFrom && (word === "join" || tok === ",")) expectTable = true;
    else if (FROM_ENDS.has(word)) inFrom = false;
  }
  return expectTable ? null : driver;
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

/** The one statement that stands for every statement not run: no rows. */
const NO_ROWS = "SELECT NULL WHERE 0";

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
  readonly #beforeCreate: ((table: string) => void) | undefined;

  /** `beforeCreate` runs just before a table is made, in the same synchronous step. */
  constructor(
    sql: Pick<SqlStorage, "exec">,
    schema: readonly string[],
    beforeCreate?: (table: string) => void,
  ) {
    this.#sql = sql;
    this.#beforeCreate = beforeCreate;
    const { defs, plans } = parsed(schema);
    this.#defs = defs;
    this.#plans = plans;
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
      // A read with no rows while a table was never written is not run, so that it costs the
      // object no prepared statement (workerd keeps one per statement text an object runs, for
      // the object's life). Once only per process, the rewritten form runs, so that an error
      // SQLite would raise on its text (an unknown column) is raised as before.
      if (p.driver !== null && !this.#existing.has(p.driver) && p.checked.has(key))
        return this.#sql.exec<T>(NO_ROWS);
      let q = p.rewritten.get(key);
      if (q === undefined) {
        q = rewrite(query, missing, this.#defs);
        p.rewritten.set(key, q);
      }
      const cursor = this.#sql.exec<T>(q, ...bindings);
      if (p.driver !== null) p.checked.add(key);
      return cursor;
    }
    if (p.verb === "change" && p.target !== null && !this.#existing.has(p.target)) {
      // Nothing to change in a table that was never written: not run, no rows, like SQLite.
      return this.#sql.exec<T>(NO_ROWS);
    }
    for (const t of missing) this.#create(t);
    return this.#sql.exec<T>(query, ...bindings);
  }

  #create(table: string): void {
    this.#beforeCreate?.(table);
    for (const stmt of this.#defs.get(table)?.ddl ?? []) this.#sql.exec(stmt);
    this.#existing.add(table);
  }

  #readExisting(): void {
    const rows = this.#sql.exec("SELECT name FROM sqlite_master WHERE type = 'table'").toArray();
    this.#existing.clear();
    for (const r of rows) this.#existing.add(String(r.name));
  }
}
