/**
 * Groups on users' routes (docs/ARCHITECTURE.md "Groups on users' routes", PROTOCOL.md §4.1): a
 * group's home is a `Relay` object, `idFromName(hub + "/gh/" + group)`, that runs the hub's own
 * group steps (hub.ts) for the members' objects, which forward their users' group frames to it.
 *
 * To the home, each member's object is one more connection of that member: a `Session` whose
 * socket is a `LinkSocket`. What the group steps send on it (the member's `group` states, `left`,
 * and the `deliver`s of commits and group messages, in mid order as on any connection, §7.3) is
 * handed to the member's object in one `fromHome` call per batch, one call in flight per member.
 * The member's object stores each `deliver` in its own mailbox before it answers, and its answer
 * acknowledges those mids here exactly as a client's `ack` would: the home's mailbox and group
 * log keep an item until the member's object holds it, so acknowledgements, cursors and bounds
 * towards the member's devices are the member object's.
 *
 * Write-behind (PROTOCOL.md §7.3): a group message for a member whose connection is caught up is
 * sent to it before the member's object stores it, and the answer names it `held` instead. It
 * stays unacknowledged here — the home's copy is then the only stored one — until the member's
 * object reports it settled (acknowledged by the member, or stored there): on a later answer, or
 * by `Hub.homeSettled`. A held item not reported within `settleWaitMs` (the member's object
 * restarted and lost it) closes the link, which sends it again from storage.
 *
 * A call that fails (the member's object restarted or was unreachable) closes the link, as a
 * socket that dropped; the home opens it again (`relink`) at its next call or alarm, and sends
 * again everything not acknowledged, from storage. The member's object recognises what it stored
 * already by the home's mid (mids only grow, and a connection sends them in order), so an item
 * whose answer was lost is stored once.
 */
import { type GroupState, PROTOCOL_VERSION, type ServerFrame } from "../../shared/protocol";
import type { AuthedAttachment } from "./attachment";
import type { Deliveries } from "./delivery";
import { Session, type SessionRegistry } from "./session";

/** A member as its user's object authenticated it, handed to the group's home with each frame. */
export interface MemberBinding {
  username: string;
  identityKey: string;
  /** A linked device's mailbox address (§4.7); absent: the username. */
  address?: string;
}

/**
 * What a member's object did with a batch from the home (`Hub.fromHome`): the mids it holds now
 * (stored, or known already), in order; `later`: it stopped at an item it has no room for yet
 * (a commit at the hard mailbox bound), which the home sends again after RELINK_MS.
 */
export interface HomeReceipt {
  done: string[];
  later: boolean;
  /** Mids sent to the member before its object stored them: reported settled later. */
  held: string[];
}

/** How long after a failed or refused batch the home opens the member's link again (ms). */
export const RELINK_MS = 5_000;
/**
 * After a link's first failed call, how soon it is tried again (ms): a call to an object that
 * restarted fails once on the stub that reached it before, and the next goes to the new one.
 */
export const RETRY_MS = 250;
/**
 * The longest a member's object that had no room (`later`) waits to be asked again (ms): each
 * `later` in a row doubles the wait from RELINK_MS, so an offline member whose mailbox is full
 * costs a call every few minutes, not every few seconds. A frame of that member's reopens its
 * link at once.
 */
export const MAX_RELINK_MS = 5 * 60_000;

/** The origin a link's attachment carries: a link is no browser's, and no origin is checked. */
const LINK_ORIGIN = "https://home.invalid";

/** The socket of a link: frames sent on it wait for the next `fromHome` call. */
class LinkSocket {
  readonly out: string[] = [];
  constructor(private readonly sent: () => void) {}
  send(text: string): void {
    this.out.push(text);
    this.sent();
  }
  close(): void {}
  serializeAttachment(_att: unknown): void {}
}

