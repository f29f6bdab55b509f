/**
 * The real relay in Node, for protocol-core scenario tests: the production lifecycle
 * (worker/relay/lifecycle.ts) with its `Hub` and `Store`, over SQLite in wasm (node-sql.ts), with
 * in-process sockets standing in for workerd's hibernatable WebSockets, and the hub's other
 * objects beside it: its key directory (worker/relay/key-directory.ts) over a SQLite of its own,
 * called across an event-loop turn as a Durable Object RPC is. Only the runtime is fake
 * (`NodeObjectState`, `RelaySocket`, `NodeDirectory`); every protocol rule is the product's own.
 *
 * Frames cross each socket as text both ways: the relay's go through `parseServerFrame`, the
 * clients' through the relay's own parsers, exactly as over a WebSocket.
 *
 * Like a Durable Object, the relay handles one event at a time (connect, message, close, alarm)
 * in arrival order, each in its own turn of the event loop, interleaving only where a handler
 * awaits; nothing runs before `blockConcurrencyWhile` in its constructor has finished.
 *
 * Test hooks: `intercept(to, frame)` plays the malicious relay (rewrite a bundle, a presence
 * list, a delivered body; return null to drop); `push` sends a frame the relay never made; `log`
 * and `clientLog` record every frame each way; `clock` is the relay's (and the clients') time.
 */
import { deserialize, serialize } from "node:v8";
import {
  type ClientFrame,
  type Leaf,
  PING_TEXT,
  PONG_TEXT,
  type PresenceScope,
  parseServerFrame,
  type ServerFrame,
  type SignedPrekey,
  userOfMember,
} from "../../shared/protocol";
import {
  type GroupCallResult,
  type GroupGateway,
  type GroupOp,
  GroupSequencer,
} from "../../worker/relay/group-object";
import type { GroupRecord } from "../../worker/relay/groups";
import type { PeerGateway } from "../../worker/relay/hub";
import { type DirectoryGateway, KeyDirectory } from "../../worker/relay/key-directory";
import { RelayLifecycle, type RelayState } from "../../worker/relay/lifecycle";
import type { PushConfig } from "../../worker/relay/push-send";
import type { UserRow } from "../../worker/relay/store";
import { NodeSql } from "./node-sql";

export interface ClientEnd {
  /** A ParleyClient's own name: the user's route it opens when no other is named (`connect`). */
  readonly username?: string;
  onConnected(): void;
  onServerFrame(frame: ServerFrame): Promise<void>;
  onDisconnected(): void;
  whenIdle?(): Promise<void>;
}

/** workerd's bound on a socket's serialised attachment (worker/relay/attachment.ts). */
const MAX_ATTACHMENT_BYTES = 2048;

/**
 * The relay's end of one connection. The relay uses only `send`, `close` and the attachment
 * (session.ts, lifecycle.ts), and these behave as workerd's do: `send` and `close` throw once
 * the relay has closed the socket, and the attachment is a structured-clone copy, size-bounded.
 */
class RelaySocket {
  #attachment: Buffer | null = null;
  /** The relay closed it, or answered the client's close. */
  closed = false;

  constructor(
    readonly relay: NodeRelay,
    readonly conn: Conn,
  ) {}

  send(text: string): void {
    if (this.closed) throw new TypeError("WebSocket send() after close()");
    this.relay.fromRelay(this.conn, text);
  }

  close(code: number, reason: string): void {
    if (this.closed) throw new TypeError("WebSocket close() after close()");
    this.closed = true;
    this.relay.closedByRelay(this.conn, code, reason);
  }

  serializeAttachment(value: unknown): void {
    const bytes = serialize(value);
    if (bytes.length > MAX_ATTACHMENT_BYTES) throw new RangeError("attachment too large");
    this.#attachment = bytes;
  }

  deserializeAttachment(): unknown {
    return this.#attachment === null ? null : deserialize(this.#attachment);
  }
}

/** The relay code holds sockets as workerd's `WebSocket`; see RelaySocket for what it uses. */
function asWebSocket(s: RelaySocket): WebSocket {
  return s as unknown as WebSocket;
}

function asRelaySocket(ws: WebSocket): RelaySocket {
  const s: unknown = ws;
  if (!(s instanceof RelaySocket)) throw new TypeError("not a test socket");
  return s;
}

