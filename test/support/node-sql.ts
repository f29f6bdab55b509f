/**
 * A Durable Object's SQL storage (`ctx.storage.sql`) for Node tests: SQLite compiled to wasm
 * (sql.js, which ships its .wasm in the package, so nothing is fetched) behind the part of the
 * `SqlStorage` API the relay's store uses, `exec(query, ...bindings)` and its cursor.
 *
 * Where workerd and this differ:
 * - a cursor is filled when `exec` runs (workerd steps lazily); the store always reads its
 *   cursors to the end, and every write happens at `exec` in both;
 * - `rowsRead` / `rowsWritten` and `raw()` throw: sql.js does not count rows read, and nothing
 *   in the relay asks, so a future caller fails loudly instead of reading made-up numbers;
 * - one statement per `exec` (workerd allows several): the store never sends more.
 */
import { setFlagsFromString } from "node:v8";
import initSqlJs, { type Database, type SqlValue, type Statement } from "sql.js";

// V8 recompiles hot wasm with its optimising tier in the background: for SQLite's 700 KB module
// that took more CPU than a whole scenario file spends in SQL, and test files run in processes
// of their own. The baseline tier alone halves the suite's cold start. The flag is V8-global and
// read when a module is compiled, so it is on only while SQLite's module compiles: the Node
// crypto backend's ML-KEM (PQClean in wasm, node/mlkem-pqclean.ts), compiled later in the same
// process (tests, the bench's relay harness), keeps the optimising tier — baseline-only it ran
// ~4× slower (an encapsulation ~240 instead of ~60 µs). A module keeps the tiers it was compiled
// with; undoing the flag also needs the two it turned off (V8 flag implications are one-way).
setFlagsFromString("--liftoff-only");
const SQL = await initSqlJs().finally(() => {
  setFlagsFromString("--no-liftoff-only");
  setFlagsFromString("--wasm-tier-up");
  setFlagsFromString("--wasm-dynamic-tiering");
});

type Row = Record<string, SqlStorageValue>;

class NodeSqlCursor<T extends Row> implements SqlStorageCursor<T> {
  readonly #rows: T[];
  #at = 0;
  readonly columnNames: string[];

  constructor(columnNames: string[], rows: T[]) {
    this.columnNames = columnNames;
    this.#rows = rows;
  }

  next(): { done?: false; value: T } | { done: true; value?: never } {
    const value = this.#rows[this.#at];
    if (value === undefined) return { done: true };
    this.#at++;
    return { value };
  }

  toArray(): T[] {
    const rest = this.#rows.slice(this.#at);
    this.#at = this.#rows.length;
    return rest;
  }

  /** Exactly one row, else throws (as workerd's does). */
  one(): T {
    const rest = this.toArray();
    if (rest.length !== 1) {
      throw new Error(`Expected exactly one result from SQL query, but got ${rest.length}.`);
    }
    return rest[0] as T;
  }

  raw<U extends SqlStorageValue[]>(): IterableIterator<U> {
    throw new Error("node-sql: raw() is not provided (the relay does not use it)");
  }

  get rowsRead(): number {
    throw new Error("node-sql: rowsRead is not counted by sql.js");
  }

  get rowsWritten(): number {
    throw new Error("node-sql: rowsWritten is not counted here");
  }

  [Symbol.iterator](): IterableIterator<T> {
    return {
      next: () => this.next() as IteratorResult<T>,
      [Symbol.iterator]() {
        return this;
      },
    };
  }
}

function binding(v: unknown): SqlValue {
  if (v === null || typeof v === "string") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new TypeError("node-sql: non-finite number binding");
    return v;
  }
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new TypeError(`node-sql: unsupported binding type ${typeof v}`);
}

function column(v: SqlValue): SqlStorageValue {
  // Blobs come back as ArrayBuffer in workerd.
  if (v instanceof Uint8Array) return v.slice().buffer;
  return v;
}

/** One in-memory SQLite database: a fresh object's storage, kept across object restarts. */
export class NodeSql implements Pick<SqlStorage, "exec"> {
  readonly #db: Database = new SQL.Database();

  constructor() {
    // One connection, so it may keep its lock, and the rollback journal in memory rather than in
    // emscripten's in-memory file system: the same statement atomicity without a file lookup
    // and copy per transaction (a third of this file's cost in a scenario run).
    this.#db.run("PRAGMA locking_mode = EXCLUSIVE");
    this.#db.run("PRAGMA journal_mode = MEMORY");
  }
  /** Prepared statements by query text: the store's queries are a fixed set of strings. */
  readonly #statements = new Map<string, Statement>();

  exec<T extends Row>(query: string, ...bindings: unknown[]): SqlStorageCursor<T> {
    const stmt = this.#prepare(query);
    try {
      stmt.bind(bindings.map(binding));
      const names = stmt.getColumnNames();
      const rows: T[] = [];
      while (stmt.step()) {
        const values = stmt.get();
        const row: Row = {};
        names.forEach((name, i) => {
          row[name] = column(values[i] ?? null);
        });
        rows.push(row as T);
      }
      return new NodeSqlCursor(names, rows);
    } finally {
      stmt.reset();
    }
  }

  #prepare(query: string): Statement {
    const hit = this.#statements.get(query);
    if (hit !== undefined) return hit;
    const it = this.#db.iterateStatements(query);
    const first = it.next();
    if (first.done === true) throw new Error("node-sql: empty query");
    if (it.getRemainingSQL().trim() !== "") {
      first.value.free();
      throw new Error("node-sql: one statement per exec");
    }
    this.#statements.set(query, first.value);
    return first.value;
  }
}
