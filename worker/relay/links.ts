/**
 * The link rendezvous (PROTOCOL.md §4.8.3): a new device, not yet authenticated, leaves its
 * offer under the code's rendezvous; a device of the identity fetches it and sends back a sealed
 * answer, which the relay hands to the waiting socket. The relay cannot read or forge either
 * (both are MAC'd with the code's secret half, the transfer sealed to the offer's link key); it
 * only keeps the offer until the socket authenticates, closes, or the offer expires.
 *
 * Offers are in SQLite, not memory, so an object that hibernates while the person reaches for the
 * other device still has them; the waiting socket finds its way back through its attachment.
 */
import { LinkOffer, parseUnknown } from "../../shared/protocol";
import { LazyTables } from "./lazy-tables";

/** This module's tables, made at first write (lazy-tables.ts). */
export const LINK_SCHEMA = [
  `CREATE TABLE IF NOT EXISTS link_offers (
     rendezvous TEXT PRIMARY KEY,
     offer TEXT NOT NULL,
     expires_at INTEGER NOT NULL
   ) STRICT`,
];

export class LinkStore {
  /** The object's SQL, its table made at first write (lazy-tables.ts). */
  readonly #sql: LazyTables;

  constructor(sql: Pick<SqlStorage, "exec">) {
    this.#sql = new LazyTables(sql, LINK_SCHEMA);
  }

  /** Keep `offer` under `rendezvous` until `expiresAt`; false if a live offer holds it. */
  put(rendezvous: string, offer: LinkOffer, now: number, expiresAt: number): boolean {
    this.#sql.exec(
      "DELETE FROM link_offers WHERE rendezvous = ? AND expires_at <= ?",
      rendezvous,
      now,
    );
    const inserted = this.#sql
      .exec(
        `INSERT INTO link_offers (rendezvous, offer, expires_at) VALUES (?, ?, ?)
         ON CONFLICT (rendezvous) DO NOTHING RETURNING 1`,
        rendezvous,
        JSON.stringify(offer),
        expiresAt,
      )
      .toArray();
    return inserted.length === 1;
  }

  /** The live offer under `rendezvous`, or null. Stored rows are input too: parsed again. */
  get(rendezvous: string, now: number): LinkOffer | null {
    const row = this.#sql
      .exec(
        "SELECT offer FROM link_offers WHERE rendezvous = ? AND expires_at > ?",
        rendezvous,
        now,
      )
      .toArray()[0];
    if (row === undefined || typeof row.offer !== "string") return null;
    let value: unknown;
    try {
      value = JSON.parse(row.offer);
    } catch {
      return null;
    }
    const r = parseUnknown(LinkOffer, value);
    return r.ok ? r.value : null;
  }

  delete(rendezvous: string): void {
    this.#sql.exec("DELETE FROM link_offers WHERE rendezvous = ?", rendezvous);
  }

  /** Drop expired offers (their sockets were closed by the same alarm). */
  purge(now: number): void {
    this.#sql.exec("DELETE FROM link_offers WHERE expires_at <= ?", now);
  }
}
