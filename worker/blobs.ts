/**
 * `BlobOwner`: one Durable Object per identity (per hub) holding that identity's attachment
 * ledger (worker/relay/blobs.ts, PROTOCOL.md §7.10). Its RPC methods are called by the hub's
 * object (`mint`, for an authenticated `blob_upload` frame) and by the Worker's PUT route
 * (`begin`, `end`); its alarm deletes expired blobs from R2. The bytes themselves never pass
 * through it: the Worker streams them between the client and R2.
 */
import { DurableObject } from "cloudflare:workers";
import {
  type BeginResult,
  BlobLedger,
  blobKey,
  blobPolicyFromEnv,
  type MintResult,
} from "./relay/blobs";

export interface BlobEnv {
  BLOBS: R2Bucket;
  BLOB_QUOTA_BYTES?: string;
  BLOB_TTL_SEC?: string;
}

export class BlobOwner extends DurableObject<BlobEnv> {
  readonly #ledger: BlobLedger;

  constructor(ctx: DurableObjectState, env: BlobEnv) {
    super(ctx, env);
    this.#ledger = new BlobLedger(ctx.storage.sql, blobPolicyFromEnv(env));
  }

  /** Reserve an upload; the ticket names this object so the Worker can route the PUT here. */
  async mint(size: number): Promise<MintResult & { owner: string }> {
    const r = this.#ledger.mint(size, Date.now());
    if (r.ok) await this.#schedule();
    return { ...r, owner: this.ctx.id.toString() };
  }

  async begin(blob: string, token: string, length: number): Promise<BeginResult> {
    const r = this.#ledger.begin(blob, token, length, Date.now());
    if (r.ok) await this.#schedule();
    return r;
  }

  /** The Worker's upload finished (`stored`) or failed; a failed one is deleted from R2 now. */
  async end(blob: string, stored: boolean): Promise<number | null> {
    const expires = this.#ledger.end(blob, stored, Date.now());
    if (!stored) await this.env.BLOBS.delete(blobKey(blob));
    await this.#schedule();
    return expires;
  }

  /** What this identity holds (tests and operators; no blob ids). */
  async usage(): Promise<{ bytes: number; count: number }> {
    return this.#ledger.usage();
  }

  override async alarm(): Promise<void> {
    const expired = this.#ledger.takeExpired(Date.now());
    if (expired.length > 0) await this.env.BLOBS.delete(expired.map(blobKey));
    await this.#schedule();
  }

  async #schedule(): Promise<void> {
    const next = this.#ledger.nextExpiry();
    if (next === null) {
      await this.ctx.storage.deleteAlarm();
      return;
    }
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > next) await this.ctx.storage.setAlarm(next);
  }
}
