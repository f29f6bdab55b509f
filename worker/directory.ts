/**
 * `Directory`: one Durable Object per hub (`idFromName(hub + "/dir")`) holding the hub's key
 * directory (worker/relay/key-directory.ts, PROTOCOL.md §7.4). Only the hub's object calls it,
 * through these RPC methods; it has no `fetch`, and the Worker routes no request to it.
 */
import { DurableObject } from "cloudflare:workers";
import type { OneTimeKemPrekey, OneTimePrekey, PqPrekey } from "../shared/protocol";
import { KeyDirectory, type TakenKeys, type UploadResult } from "./relay/key-directory";

export class Directory extends DurableObject {
  readonly #keys: KeyDirectory;

  constructor(ctx: DurableObjectState, env: unknown) {
    super(ctx, env as never);
    this.#keys = new KeyDirectory(ctx.storage.sql);
  }

  async bind(username: string, owner: string, pq: PqPrekey | null): Promise<number> {
    return this.#keys.bind(username, owner, pq);
  }

  async upload(
    username: string,
    owner: string,
    keys: OneTimePrekey[],
    kem: OneTimeKemPrekey[],
  ): Promise<UploadResult> {
    return this.#keys.upload(username, owner, keys, kem);
  }

  async take(
    username: string,
    owner: string,
    spkId: number,
    requester: string,
    now: number,
  ): Promise<TakenKeys> {
    return this.#keys.take(username, owner, spkId, requester, now);
  }

  async remaining(username: string, owner: string): Promise<number> {
    return this.#keys.remaining(username, owner);
  }
}
