/**
 * The key directory of one hub (PROTOCOL.md §4.3, §7.4, §8.3.5), the logic of the `Directory`
 * Durable Object (worker/directory.ts; `idFromName(hub + "/dir")`). It is the single writer of
 * the hub's name ↔ identity bindings (one identity per name, one name per identity), the
 * registration bounds and the user count; and of each entry's signed prekey, one-time prekeys,
 * one-time KEM prekeys and PQ prekey, and the per-requester one-time prekey quota.
 *
 * On users' routes (PROTOCOL.md §4.1) the same class keeps the prekeys of one user's entries
 * (its name and its linked devices' addresses) in that user's own object, and the Directory
 * object keeps only the bindings and registrations: a reconnect, a bundle fetch and an upload
 * then never reach the one object every user of the hub shares.
 *
 * The caller (the hub's object) judges what only it knows: whether the transcript verified,
 * whether a name's holder abandoned it (online, last seen, undelivered items), and which device
 * of an identity is current or listed. Every call carries the owner the caller has bound
 * ("<identity key> <device>"); a call naming another owner than the keys were stored for drops
 * them first, so keys uploaded for one identity or device are never handed out for another,
 * whatever order calls arrive in or fail (a reclaim or device takeover whose directory call
 * failed is made good by the next call). Nothing else of the caller is trusted: the Worker routes
 * no request here (worker/index.ts), only the relay's objects hold stubs.
 */
import {
  type ErrorCode,
  LIMITS,
  type OneTimeKemPrekey,
  type OneTimePrekey,
  type PqPrekey,
  type SignedPrekey,
} from "../../shared/protocol";
import { checkKemUpload, checkUpload } from "./directory";
import { PrekeyStore, type SeedEntry } from "./prekey-store";
import { BucketMap } from "./ratelimit";

export type { SeedEntry };

const DAY_MS = 24 * 60 * 60 * 1000;

/** Quota rows dropped per call once refilled, so cleaning up stays small and needs no alarm. */
const PURGE_PER_CALL = 16;

/** What a bundle takes from the directory (§7.4). */
export interface TakenKeys {
  /** The entry's signed prekey; null when the entry has none (for this owner). */
  signedPrekey: SignedPrekey | null;
  oneTimePrekey: OneTimePrekey | null;
  pqPrekey: PqPrekey | null;
  oneTimeKemPrekey: OneTimeKemPrekey | null;
  /** One-time prekeys left after this take. */
  remaining: number;
}

export type UploadResult = { ok: true } | { ok: false; code: ErrorCode };

/** An `auth` for a username whose transcript the caller verified (§4.3). */
export interface Claim {
  username: string;
  identityKey: string;
  device: string;
  signedPrekey: SignedPrekey;
  pq: PqPrekey | null;
  /** The caller judged the name's holder to have abandoned it (§4.3 reclaim). */
  reclaimable: boolean;
  /** The caller takes no further connection (§4.3 step 6: its online bound). */
  full: boolean;
  /** The address buckets a new name counts toward, with their daily bounds (§4.3). */
  buckets: ReadonlyArray<{ key: string; max: number }>;
  now: number;
  /**
   * The caller is the name's own object (a user's route, PROTOCOL.md §4.1): it keeps the name's
   * prekeys itself, so the directory stores none, and from now on only that object may reclaim
   * the name (only it knows whether its holder abandoned it).
   */
  routed?: true;
}

export type ClaimRefusal =
  | "name_taken"
  | "identity_bound"
  | "registration_limited"
  | "limit_reached";

export type ClaimResult =
  | {
      ok: true;
      /** The name was bound to this identity by this claim (a registration or a reclaim). */
      registered: boolean;
      /** One-time prekeys the entry has left (0 for a `routed` claim: the caller keeps them). */
      remaining: number;
    }
  | { ok: false; code: ClaimRefusal };

/**
 * The directory's calls as the hub makes them (one object per hub; `hub` picks it). Every method
 * may reject (the object restarted or was unreachable); the hub answers `internal` then. Each is
 * safe to make again: a claim the directory applied is found bound to the same identity.
 */
export interface DirectoryGateway {
  /** Bind a username to an identity and its current device (§4.3), or say why not. */
  claim(hub: string, claim: Claim): Promise<ClaimResult>;
  /**
   * A linked device connected as `owner` (§4.7): its entry (its address) takes its signed and PQ
   * prekeys; the one-time prekeys left.
   */
  bind(
    hub: string,
    entry: string,
    owner: string,
    spk: SignedPrekey,
    pq: PqPrekey | null,
  ): Promise<number>;
  upload(
    hub: string,
    entry: string,
    owner: string,
    keys: readonly OneTimePrekey[],
    kem: readonly OneTimeKemPrekey[],
    spk: SignedPrekey | null,
  ): Promise<UploadResult>;
  take(
    hub: string,
    entry: string,
    owner: string,
    requester: string,
    now: number,
  ): Promise<TakenKeys>;
  /** One-time prekeys `owner` has left (0 if the stored ones are another owner's). */
  remaining(hub: string, entry: string, owner: string): Promise<number>;
  /** Entries the hub held before the directory owned bindings (store.ts `directory_seed`). */
  seed(hub: string, entries: readonly SeedEntry[]): Promise<void>;
}