/** The `DurableObjectState` the relay uses (RelayState): storage, alarm and accepted sockets. */
class NodeObjectState implements RelayState {
  readonly storage: RelayState["storage"] & { readonly sql: NodeSql };
  /** When the alarm is set for (ms), or null; it survives the object, as in workerd. */
  alarmAt: number | null = null;
  /** Accepted sockets whose close the object has not handled yet. */
  readonly sockets = new Set<RelaySocket>();
  /** Events wait for the latest `blockConcurrencyWhile`. */
  ready: Promise<unknown> = Promise.resolve();
  /**
   * The runtime's answer to one fixed message, sent without waking the object: worker/relay.ts
   * sets it (with workerd's own class) to answer PING_TEXT with PONG_TEXT, and so does NodeRelay.
   */
  autoResponse: { request: string; response: string } | null = null;
  readonly #autoResponded = new WeakMap<RelaySocket, number>();

  constructor() {
    this.storage = {
      sql: new NodeSql(),
      getAlarm: async () => this.alarmAt,
      setAlarm: async (at: number) => {
        this.alarmAt = at;
      },
    };
  }

  blockConcurrencyWhile<T>(callback: () => Promise<T>): Promise<T> {
    const run = callback();
    this.ready = run;
    return run;
  }

  acceptWebSocket(ws: WebSocket): void {
    this.sockets.add(asRelaySocket(ws));
  }

  getWebSockets(): WebSocket[] {
    return [...this.sockets].map(asWebSocket);
  }

  getWebSocketAutoResponseTimestamp(ws: WebSocket): Date | null {
    const at = this.#autoResponded.get(asRelaySocket(ws));
    return at === undefined ? null : new Date(at);
  }

  /** Answer `text` on `s` as the runtime would, if it is the auto-response's request. */
  autoRespond(s: RelaySocket, text: string, now: number): boolean {
    const auto = this.autoResponse;
    if (auto === null || text !== auto.request || !this.sockets.has(s) || s.closed) return false;
    this.#autoResponded.set(s, now);
    s.send(auto.response);
    return true;
  }
}

/**
 * The hub's `Directory` object (worker/directory.ts) in Node: the product's KeyDirectory over its
 * own SQLite, which survives `restart`. Calls reach it a turn later, as an RPC does, and one at a
 * time; `fail` makes the next calls reject as a call to an unreachable object does.
 */
export class NodeDirectory {
  readonly sql = new NodeSql();
  keys = new KeyDirectory(this.sql);
  /** Calls this object has handled (the per-object load of bench/object-load.ts). */
  calls = 0;
  /** While true, every call rejects before reaching the object. */
  fail = false;
  /** The next this-many calls are applied and then reject, as when the answer is lost. */
  loseAnswers = 0;

  /** The object is evicted and starts again: memory gone, storage kept. */
  restart(): void {
    this.keys = new KeyDirectory(this.sql);
  }

  async call<T>(run: (keys: KeyDirectory) => T): Promise<T> {
    await new Promise((r) => setImmediate(r));
    if (this.fail) throw new Error("directory unreachable");
    this.calls++;
    const out = run(this.keys);
    if (this.loseAnswers > 0) {
      this.loseAnswers--;
      throw new Error("directory answer lost");
    }
    return out;
  }
}

/**
 * One `Group` object of the hub (worker/group.ts) in Node: the product's GroupSequencer over its
 * own SQLite, which survives `restart`. Calls reach it a turn later and one at a time, as an RPC
 * does; `fail` makes the next calls reject before reaching it; `loseAnswer` picks calls that are
 * applied and then reject, as when the answer is lost (a timeout, the caller restarting).
 */
export class NodeGroup {
  readonly sql = new NodeSql();
  seq = new GroupSequencer(this.sql);
  /** Calls this object has handled (the per-object load of bench/object-load.ts). */
  calls = 0;
  /** While true, every call rejects before reaching the object. */
  fail = false;
  /** Applied calls whose answer is lost: the caller sees a rejection. */
  loseAnswer: ((op: GroupOp) => boolean) | null = null;

  /** The object is evicted and starts again: memory gone, storage kept. */
  restart(): void {
    this.seq = new GroupSequencer(this.sql);
  }

  async apply(hubSeq: number, op: GroupOp): Promise<GroupCallResult> {
    await this.#reach();
    const out = this.seq.apply(hubSeq, op);
    if (this.loseAnswer?.(op) === true) throw new Error("group object answer lost");
    return out;
  }

  async seed(seq: number, record: GroupRecord): Promise<void> {
    await this.#reach();
    this.seq.seed(seq, record);
  }

  async #reach(): Promise<void> {
    await new Promise((r) => setImmediate(r));
    if (this.fail) throw new Error("group object unreachable");
    this.calls++;
  }
}

type RelayEvent = () => void | Promise<void>;

