/**
 * The hub's Durable Object (PROTOCOL.md §4.1): accepts WebSockets with the hibernation API and
 * stays thin. What needs workerd's own classes (the object base class, the socket pair, the 101
 * response, the ping auto-response) is here; every event goes to `RelayLifecycle`, which the
 * Node tests run as well, and from there to `Hub`, where the protocol logic lives.
 */
import { DurableObject } from "cloudflare:workers";
import {
  type GroupState,
  type LinkOffer,
  PING_TEXT,
  PONG_TEXT,
  type PresenceUser,
  userOfMember,
} from "../shared/protocol";
import type { BlobRouteEnv } from "./blob-routes";
import type { Directory } from "./directory";
import type { Group } from "./group";
import type { HomeReceipt, MemberBinding } from "./relay/group-home";
import type { GroupGateway } from "./relay/group-object";
import type {
  BundleAnswer,
  BundleQuery,
  DirectEnqueue,
  EnqueueResult,
  HandOver,
  LinkAnswer,
  PeerGateway,
  SettledSend,
} from "./relay/hub";
import type { DirectoryGateway } from "./relay/key-directory";
import { RelayLifecycle } from "./relay/lifecycle";
import { presenceDefaults } from "./relay/presence";
import { type PushEnv, pushConfigFromEnv } from "./relay/push-send";
import type { GroupExport } from "./relay/store";

/**
 * The hub's key directory is its own object, `idFromName(hub + "/dir")` in the DIRECTORY
 * namespace (worker/directory.ts); calls go over Durable Object RPC and may reject (§7.4).
 */
function directoryOf(ns: DurableObjectNamespace<Directory>): DirectoryGateway {
  const dir = (hub: string) => ns.get(ns.idFromName(`${hub}/dir`));
  return {
    claim: (hub, claim) => dir(hub).claim(claim),
    bind: (hub, entry, owner, spk, pq) => dir(hub).bind(entry, owner, spk, pq),
    upload: (hub, entry, owner, keys, kem, spk) =>
      dir(hub).upload(entry, owner, [...keys], [...kem], spk),
    take: (hub, entry, owner, requester, now) => dir(hub).take(entry, owner, requester, now),
    remaining: (hub, entry, owner) => dir(hub).remaining(entry, owner),
    seed: (hub, entries) => dir(hub).seed([...entries]),
  };
}

/**
 * Each group of the hub is its own object, `idFromName(hub + "/g/" + group)` in the GROUP
 * namespace (worker/group.ts); the hub calls it for every join, leave, removal and commit (§7.5).
 */
function groupsOf(ns: DurableObjectNamespace<Group>): GroupGateway {
  const obj = (hub: string, group: string) => ns.get(ns.idFromName(`${hub}/g/${group}`));
  return {
    apply: (hub, group, hubSeq, op) => obj(hub, group).apply(hubSeq, op),
    seed: (hub, group, seq, record) => obj(hub, group).seed(seq, record),
  };
}

/**
 * Each user of a hub reached by its own route (`/ws?hub=h&user=name`) is its own object,
 * `idFromName(hub + "/u/" + name)` in the RELAY namespace (docs/ARCHITECTURE.md "User objects");
 * a user's object calls another's over Durable Object RPC. Only Workers with this binding can
 * make such calls: no route of the Worker reaches them.
 */