/** The owner of a binding as the directory knows it: identity key and device (§4.3). */
export function prekeyOwner(identityKey: string, device: string | null): string {
  return `${identityKey} ${device ?? ""}`;
}

export class KeyDirectory {
  readonly store: PrekeyStore;
  /** One-time prekeys each requester may take from each user (§7.4; SECURITY.md L16). */
  readonly #quota: BucketMap;

  /** `beforeCreate`: see LazyTables (a user's object marks its prekey tables as current). */
  constructor(sql: Pick<SqlStorage, "exec">, beforeCreate?: (table: string) => void) {
    this.store = new PrekeyStore(sql, beforeCreate);
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

  /**
   * §4.3 steps 3, 4, 6 and 7, in that order: a name another identity holds and its holder did
   * not abandon; an identity bound to another name; the caller full, or a new name past the
   * hub's users; a new name past the daily registrations of the client's address. A name this
   * identity holds already is not a registration, so a claim made again after a lost answer is
   * judged as the first.
   */
  claim(c: Claim): ClaimResult {
    const { store } = this;
    store.purgeRegistrations(c.now - DAY_MS, PURGE_PER_CALL);
    const held = store.identityOf(c.username);
    const reclaim = held !== null && held !== c.identityKey;
    if (reclaim && !c.reclaimable) return { ok: false, code: "name_taken" };
    // The hub's object judged abandonment without the name's own object, which holds its mail
    // and connections: a name kept on its user's route is never its to give away.
    if (reclaim && c.routed !== true && store.isRouted(c.username))
      return { ok: false, code: "name_taken" };
    const name = store.nameOf(c.identityKey);
    if (name !== null && name !== c.username) return { ok: false, code: "identity_bound" };
    if (c.full) return { ok: false, code: "limit_reached" };
    const registers = held === null || reclaim;
    if (registers) {
      if (held === null && store.countBindings() >= LIMITS.maxUsersPerHub)
        return { ok: false, code: "limit_reached" };
      if (c.buckets.some((b) => store.registrationsSince(b.key, c.now - DAY_MS) >= b.max))
        return { ok: false, code: "registration_limited" };
      // The abandoned identity's linked devices are not the new one's (§4.7).
      if (reclaim) store.wipeDevicesOf(c.username);
      store.setBinding(c.username, c.identityKey, c.now);
      store.recordRegistration(
        c.buckets.map((b) => b.key),
        c.now,
      );
    }
    if (c.routed === true) {
      store.setRouted(c.username);
      return { ok: true, registered: registers, remaining: 0 };
    }
    const owner = prekeyOwner(c.identityKey, c.device);
    const remaining = this.bind(c.username, owner, c.signedPrekey, c.pq);
    return { ok: true, registered: registers, remaining };
  }

  bind(entry: string, owner: string, spk: SignedPrekey, pq: PqPrekey | null): number {
    this.#own(entry, owner);
    this.store.setSignedPrekey(entry, spk);
    this.store.setPqPrekey(entry, pq);
    return this.store.countOneTimePrekeys(entry);
  }

  seed(entries: readonly SeedEntry[]): void {
    this.store.seed(entries);
  }

  /** The operator releases a name: its binding and every entry of it go. */
  release(username: string): void {
    this.store.deleteBinding(username);
    this.store.wipe(username);
    this.store.wipeDevicesOf(username);
  }

  /** All-or-nothing: the bounds of directory.ts are checked before anything is stored. */
  upload(
    username: string,
    owner: string,
    keys: readonly OneTimePrekey[],
    kem: readonly OneTimeKemPrekey[],
    spk: SignedPrekey | null = null,
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
    if (spk !== null) store.setSignedPrekey(username, spk);
    return { ok: true };
  }

  /**
   * Per requester and user, a few one-time prekeys, then one per refill period (§7.4): past that
   * the bundle carries the signed and last-resort prekeys only, and the stock stays for others.
   * Keyed by the requester's identity key, so a name reclaimed by another identity starts afresh.
   * Charged only when there is a key to hand out, so the stored quota rows are bounded by the
   * keys handed out within a refill period (SECURITY.md L16).
   */
  take(username: string, owner: string, requester: string, now: number): TakenKeys {
    this.#own(username, owner);
    const { store } = this;
    store.purgeFullQuota(now, PURGE_PER_CALL);
    const signedPrekey = store.getSignedPrekey(username);
    if (signedPrekey === null)
      return {
        signedPrekey,
        oneTimePrekey: null,
        pqPrekey: null,
        oneTimeKemPrekey: null,
        remaining: store.countOneTimePrekeys(username),
      };
    const pqPrekey = store.getPqPrekey(username, signedPrekey.id);
    const stock =
      store.countOneTimePrekeys(username) > 0 ||
      (pqPrekey !== null && store.countOneTimeKemPrekeys(username) > 0);
    const mayTake = stock && this.#quota.take(`${username}\n${requester}`, now);
    const oneTimePrekey = mayTake ? store.takeOneTimePrekey(username) : null;
    // One-time KEM prekeys are handed out only with the PQ prekey they go with (§8.3.5).
    const oneTimeKemPrekey =
      pqPrekey === null || !mayTake ? null : store.takeOneTimeKemPrekey(username);
    return {
      signedPrekey,
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
