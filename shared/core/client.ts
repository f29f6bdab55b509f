/**
 * ParleyClient: the runner — the one impure part of the protocol engine (PROTOCOL.md §8–§10,
 * docs/ARCHITECTURE.md "How the engine works"). Every input (a relay frame, a user verb, a
 * timer, the socket opening or closing) is queued, one at a time, into the pure
 * `step(state, input)` of engine/step.ts, which returns the next state and its effects. The
 * runner then
 *   1. commits `[owner precondition, ...writes]` in ONE atomic store batch (§10.2): if another
 *      engine took the store over, nothing is written, nothing is sent, and this one stops;
 *   2. only after that batch, adopts the new state, hands the frames to the transport, emits the
 *      events and sets the timers.
 * So no frame ever leaves whose state change is not durably written (write-ahead, §10.1), for
 * every input alike, and a crash between the batch and the sends loses nothing: what was sent
 * is in the registry (engine/inflight.ts) and goes again, byte for byte, at the next welcome.
 */
import {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  identityFingerprint,
  randomBytes,
  safetyNumber,
} from "../crypto";
import { fromB64u, toB64u } from "../encoding";
import {
  type ClientFrame,
  type DeviceEntry,
  type DeviceList,
  LIMITS,
  PROTOCOL_VERSION,
  type PresenceScope,
  type ServerFrame,
} from "../protocol";
import type {
  BlobTicket,
  ClientStore,
  ContactInfo,
  ConversationId,
  ConversationSummary,
  LinkRequest,
  Listener,
  OutgoingAction,
  OwnDevices,
  ParleyClientApi,
  ParleyClientOptions,
  ParleyEvent,
  SendTextOptions,
  StoreOp,
  Tuning,
} from "./client-api";
import { StorePreconditionError } from "./client-api";
import type { FileRef, Invite } from "./content";
import { signDeviceList } from "./devices";
import { loadPinnedDevices } from "./engine/devices";
import type { Effect } from "./engine/effects";
import { mayCarry } from "./engine/link";
import { loadEngine, parseWith } from "./engine/load";
import type { EngineState, Env } from "./engine/state";
import { type Input, type StepResult, step, type Verb } from "./engine/step";
import { contactInfo, presenceList } from "./engine/summaries";
import { CoreError, isCoreError } from "./errors";
import type { GroupPolicy } from "./group-access";
import {
  checkLinkOffer,
  formatLinkCode,
  LinkError,
  type LinkTransfer,
  listLinking,
  listRemoving,
  offeredDevice,
  parseLinkCode,
  sealLinkAnswer,
} from "./linking";
import { DAY } from "./prekeys";
import { KEYS, OwnerSchema } from "./store";

export { HANDSHAKE_RETRY_MS, SENT_KEEP_MS } from "./engine/direct";
export { GAP_GRACE_MS } from "./engine/gaps";

export const DEFAULT_TUNING: Tuning = {
  groupUpdateAfterMessages: 100,
  groupUpdateAfterMs: DAY,
  fallbackCommitDelayMs: 5000,
  signedPrekeyRotateMs: 7 * DAY,
  signedPrekeyGraceMs: 14 * DAY,
  oneTimePrekeyBatch: LIMITS.maxOneTimePrekeysPerUpload,
};

/**
 * Acknowledgements held at most (PROTOCOL.md §7.3): half the relay's delivery window, so a drain
 * never stalls on a window full of items waiting for their acks.
 */
export const ACK_GATHER = LIMITS.deliverWindow / 2;

/**
 * Called by the runner after a step's batch is committed, before it carries out effect `index`
 * of `all` — every window a crash can hit. Tests throw from it to kill the runner there
 * (test/node/engine-crash-safety.test.ts); the PWA never sets it.
 */
export type EffectBoundary = (effect: Effect, index: number, all: readonly Effect[]) => void;

export class ParleyClient implements ParleyClientApi {
  readonly username: string;
  readonly hub: string;
  readonly identityKey: string;
  readonly fingerprint: string;