export function peersOf(ns: DurableObjectNamespace<Relay>): PeerGateway {
  // Stubs are kept (idFromName and get cost ~100 µs a message under `wrangler dev`); one whose
  // call failed is made again, as a stub may be broken after the object it reached reset.
  const stubs = new Map<string, DurableObjectStub<Relay>>();
  const stub = (key: string) => {
    let stub = stubs.get(key);
    if (stub === undefined) {
      if (stubs.size >= MAX_PEER_STUBS) stubs.delete(stubs.keys().next().value as string);
      stub = ns.get(ns.idFromName(key));
      stubs.set(key, stub);
    }
    return stub;
  };
  // A group's home (worker/relay/group-home.ts) is a Relay object too.
  // So is a rendezvous's, where a new device waits to be linked (PROTOCOL.md §4.8.3).
  // And the hub's lobby, for "everyone on this hub" on users' routes (§6.3).
  const keyOf = (hub: string, to: Peer) =>
    "user" in to
      ? `${hub}/u/${userOfMember(to.user)}`
      : "group" in to
        ? `${hub}/gh/${to.group}`
        : "link" in to
          ? `${hub}/l/${to.link}`
          : "hub" in to
            ? hub
            : `${hub}/everyone`;
  // RPC results are typed per method below (the stub's own types are promise-like unions).
  // `idempotent`: the call may run twice with one effect, so it is made once more, on a new
  // stub, when the runtime failed it (retryableCallError): the answer a reset object lost in
  // flight, or a stub broken by that reset, then costs no error to the client.
  const call = async <T>(
    hub: string,
    to: string | Exclude<Peer, { user: string }>,
    run: (s: DurableObjectStub<Relay>) => PromiseLike<unknown>,
    idempotent = false,
  ): Promise<T> => {
    const key = keyOf(hub, typeof to === "string" ? { user: to } : to);
    try {
      return (await run(stub(key))) as T;
    } catch (e) {
      stubs.delete(key);
      if (!idempotent || !retryableCallError(e)) throw e;
      return (await run(stub(key))) as T;
    }
  };
  return {
    // Keyed by the sender's device and frame id (§7.3 "Retries"): a second run is the same item.
    enqueue: (hub, e) => call<EnqueueResult>(hub, e.to, (s) => s.enqueue(e), true),
    // A figure and settled sends, not increments: the same report twice is one report.
    held: (hub, to, address, n, settled) =>
      call<void>(hub, to, (s) => s.held(to, address, n, settled), true),
    bundle: (hub, q) => call<BundleAnswer>(hub, q.username, (s) => s.bundle(hub, q)),
    known: (hub, name) => call<boolean>(hub, name, (s) => s.known(name), true),
    presence: (hub, viewer, who, state) =>
      call<void>(hub, viewer, (s) => s.presence(viewer, who, state), true),
    toHome: (hub, group, member, text) =>
      call<string[]>(hub, { group }, (s) => s.groupFrame(hub, group, member, text)),
    fromHome: (hub, group, member, texts) =>
      call<HomeReceipt>(hub, member, (s) => s.fromHome(hub, group, member, texts)),
    lobby: (hub, user, state) =>
      call<PresenceUser[]>(hub, { lobby: true }, (s) => s.lobby(hub, user, state)),
    lobbyPresence: (hub, viewer, user, state) =>
      call<void>(hub, viewer, (s) => s.lobbyPresence(viewer, user, state), true),
    handOver: (hub, username, identityKey) =>
      call<HandOver | null | "busy">(hub, { hub: true }, (s) => s.handOver(username, identityKey)),
    groupExport: (hub, group) =>
      call<GroupExport | null | "busy">(hub, { hub: true }, (s) => s.groupExport(group)),
    adopt: (hub, group, member) =>
      call<GroupState | null>(hub, { group }, (s) => s.adopt(hub, group, member)),
    deviceRemoved: (hub, group, member, at) =>
      call<void>(hub, { group }, (s) => s.deviceRemoved(hub, group, member, at)),
    nameReclaimed: (hub, group, member) =>
      call<boolean>(hub, { group }, (s) => s.nameReclaimed(hub, group, member)),
    homeRoom: (hub, group, member) =>
      call<void>(hub, { group }, (s) => s.homeRoom(hub, group, member)),
    homeSettled: (hub, group, member, mids) =>
      call<void>(hub, { group }, (s) => s.homeSettled(hub, group, member, mids)),
    linkOffered: (hub, link) => call<LinkOffer | null>(hub, { link }, (s) => s.linkOffered(link)),
    linkAnswered: (hub, link, answer) =>
      call<boolean>(hub, { link }, (s) => s.linkAnswered(link, answer)),
  };
}

/**
 * Whether the runtime, not the called object's code, failed a call between objects, such that
 * the same call on a new stub may succeed (Cloudflare, Durable Objects "Error handling"): the
 * object reset (`durableObjectReset`: it was aborted or restarted, with the call in flight or
 * since this stub reached it) or the runtime marked it `retryable`. Never an error the object
 * threw (`remote`), and never an overloaded object, which a retry would load more.
 */
export function retryableCallError(e: unknown): boolean {
  if (typeof e !== "object" || e === null) return false;
  const x = e as {
    remote?: unknown;
    overloaded?: unknown;
    retryable?: unknown;
    durableObjectReset?: unknown;
  };
  if (x.remote === true || x.overloaded === true) return false;
  return x.retryable === true || x.durableObjectReset === true;
}

/** The objects a user's object calls (peersOf). */
type Peer =
  | { user: string }
  | { group: string }
  | { link: string }
  | { lobby: true }
  | { hub: true };

/** Stubs of other users' objects one object keeps (peersOf). */
const MAX_PEER_STUBS = 1000;

export class Relay extends DurableObject {
  readonly #life: RelayLifecycle;

