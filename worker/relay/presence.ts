/**
 * Presence only for people you know (PROTOCOL.md §6.3).
 *
 * A viewer may see a user online iff the user wrote to the viewer (a `send` the relay accepted,
 * remembered in `presence_contacts`), or both are active members of one group, or both chose
 * "everyone on this hub" (their own setting, else the hub's default). Nobody else learns from
 * the relay whether the user is online: not the list, not its size.
 *
 * Changes go out as deltas, per viewer at most one `presence_delta` per
 * LIMITS.presenceDeltaIntervalMs: a change marks the names a viewer must look at again, and the
 * delta carries each marked name's state at send time, so a burst of changes (a user connecting
 * and leaving again, a roster flood) collapses to one entry per name. Only the snapshot after
 * `welcome` lists a viewer's whole view. Memory holds only what is pending for viewers online
 * now; the relations are in storage (store.ts), so they are per user and move with the user.
 */
import {
  type GroupState,
  LIMITS,
  PROTOCOL_VERSION,
  type PresenceScope,
  type PresenceUser,
  userOfMember,
} from "../../shared/protocol";
import type { Session, SessionRegistry } from "./session";

/**
 * The users who share a group with `user` (§6.3): the group members are devices (§4.7), named
 * by their users here. Memberships of `user`'s current device count (its username's rows).
 */
function coUsers(store: Store, user: string): string[] {
  return store
    .coMembersOf(user)
    .map(userOfMember)
    .filter((u) => u !== user);
}

import type { Store } from "./store";

/**
 * On a user's route (docs/ARCHITECTURE.md "Groups on users' routes"): the users who share a
 * group with `user`, from the group states its object keeps (store.ts `member_groups`), where
 * both are active members (§6.3).
 */
export function groupPeersOf(store: Store, user: string): string[] {
  const peers = new Set<string>();
  for (const { state } of store.memberGroupStates(user)) {
    const active = activeOf(JSON.parse(state) as GroupState);
    if (!active.includes(user)) continue;
    for (const m of active) if (userOfMember(m) !== user) peers.add(userOfMember(m));
  }
  return [...peers];
}

/** The active members a group state lists: committed, no leave pending (§7.5). */
export function activeOf(state: GroupState): string[] {
  const leaving = new Set(state.pendingLeaves);
  return state.members.map((m) => m.username).filter((m) => !leaving.has(m));
}

export interface PresenceDeps {
  store: Store;
  sessions: SessionRegistry;
  now(): number;
  wakeAt(at: number): void;
  /** The presence scope of a user of `hub` who chose none (the hub's default). */
  hubDefault(hub: string): PresenceScope;
  /**
   * Tell the object of `viewer` (another user's object, docs/ARCHITECTURE.md "User objects")
   * that `user` is online as `state`, or offline (null); may reject as an RPC does.
   */
  announce?:
    | ((hub: string, viewer: string, user: string, state: PresenceUser | null) => Promise<void>)
    | null;
  /**
   * A user's object: tell the hub's lobby (`hub + "/everyone"`, Hub.lobby) that `user`, who
   * chose "everyone on this hub", is online as `state`, or left (null); answers who else is.
   */
  lobby?:
    | ((hub: string, user: string, state: PresenceUser | null) => Promise<PresenceUser[]>)
    | null;
}

/** Sender/recipient pairs remembered in memory (then the cache starts over). */
const KNOWN_PAIRS = 50_000;

export class Presence {
  readonly #d: PresenceDeps;
  /** Per online viewer: the names its next delta reports on. */
  readonly #pending = new Map<string, Set<string>>();
  /** Per online viewer: when its last delta was sent. */
  readonly #lastSent = new Map<string, number>();
  /** Settings read from storage, per user (bounded by the hub's users). */
  readonly #scopes = new Map<string, PresenceScope | null>();
  /** Sender/recipient pairs known to be stored, so a `send` to a known peer costs no write. */
  readonly #known = new Set<string>();
  #flushQueued = false;
  /**
   * A user's object (routed users): per local user, the viewers in other objects its next
   * announcement goes to, and when it last sent one (at most one per delta interval).
   */
  readonly #outbox = new Map<string, { hub: string; viewers: Set<string> }>();
  readonly #outLast = new Map<string, number>();
  /** The object's hub (one object per hub), learnt from the first authenticated socket. */
  #hub: string | null = null;
  /** A user's object: its users whose standing in the hub's lobby is to be told, by hub. */
  readonly #lobbyDue = new Map<string, string>();
  /** A user's object: its users it put in the lobby since it started. */
  readonly #inLobby = new Set<string>();

