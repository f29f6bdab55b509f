/**
 * The key directory of one hub (PROTOCOL.md §7.4, §8.3.5), the logic of the `Directory` Durable
 * Object (worker/directory.ts; `idFromName(hub + "/dir")`). It owns each user's one-time
 * prekeys, one-time KEM prekeys, PQ prekey and the per-requester one-time prekey quota; the hub's
 * object owns the name ↔ identity binding and the signed prekey, and calls this one.
 *
 * The hub is the authority on whose entry a name is: every call carries the owner the hub has
 * bound ("<identity key> <device>"). A call naming another owner than the keys were stored for
 * drops them first, so keys uploaded for one identity or device are never handed out for
 * another, whatever order calls arrive in or fail (a reclaim or device takeover whose directory
 * call failed is made good by the next call). Nothing else of the caller is trusted: the Worker
 * routes no request here (worker/index.ts), only the hub's object holds a stub.
 */
import {
  type ErrorCode,
  LIMITS,
  type OneTimeKemPrekey,
  type OneTimePrekey,
  type PqPrekey,
} from "../../shared/protocol";
import { checkKemUpload, checkUpload } from "./directory";
import { PrekeyStore } from "./prekey-store";
import { BucketMap } from "./ratelimit";

/** Quota rows dropped per call once refilled, so cleaning up stays small and needs no alarm. */
const PURGE_PER_CALL = 16;

/** What a bundle takes from the directory (§7.4): the one-time and PQ parts. */
export interface TakenKeys {
  oneTimePrekey: OneTimePrekey | null;
  pqPrekey: PqPrekey | null;
  oneTimeKemPrekey: OneTimeKemPrekey | null;
  /** One-time prekeys left after this take. */
  remaining: number;
}

export type UploadResult = { ok: true } | { ok: false; code: ErrorCode };

/**
 * The directory's calls as the hub makes them (one object per hub; `hub` picks it). Every method
 * may reject (the object restarted or was unreachable); the hub answers `internal` then.
 */
export interface DirectoryGateway {
  /** The user authenticated as `owner`: set its PQ prekey; the one-time prekeys left. */
  bind(hub: string, username: string, owner: string, pq: PqPrekey | null): Promise<number>;
  upload(
    hub: string,
    username: string,
    owner: string,
    keys: readonly OneTimePrekey[],
    kem: readonly OneTimeKemPrekey[],
  ): Promise<UploadResult>;
  take(
    hub: string,
    username: string,
    owner: string,
    spkId: number,
    requester: string,
    now: number,
  ): Promise<TakenKeys>;
  /** One-time prekeys `owner` has left (0 if the stored ones are another owner's). */
  remaining(hub: string, username: string, owner: string): Promise<number>;
}

/** The owner of a binding as the directory knows it: identity key and device (§4.3). */
export function prekeyOwner(identityKey: string, device: string | null): string {
  return `${identityKey} ${device ?? ""}`;
}

export class KeyDirectory {
  readonly store: PrekeyStore;
  /** One-time prekeys each requester may take from each user (§7.4; SECURITY.md L16). */
  readonly #quota: BucketMap;

  constructor(sql: Pick<SqlStorage, "exec">) {
    this.store = new PrekeyStore(sql);
    this.store.migrate();
    const store = this.store;
    this.#quota = new BucketMap(
      {
        ratePerSec: 1 / LIMITS.oneTimePrekeyRefillSec,
        burst: LIMITS.oneTimePrekeyBurstPerRequester,
      },
      LIMITS.maxOnlinePerHub * 16,
      { load: (k) => store.loadQuota(k), save: (k, b, full) => store.saveQuota(k, b, full) },
      1,
    );
  }

  /** Make `owner` the holder of `username`'s entry, dropping another owner's keys. */
  #own(username: string, owner: string): void {
    const held = this.store.ownerOf(username);
    if (held === owner) return;
    if (held !== null) this.store.wipe(username);
    this.store.setOwner(username, owner);
  }

  bind(username: string, owner: string, pq: PqPrekey | null): number {
    this.#own(username, owner);
    this.store.setPqPrekey(username, pq);
    return this.store.countOneTimePrekeys(username);
  }

  /** All-or-nothing: the bounds of directory.ts are checked before anything is stored. */
  upload(
    username: string,
    owner: string,
    keys: readonly OneTimePrekey[],
    kem: readonly OneTimeKemPrekey[],
  ): UploadResult {
    this.#own(username, owner);
    const { store } = this;
    const check = checkUpload(
      keys,
      store.countOneTimePrekeys(username),
      store.countNewOneTimePrekeyIds(username, keys),
    );
    if (!check.ok) return check;
    const kemCheck = checkKemUpload(
      kem,
      store.countOneTimeKemPrekeys(username),
      store.countNewOneTimeKemPrekeyIds(username, kem),
    );
    if (!kemCheck.ok) return kemCheck;
    store.putOneTimePrekeys(username, keys);
    store.putOneTimeKemPrekeys(username, kem);
    return { ok: true };
  }

  /**
   * Per requester and user, a few one-time prekeys, then one per refill period (§7.4): past that
   * the bundle carries the signed and last-resort prekeys only, and the stock stays for others.
   * Keyed by the requester's identity key, so a name reclaimed by another identity starts afresh.
   * Charged only when there is a key to hand out, so the stored quota rows are bounded by the
   * keys handed out within a refill period (SECURITY.md L16).
   */
  take(username: string, owner: string, spkId: number, requester: string, now: number): TakenKeys {
    this.#own(username, owner);
    const { store } = this;
    store.purgeFullQuota(now, PURGE_PER_CALL);
    const pqPrekey = store.getPqPrekey(username, spkId);
    const stock =
      store.countOneTimePrekeys(username) > 0 ||
      (pqPrekey !== null && store.countOneTimeKemPrekeys(username) > 0);
    const mayTake = stock && this.#quota.take(`${username}\n${requester}`, now);
    const oneTimePrekey = mayTake ? store.takeOneTimePrekey(username) : null;
    // One-time KEM prekeys are handed out only with the PQ prekey they go with (§8.3.5).
    const oneTimeKemPrekey =
      pqPrekey === null || !mayTake ? null : store.takeOneTimeKemPrekey(username);
    return {
      oneTimePrekey,
      pqPrekey,
      oneTimeKemPrekey,
      remaining: store.countOneTimePrekeys(username),
    };
  }

  remaining(username: string, owner: string): number {
    return this.store.ownerOf(username) === owner ? this.store.countOneTimePrekeys(username) : 0;
  }
}