  constructor(ctx: DurableObjectState, env: unknown) {
    super(ctx, env as never);
    // Keep-alives are answered by the runtime without waking the object (PROTOCOL.md §4.5).
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_TEXT, PONG_TEXT));
    const e = env as PushEnv & BlobRouteEnv;
    const owners = e.BLOB_OWNER;
    // Each identity's blob ledger is its own object (worker/blobs.ts, PROTOCOL.md §7.10).
    const blobs =
      owners === undefined
        ? null
        : {
            mint: (owner: string, size: number) => owners.get(owners.idFromName(owner)).mint(size),
          };
    this.#life = new RelayLifecycle(
      ctx,
      () => Date.now(),
      directoryOf((env as { DIRECTORY: DurableObjectNamespace<Directory> }).DIRECTORY),
      groupsOf((env as { GROUP: DurableObjectNamespace<Group> }).GROUP),
      pushConfigFromEnv(e),
      blobs,
      // Hubs whose users see each other online unless they choose otherwise (§6.3).
      presenceDefaults((env as { PRESENCE_EVERYONE_HUBS?: unknown }).PRESENCE_EVERYONE_HUBS),
      peersOf((env as { RELAY: DurableObjectNamespace<Relay> }).RELAY),
    );
  }

  // -- calls from other users' objects (PeerGateway); plain data in and out -----------------

  enqueue(e: DirectEnqueue): EnqueueResult {
    return this.#life.hub.enqueue(e);
  }

  held(to: string, address: string, n: number, settled: readonly SettledSend[]): void {
    this.#life.hub.held(to, address, n, settled);
  }

  bundle(hub: string, q: BundleQuery): Promise<BundleAnswer> {
    return this.#life.hub.bundle(hub, q, true);
  }

  known(username: string): boolean {
    return this.#life.hub.known(username);
  }

  presence(viewer: string, user: string, state: PresenceUser | null): void {
    this.#life.hub.peerPresence(viewer, user, state);
  }

  /** In the hub's object: what it held for a user who now takes its own route. */
  handOver(username: string, identityKey: string): HandOver | null | "busy" {
    return this.#life.hub.handOver(username, identityKey, Date.now());
  }

  /** In the hub's object: one of its groups, which moves to its home on users' routes. */
  groupExport(group: string): GroupExport | null | "busy" {
    return this.#life.hub.groupExport(group, Date.now());
  }

  // -- the hub's lobby (PROTOCOL.md §6.3 "everyone on this hub" on users' routes) --------------

  lobby(hub: string, user: string, state: PresenceUser | null): PresenceUser[] {
    return this.#life.hub.lobby(hub, user, state);
  }

  lobbyPresence(viewer: string, user: string, state: PresenceUser | null): void {
    this.#life.hub.lobbyPresence(viewer, user, state);
  }

  // -- a rendezvous's object (PROTOCOL.md §4.8.3), called by a user's -------------------------

  linkOffered(rendezvous: string): LinkOffer | null {
    return this.#life.hub.linkOffered(rendezvous, Date.now());
  }

  linkAnswered(rendezvous: string, answer: LinkAnswer): boolean {
    return this.#life.hub.linkAnswered(rendezvous, answer, Date.now());
  }

  // -- groups on users' routes (worker/relay/group-home.ts) ------------------------------------

  /** In a group's home: one group frame of a member, forwarded by the member's object. */
  groupFrame(hub: string, group: string, member: MemberBinding, text: string): Promise<string[]> {
    return this.#life.hub.fromMember(hub, group, member, text);
  }

  /** In a group's home: a member's identity removed its device `at` (PROTOCOL.md §4.7). */
  deviceRemoved(hub: string, group: string, member: MemberBinding, at: string): Promise<void> {
    return this.#life.hub.deviceRemoved(hub, group, member, at);
  }

  /** In a group's home: `member`'s name went to another identity (PROTOCOL.md §4.3). */
  nameReclaimed(hub: string, group: string, member: MemberBinding): Promise<boolean> {
    return this.#life.hub.nameReclaimed(hub, group, member);
  }

  /** In a group's home: the object of `member` (an address) has room again. */
  homeRoom(hub: string, group: string, member: string): void {
    this.#life.hub.homeRoom(hub, group, member);
  }

  /** In a group's home: the object of `member` settled items it took write-behind (§7.3). */
  homeSettled(hub: string, group: string, member: string, mids: string[]): void {
    this.#life.hub.homeSettled(hub, group, member, mids);
  }

  /** In a group's home: a member whose user's object took it over from the hub's route. */
  adopt(hub: string, group: string, member: MemberBinding): Promise<GroupState | null> {
    return this.#life.hub.adopt(hub, group, member);
  }

  /** In a member's object: what its group's home sends it. */
  fromHome(hub: string, group: string, member: string, texts: string[]): HomeReceipt {
    return this.#life.hub.fromHome(hub, group, member, texts);
  }

  override async fetch(request: Request): Promise<Response> {
    const admitted = this.#life.admit(request);
    if (admitted instanceof Response) return admitted;
    const pair = new WebSocketPair();
    this.#life.accept(pair[1], admitted);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    await this.#life.message(ws, message);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.#life.closed(ws, code, reason);
  }

  override async webSocketError(ws: WebSocket, _error: unknown): Promise<void> {
    this.#life.errored(ws);
  }

  override async alarm(): Promise<void> {
    await this.#life.alarm();
  }
}