/**
 * One `Relay` object (the hub's, or a user's, `idFromName(hub + "/u/" + name)`): its storage and
 * alarm (NodeObjectState), its lifecycle, and its events, handled one at a time in arrival
 * order, each in its own turn of the event loop, as workerd does.
 */
export class NodeObject {
  readonly state = new NodeObjectState();
  life: RelayLifecycle;
  /** Events this object has handled (the per-object load of bench/object-load.ts). */
  events = 0;
  readonly #events: RelayEvent[] = [];
  readonly #running = new Set<Promise<void>>();
  /** The dispatch loop while it runs (it ends when no event is queued). */
  #dispatching: Promise<void> | null = null;

  constructor(
    private readonly make: (state: NodeObjectState) => RelayLifecycle,
    private readonly failures: string[],
  ) {
    this.state.autoResponse = { request: PING_TEXT, response: PONG_TEXT };
    this.life = make(this.state);
  }

  /** The object hibernates: memory gone, sockets and storage kept (see NodeRelay.hibernate). */
  rebuild(): void {
    this.life = this.make(this.state);
  }

  /** Queue an event for the object: handled after those before it, one per event-loop turn. */
  event(event: RelayEvent): void {
    this.events++;
    this.#events.push(event);
    this.#dispatching ??= this.#dispatch();
  }

