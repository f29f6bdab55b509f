/**
 * One identity's attachment blobs (PROTOCOL.md §7.10): upload tickets, the quota they reserve,
 * and the expiry of what was stored. The state of one owner only — it lives in that owner's
 * `BlobOwner` object (worker/blobs.ts), never in a hub — and it is small: one row per blob,
 * holding a size, a state, an expiry and the SHA-256 of the ticket secret. The relay never
 * learns what a blob is, which message carries it, or who downloads it.
 *
 * Row states: `ticket` (reserved; PUT not yet started), `uploading` (the Worker streams it into
 * R2), `stored`. Every row has an expiry; the owner object's alarm deletes expired rows and their
 * R2 objects (a half-written upload or a blob past its TTL alike).
 */

import { constantTimeEqual } from "../../shared/crypto/compare";
import { sha256 } from "../../shared/crypto/kdf";
import { randomBytes } from "../../shared/crypto/random";
import { fromB64u, toB64u } from "../../shared/encoding";
import { LIMITS } from "../../shared/protocol";

/** Settings of a deployment (env BLOB_QUOTA_BYTES, BLOB_TTL_SEC; defaults in LIMITS). */
export interface BlobPolicy {
  quotaBytes: number;
  ttlMs: number;
}

export function blobPolicyFromEnv(env: { BLOB_QUOTA_BYTES?: string; BLOB_TTL_SEC?: string }) {
  const num = (raw: string | undefined, fallback: number) => {
    const n = raw === undefined ? Number.NaN : Number(raw);
    return Number.isSafeInteger(n) && n > 0 ? n : fallback;
  };
  return {
    quotaBytes: num(env.BLOB_QUOTA_BYTES, LIMITS.blobQuotaBytes),
    ttlMs: num(env.BLOB_TTL_SEC, LIMITS.blobTtlSec) * 1000,
  } satisfies BlobPolicy;
}

export type MintResult =
  | { ok: true; blob: string; token: string; expires: number }
  | { ok: false; code: "blob_too_large" | "blob_quota" };

export type BeginResult =
  | { ok: true; keepUntil: number }
  | { ok: false; code: "ticket_invalid" | "ticket_expired" | "size_mismatch" };

/** R2 key of a blob: a prefix of its own, so the bucket can hold nothing else by mistake. */
export function blobKey(blob: string): string {
  return `blob/${blob}`;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS blobs (
  id TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  state TEXT NOT NULL,
  token_hash TEXT NOT NULL,
  expires INTEGER NOT NULL
)`;

const num = (x: unknown): number => (typeof x === "number" ? x : Number(x ?? 0));

export class BlobLedger {
  constructor(
    private readonly sql: Pick<SqlStorage, "exec">,
    private readonly policy: BlobPolicy,
  ) {
    sql.exec(SCHEMA);
  }

  /** Bytes reserved or stored, and the number of rows. */
  usage(): { bytes: number; count: number } {
    const r = this.sql.exec("SELECT COALESCE(SUM(size), 0) AS b, COUNT(*) AS n FROM blobs").one();
    return { bytes: num(r.b), count: num(r.n) };
  }

  /** Reserve `size` bytes for one upload: a fresh unguessable blob id and ticket secret. */
  mint(size: number, now: number): MintResult {
    if (!Number.isSafeInteger(size) || size < 1 || size > LIMITS.maxBlobBytes) {
      return { ok: false, code: "blob_too_large" };
    }
    const u = this.usage();
    if (u.bytes + size > this.policy.quotaBytes || u.count >= LIMITS.maxBlobsPerIdentity) {
      return { ok: false, code: "blob_quota" };
    }
    const blob = toB64u(randomBytes(32));
    const token = toB64u(randomBytes(32));
    const expires = now + LIMITS.blobTicketTtlSec * 1000;
    this.sql.exec(
      "INSERT INTO blobs (id, size, state, token_hash, expires) VALUES (?, ?, 'ticket', ?, ?)",
      blob,
      size,
      toB64u(sha256(fromB64u(token))),
      expires,
    );
    return { ok: true, blob, token, expires };
  }

  /**
   * The Worker is about to stream `length` bytes into `blob`: the ticket must be this blob's,
   * unused and unexpired, and the length the one it was minted for. A ticket works once.
   */
  begin(blob: string, token: string, length: number, now: number): BeginResult {
    const row = this.sql
      .exec("SELECT size, state, token_hash, expires FROM blobs WHERE id = ?", blob)
      .toArray()[0];
    let tokenBytes: Uint8Array;
    try {
      tokenBytes = fromB64u(token);
    } catch {
      return { ok: false, code: "ticket_invalid" };
    }
    if (
      row === undefined ||
      row.state !== "ticket" ||
      !constantTimeEqual(fromB64u(String(row.token_hash)), sha256(tokenBytes))
    ) {
      return { ok: false, code: "ticket_invalid" };
    }
    if (num(row.expires) <= now) return { ok: false, code: "ticket_expired" };
    if (num(row.size) !== length) return { ok: false, code: "size_mismatch" };
    const expires = now + LIMITS.blobUploadWindowSec * 1000;
    this.sql.exec("UPDATE blobs SET state = 'uploading', expires = ? WHERE id = ?", expires, blob);
    // The R2 object carries this expiry, so GET refuses it from then on, before the alarm runs
    // (the ledger's own expiry, set by `end`, is a little later).
    return { ok: true, keepUntil: now + this.policy.ttlMs };
  }

  /**
   * The upload ended. Stored: kept until its TTL, the expiry the R2 object carries too. Failed:
   * the row goes now (quota released); the caller deletes whatever R2 holds under the key.
   * Returns the stored blob's expiry, or null.
   */
  end(blob: string, stored: boolean, now: number): number | null {
    if (!stored) {
      this.sql.exec("DELETE FROM blobs WHERE id = ? AND state = 'uploading'", blob);
      return null;
    }
    const expires = now + this.policy.ttlMs;
    const updated = this.sql
      .exec(
        "UPDATE blobs SET state = 'stored', expires = ? WHERE id = ? AND state = 'uploading' RETURNING id",
        expires,
        blob,
      )
      .toArray();
    return updated.length === 1 ? expires : null;
  }

  /** Rows past their expiry, removed; their ids, whose R2 objects the caller deletes. */
  takeExpired(now: number): string[] {
    const ids = this.sql
      .exec("SELECT id FROM blobs WHERE expires <= ? ORDER BY expires LIMIT 1000", now)
      .toArray()
      .map((r) => String(r.id));
    for (const id of ids) this.sql.exec("DELETE FROM blobs WHERE id = ?", id);
    return ids;
  }

  /** When the alarm must next run, or null when nothing is held. */
  nextExpiry(): number | null {
    const r = this.sql.exec("SELECT MIN(expires) AS t FROM blobs").one();
    return r.t === null ? null : num(r.t);
  }
}