/** A socket that keeps what is sent on it: the answers to one forwarded frame. */
export function replySession(att: AuthedAttachment, now: number): { s: Session; out: string[] } {
  const sock = new LinkSocket(() => {});
  return { s: new Session(sock as unknown as WebSocket, att, now), out: sock.out };
}

/** The attachment a member's frames run under in its group's home. */
export function memberAttachment(hub: string, m: MemberBinding, now: number): AuthedAttachment {
  return {
    v: 1,
    state: "authed",
    hub,
    origin: LINK_ORIGIN,
    username: m.username,
    identityKey: m.identityKey,
    connectedAt: now,
    lastSeen: now,
    cursor: 0,
    ...(m.address === undefined ? {} : { address: m.address }),
  };
}

interface Link {
  s: Session;
  sock: LinkSocket;
  flying: boolean;
  scheduled: boolean;
  /** Items the member's object holds write-behind, not reported settled yet: mid → when. */
  awaiting: Map<string, number>;
}

export interface HomeLinksDeps {
  sessions: SessionRegistry;
  deliveries: Deliveries;
  now(): number;
  wakeAt(at: number): void;
  /** The member's object: `Hub.fromHome` there. Rejects when the call fails. */
  send(member: string, texts: string[]): Promise<HomeReceipt>;
  /** The group's state for `member`, sent first on every link opened (null: not in the group). */
  stateFor(member: string): GroupState | null;
  /** The link was closed (a failed call): release it as a closed connection. */
  closed(s: Session): void;
  /** How long an item held write-behind may go unreported before its link is opened again. */
  settleWaitMs: number;
}

/** The links of one group's home to its members' objects, by member address. */
export class HomeLinks {
  readonly #d: HomeLinksDeps;
  readonly #links = new Map<string, Link>();
  /** Members whose object answered `later`: not asked again before `at`. */
  readonly #waiting = new Map<string, { at: number; delay: number }>();
  #awaitTimer: ReturnType<typeof setTimeout> | null = null;
  /** Members whose last call failed (a second failure in a row waits RELINK_MS). */
  readonly #failed = new Set<string>();

  constructor(deps: HomeLinksDeps) {
    this.#d = deps;
  }

  /** Is `s` one of the links (not a client's connection)? */
  has(s: Session): boolean {
    const a = s.authed;
    return a !== null && this.#links.get(a.address ?? a.username)?.s === s;
  }