  /**
   * A Durable Object RPC to this object: arguments and answer cross as structured clones, the
   * call is one event of the object's, and it rejects with what the method threw.
   */
  call<T>(run: (life: RelayLifecycle) => T | Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.event(async () => {
        try {
          resolve(structuredClone(await run(this.life)));
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  async #dispatch(): Promise<void> {
    for (;;) {
      await this.state.ready;
      const event = this.#events.shift();
      if (event === undefined) break;
      let run: Promise<void>;
      try {
        run = Promise.resolve(event());
      } catch (e) {
        run = Promise.reject(e);
      }
      const tracked: Promise<void> = run
        .catch((e: unknown) => {
          this.failures.push(`relay event threw: ${String(e)}`);
        })
        .finally(() => this.#running.delete(tracked));
      this.#running.add(tracked);
      // The next event in a later turn: what this one queued as microtasks runs first, as in
      // workerd, where each event is a task of its own.
      await new Promise((r) => setImmediate(r));
    }
    this.#dispatching = null;
  }

  /** What a settle waits for. */
  async quiet(): Promise<void> {
    await this.state.ready;
    await this.#dispatching;
    await Promise.all(this.#running);
  }

  idle(): boolean {
    return this.#dispatching === null && this.#events.length === 0 && this.#running.size === 0;
  }
}

export class Conn {
  /** Who the relay authenticated on this connection (from its `welcome`); null before. */
  username: string | null = null;
  closed = false;
  /** Frames waiting to be handed to the client, in order. */
  readonly out: ServerFrame[] = [];
  /** The relay closed the socket: the client learns it after the frames sent before. */
  closing: { code: number; reason: string } | null = null;
  pumping: Promise<void> | null = null;
  readonly socket: RelaySocket;

  constructor(
    readonly relay: NodeRelay,
    readonly end: ClientEnd,
    /** The object its socket reached (the hub's, or its user's). */
    readonly obj: NodeObject,
  ) {
    this.socket = new RelaySocket(relay, this);
  }

  /** What the engine's transport calls. */
  fromClient(frame: ClientFrame): void {
    if (this.closed) return;
    this.relay.fromClient(this, frame);
  }
}

export class NodeRelay {
  readonly conns = new Set<Conn>();
  /** Every frame handed to a client (after `intercept`), and who the relay had it for. */
  readonly log: Array<{ to: string | null; frame: ServerFrame }> = [];
  readonly clientLog: Array<{ from: string | null; frame: ClientFrame }> = [];
  intercept: ((to: string | null, frame: ServerFrame) => ServerFrame | null) | null = null;
  /** Relay bugs (an `internal` error, an invalid frame, a handler that threw); settle throws. */
  readonly failures: string[] = [];
  /** Engines that are not connected but may still be working (timers): awaited by settle. */
  readonly engines = new Set<ClientEnd>();
  /**
   * The relay's wall clock (ms), which the test clients share. Moving it runs no alarm: a real
   * client pings all along, so only `advance` models time passing in silence.
   */
  clock = 1_700_000_000_000;

  /** The hub's key directory object (PROTOCOL.md §7.4), `idFromName(hub + "/dir")`. */
  readonly directory = new NodeDirectory();
  /** The hub's group objects (PROTOCOL.md §7.5), `idFromName(hub + "/g/" + group)`, by group. */
  readonly groupObjects = new Map<string, NodeGroup>();
  /** The hub's object, `idFromName(hub)`. */
  readonly hubObject: NodeObject;
  /** Users' objects, `idFromName(hub + "/u/" + name)`, by name (created on first use). */
  readonly userObjects = new Map<string, NodeObject>();
  /** Groups' homes on users' routes, `idFromName(hub + "/gh/" + group)`, by group. */
  readonly homeObjects = new Map<string, NodeObject>();
  /** The hub's lobby on users' routes, `idFromName(hub + "/everyone")` (presence.ts). */
  readonly lobbyObject: NodeObject;
  /** Rendezvous objects of new devices waiting to be linked on users' routes, by rendezvous. */
  readonly rendezvousObjects = new Map<string, NodeObject>();
  /** Calls between users' objects that are applied and whose answer is then lost. */
  loseCall: ((method: keyof PeerGateway) => boolean) | null = null;
  /** `held` calls between users' objects so far (each after one or more acknowledgements). */
  heldCalls = 0;
  /**
   * A home that answers a member's group frame itself, without the group's home running it
   * (null: the home runs it): what a member's object does with an answer, tested alone.
   */
  homeAnswer: ((group: string, text: string) => string[] | null) | null = null;

  constructor(
    readonly hub = "main",
    readonly origin = "https://parley.test",
    /** Web Push settings (worker/relay/push-send.ts); null: push is off, as without VAPID keys. */
    readonly pushConfig: PushConfig | null = null,
    /**
     * The hub's default presence scope (PROTOCOL.md §6.3). "everyone" here, as a hub may choose:
     * the scenarios start online handshakes between users who never wrote to each other, which
     * needs the peer in presence. The production default ("contacts") is tested on its own.
     */
    readonly presenceDefault: PresenceScope = "everyone",
    /**
     * Clients open their user's route (`/ws?hub=&user=`, docs/ARCHITECTURE.md "User objects"):
     * each user is its own object, and calls between them cross as RPC (NodeObject.call); each
     * group is its home's (group-home.ts). By default as the test project says (vitest.config.ts
     * `node-routed` runs the group stories so). A test may switch it, as an app update does:
     * connections made after it take the other route.
     */
    public routed = process.env.PARLEY_TEST_ROUTED === "1",
  ) {
    this.hubObject = new NodeObject((st) => this.#lifecycle(st), this.failures);
    this.lobbyObject = new NodeObject((st) => this.#lifecycle(st), this.failures);
  }

  /** Events the hub's object has handled (the per-object load of bench/object-load.ts). */
  get events(): number {
    return this.hubObject.events;
  }

  /** The object of user `name` (created on first use, as `idFromName` would). */
  userObject(name: string): NodeObject {
    return this.#objectIn(this.userObjects, name);
  }

  /** The home of `group` on users' routes, `idFromName(hub + "/gh/" + group)` (group-home.ts). */
  homeObject(group: string): NodeObject {
    return this.#objectIn(this.homeObjects, group);
  }

  /** A rendezvous's object, `idFromName(hub + "/l/" + rendezvous)` (§4.8.3). */
  rendezvousObject(rendezvous: string): NodeObject {
    return this.#objectIn(this.rendezvousObjects, rendezvous);
  }

  #objectIn(objects: Map<string, NodeObject>, key: string): NodeObject {
    let o = objects.get(key);
    if (o === undefined) {
      o = new NodeObject((st) => this.#lifecycle(st), this.failures);
      objects.set(key, o);
    }
    return o;
  }

  /** The object holding `username`: its own on user routes, else the hub's. */
  objectOf(username: string): NodeObject {
    return this.routed ? this.userObject(userOfMember(username)) : this.hubObject;
  }

  #objects(): NodeObject[] {
    return [
      this.hubObject,
      this.lobbyObject,
      ...this.userObjects.values(),
      ...this.homeObjects.values(),
      ...this.rendezvousObjects.values(),
    ];
  }

  now(): number {
    return this.clock;
  }

  #lifecycle(state: NodeObjectState): RelayLifecycle {
    const scope = this.presenceDefault;
    const dir = this.directory;
    const hub = this.hub;
    // Only this hub's directory exists here; a call for another hub is a relay bug.
    const at = (h: string) => {
      if (h !== hub) throw new Error(`directory of another hub asked for: ${h}`);
      return dir;
    };
    const gateway: DirectoryGateway = {
      claim: (h, c) => at(h).call((k) => k.claim(c)),
      bind: (h, entry, owner, spk, pq) => at(h).call((k) => k.bind(entry, owner, spk, pq)),
      upload: (h, entry, owner, keys, kem, spk) =>
        at(h).call((k) => k.upload(entry, owner, keys, kem, spk)),
      take: (h, entry, owner, requester, now) =>
        at(h).call((k) => k.take(entry, owner, requester, now)),
      remaining: (h, entry, owner) => at(h).call((k) => k.remaining(entry, owner)),
      seed: (h, entries) => at(h).call((k) => k.seed(entries)),
    };
    // A group on users' routes has its own sequencer (`hub + "/gh"`, hub.ts #callGroup).
    const group = (h: string, name: string) => {
      if (h === `${hub}/gh`) return this.groupObject(`gh/${name}`);
      if (h !== hub) throw new Error(`group of another hub asked for: ${h}`);
      return this.groupObject(name);
    };
    const groups: GroupGateway = {
      apply: (h, name, hubSeq, op) => group(h, name).apply(hubSeq, op),
      seed: (h, name, seq, record) => group(h, name).seed(seq, record),
    };
    // Calls between users' objects (hub.ts PeerGateway): only this hub's objects exist here.
    const peer = (h: string, name: string) => {
      if (h !== hub) throw new Error(`user of another hub asked for: ${h}`);
      return this.userObject(name);
    };
    const rendezvous = (h: string, r: string) => {
      if (h !== hub) throw new Error(`rendezvous of another hub asked for: ${h}`);
      return this.rendezvousObject(r);
    };
    const home = (h: string, name: string) => {
      if (h !== hub) throw new Error(`home of another hub asked for: ${h}`);
      return this.homeObject(name);
    };
    // A call applied whose answer is then lost (a timeout, the caller restarting): `loseCall`.
    const lossy =
      <T>(method: keyof PeerGateway, call: () => Promise<T>) =>
      async (): Promise<T> => {
        const out = await call();
        if (this.loseCall?.(method) === true) throw new Error(`${method} answer lost`);
        return out;
      };
    const peers: PeerGateway = {
      enqueue: (h, e) => lossy("enqueue", () => peer(h, e.to).call((l) => l.hub.enqueue(e)))(),
      held: (h, to, address, n, settled) => {
        this.heldCalls++;
        return peer(h, to).call((l) => l.hub.held(to, address, n, settled));
      },
      bundle: (h, q) => peer(h, q.username).call((l) => l.hub.bundle(h, q, true)),
      known: (h, name) => peer(h, name).call((l) => l.hub.known(name)),
      presence: (h, viewer, user, st) =>
        peer(h, viewer).call((l) => l.hub.peerPresence(viewer, user, st)),
      toHome: (h, name, member, text) => {
        const answer = this.homeAnswer?.(name, text) ?? null;
        if (answer !== null) return Promise.resolve(answer);
        return lossy("toHome", () =>
          home(h, name).call((l) => l.hub.fromMember(h, name, member, text)),
        )();
      },
      lobby: (h, user, st) => {
        if (h !== hub) throw new Error(`lobby of another hub asked for: ${h}`);
        return this.lobbyObject.call((l) => l.hub.lobby(h, user, st));
      },
      lobbyPresence: (h, viewer, user, st) =>
        peer(h, viewer).call((l) => l.hub.lobbyPresence(viewer, user, st)),
      handOver: (h, username, identityKey) => {
        if (h !== hub) throw new Error(`hub object of another hub asked for: ${h}`);
        return lossy("handOver", () =>
          this.hubObject.call((l) => l.hub.handOver(username, identityKey, this.clock)),
        )();
      },
      groupExport: (h, name) => {
        if (h !== hub) throw new Error(`hub object of another hub asked for: ${h}`);
        return lossy("groupExport", () =>
          this.hubObject.call((l) => l.hub.groupExport(name, this.clock)),
        )();
      },
      adopt: (h, name, member) =>
        lossy("adopt", () => home(h, name).call((l) => l.hub.adopt(h, name, member)))(),
      deviceRemoved: (h, name, member, at) =>
        home(h, name).call((l) => l.hub.deviceRemoved(h, name, member, at)),
      homeRoom: (h, name, member) => home(h, name).call((l) => l.hub.homeRoom(h, name, member)),
      homeSettled: (h, name, member, mids) =>
        lossy("homeSettled", () =>
          home(h, name).call((l) => l.hub.homeSettled(h, name, member, mids)),
        )(),
      nameReclaimed: (h, name, member) =>
        home(h, name).call((l) => l.hub.nameReclaimed(h, name, member)),
      linkOffered: (h, r) => rendezvous(h, r).call((l) => l.hub.linkOffered(r, this.clock)),
      linkAnswered: (h, r, answer) =>
        rendezvous(h, r).call((l) => l.hub.linkAnswered(r, answer, this.clock)),
      fromHome: (h, name, member, texts) =>
        lossy("fromHome", () =>
          peer(h, userOfMember(member)).call((l) => l.hub.fromHome(h, name, member, texts)),
        )(),
    };
    return new RelayLifecycle(
      state,
      () => this.clock,
      gateway,
      groups,
      this.pushConfig,
      null,
      () => scope,
      peers,
    );
  }

  /** The object of `group` (created on first use, as `idFromName` would). */
  groupObject(group: string): NodeGroup {
    let g = this.groupObjects.get(group);
    if (g === undefined) {
      g = new NodeGroup();
      this.groupObjects.set(group, g);
    }
    return g;
  }

  // -- connections ------------------------------------------------------------------------------

  /**
   * Open a socket to the relay (as `/ws?hub=` with the relay's origin); `user`: the user the
   * client will authenticate as, whose route it opens (`&user=`) when the relay is `routed`, or
   * the rendezvous a new device waits under (`&link=`, §4.8.3).
   */
  connect(end: ClientEnd, named?: string | { link: string }): Conn {
    const user = named ?? end.username;
    const routed = this.routed && user !== undefined;
    const obj = !routed
      ? this.hubObject
      : typeof user === "string"
        ? this.userObject(user)
        : this.rendezvousObject(user.link);
    const c = new Conn(this, end, obj);
    this.conns.add(c);
    this.engines.add(end);
    end.onConnected();
    const route = !routed ? "" : typeof user === "string" ? `&user=${user}` : `&link=${user.link}`;
    const request = new Request(`https://relay.test/ws?hub=${this.hub}${route}`, {
      headers: { Upgrade: "websocket", Origin: this.origin },
    });
    obj.event(() => {
      const admitted = obj.life.admit(request);
      if (admitted instanceof Response) {
        // Refused upgrade: the client sees the connection fail.
        c.closing = { code: 1006, reason: `HTTP ${admitted.status}` };
        this.#wake(c);
        return;
      }
      obj.life.accept(asWebSocket(c.socket), admitted);
    });
    return c;
  }

  /** The client closes its socket; the relay gets the close as its next event. */
  disconnect(c: Conn): void {
    if (c.closed) return;
    this.#clientGone(c, 1000, "bye");
  }

  /** The newest open connection the relay authenticated as `username`. */
  online(username: string): Conn | undefined {
    let found: Conn | undefined;
    for (const c of this.conns) if (c.username === username && !c.closed) found = c;
    return found;
  }

  /** Send `frame` to the client as if the relay had (it still passes `intercept` and the log). */
  push(c: Conn, frame: ServerFrame): void {
    if (c.closed) return;
    const parsed = parseServerFrame(JSON.stringify(frame));
    if (!parsed.ok) throw new Error(`push: not a valid server frame (${parsed.code})`);
    this.#toClient(c, parsed.frame);
  }

  /** Wait until no frame is in flight either way, the relay is idle and every engine is. */
  async settle(): Promise<void> {
    for (let i = 0; i < 10_000; i++) {
      for (const o of this.#objects()) await o.quiet();
      for (const e of [...this.engines, ...[...this.conns].map((c) => c.end)]) await e.whenIdle?.();
      await Promise.all(this.#pumps());
      // Reports to senders in other objects leave within HELD_DELAY_MS of real time with no
      // further input (hub.ts): settling lets that time pass, as one event each.
      for (const o of this.#objects()) {
        if (o.life.hub.heldReportsPending) o.event(() => o.life.hub.sendHeldReports());
      }
      if (!this.#idle()) continue; // each wait above takes a turn of the event loop or more
      // One more turn: whatever is due right now (an event just queued, a timer) runs first.
      await new Promise((r) => setTimeout(r, 0));
      if (this.#idle()) {
        if (this.failures.length > 0) throw new Error(`relay failed: ${this.failures.join("; ")}`);
        return;
      }
    }
    throw new Error("node relay did not settle");
  }

  // -- the object's runtime ---------------------------------------------------------------------

  /**
   * Let `ms` pass with no client sending anything: the alarm runs at each time it is set for on
   * the way (the clock reads that time while it runs), as often as it is set again.
   */
  async advance(ms: number): Promise<void> {
    const until = this.clock + ms;
    for (let runs = 0; ; runs++) {
      // The earliest alarm of any object first.
      let next: NodeObject | null = null;
      for (const o of this.#objects()) {
        const t = o.state.alarmAt;
        if (t !== null && t <= until && (next === null || t < (next.state.alarmAt ?? 0))) next = o;
      }
      if (next === null) break;
      const obj = next;
      const at = obj.state.alarmAt as number;
      if (runs === 10_000) throw new Error("the alarm keeps setting itself");
      this.clock = Math.max(this.clock, at);
      // workerd clears a firing alarm before calling the handler, which may set the next one.
      obj.state.alarmAt = null;
      obj.event(() => obj.life.alarm());
      await this.settle();
    }
    this.clock = until;
    await this.settle();
  }

  /**
   * The object hibernates and wakes again: its memory (sessions, rate buckets, delivery state,
   * caches) is gone, its sockets stay open with their attachments, and a new lifecycle restores
   * them as a woken object does. workerd hibernates an object only once no timer is pending, so
   * the delivery flush runs first.
   */
  async hibernate(): Promise<void> {
    await this.settle();
    for (const o of this.#objects()) {
      o.life.hub.deliveries.flush();
      o.rebuild();
    }
    await this.settle();
  }

  // -- what the relay stores (read through its own Store) ----------------------------------------

  group(name: string): GroupRecord | null {
    return this.groupHolder(name).life.store.getGroup(name);
  }

  /** The group object's seq of the record the hub's object holds for `name` (group-object.ts). */
  groupSeq(name: string): number {
    return this.groupHolder(name).life.store.getGroupSeq(name);
  }

  /** The object holding a group's record: its home on users' routes, else the hub's. */
  groupHolder(name: string): NodeObject {
    return this.routed ? this.homeObject(name) : this.hubObject;
  }

  user(username: string): UserRow | null {
    return this.objectOf(username).life.store.getUser(username);
  }

  /**
   * Every row of every table of the relay's SQLite storages (what a thief of the relay gets): the
   * hub object's tables by name, the directory object's as `directory/<name>`, each group object's as
   * `group/<group>/<name>`.
   */
  dumpTables(): Record<string, Record<string, unknown>[]> {
    const out: Record<string, Record<string, unknown>[]> = {};
    const dump = (sql: Pick<SqlStorage, "exec">, prefix: string) => {
      const tables = sql
        .exec("SELECT name FROM sqlite_master WHERE type = 'table'")
        .toArray()
        .map((r) => String(r.name));
      for (const t of tables) out[prefix + t] = sql.exec(`SELECT * FROM "${t}"`).toArray();
    };
    dump(this.hubObject.state.storage.sql, "");
    for (const [name, o] of this.userObjects) dump(o.state.storage.sql, `user/${name}/`);
    for (const [name, o] of this.homeObjects) dump(o.state.storage.sql, `home/${name}/`);
    dump(this.directory.sql, "directory/");
    for (const [name, g] of this.groupObjects) dump(g.sql, `group/${name}/`);
    return out;
  }

  /** The leaf key the relay lists for `username` in `group`: its oldest (PROTOCOL.md §9.3). */
  leafOf(group: string, username: string): Leaf | null {
    return this.groupHolder(group).life.store.leafQueues(group).get(username)?.l[0] ?? null;
  }

  /** The Web Push subscription the relay holds for `username`'s device, if any (§7.9). */
  pushSubscription(username: string): { endpoint: string; pending: boolean } | null {
    const sub = this.objectOf(username).life.hub.pushes.subscription(username);
    return sub === null ? null : { endpoint: sub.endpoint, pending: sub.state.pending };
  }

  /**
   * The key store that holds an entry's prekeys (a username or a device's address, §7.4): its
   * user's own object on users' routes (PROTOCOL.md §4.1), else the hub's directory object.
   */
  keysOf(entry: string): KeyDirectory {
    if (!this.routed) return this.directory.keys;
    const own = this.objectOf(entry).life.hub;
    return own.ownKeys();
  }

  /** The signed prekey held for an entry (a username or a device's address). */
  signedPrekey(entry: string): SignedPrekey | null {
    return this.keysOf(entry).store.getSignedPrekey(entry);
  }

  /** One-time prekeys held for `username` (PROTOCOL.md §7.4). */
  oneTimePrekeys(username: string): number {
    return this.keysOf(username).store.countOneTimePrekeys(username);
  }

  /** One-time ML-KEM prekeys stored for `username` (PROTOCOL.md §8.3.5). */
  oneTimeKemPrekeys(username: string): number {
    return this.keysOf(username).store.countOneTimeKemPrekeys(username);
  }

  /** Hand out up to `n` of the user's one-time prekeys, oldest first, as bundle fetches do. */
  takeOneTimePrekeys(username: string, n = Number.POSITIVE_INFINITY): number {
    const { store } = this.keysOf(username);
    let taken = 0;
    while (taken < n && store.takeOneTimePrekey(username) !== null) taken++;
    return taken;
  }

  /** Items stored for `username` and not yet acknowledged, as the relay counts them (§7.3). */
  stored(username: string): number {
    const { store, hub } = this.objectOf(username).life;
    return store.countMailbox(username) + hub.deliveries.groupPending(username).total;
  }

  /** The relay loses a stored direct item or commit (it fails, or lies); true if it was there. */
  lose(recipient: string, mid: string): boolean {
    return this.objectOf(recipient).life.store.ack(recipient, [Number(mid)]).length === 1;
  }

  /** The operator releases a username: its directory entry and one-time prekeys are deleted. */
  releaseName(username: string): void {
    this.directory.keys.release(username);
    if (this.routed) this.keysOf(username).release(username);
    this.objectOf(username).life.store.deleteUser(username);
  }

  // -- plumbing (called by Conn and RelaySocket) -----------------------------------------------

  /** A frame the client sent: logged, then the object's next socket message event. */
  fromClient(c: Conn, frame: ClientFrame): void {
    this.clientLog.push({ from: c.username, frame });
    const text = JSON.stringify(frame);
    const obj = c.obj;
    if (obj.state.autoRespond(c.socket, text, this.clock)) return;
    const ws = asWebSocket(c.socket);
    obj.event(() => obj.life.message(ws, text));
  }

  /** A frame the relay sent on `c`: parsed at the client's boundary, then handed to it. */
  fromRelay(c: Conn, text: string): void {
    if (c.closed) return; // the client is gone: lost on the wire
    const parsed = parseServerFrame(text);
    if (!parsed.ok) {
      this.failures.push(`relay sent an invalid frame (${parsed.code})`);
      return;
    }
    const f = parsed.frame;
    if (f.t === "welcome") c.username = f.username;
    if (f.t === "error" && f.code === "internal") this.failures.push("relay answered `internal`");
    try {
      this.#toClient(c, f);
    } catch (e) {
      // The relay's send swallows exceptions (session.ts): record a broken test hook instead.
      this.failures.push(String(e));
    }
  }

  /** The relay closed `c`'s socket: the client sees it after the frames sent before. */
  closedByRelay(c: Conn, code: number, reason: string): void {
    if (c.closed) return;
    c.closing = { code, reason };
    this.#wake(c);
  }

  #toClient(c: Conn, frame: ServerFrame): void {
    let f: ServerFrame | null = frame;
    if (this.intercept !== null) {
      f = this.intercept(c.username, frame);
      if (f === null) return;
      if (f !== frame) {
        // A rewritten frame crosses the wire as text too.
        const again = parseServerFrame(JSON.stringify(f));
        if (!again.ok) throw new Error(`intercept produced an invalid frame (${again.code})`);
        f = again.frame;
      }
    }
    this.log.push({ to: c.username, frame: f });
    c.out.push(f);
    this.#wake(c);
  }

  #wake(c: Conn): void {
    if (c.pumping === null) c.pumping = this.#pump(c);
  }

  async #pump(c: Conn): Promise<void> {
    await Promise.resolve();
    // Handed over without waiting for each, as the PWA's socket handler does (controller.ts):
    // frames that arrive together are queued in the engine together (its acks are gathered).
    while (c.out.length > 0 && !c.closed) {
      const f = c.out.shift() as ServerFrame;
      void c.end.onServerFrame(f);
    }
    c.pumping = null;
    // The client answers the relay's close (RFC 6455 §5.5.1); the object gets that as an event.
    if (c.closing !== null && !c.closed) this.#clientGone(c, c.closing.code, c.closing.reason);
  }

  #clientGone(c: Conn, code: number, reason: string): void {
    c.closed = true;
    c.out.length = 0;
    this.conns.delete(c);
    c.end.onDisconnected();
    const s = c.socket;
    const obj = c.obj;
    if (!obj.state.sockets.has(s)) return; // never accepted
    obj.event(() => {
      obj.state.sockets.delete(s);
      obj.life.closed(asWebSocket(s), code, reason);
    });
  }

  #pumps(): Promise<void>[] {
    return [...this.conns].flatMap((c) => (c.pumping === null ? [] : [c.pumping]));
  }

  #idle(): boolean {
    return this.#objects().every((o) => o.idle()) && this.#pumps().length === 0;
  }
}