  private readonly env: Env;
  private readonly store: ClientStore;
  private readonly o: ParleyClientOptions;
  private readonly schedule: (ms: number, fn: () => void) => () => void;
  private state: EngineState;
  private gen: number;
  /** Another engine instance took over the store: refuse to write or send anything (§10.2). */
  private stale = false;
  /** Set by `stop`: no further input is taken. */
  private stopped = false;
  /** Sockets opened so far; a frame goes out only on the socket its step was made for. */
  private socket = 0;
  /** Upload tickets asked for and not yet answered, by frame id (requestBlobTicket). */
  private readonly tickets = new Map<
    string,
    { resolve: (t: BlobTicket) => void; reject: (e: Error) => void }
  >();
  /**
   * Frames sent by the runner itself whose answer (`accepted`, `link_offered` or `error` with
   * the same id) is awaited outside the steps: the linking and device-list requests, which
   * change no stored state until the relay answered (§4.8.3).
   */
  private readonly awaiting = new Map<
    string,
    { resolve: (f: ServerFrame) => void; reject: (e: Error) => void }
  >();
  private socketOpen = false;
  private chain: Promise<unknown> = Promise.resolve();
  /** Inputs queued and not finished: receipts are flushed when it drops to 0 (§8.6). */
  private queued = 0;
  /**
   * Mids whose steps are committed and whose `ack` is held for one frame (§7.3): sent when the
   * input queue is empty or ACK_GATHER are due, on the socket their steps were made for.
   */
  private acksDue: string[] = [];
  private readonly listeners = new Set<Listener>();
  private readonly timers = new Map<string, { cancel: () => void; untilDisconnect: boolean }>();
  private timerSeq = 0;
  /** Test hook: see EffectBoundary. */
  beforeEffect: EffectBoundary | null = null;

  private constructor(o: ParleyClientOptions, env: Env, gen: number, state: EngineState) {
    this.o = o;
    this.env = env;
    this.store = o.store;
    this.username = env.username;
    this.hub = env.hub;
    this.identityKey = env.identityKey;
    this.fingerprint = env.fingerprint;
    this.gen = gen;
    this.state = state;
    this.schedule =
      o.schedule ??
      ((ms, fn) => {
        const t = setTimeout(fn, ms);
        return () => clearTimeout(t);
      });
  }

  /**
   * Load (or initialise) persisted state and take ownership of the store: the owner generation
   * is bumped, so any older engine instance on the same store stops sending (§10.2).
   */
  static async create(o: ParleyClientOptions): Promise<ParleyClient> {
    const env: Env = {
      hub: o.hub,
      origin: o.origin,
      username: o.username,
      identity: o.identity,
      identityKey: toB64u(o.identity.publicKey),
      fingerprint: identityFingerprint(o.identity.publicKey),
      tuning: { ...DEFAULT_TUNING, ...o.tuning },
      random: o.random ?? randomBytes,
      now: o.now,
    };
    const { gen, state } = await loadEngine(o.store, env);
    return new ParleyClient(o, env, gen, state);
  }