  constructor(deps: PresenceDeps) {
    this.#d = deps;
  }

  /** The object's hub (one object per hub): its default applies to users who chose none. */
  setHub(hub: string): void {
    this.#hub ??= hub;
  }

  /** The user's setting in force: its own choice, else the hub's default. */
  scope(username: string): PresenceScope {
    let own = this.#scopes.get(username);
    if (own === undefined) {
      own = this.#d.store.presenceSetting(username);
      this.#scopes.set(username, own);
    }
    return own ?? (this.#hub === null ? "contacts" : this.#d.hubDefault(this.#hub));
  }

  /** May `viewer` see `user` online (when `user` is online)? */
  visible(viewer: string, user: string): boolean {
    if (viewer === user) return false;
    const { store } = this.#d;
    if (this.scope(user) === "everyone" && this.scope(viewer) === "everyone") return true;
    return store.hasPresenceContact(user, viewer) || store.shareGroup(user, viewer);
  }

  /** The viewer's whole view (itself included), sent once after its `welcome` (§4.3). */
  snapshot(s: Session): void {
    const a = s.authed;
    if (a === null) return;
    const { store, sessions } = this.#d;
    const me = a.username;
    const names = new Set<string>([...store.presenceSendersTo(me), ...coUsers(store, me)]);
    // Users in other objects who announced themselves to this viewer (`fromPeer`).
    const peers = new Map(store.peerPresenceOf(me).map((p) => [p.username, p]));
    // On users' routes, who the lobby says is online: only to a viewer who chose "everyone".
    if (this.scope(me) === "everyone")
      for (const p of store.lobbySeenOf(me)) if (!peers.has(p.username)) peers.set(p.username, p);
    for (const n of peers.keys()) names.add(n);
    if (this.scope(me) === "everyone") {
      for (const x of sessions.authedSessions()) {
        const u = x.authed?.username;
        if (u !== undefined && this.scope(u) === "everyone") names.add(u);
      }
    }
    // The viewer itself is in its view: it knows it is online.
    names.add(me);
    const users: PresenceUser[] = [];
    for (const n of names) {
      const u = this.#onlineUser(n) ?? peers.get(n) ?? null;
      if (u !== null) users.push({ username: n, identityKey: u.identityKey });
    }
    users.sort((p, q) => cmp(p.username, q.username));
    // What is pending is now in this device's snapshot; another device of ours still needs it.
    if (sessions.devicesOf(me).size <= 1) this.#pending.delete(me);
    s.send({ v: PROTOCOL_VERSION, t: "presence", users });
  }

  /**
   * `user` came online, went offline or has a new key: tell whoever may see it. `routed`: the
   * user's hub when the user is in its own object; its viewers are in theirs, told there.
   */
  changed(user: string, routed: string | null = null): void {
    const { store, sessions } = this.#d;
    if (routed !== null) {
      for (const v of store.presenceRecipientsOf(user)) this.#queueOut(routed, user, v);
      for (const v of groupPeersOf(store, user)) this.#queueOut(routed, user, v);
      this.#toLobby(user, routed);
      return;
    }
    const audience = new Set<string>([
      ...store.presenceRecipientsOf(user),
      ...coUsers(store, user),
    ]);
    if (this.scope(user) === "everyone") {
      for (const x of sessions.authedSessions()) {
        const u = x.authed?.username;
        if (u !== undefined && this.scope(u) === "everyone") audience.add(u);
      }
    }
    audience.delete(user);
    for (const v of audience) this.#mark(v, user);
  }

  /** `sender` wrote to `recipient` (an accepted `send`): `recipient` may now see `sender`. */
  wrote(sender: string, recipient: string, now: number, routed: string | null = null): void {
    const key = `${sender}\n${recipient}`;
    if (this.#known.has(key)) return;
    // Bounded like the other caches: forgetting only costs one idempotent write.
    if (this.#known.size >= KNOWN_PAIRS) this.#known.clear();
    this.#known.add(key);
    const r = this.#d.store.addPresenceContact(
      sender,
      recipient,
      now,
      LIMITS.maxPresenceContactsPerUser,
    );
    // Only the recipient's view of the sender changes (the sender sees the recipient only if
    // the recipient writes back); a forgotten recipient stops seeing the sender.
    const tell = (viewer: string) =>
      routed !== null ? this.#queueOut(routed, sender, viewer) : this.#markIfOnline(viewer, sender);
    if (r.added) tell(recipient);
    for (const f of r.forgotten) {
      this.#known.delete(`${sender}\n${f}`);
      tell(f);
    }
  }

  /**
   * On a user's route: the users `user` shares a group with went from `before` to `after` (its
   * object took a new group state): those who came or went are told `user`'s state (§6.3).
   */
  groupPeersChanged(
    hub: string,
    user: string,
    before: readonly string[],
    after: readonly string[],
  ) {
    const was = new Set(before);
    const now = new Set(after);
    for (const v of before) if (!now.has(v)) this.#queueOut(hub, user, v);
    for (const v of after) if (!was.has(v)) this.#queueOut(hub, user, v);
  }

  /** A relation between `a` and `b` appeared or went: each looks at the other again. */
  related(a: string, b: string): void {
    if (a === b) return;
    this.#markIfOnline(a, b);
    this.#markIfOnline(b, a);
  }

  /** `viewer` looks at `user` again, if `user` is online (an offline user needs no report). */
  #markIfOnline(viewer: string, user: string): void {
    if (this.#d.sessions.userOnline(user)) this.#mark(viewer, user);
  }

  /** A group's active members went from `before` to `after`: the changed ones and the rest. */
  groupChanged(beforeMembers: readonly string[], afterMembers: readonly string[]): void {
    // Presence is the user's (§6.3): a member that is a linked device counts as its user.
    const before = [...new Set(beforeMembers.map(userOfMember))];
    const after = [...new Set(afterMembers.map(userOfMember))];
    const was = new Set(before);
    const now = new Set(after);
    const moved = [...before.filter((u) => !now.has(u)), ...after.filter((u) => !was.has(u))];
    if (moved.length === 0) return;
    const everyone = new Set([...before, ...after]);
    for (const m of moved) for (const o of everyone) this.related(m, o);
  }

  /**
   * `user` chose who may see it (§6.3); null: the hub's default again. `routed`: the user's hub
   * when it is in its own object, where "everyone" is the hub's lobby.
   */
  setScope(user: string, scope: PresenceScope | null, routed: string | null = null): void {
    const before = this.scope(user);
    this.#d.store.setPresenceSetting(user, scope);
    this.#scopes.set(user, scope);
    if (this.scope(user) === before) return;
    if (routed !== null) {
      this.#toLobby(user, routed);
      return;
    }
    // Only the pairs with another "everyone" user change.
    for (const x of this.#d.sessions.authedSessions()) {
      const u = x.authed?.username;
      if (u !== undefined && u !== user && this.scope(u) === "everyone") this.related(user, u);
    }
  }

  /** The name went to another identity (§4.3): its setting does not carry over. */
  forget(user: string): void {
    this.#d.store.setPresenceSetting(user, null);
    this.#scopes.delete(user);
    this.#d.store.deletePresenceContacts(user);
    this.#known.clear();
  }

  /**
   * The object of `user` announced it to `viewer`, a user of this object: online as `state`, or
   * offline (null). That object decided `viewer` may see it (§6.3); the viewer's devices get it
   * as any other delta.
   */
  fromPeer(viewer: string, user: string, state: PresenceUser | null): void {
    if (viewer === user) return;
    this.#d.store.setPeerPresence(
      viewer,
      user,
      state,
      this.#d.now(),
      LIMITS.maxPresenceContactsPerUser,
    );
    this.#mark(viewer, user);
  }

  /**
   * A user announced online whose connections are all gone without an announcement (the
   * object restarted and lost them) is announced offline. The alarm runs it.
   */
  reconcile(): void {
    for (const { username, hub } of this.#d.store.announcedUsers()) {
      if (this.#d.sessions.userOnline(username) || this.#outbox.has(username)) continue;
      this.changed(username, hub);
      // Nobody left to tell (the relations were forgotten): nothing is announced any more.
      if (!this.#outbox.has(username)) this.#d.store.setAnnounced(username, null);
    }
  }

  /**
   * The lobby says `user` is online as `state` (or not) for `viewer`, a user of this object: both
   * chose "everyone on this hub" (§6.3). Kept apart from what users' own objects announce, so
   * that it is forgotten when the viewer leaves the lobby.
   */
  fromLobby(viewer: string, user: string, state: PresenceUser | null): void {
    if (viewer === user || this.scope(viewer) !== "everyone") return;
    this.#d.store.setLobbySeen(viewer, user, state);
    this.#mark(viewer, user);
  }

  /** `user`'s standing in the lobby may have changed: tell it at the next flush. */
  #toLobby(user: string, hub: string): void {
    if (this.#d.lobby === undefined || this.#d.lobby === null) return;
    // Only a user who is or was in it: everyone else never costs the lobby a call.
    if (this.scope(user) !== "everyone" && !this.#inLobby.has(user)) {
      if (this.#d.store.lobbySeenOf(user).length === 0) return;
    }
    this.#lobbyDue.set(user, hub);
    this.#queueFlush();
  }

  /**
   * Tell the lobby each due user's standing: online if connected and its setting is "everyone",
   * else gone. Entering answers who else is there, which replaces what the viewer saw; leaving
   * forgets it. A failed call is made again at the next interval.
   */
  #flushLobby(): void {
    const lobby = this.#d.lobby ?? null;
    if (lobby === null) return;
    const { store } = this.#d;
    for (const [user, hub] of this.#lobbyDue) {
      this.#lobbyDue.delete(user);
      const me = this.#onlineUser(user);
      const state = me !== null && this.scope(user) === "everyone" ? me : null;
      lobby(hub, user, state).then(
        (others) => {
          const before = new Map(store.lobbySeenOf(user).map((p) => [p.username, p.identityKey]));
          store.clearLobbySeen(user);
          const after = new Map<string, string>();
          if (state === null) this.#inLobby.delete(user);
          else {
            this.#inLobby.add(user);
            for (const o of others) {
              if (o.username === user) continue;
              store.setLobbySeen(user, o.username, o);
              after.set(o.username, o.identityKey);
            }
          }
          // Only what changed is news: a reconnect whose snapshot listed the same is not.
          for (const n of new Set([...before.keys(), ...after.keys()]))
            if (before.get(n) !== after.get(n)) this.#mark(user, n);
        },
        () => {
          if (!this.#lobbyDue.has(user)) this.#lobbyDue.set(user, hub);
          this.#d.wakeAt(this.#d.now() + LIMITS.presenceDeltaIntervalMs);
        },
      );
    }
  }

  /** The viewer's last device is gone: nothing is pending for it any more. */
  disconnected(viewer: string): void {
    this.#pending.delete(viewer);
    this.#lastSent.delete(viewer);
  }

  /**
   * Send every delta that is due; returns when the next one is (ms), or null. Called after the
   * events that mark (queued as a microtask, so one event's marks make one delta) and by the
   * alarm for the deltas held back by the interval.
   */
  flush(): number | null {
    const now = this.#d.now();
    let next: number | null = null;
    for (const [viewer, names] of this.#pending) {
      const devices = this.#d.sessions.devicesOf(viewer);
      if (devices.size === 0) {
        this.#pending.delete(viewer);
        continue;
      }
      const due = (this.#lastSent.get(viewer) ?? -Infinity) + LIMITS.presenceDeltaIntervalMs;
      if (due > now) {
        next = next === null ? due : Math.min(next, due);
        continue;
      }
      this.#pending.delete(viewer);
      const online: PresenceUser[] = [];
      const offline: string[] = [];
      for (const n of [...names].sort(cmp)) {
        const local = this.#onlineUser(n);
        const u =
          local !== null && this.visible(viewer, n)
            ? local
            : (this.#d.store.peerPresence(viewer, n) ??
              (this.scope(viewer) === "everyone" ? this.#d.store.lobbySeen(viewer, n) : null));
        if (u !== null) online.push({ username: n, identityKey: u.identityKey });
        else offline.push(n);
      }
      this.#lastSent.set(viewer, now);
      // Every device of the viewer shows the same view (§6.3).
      const text = JSON.stringify({ v: PROTOCOL_VERSION, t: "presence_delta", online, offline });
      for (const s of devices) s.sendText(text);
    }
    this.#flushLobby();
    const out = this.#flushOut(now);
    if (out !== null) next = next === null ? out : Math.min(next, out);
    if (next !== null) this.#d.wakeAt(next);
    return next;
  }

  /**
   * Announce each routed user whose announcement is due to the viewers queued for it, with its
   * state at send time; a call that fails is queued again for the next interval.
   */
  #flushOut(now: number): number | null {
    const announce = this.#d.announce ?? null;
    let next: number | null = null;
    for (const [user, { hub, viewers }] of this.#outbox) {
      const due = (this.#outLast.get(user) ?? -Infinity) + LIMITS.presenceDeltaIntervalMs;
      if (due > now) {
        next = next === null ? due : Math.min(next, due);
        continue;
      }
      this.#outbox.delete(user);
      this.#outLast.set(user, now);
      if (announce === null) continue;
      const me = this.#onlineUser(user);
      const { store } = this.#d;
      store.setAnnounced(user, me !== null ? hub : null);
      const inGroups = me === null ? null : new Set(groupPeersOf(store, user));
      for (const v of viewers) {
        const state =
          me !== null && (store.hasPresenceContact(user, v) || inGroups?.has(v) === true)
            ? me
            : null;
        announce(hub, v, user, state).catch(() => {
          this.#queueOut(hub, user, v);
          this.#d.wakeAt(this.#d.now() + LIMITS.presenceDeltaIntervalMs);
        });
      }
    }
    return next;
  }

  #queueOut(hub: string, user: string, viewer: string): void {
    if (viewer === user) return;
    let out = this.#outbox.get(user);
    if (out === undefined) {
      out = { hub, viewers: new Set() };
      this.#outbox.set(user, out);
    }
    out.viewers.add(viewer);
    this.#queueFlush();
  }

  #queueFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    queueMicrotask(() => {
      this.#flushQueued = false;
      this.flush();
    });
  }

  #mark(viewer: string, user: string): void {
    if (!this.#d.sessions.userOnline(viewer)) return;
    let names = this.#pending.get(viewer);
    if (names === undefined) {
      names = new Set();
      this.#pending.set(viewer, names);
    }
    names.add(user);
    this.#queueFlush();
  }

  /** `name` as shown online: while any of its devices is connected (§4.7, §6.3). */
  #onlineUser(name: string): PresenceUser | null {
    for (const s of this.#d.sessions.devicesOf(name)) {
      const a = s.authed;
      if (a !== null) return { username: a.username, identityKey: a.identityKey };
    }
    return null;
  }
}

function cmp(p: string, q: string): number {
  return p < q ? -1 : p > q ? 1 : 0;
}

/**
 * The hub default from the relay's configuration (wrangler var `PRESENCE_EVERYONE_HUBS`): a
 * comma-separated list of hubs whose users are shown to each other unless they choose
 * otherwise, or `*` for every hub. Unset or empty: "people I talk to" everywhere (§6.3).
 */
export function presenceDefaults(value: unknown): (hub: string) => PresenceScope {
  const list =
    typeof value === "string"
      ? value
          .split(",")
          .map((h) => h.trim())
          .filter((h) => h !== "")
      : [];
  if (list.includes("*")) return () => "everyone";
  const hubs = new Set(list);
  return (hub) => (hubs.has(hub) ? "everyone" : "contacts");
}
