/**
 * Reads of the relay's storage for tests (PROTOCOL.md §7.3, §7.8). Group messages are stored once
 * in `group_log` with a roster snapshot; a *copy* is one (message, recipient) pair the relay
 * still holds for delivery: the recipient is on the snapshot, is not the sender, was not skipped,
 * and its group acknowledgement cursor is below the message.
 */
import { env, runInDurableObject } from "cloudflare:test";
import { LazyTables } from "../../../worker/relay/lazy-tables";
import { LINK_SCHEMA } from "../../../worker/relay/links";
import { PREKEY_SCHEMA } from "../../../worker/relay/prekey-store";
import { STORE_SCHEMA } from "../../../worker/relay/store";

/** Every table a relay or directory object may make (each at its first write). */
const RELAY_TABLES = [...STORE_SCHEMA, ...PREKEY_SCHEMA, ...LINK_SCHEMA];

/**
 * An object's storage as the relay's own code sees it (worker/relay/lazy-tables.ts): a table not
 * written yet reads as empty, and one a test writes to is made as the relay would make it.
 */
export const relaySql = (state: DurableObjectState): LazyTables =>
  new LazyTables(state.storage.sql, RELAY_TABLES);

export const stubFor = (hub: string) => env.RELAY.get(env.RELAY.idFromName(hub));
/** The hub's key directory object (worker/directory.ts). */
export const directoryFor = (hub: string) =>
  env.DIRECTORY.get(env.DIRECTORY.idFromName(`${hub}/dir`));

/** A `SELECT COUNT(*) AS n` over the hub's directory object's storage. */
export function countInDirectory(hub: string, sql: string): Promise<number> {
  return runInDurableObject(directoryFor(hub), (_i, state) =>
    Number(relaySql(state).exec(sql).one().n),
  );
}

const COPIES = `SELECT g.mid AS mid, g.sender AS sender, r.username AS recipient
  FROM group_log g JOIN roster_members r ON r.roster = g.roster
  LEFT JOIN group_acks a ON a.username = r.username
  WHERE r.username != g.sender AND COALESCE(a.through, 0) < g.mid
    AND (g.skipped IS NULL OR r.username NOT IN (SELECT value FROM json_each(g.skipped)))`;

/** Group copies still held, filtered by `where` over the columns mid, sender, recipient. */
export function groupCopies(hub: string, where = "1", ...args: string[]): Promise<number> {
  return runInDurableObject(stubFor(hub), (_i, state) =>
    Number(
      relaySql(state)
        .exec(`SELECT COUNT(*) AS n FROM (${COPIES}) WHERE ${where}`, ...args)
        .one().n,
    ),
  );
}

/** Rows of a table (or any `SELECT COUNT(*)`-able expression). */
export function countTable(hub: string, table: string): Promise<number> {
  return runInDurableObject(stubFor(hub), (_i, state) =>
    Number(relaySql(state).exec(`SELECT COUNT(*) AS n FROM ${table}`).one().n),
  );
}

/** Wait (bounded) until `cond` holds: for state written by the relay's flush timer. */
export async function until(cond: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