  /**
   * Open the link of every member not linked yet (`attachments`: by address), before a step
   * stores anything for them, so that each item reaches each link once: by the step's own offer.
   * A link opens with the member's current state and what storage holds for it.
   */
  open(attachments: ReadonlyMap<string, AuthedAttachment>): void {
    for (const [address, att] of attachments) {
      if (this.#links.has(address)) continue;
      const sock = new LinkSocket(() => this.#schedule(address));
      const s = new Session(sock as unknown as WebSocket, att, this.#d.now());
      this.#links.set(address, { s, sock, flying: false, scheduled: false, awaiting: new Map() });
      this.#d.sessions.add(s);
      const state = this.#d.stateFor(address);
      if (state !== null) s.send({ v: PROTOCOL_VERSION, t: "group", state } satisfies ServerFrame);
      this.#d.deliveries.start(s);
    }
  }

  /** Which of `addresses` have no link (the caller opens them). */
  missing(addresses: readonly string[]): string[] {
    return addresses.filter((a) => !this.#links.has(a));
  }

  /**
   * The object of `address` settled items it held write-behind (`Hub.homeSettled`): they are
   * acknowledged on its link. Items sent on a link closed since are sent again on the next one
   * under the same mids, so they are acknowledged there.
   */
  settled(address: string, mids: readonly string[]): void {
    const l = this.#links.get(address);
    if (l !== undefined) this.#acknowledge(l, mids);
  }

  /** The member's object holds `mids`: acknowledged on its link, as a client's `ack`. */
  #acknowledge(l: Link, mids: readonly string[]): void {
    for (const m of mids) l.awaiting.delete(m);
    this.#d.deliveries.ack(
      l.s,
      mids.map((m) => Number(m)),
    );
    this.#d.deliveries.drain(l.s);
  }

  /** Close each link with an item held write-behind and unreported for settleWaitMs. */
  #checkAwaiting(): void {
    this.#awaitTimer = null;
    const now = this.#d.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [address, l] of [...this.#links]) {
      const oldest = l.awaiting.values().next();
      if (oldest.done === true) continue;
      if (oldest.value + this.#d.settleWaitMs <= now) {
        // The member's object lost what it held (it restarted): a link opened again sends
        // everything not acknowledged, and that object recognises what it still has.
        this.#drop(address, l, 0);
      } else next = Math.min(next, oldest.value + this.#d.settleWaitMs);
    }
    if (next !== Number.POSITIVE_INFINITY)
      this.#awaitTimer = setTimeout(() => this.#checkAwaiting(), Math.max(1, next - now));
  }

  /** The object of `address` has room again: its link may open at once. */
  wake(address: string): void {
    this.#waiting.delete(address);
  }

  /** When the next member waiting after a `later` may be asked again (after `now`), or null. */
  nextWaiting(now: number): number | null {
    let next: number | null = null;
    for (const [address, w] of this.#waiting)
      if (w.at > now && !this.#links.has(address))
        next = next === null ? w.at : Math.min(next, w.at);
    return next;
  }

  /** Which of `addresses` may be asked again at `now` (not waiting after a `later`). */
  due(addresses: readonly string[], now: number): string[] {
    return addresses.filter((a) => (this.#waiting.get(a)?.at ?? 0) <= now);
  }

  #schedule(address: string): void {
    const l = this.#links.get(address);
    if (l === undefined || l.scheduled || l.flying) return;
    l.scheduled = true;
    // Everything one step sends to a member goes in one call.
    queueMicrotask(() => {
      l.scheduled = false;
      this.#flush(address, l);
    });
  }

  #flush(address: string, l: Link): void {
    if (this.#links.get(address) !== l || l.flying || l.sock.out.length === 0) return;
    const texts = l.sock.out.splice(0);
    l.flying = true;
    // If this object restarts before the answer, its alarm opens the link again (`relink`).
    this.#d.wakeAt(this.#d.now() + RELINK_MS);
    this.#d.send(address, texts).then(
      (r) => {
        l.flying = false;
        this.#failed.delete(address);
        if (this.#links.get(address) !== l) return;
        const now = this.#d.now();
        for (const m of r.held) l.awaiting.set(m, now);
        if (r.held.length > 0)
          this.#awaitTimer ??= setTimeout(() => this.#checkAwaiting(), this.#d.settleWaitMs);
        if (r.done.length > 0) this.#acknowledge(l, r.done);
        if (r.later) {
          const delay = Math.min(
            MAX_RELINK_MS,
            2 * (this.#waiting.get(address)?.delay ?? RELINK_MS / 2),
          );
          this.#waiting.set(address, { at: this.#d.now() + delay, delay });
          this.#drop(address, l, delay);
        } else {
          this.#waiting.delete(address);
          this.#flush(address, l);
        }
      },
      (e: unknown) => {
        console.error("relay: home link call failed", e instanceof Error ? e.name : typeof e);
        l.flying = false;
        const again = this.#failed.has(address);
        // Bounded by the members of this home's group (each address at most once).
        this.#failed.add(address);
        this.#drop(address, l, again ? RELINK_MS : RETRY_MS);
      },
    );
  }

  /** Close a link as a dropped connection; storage still holds all it did not acknowledge. */
  #drop(address: string, l: Link, delay = RELINK_MS): void {
    if (this.#links.get(address) !== l) return;
    this.#links.delete(address);
    l.s.closed = true;
    this.#d.closed(l.s);
    this.#d.wakeAt(this.#d.now() + delay);
  }
}
