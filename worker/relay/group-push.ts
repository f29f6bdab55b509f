/**
 * Membership pushes of a group, bounded (PROTOCOL.md §7.5 "Membership pushes"): a `join` or
 * `leave` used to push the whole group state to every member at once, so a stranger's join+leave
 * pairs on an open group turned a few bytes into a roster for every member each time. Now each
 * group has a small token bucket of such pushes; past it a change is held and the group's state is
 * pushed once when the next token is there, with whatever changed meanwhile. A push whose state
 * equals the last one pushed for the group (a join undone by a leave) is not sent at all.
 * Commits and signed-prekey changes are not held: they are rare and already charged.
 */
import { type Bucket, newBucket, take } from "./ratelimit";

/** Per group: 4 membership pushes at once, then one a second. */
export const MEMBERSHIP_PUSHES = { ratePerSec: 1, burst: 4 } as const;

export class MembershipPushes {
  readonly #buckets = new Map<string, Bucket>();
  readonly #held = new Set<string>();
  /** Per group, a digest of the last state pushed to its members. */
  readonly #last = new Map<string, string>();

  /** May a membership push for `group` go out now? false: it is held until `due` lists it. */
  request(group: string, now: number): boolean {
    if (this.#held.has(group)) return false;
    const r = take(
      this.#buckets.get(group) ?? newBucket(MEMBERSHIP_PUSHES, now),
      MEMBERSHIP_PUSHES,
      now,
    );
    this.#buckets.set(group, r.bucket);
    if (r.ok) return true;
    this.#held.add(group);
    return false;
  }

  /** When the held groups may go out (ms), or null if none is held. */
  nextDue(): number | null {
    let next: number | null = null;
    for (const g of this.#held) {
      const b = this.#buckets.get(g);
      if (b === undefined) continue;
      const at = b.at + Math.ceil(((1 - b.tokens) * 1000) / MEMBERSHIP_PUSHES.ratePerSec);
      next = next === null ? at : Math.min(next, at);
    }
    return next;
  }

  /** The held groups that may be pushed now (each takes its token and is no longer held). */
  due(now: number): string[] {
    const out: string[] = [];
    for (const g of [...this.#held]) {
      const r = take(
        this.#buckets.get(g) ?? newBucket(MEMBERSHIP_PUSHES, now),
        MEMBERSHIP_PUSHES,
        now,
      );
      this.#buckets.set(g, r.bucket);
      if (!r.ok) continue;
      this.#held.delete(g);
      out.push(g);
    }
    return out;
  }

  /** Record the state text about to be pushed; false if it is the one pushed last (skip it). */
  pushing(group: string, text: string): boolean {
    const d = digest(text);
    if (this.#last.get(group) === d) return false;
    this.#last.set(group, d);
    return true;
  }

  /** The group is gone: nothing of it is kept. */
  forget(group: string): void {
    this.#buckets.delete(group);
    this.#held.delete(group);
    this.#last.delete(group);
  }
}

/** FNV-1a over the UTF-16 units, with the length: enough to tell a changed state (not secret). */
function digest(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return `${text.length}:${(h >>> 0).toString(16)}`;
}