  // -------------------------------------------------------------------------------------------
  // The runner

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: ParleyEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // A UI listener's bug must not break the protocol engine.
      }
    }
  }

  /** Queue one input (§10.1): one step, one batch, then its effects, before the next input. */
  private run(input: Input): Promise<StepResult> {
    // A stopped instance takes no input: the store may be the caller's by now (stop).
    if (this.stopped) return Promise.reject(new CoreError("stale_state", "this instance stopped"));
    this.queued++;
    const task = async () => {
      try {
        return await this.apply(input);
      } finally {
        this.queued--;
        if (this.queued === 0 || this.acksDue.length >= ACK_GATHER) this.flushAcks();
        // Receipts go out once the inputs queued so far are done, so a mailbox drain of many
        // messages from one peer is answered by one receipt (§8.6).
        if (this.queued === 0 && this.state.receiptsDue.size > 0 && this.state.link.t === "online")
          void this.run({ t: "flush_receipts" }).catch(() => undefined);
      }
    };
    const p = this.chain.then(task, task);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async apply(input: Input): Promise<StepResult> {
    let r: StepResult;
    try {
      r = await step(this.env, this.store, this.state, input);
    } catch (e) {
      // A step fails as a whole (e.g. the store could not be read): nothing of it happened.
      if (input.t !== "verb")
        this.emit({ type: "error", code: "malformed", message: errorText(e) });
      throw e;
    }
    const writes: StoreOp[] = [];
    let sends = false;
    for (const e of r.effects) {
      if (e.t === "write") writes.push(e.op);
      else if (e.t === "send") sends = true;
    }
    if (writes.length > 0 || sends) {
      try {
        await this.commit(writes);
      } catch (e) {
        // Nothing of this step happened. Frames report it; a verb's caller gets it.
        if (input.t === "verb") throw e;
        if (isCoreError(e)) this.emit({ type: "error", code: e.code, message: e.message });
        else this.emit({ type: "error", code: "malformed", message: errorText(e) });
        return { state: this.state, effects: [] };
      }
    }
    this.state = r.state;
    for (const [i, e] of r.effects.entries()) {
      this.beforeEffect?.(e, i, r.effects);
      if (e.t === "send") {
        if (!this.socketOpen || !mayCarry(r.state.link, this.socket, e.frame.t)) continue;
        if (e.frame.t === "ack") this.acksDue.push(...e.frame.mids);
        else this.o.transport.send(e.frame);
      } else if (e.t === "emit") this.emit(e.event);
      else if (e.t === "timer") this.setTimer(e);
    }
    if (r.error !== undefined) throw r.error;
    return r;
  }

  /**
   * Acknowledge the held mids in one frame (§7.3): a mailbox drain of n items costs the relay
   * about n / ACK_GATHER acknowledgement events instead of n. Their steps are committed, so
   * holding them loses nothing: a mid whose ack never left is delivered again and acknowledged
   * as a replay.
   */
  private flushAcks(): void {
    if (this.acksDue.length === 0) return;
    const mids = this.acksDue;
    this.acksDue = [];
    if (!this.socketOpen || this.stale) return;
    for (let i = 0; i < mids.length; i += LIMITS.maxAckIds)
      this.o.transport.send({
        v: PROTOCOL_VERSION,
        t: "ack",
        mids: mids.slice(i, i + LIMITS.maxAckIds),
      });
  }

  /**
   * The atomic write (§10.2): the owner generation is an `expect` op inside the same batch as
   * the writes, so a takeover can never slip in between the check and a write-ahead state
   * write. Frames without writes still need the check: a stale engine sends nothing.
   */
  private async commit(ops: StoreOp[]): Promise<void> {
    if (this.stale) throw new CoreError("stale_state", "another instance owns this state");
    if (ops.length === 0) {
      const owner = await this.store.get(KEYS.owner);
      const gen = owner === undefined ? -1 : parseWith(OwnerSchema, owner, "owner").gen;
      if (gen === this.gen) return;
    } else {
      try {
        await this.store.batch([
          { op: "expect", key: KEYS.owner, value: { gen: this.gen } },
          ...ops,
        ]);
        return;
      } catch (e) {
        if (!(e instanceof StorePreconditionError)) throw e;
      }
    }
    this.stale = true;
    throw new CoreError("stale_state", "another instance owns this state");
  }

  private setTimer(e: Extract<Effect, { t: "timer" }>): void {
    const key = e.key ?? `#${++this.timerSeq}`;
    if (this.timers.has(key)) return;
    const cancel = this.schedule(e.ms, () => {
      this.timers.delete(key);
      void this.run({ t: "timer", timer: e.input }).catch(() => undefined);
    });
    this.timers.set(key, { cancel, untilDisconnect: e.untilDisconnect });
  }

  private async verb(v: Verb): Promise<string | undefined> {
    return (await this.run({ t: "verb", verb: v })).result;
  }

  /**
   * Stop this instance for good (the app re-keys or clears its storage, or closes): no timer
   * of its fires and it takes no more input; the promise resolves once the inputs already
   * queued have finished, writes included. Only then may the caller rewrite the store: a write
   * of this instance's landing in the middle would be lost, or sealed under a key the store no
   * longer uses (§10.2).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) t.cancel();
    this.timers.clear();
    // What was queued finishes, writes included (a message being sent is kept, not refused).
    await this.whenIdle();
    this.stale = true;
  }

  /** Resolves when every input queued so far has been processed (tests, orderly shutdown). */
  async whenIdle(): Promise<void> {
    let seen: Promise<unknown> | null = null;
    while (seen !== this.chain) {
      seen = this.chain;
      await seen;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Inputs

  onConnected(): void {
    this.socket++;
    this.socketOpen = true;
    void this.run({ t: "connected", socket: this.socket }).catch(() => undefined);
  }

  onDisconnected(): void {
    // At once, not in turn: no frame queued for the closed socket may reach the next one.
    this.socketOpen = false;
    this.acksDue = [];
    // A ticket asked for on the closed socket will never be answered: ask again when online.
    for (const t of this.tickets.values()) t.reject(new CoreError("not_connected", "disconnected"));
    this.tickets.clear();
    for (const w of this.awaiting.values())
      w.reject(new CoreError("not_connected", "disconnected"));
    this.awaiting.clear();
    for (const [key, t] of [...this.timers]) {
      if (!t.untilDisconnect) continue;
      t.cancel();
      this.timers.delete(key);
    }
    void this.run({ t: "disconnected" }).catch(() => undefined);
  }

  async onServerFrame(frame: ServerFrame): Promise<void> {
    if (frame.t === "accepted" || frame.t === "link_offered" || frame.t === "error") {
      const w = frame.id === undefined ? undefined : this.awaiting.get(frame.id);
      if (w !== undefined && frame.id !== undefined) {
        this.awaiting.delete(frame.id);
        w.resolve(frame);
        return;
      }
    }
    if (frame.t === "blob_ticket" || (frame.t === "error" && frame.id !== undefined)) {
      const id = frame.id ?? "";
      const waiting = this.tickets.get(id);
      if (waiting !== undefined) {
        this.tickets.delete(id);
        if (frame.t === "blob_ticket") {
          waiting.resolve({ blob: frame.blob, ticket: frame.ticket, expires: frame.expires });
        } else waiting.reject(new CoreError("relay_error", frame.code));
        return;
      }
    }
    await this.run({ t: "frame", frame }).catch(() => undefined);
  }

  requestBlobTicket(size: number): Promise<BlobTicket> {
    if (this.stale) throw new CoreError("stale_state", "another instance owns this state");
    if (!this.socketOpen || !mayCarry(this.state.link, this.socket, "blob_upload")) {
      return Promise.reject(new CoreError("not_connected", "not connected to the relay"));
    }
    const id = `blob-${toB64u(randomBytes(9))}`;
    return new Promise<BlobTicket>((resolve, reject) => {
      this.tickets.set(id, { resolve, reject });
      this.o.transport.send({ v: PROTOCOL_VERSION, t: "blob_upload", id, size });
    });
  }

  async sendFile(
    conversationId: ConversationId,
    file: FileRef,
    caption = "",
    opts?: SendTextOptions,
  ): Promise<string> {
    if (this.stale) throw new CoreError("stale_state", "another instance owns this state");
    const id = await this.verb({
      t: "send_file",
      conversationId,
      text: caption,
      file,
      ...(opts !== undefined ? { opts } : {}),
    });
    if (id === undefined) throw new CoreError("malformed", "no message id");
    return id;
  }

  async startChat(username: string): Promise<ConversationId> {
    await this.verb({ t: "start_chat", username });
    return `dm:${username}`;
  }

  async endChat(username: string): Promise<void> {
    await this.verb({ t: "end_chat", username });
  }

  async reclaimDevice(): Promise<void> {
    await this.verb({ t: "reclaim_device" });
  }

  async sendText(
    conversationId: ConversationId,
    text: string,
    opts?: SendTextOptions,
  ): Promise<string> {
    if (this.stale) throw new CoreError("stale_state", "another instance owns this state");
    const id = await this.verb({
      t: "send_text",
      conversationId,
      text,
      ...(opts !== undefined ? { opts } : {}),
    });
    if (id === undefined) throw new CoreError("malformed", "no message id");
    return id;
  }

  async sendAction(conversationId: ConversationId, action: OutgoingAction): Promise<string> {
    if (this.stale) throw new CoreError("stale_state", "another instance owns this state");
    return (await this.verb({ t: "send_action", conversationId, action })) ?? "";
  }

  async joinGroup(name: string): Promise<void> {
    await this.verb({ t: "join_group", name });
  }

  async leaveGroup(name: string): Promise<void> {
    await this.verb({ t: "leave_group", name });
  }

  async createGroup(
    name: string,
    opts: { title: string; description?: string; policy: GroupPolicy },
  ): Promise<void> {
    await this.verb({
      t: "create_group",
      name,
      title: opts.title,
      description: opts.description ?? "",
      policy: opts.policy,
    });
  }

  async inviteToGroup(group: string, username: string): Promise<void> {
    await this.verb({ t: "invite", group, username });
  }

  async acceptInvite(invite: Invite): Promise<void> {
    await this.verb({ t: "accept_invite", invite });
  }

  async joinWithLink(group: string, secret: string): Promise<void> {
    await this.verb({ t: "join_with_link", group, secret });
  }

  async createInviteLink(group: string): Promise<string> {
    const secret = await this.verb({ t: "create_invite_link", group });
    if (secret === undefined) throw new CoreError("malformed", "no link secret");
    return secret;
  }

  async revokeInviteLinks(group: string): Promise<void> {
    await this.verb({ t: "revoke_invite_links", group });
  }

  async setGroupInfo(
    group: string,
    change: { title?: string; description?: string; policy?: GroupPolicy },
  ): Promise<void> {
    await this.verb({ t: "set_group_info", group, ...change });
  }

  async promoteMember(group: string, username: string): Promise<void> {
    await this.verb({ t: "promote", group, username });
  }

  async demoteMember(group: string, username: string): Promise<void> {
    await this.verb({ t: "demote", group, username });
  }

  async removeMember(group: string, username: string): Promise<void> {
    await this.verb({ t: "remove_member", group, username });
  }

  async acceptKeyChange(username: string): Promise<void> {
    await this.verb({ t: "accept_key_change", username });
  }

  async markVerified(username: string): Promise<void> {
    await this.verb({ t: "mark_verified", username });
  }

  async acceptContact(username: string): Promise<void> {
    await this.verb({ t: "accept_contact", username });
  }

  async blockContact(username: string): Promise<void> {
    await this.verb({ t: "block_contact", username });
  }

  async setPresence(scope: PresenceScope): Promise<void> {
    await this.verb({ t: "set_presence", scope });
  }

  presenceScope(): PresenceScope | null {
    return this.state.presenceScope;
  }

  async safetyNumber(username: string): Promise<string> {
    const c = this.state.contacts.get(username);
    if (!c) throw new CoreError("unknown_session", "no pinned key for that user");
    return safetyNumber(
      { username: this.username, identityKey: this.env.identity.publicKey },
      { username, identityKey: fromB64u(c.identityKey) },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Linked devices (PROTOCOL.md §4.6–§4.8): requests the runner sends itself and whose answers
  // it awaits; the one stored change (our new list, pinned) is a step once the relay took it.

  /** Send `frame` now and resolve with the relay's answer naming its id (or `not_connected`). */
  private ask(frame: ClientFrame & { id: string }): Promise<ServerFrame> {
    if (this.stale) throw new CoreError("stale_state", "another instance owns this state");
    if (!this.socketOpen || !mayCarry(this.state.link, this.socket, frame.t))
      return Promise.reject(new CoreError("not_connected", "not connected to the relay"));
    return new Promise<ServerFrame>((resolve, reject) => {
      this.awaiting.set(frame.id, { resolve, reject });
      this.o.transport.send(frame);
    });
  }

  private requestId(): string {
    return `dev-${toB64u(randomBytes(9))}`;
  }

  /** Store a list we signed at the relay (§4.6), then pin it (the `own_list_stored` step). */
  private async publishList(list: DeviceList): Promise<void> {
    const f = await this.ask({ v: PROTOCOL_VERSION, t: "devices", id: this.requestId(), list });
    if (f.t === "error") throw new CoreError("relay_error", f.code);
    await this.verb({ t: "own_list_stored", list });
  }

  async ownDevices(): Promise<OwnDevices> {
    const pinned = await loadPinnedDevices(this.store, this.username);
    return { devices: pinned?.list.devices ?? [], thisDevice: this.state.device.id };
  }

  async fetchLinkOffer(code: string): Promise<LinkRequest> {
    const c = parseLinkCode(code);
    const f = await this.ask({
      v: PROTOCOL_VERSION,
      t: "link_fetch",
      id: this.requestId(),
      rendezvous: c.rendezvous,
    });
    if (f.t === "error") {
      if (f.code === "unknown_link")
        throw new LinkError(
          "unknown_link",
          "No device is waiting with that code. Check it, or make a new code on the new device.",
        );
      throw new CoreError("relay_error", f.code);
    }
    if (f.t !== "link_offered" || f.rendezvous !== c.rendezvous)
      throw new CoreError("relay_error", "the relay answered with another offer");
    // The offer's MAC under the code's secret (§4.8.2): a relay's substitute is refused here.
    checkLinkOffer(this.hub, c, f.offer);
    return { code: formatLinkCode(c), name: f.offer.name, device: f.offer.device, offer: f.offer };
  }

  async approveLink(
    request: LinkRequest,
    o: { identitySeed: Uint8Array; thisDeviceName: string; history?: FileRef },
  ): Promise<DeviceEntry> {
    const c = parseLinkCode(request.code);
    // The user confirmed what fetchLinkOffer checked; checked again, the request is caller data.
    checkLinkOffer(this.hub, c, request.offer);
    const identity = await ed25519KeyPairFromSeed(o.identitySeed);
    if (toB64u(identity.publicKey) !== this.identityKey)
      throw new CoreError("identity_mismatch", "that seed is not this identity's");
    const now = this.env.now();
    const device = this.state.device;
    const self: DeviceEntry = {
      id: device.id,
      key: toB64u((await ed25519KeyPairFromSeed(fromB64u(device.seed))).publicKey),
      name: o.thisDeviceName,
      addedAt: now,
    };
    const added = offeredDevice(request.offer, now);
    const pinned = await loadPinnedDevices(this.store, this.username);
    const list = await signDeviceList(
      listLinking(pinned?.list ?? null, this.identityKey, self, added),
      (m) => ed25519Sign(this.env.identity.privateKey, m),
    );
    await this.publishList(list);
    const transfer: LinkTransfer = {
      v: 1,
      username: this.username,
      identitySeed: toB64u(o.identitySeed),
      devices: list,
      contacts: [...this.state.contacts.values()]
        .filter((ct) => ct.username !== this.username)
        .slice(0, LIMITS.maxLinkContacts)
        .map((ct) => {
          // The decision as the conversation list shows it: a listed chat without one is accepted.
          const sum = this.state.summaries.get(`dm:${ct.username}`);
          const decision = sum === undefined ? undefined : (sum.contact ?? "accepted");
          return {
            username: ct.username,
            identityKey: ct.identityKey,
            verified: ct.verified,
            ...(decision !== undefined ? { decision } : {}),
          };
        }),
      ...(o.history !== undefined ? { history: o.history } : {}),
      groups: [...this.state.summaries.values()]
        .filter((x) => x.kind === "group" && (x.epoch ?? -1) >= 0)
        .map((x) => x.name)
        .sort()
        .slice(0, LIMITS.maxGroupsPerUser),
    };
    const answer = await sealLinkAnswer(this.hub, c, request.offer, transfer);
    const f = await this.ask({
      v: PROTOCOL_VERSION,
      t: "link_answer",
      id: this.requestId(),
      rendezvous: c.rendezvous,
      answer,
    });
    if (f.t === "error") {
      if (f.code === "unknown_link") {
        // The list already names the device, which stopped waiting (closed, expired) and never
        // got the transfer: the next list drops it again, so no entry is left that nobody
        // holds. Also what a relay that claims `unknown_link` but delivered the answer gets: the
        // device it let through is removed (§4.7), never kept unseen.
        await this.removeDevice(added.id).catch(() => undefined);
        throw new LinkError(
          "unknown_link",
          "The new device stopped waiting. Make a new code on it.",
        );
      }
      throw new CoreError("relay_error", f.code);
    }
    return added;
  }

  async removeDevice(id: string): Promise<void> {
    const pinned = await loadPinnedDevices(this.store, this.username);
    const list = await signDeviceList(
      listRemoving(pinned?.list ?? null, id, this.state.device.id),
      (m) => ed25519Sign(this.env.identity.privateKey, m),
    );
    await this.publishList(list);
  }

  // -------------------------------------------------------------------------------------------
  // Reads (what the UI lists)

  conversations(): ConversationSummary[] {
    return [...this.state.summaries.values()];
  }

  presence(): ContactInfo[] {
    return presenceList(this.state);
  }

  contact(username: string): ContactInfo | undefined {
    const c = this.state.contacts.get(username);
    return c ? contactInfo(this.state, username, c.identityKey) : undefined;
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : "engine failure";
}
