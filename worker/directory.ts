/**
 * `Directory`: one Durable Object per hub (`idFromName(hub + "/dir")`) holding the hub's
 * name ↔ identity bindings and key directory (worker/relay/key-directory.ts, PROTOCOL.md §4.3,
 * §7.4). Only the hub's object calls it, through these RPC methods; it has no `fetch`, and the
 * Worker routes no request to it.
 */
import { DurableObject } from "cloudflare:workers";
import type { OneTimeKemPrekey, OneTimePrekey, PqPrekey, SignedPrekey } from "../shared/protocol";
import {
  type Claim,
  type ClaimResult,
  KeyDirectory,
  type SeedEntry,
  type TakenKeys,
  type UploadResult,
} from "./relay/key-directory";

export class Directory extends DurableObject {
  readonly #keys: KeyDirectory;

  constructor(ctx: DurableObjectState, env: unknown) {
    super(ctx, env as never);
    this.#keys = new KeyDirectory(ctx.storage.sql);
  }

  async claim(claim: Claim): Promise<ClaimResult> {
    return this.#keys.claim(claim);
  }

  async bind(
    entry: string,
    owner: string,
    spk: SignedPrekey,
    pq: PqPrekey | null,
  ): Promise<number> {
    return this.#keys.bind(entry, owner, spk, pq);
  }

  async upload(
    entry: string,
    owner: string,
    keys: OneTimePrekey[],
    kem: OneTimeKemPrekey[],
    spk: SignedPrekey | null,
  ): Promise<UploadResult> {
    return this.#keys.upload(entry, owner, keys, kem, spk);
  }

  async take(entry: string, owner: string, requester: string, now: number): Promise<TakenKeys> {
    return this.#keys.take(entry, owner, requester, now);
  }

  async remaining(entry: string, owner: string): Promise<number> {
    return this.#keys.remaining(entry, owner);
  }

  async seed(entries: SeedEntry[]): Promise<void> {
    this.#keys.seed(entries);
  }
}
