/**
 * ParleyClient: the runtime-neutral protocol engine (PROTOCOL.md §8–§10). It owns no socket and
 * no database: it reacts to relay frames and user verbs, runs the pure transitions of dm.ts,
 * group.ts and prekeys.ts, persists their results through the injected ClientStore BEFORE any
 * ciphertext leaves (write-ahead), and reports to the UI through typed events.
 *
 * All inputs are serialised through one promise chain, so two frames never interleave inside a
 * read-transition-write cycle.
 */
import * as v from "valibot";
import { authTranscript } from "../auth";
import { ed25519Sign, identityFingerprint, randomBytes, safetyNumber } from "../crypto";
import { fromB64u, toB64u } from "../encoding";
import {
  type ClientFrame,
  type FrameOf,
  type GroupState,
  LIMITS,
  PROTOCOL_VERSION,
  type ServerFrame,
} from "../protocol";
import type {
  ChatMessage,
  ClientStore,
  ContactInfo,
  ConversationId,
  ConversationStatus,
  ConversationSummary,
  CoreErrorCode,
  DeliveryState,
  Listener,
  ParleyClientApi,
  ParleyClientOptions,
  ParleyEvent,
  StoreOp,
  SystemLine,
  SystemLineKind,
  Tuning,
} from "./client-api";
import { StorePreconditionError } from "./client-api";
import { b64 } from "./codec";
import { checkTextFits, type DmContent, MAX_RECEIPT_IDS, type TextContent } from "./content";
import {
  beginRepair,
  canSendNow,
  type DmCtx,
  type DmNote,
  type DmRecord,
  type DmResult,
  emptyDm,
  encryptDm,
  enqueue,
  MAX_QUEUE,
  needsPrekeys,
  parseDmRecord,
  REPAIRABLE,
  receiveDm,
  startFetching,
  startFromBundle,
  startOnline,
} from "./dm";
import { CoreError, isCoreError } from "./errors";
import {
  applyOwnCommit,
  createCommit,
  decryptGroup,
  emptyGroup,
  encryptGroup,
  type GroupRecord,
  nextRoster,
  parseGroupRecord,
  receiveCommit,
} from "./group";
import {
  addOneTimeKemPrekeys,
  addOneTimePrekeys,
  DAY,
  initialPrekeys,
  maintainSpk,
  type PrekeyState,
  PrekeyStateSchema,
  publicPq,
  publicSpk,
} from "./prekeys";
import {
  type Device,
  DeviceSchema,
  KEYS,
  type OutboxEntry,
  OutboxEntrySchema,
  OwnerSchema,
  type SentText,
  SentTextSchema,
} from "./store";
import { acceptChange, type Contact, ContactSchema, checkKey, markVerified } from "./trust";

export const DEFAULT_TUNING: Tuning = {
  groupUpdateAfterMessages: 100,
  groupUpdateAfterMs: DAY,
  fallbackCommitDelayMs: 5000,
  signedPrekeyRotateMs: 7 * DAY,
  signedPrekeyGraceMs: 14 * DAY,
  oneTimePrekeyBatch: LIMITS.maxOneTimePrekeysPerUpload,
};
/** A handshake not completed after this long is restarted with an asynchronous start (§8.2.5). */
export const HANDSHAKE_RETRY_MS = 30_000;
/**
 * A skipped message key (1:1 ratchet or group sender chain) still unused this long after the
 * later message that revealed the gap is reported as a `missing` system line (§8.8, §9.5).
 */
export const GAP_GRACE_MS = 30_000;
/** A sent text the peer never receipted is kept this long for a repair to send again (§8.10). */
export const SENT_KEEP_MS = 30 * DAY;
/** Our own one-time prekey secrets kept at most (the relay stores up to 200 public halves). */
const MAX_OPK_SECRETS = 2 * LIMITS.maxOneTimePrekeysStored;

const dmId = (peer: string): ConversationId => `dm:${peer}`;
const groupId = (name: string): ConversationId => `group:${name}`;

function parseWith<T>(schema: v.GenericSchema<unknown, T>, x: unknown, what: string): T {
  const r = v.safeParse(schema, x);
  if (!r.success) throw new CoreError("malformed", `stored ${what}`);
  return r.output;
}

export class ParleyClient implements ParleyClientApi {
  readonly username: string;
  readonly hub: string;
  readonly identityKey: string;
  readonly fingerprint: string;

  private readonly o: ParleyClientOptions;
  private readonly tuning: Tuning;
  private readonly random: (n: number) => Uint8Array;
  private readonly schedule: (ms: number, fn: () => void) => () => void;
  private readonly store: ClientStore;
  private gen = 0;
  private seq = 0;
  private connected = false;
  private authed = false;
  /** Another engine instance took over the store: refuse to send anything (§10.2). */
  private stale = false;
  /** This installation (§4.3); `claim` until the relay has welcomed it once. */
  private device: Device = { id: "", claim: true };
  /** The relay refused this device as replaced by another (§4.3): it does not reconnect. */
  private retired = false;
  private chain: Promise<unknown> = Promise.resolve();
  private readonly listeners = new Set<Listener>();
  private readonly online = new Map<string, string>();
  private readonly relayGroups = new Map<string, GroupState>();
  private readonly contacts = new Map<string, Contact>();
  private readonly summaries = new Map<ConversationId, ConversationSummary>();
  /** Frame ids awaiting `accepted`/`error` that are not in the outbox. */
  private readonly inflight = new Map<
    string,
    { kind: "fetch" | "upload" | "join" | "leave" | "commit"; name: string }
  >();
  /** Inputs queued on `chain` and not finished: receipts are flushed when it drops to 0. */
  private queued = 0;
  /** Peer → ids of its text messages we decrypted and have not receipted yet (§8.6). */
  private readonly receiptsDue = new Map<string, string[]>();
  /**
   * Open gaps (§8.8, §9.5): a skipped message key we hold but have not used, keyed
   * "dm:<peer>|<dh>|<n>" or "group:<name>|<epoch>|<sender>|<n>". In memory only.
   */
  private readonly gaps = new Map<string, { conversationId: ConversationId; from: string }>();
  /** Gaps already reported (or being waited on): each is reported at most once. */
  private readonly seenGaps = new Set<string>();
  private readonly timers = new Map<string, () => void>();
  private uploading = false;
  /** Groups we are leaving only to join again (state lost, §9.4): their `left` is expected. */
  private readonly rejoining = new Set<string>();
  /** Per group, the latest epoch whose delivered commit we refused (§9.4, healing). */
  private readonly refusedEpochs = new Map<string, number>();
  /**
   * Per group, the parent epoch of our own commit the relay refused as `bad_frame`/`too_large`
   * (§9.2.4): rebuilding it on the same state gives the same refusal, so we do not commit again
   * on that epoch (no tight sign-and-seal loop); a new epoch from another committer clears it.
   */
  private readonly unsendableCommits = new Map<string, number>();

  private constructor(o: ParleyClientOptions) {
    this.o = o;
    this.username = o.username;
    this.hub = o.hub;
    this.store = o.store;
    this.identityKey = toB64u(o.identity.publicKey);
    this.fingerprint = identityFingerprint(o.identity.publicKey);
    this.tuning = { ...DEFAULT_TUNING, ...o.tuning };
    this.random = o.random ?? randomBytes;
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
    const c = new ParleyClient(o);
    // Take ownership atomically (§10.2): the generation we bump must still be the one we read,
    // else another instance started meanwhile — read again and take over from it.
    for (let attempt = 0; ; attempt++) {
      const owner = await o.store.get(KEYS.owner);
      c.gen = (owner === undefined ? 0 : parseWith(OwnerSchema, owner, "owner").gen) + 1;
      const ops: StoreOp[] = [
        { op: "expect", key: KEYS.owner, value: owner },
        { op: "put", key: KEYS.owner, value: { gen: c.gen } },
      ];
      const device = await o.store.get(KEYS.device);
      if (device === undefined) {
        // A new store: a fresh identity, or one restored from backup on a new device, which
        // must become the identity's current device on the relay (§4.3).
        c.device = { id: toB64u(c.random(16)), claim: true };
        ops.push(
          { op: "expect", key: KEYS.device, value: undefined },
          { op: "put", key: KEYS.device, value: c.device },
        );
      } else c.device = parseWith(DeviceSchema, device, "device");
      if ((await o.store.get(KEYS.prekeys)) === undefined) {
        ops.push(
          { op: "expect", key: KEYS.prekeys, value: undefined },
          {
            op: "put",
            key: KEYS.prekeys,
            value: await initialPrekeys(o.identity, o.now(), c.random),
          },
        );
      }
      try {
        await o.store.batch(ops);
        break;
      } catch (e) {
        if (!(e instanceof StorePreconditionError) || attempt >= 2) throw e;
      }
    }
    for (const { value } of await o.store.list("contact/")) {
      const ct = parseWith(ContactSchema, value, "contact");
      c.contacts.set(ct.username, ct);
    }
    for (const { key } of await o.store.list("outbox/")) {
      c.seq = Math.max(c.seq, Number(key.slice("outbox/".length)));
    }
    for (const { value } of await o.store.list("dm/")) c.summarizeDm(parseDmRecord(value));
    for (const { value } of await o.store.list("group/")) c.summarizeGroup(parseGroupRecord(value));
    return c;
  }

  // -------------------------------------------------------------------------------------------
  // Plumbing

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

  private emitError(code: CoreErrorCode, message: string, conversationId?: ConversationId): void {
    this.emit(
      conversationId
        ? { type: "error", code, message, conversationId }
        : { type: "error", code, message },
    );
  }

  private system(
    conversationId: ConversationId,
    kind: SystemLineKind,
    text: string,
    extra: Partial<SystemLine> = {},
  ) {
    this.emit({ type: "system", line: { conversationId, kind, text, at: this.o.now(), ...extra } });
  }

  /** Serialise every input (§10.1): one read-transition-write cycle at a time. */
  private run<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++;
    const task = async () => {
      try {
        return await fn();
      } finally {
        this.queued--;
        // Receipts go out once the inputs queued so far are done, so a mailbox drain of many
        // messages from one peer is answered by one receipt (§8.6).
        if (this.queued === 0 && this.receiptsDue.size > 0 && this.authed) {
          void this.run(() => this.flushReceipts()).catch(() => undefined);
        }
      }
    };
    const p = this.chain.then(task, task);
    this.chain = p.catch(() => undefined);
    return p;
  }

  /** Resolves when every input queued so far has been processed (tests, orderly shutdown). */
  async whenIdle(): Promise<void> {
    let seen: Promise<unknown> | null = null;
    while (seen !== this.chain) {
      seen = this.chain;
      await seen;
    }
  }

  /**
   * Atomic write, refused when another instance owns the store (stale state, §10.2). The owner
   * generation is checked inside the same atomic batch as the writes (an `expect` op), so a
   * takeover can never slip in between the check and a write-ahead ratchet state write.
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

  private send(frame: ClientFrame): void {
    if (!this.connected) return;
    // A message written while the socket is open but before `welcome` would reach a relay that
    // answers everything but `auth` with not_authenticated (§4.3). `send` and `group_send` are
    // in the outbox (§10.1) and onWelcome resends the outbox, so they wait for it here.
    if (!this.authed && (frame.t === "send" || frame.t === "group_send")) return;
    this.o.transport.send(frame);
  }

  private nextId(prefix: string): string {
    this.seq++;
    return `${prefix}${this.seq}`;
  }

  /** Persist-then-send frames go through the outbox (write-ahead, §10.1). */
  private outbox(
    frame: FrameOf<ClientFrame, "send" | "group_send">,
    seq: number,
    meta: { conversationId?: ConversationId; messageId?: string } = {},
  ): StoreOp {
    return { op: "put", key: KEYS.outbox(seq), value: { frame, ...meta } };
  }

  /**
   * A `send` frame for `body` and the write-ahead outbox op that must be committed before the
   * frame reaches the socket (§10.1).
   */
  private directFrame(
    peer: string,
    body: Uint8Array,
    meta: { conversationId?: ConversationId; messageId?: string } = {},
  ): { frame: FrameOf<ClientFrame, "send">; op: StoreOp } {
    const { id, seq } = this.newOutId();
    const frame = { v: PROTOCOL_VERSION, t: "send", id, to: peer, body: toB64u(body) } as const;
    return { frame, op: this.outbox(frame, seq, meta) };
  }

  private newOutId(): { id: string; seq: number } {
    const id = this.nextId("o");
    return { id, seq: this.seq };
  }

  private ctx(): DmCtx {
    return {
      hub: this.hub,
      me: { name: this.username, identityKey: this.o.identity.publicKey },
      sign: (m) => ed25519Sign(this.o.identity.privateKey, m),
      random: this.random,
      now: this.o.now(),
    };
  }

  private me() {
    return { name: this.username, identityKey: this.o.identity.publicKey };
  }

  private async loadPrekeys(): Promise<PrekeyState> {
    return parseWith(PrekeyStateSchema, await this.store.get(KEYS.prekeys), "prekeys");
  }

  private async loadDm(peer: string): Promise<DmRecord> {
    const x = await this.store.get(KEYS.dm(peer));
    return x === undefined ? emptyDm(peer) : parseDmRecord(x);
  }

  private async loadGroup(name: string): Promise<GroupRecord> {
    const x = await this.store.get(KEYS.group(name));
    return x === undefined ? emptyGroup(name) : parseGroupRecord(x);
  }

  private contactOps(before: Contact | undefined, after: Contact): StoreOp[] {
    return before !== undefined && JSON.stringify(before) === JSON.stringify(after)
      ? []
      : [{ op: "put", key: KEYS.contact(after.username), value: after }];
  }

  private contactInfo(username: string, identityKey: string): ContactInfo {
    const c = this.contacts.get(username);
    return {
      username,
      identityKey,
      fingerprint: identityFingerprint(fromB64u(identityKey)),
      verified: c !== undefined && c.identityKey === identityKey && c.verified,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Summaries (what the UI lists)

  conversations(): ConversationSummary[] {
    return [...this.summaries.values()];
  }

  presence(): ContactInfo[] {
    return [...this.online.entries()].map(([u, k]) => this.contactInfo(u, k));
  }

  contact(username: string): ContactInfo | undefined {
    const c = this.contacts.get(username);
    return c ? this.contactInfo(username, c.identityKey) : undefined;
  }

  private dmStatus(rec: DmRecord): ConversationStatus {
    const c = this.contacts.get(rec.peer);
    if (c?.changedKey) return "key_changed";
    if (!this.authed) return "offline";
    if (canSendNow(rec) || rec.current !== null) return c?.verified ? "verified" : "secure";
    if (rec.pending?.kind === "fetching") return "connecting";
    if (rec.pending !== null) return "handshaking";
    return "connecting";
  }

  private summarizeDm(rec: DmRecord): void {
    const c = this.contacts.get(rec.peer);
    const s: ConversationSummary = {
      id: dmId(rec.peer),
      kind: "direct",
      name: rec.peer,
      status: this.dmStatus(rec),
      members: c ? [this.contactInfo(rec.peer, c.identityKey)] : [],
    };
    this.summaries.set(s.id, s);
    this.emit({ type: "conversation", conversation: s });
  }

  private summarizeGroup(rec: GroupRecord): void {
    const state = this.relayGroups.get(rec.group);
    const roster = rec.current?.roster ?? [];
    const changed = roster.some((m) => this.contacts.get(m.name)?.changedKey);
    let status: ConversationStatus;
    if (changed) status = "key_changed";
    else if (!this.authed) status = "offline";
    else if (rec.status === "member" && rec.current) status = "secure";
    else if (rec.status === "joining") status = "connecting";
    else status = "offline";
    const s: ConversationSummary = {
      id: groupId(rec.group),
      kind: "group",
      name: rec.group,
      status,
      members: roster.map((m) => this.contactInfo(m.name, m.ik)),
      epoch: rec.status === "member" && rec.current ? rec.current.epoch : -1,
      removalPending: (state?.pendingLeaves.length ?? 0) > 0,
      joining: rec.status === "joining",
    };
    this.summaries.set(s.id, s);
    this.emit({ type: "conversation", conversation: s });
  }

  private resummarize(): void {
    for (const s of [...this.summaries.values()]) {
      if (s.kind === "direct")
        void this.loadDm(s.name).then(
          (r) => this.summarizeDm(r),
          () => undefined,
        );
      else
        void this.loadGroup(s.name).then(
          (r) => this.summarizeGroup(r),
          () => undefined,
        );
    }
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle

  onConnected(): void {
    this.connected = true;
    this.emit({ type: "connection", state: "connecting" });
  }

  onDisconnected(): void {
    this.connected = false;
    this.authed = false;
    this.online.clear();
    this.inflight.clear();
    this.uploading = false;
    this.rejoining.clear();
    for (const cancel of this.timers.values()) cancel();
    this.timers.clear();
    this.emit({ type: "connection", state: this.retired ? "retired" : "offline" });
    this.resummarize();
  }

  onServerFrame(frame: ServerFrame): Promise<void> {
    return this.run(async () => {
      try {
        await this.handle(frame);
      } catch (e) {
        if (isCoreError(e)) this.emitError(e.code, e.message);
        else this.emitError("malformed", e instanceof Error ? e.message : "engine failure");
      }
    });
  }

  private async handle(f: ServerFrame): Promise<void> {
    switch (f.t) {
      case "hello":
        return this.onHello(f);
      case "welcome":
        return this.onWelcome(f);
      case "presence":
        return this.onPresence(f);
      case "bundle":
        return this.onBundle(f);
      case "accepted":
        return this.onAccepted(f);
      case "deliver":
        return this.onDeliver(f);
      case "receipt":
        return this.onReceipt(f);
      case "group": {
        this.relayGroups.set(f.state.group, f.state);
        await this.evaluateGroup(f.state.group);
        // `removalPending` comes from the relay's state: a committer whose `accepted` arrived
        // before this frame would otherwise keep showing the pending removal (PWA e2e).
        const id = groupId(f.state.group);
        if (this.summaries.has(id)) this.summarizeGroup(await this.loadGroup(f.state.group));
        return;
      }
      case "left":
        return this.onLeft(f.group);
      case "prekeys_low":
        return this.replenish();
      case "error":
        return this.onRelayError(f);
      case "pong":
        return;
    }
  }

  private async onHello(f: FrameOf<ServerFrame, "hello">): Promise<void> {
    if (f.hub !== this.hub) {
      this.emitError("relay_error", "relay announced a different hub");
      return;
    }
    const now = this.o.now();
    const m = await maintainSpk(
      await this.loadPrekeys(),
      this.o.identity,
      now,
      this.random,
      this.tuning.signedPrekeyRotateMs,
      this.tuning.signedPrekeyGraceMs,
    );
    await this.commit([{ op: "put", key: KEYS.prekeys, value: m.state }]);
    const spk = publicSpk(m.state);
    const pq = publicPq(m.state);
    if (this.retired) return;
    const sig = await ed25519Sign(
      this.o.identity.privateKey,
      authTranscript(
        { hub: this.hub, origin: this.o.origin, challenge: fromB64u(f.challenge) },
        this.username,
        this.o.identity.publicKey,
        { id: spk.id, key: fromB64u(spk.key), sig: fromB64u(spk.sig) },
        { id: fromB64u(this.device.id), claim: this.device.claim },
      ),
    );
    this.send({
      v: PROTOCOL_VERSION,
      t: "auth",
      username: this.username,
      identityKey: this.identityKey,
      signedPrekey: spk,
      device: this.device.id,
      claim: this.device.claim,
      ...(pq === null ? {} : { pqPrekey: pq }),
      sig: toB64u(sig),
    });
  }

  private async onWelcome(f: FrameOf<ServerFrame, "welcome">): Promise<void> {
    if (f.username !== this.username || f.identityKey !== this.identityKey) {
      this.emitError("relay_error", "relay welcomed a different identity");
      return;
    }
    this.authed = true;
    if (this.device.claim) {
      // The relay made us the current device; later connections need not claim again (§4.3).
      const device = { ...this.device, claim: false };
      await this.commit([{ op: "put", key: KEYS.device, value: device }]);
      this.device = device;
    }
    this.emit({ type: "ready", username: this.username, fingerprint: this.fingerprint });
    this.emit({ type: "connection", state: "online" });
    if (f.oneTimePrekeysRemaining < LIMITS.oneTimePrekeysLowWatermark) await this.replenish();
    // Resend everything persisted but not yet accepted (same bytes: no nonce is reused). Each
    // entry stands alone: one that no longer parses is set aside, never blocking the rest.
    for (const { key, value } of await this.store.list("outbox/")) {
      const entry = await this.outboxEntry(key, value);
      if (entry !== null) this.send(entry.frame);
    }
    for (const { value } of await this.store.list("dm/")) {
      const rec = parseDmRecord(value);
      if (rec.queue.length > 0 || rec.pending?.kind === "fetching") {
        await this.ensureSession({
          ...rec,
          pending: rec.pending?.kind === "fetching" ? null : rec.pending,
        });
      } else this.summarizeDm(rec);
    }
    // Our own commits come back through the mailbox (self-wrap), so nothing in flight survives.
    for (const { value } of await this.store.list("group/")) {
      const rec = parseGroupRecord(value);
      if (rec.pendingCommit !== null) {
        await this.commit([
          { op: "put", key: KEYS.group(rec.group), value: { ...rec, pendingCommit: null } },
        ]);
      }
    }
    for (const g of f.groups) this.relayGroups.set(g.group, g);
    for (const g of f.groups) await this.evaluateGroup(g.group);
    this.resummarize();
    // Gaps whose grace ran out while we were offline: decide after this connection's mailbox
    // drain, one grace from now (§8.8).
    if (this.gaps.size > 0) this.scheduleGapCheck([...this.gaps.keys()]);
  }

  /**
   * A stored outbox entry, or null when it is gone or no longer parses (§10.1): a bad entry is
   * deleted and reported — its message shown as failed — so it can never block the entries
   * behind it on every later connection.
   */
  private async outboxEntry(key: string, value: unknown): Promise<OutboxEntry | null> {
    if (value === undefined) return null;
    const r = v.safeParse(OutboxEntrySchema, value);
    if (r.success) return r.output;
    await this.commit([{ op: "delete", key }]);
    const raw = (typeof value === "object" && value !== null ? value : {}) as Record<
      string,
      unknown
    >;
    const conv = typeof raw.conversationId === "string" ? raw.conversationId : undefined;
    const conversationId =
      conv !== undefined && (conv.startsWith("dm:") || conv.startsWith("group:"))
        ? (conv as ConversationId)
        : undefined;
    if (conversationId !== undefined && typeof raw.messageId === "string") {
      this.delivery(conversationId, raw.messageId, "failed");
    }
    this.emitError(
      "outbox_entry_invalid",
      "a stored message could not be sent and was set aside",
      conversationId,
    );
    return null;
  }

  reclaimDevice(): Promise<void> {
    return this.run(async () => {
      const device = { ...this.device, claim: true };
      await this.commit([{ op: "put", key: KEYS.device, value: device }]);
      this.device = device;
      this.retired = false;
    });
  }

  private async onPresence(f: FrameOf<ServerFrame, "presence">): Promise<void> {
    this.online.clear();
    const ops: StoreOp[] = [];
    for (const u of f.users) {
      this.online.set(u.username, u.identityKey);
      const c = this.contacts.get(u.username);
      // Presence is relay-asserted: it never pins, but a key different from the pin is shown.
      if (c && c.identityKey !== u.identityKey && c.changedKey !== u.identityKey) {
        const next = { ...c, changedKey: u.identityKey, verified: false };
        ops.push({ op: "put", key: KEYS.contact(u.username), value: next });
        this.contacts.set(u.username, next);
        this.system(dmId(u.username), "key_changed", `${u.username}'s safety number changed`, {
          username: u.username,
        });
      }
    }
    if (ops.length > 0) await this.commit(ops);
    this.emit({ type: "presence", users: this.presence() });
    for (const name of this.relayGroups.keys()) await this.evaluateGroup(name);
    if (ops.length > 0) this.resummarize();
  }

  // -------------------------------------------------------------------------------------------
  // Prekeys

  private async replenish(): Promise<void> {
    if (this.uploading || !this.authed) return;
    const r = await addOneTimePrekeys(
      await this.loadPrekeys(),
      this.tuning.oneTimePrekeyBatch,
      this.random,
    );
    // One-time KEM prekeys go with them (§8.3.5): handed out together, they run low together.
    const k = await addOneTimeKemPrekeys(
      r.state,
      Math.min(this.tuning.oneTimePrekeyBatch, LIMITS.maxOneTimeKemPrekeysPerUpload),
      this.o.identity,
      this.random,
    );
    const opks = k.state.opks.slice(-MAX_OPK_SECRETS);
    await this.commit([{ op: "put", key: KEYS.prekeys, value: { ...k.state, opks } }]);
    const id = this.nextId("u");
    this.uploading = true;
    this.inflight.set(id, { kind: "upload", name: "" });
    this.send({
      v: PROTOCOL_VERSION,
      t: "upload_prekeys",
      id,
      oneTimePrekeys: r.upload,
      ...(k.upload.length > 0 ? { oneTimeKemPrekeys: k.upload } : {}),
    });
  }

  // -------------------------------------------------------------------------------------------
  // 1:1 conversations

  startChat(username: string): Promise<ConversationId> {
    return this.run(async () => {
      if (username === this.username) throw new CoreError("malformed", "cannot chat with yourself");
      const rec = await this.loadDm(username);
      await this.ensureSession(rec);
      return dmId(username);
    });
  }

  endChat(username: string): Promise<void> {
    return this.run(async () => {
      await this.commit([{ op: "delete", key: KEYS.dm(username) }]);
      this.summaries.delete(dmId(username));
    });
  }

  /** Start a handshake if there is no usable session and none under way; persists `rec`. */
  private async ensureSession(rec: DmRecord): Promise<void> {
    const peer = rec.peer;
    const contact = this.contacts.get(peer);
    // An online handshake the peer never answered (it went away, or its engine refused it):
    // fall back to an asynchronous start, which needs nothing from the peer (§8.2.5).
    const stuck =
      rec.current === null &&
      (rec.pending?.kind === "initiating" || rec.pending?.kind === "fetching") &&
      this.o.now() - rec.pending.at > HANDSHAKE_RETRY_MS;
    if (stuck) rec = { ...rec, pending: null };
    if (rec.current !== null || rec.pending !== null || !this.authed || contact?.changedKey) {
      await this.commit([{ op: "put", key: KEYS.dm(peer), value: rec }]);
      this.summarizeDm(rec);
      return;
    }
    const presenceKey = stuck ? undefined : this.online.get(peer);
    if (presenceKey !== undefined) {
      // Online: the identity key comes from the pin or, first time, from presence (TOFU, §8.7).
      const check = checkKey(contact ?? null, peer, presenceKey, this.o.now());
      if (check.result === "changed") {
        await this.commit([
          { op: "put", key: KEYS.dm(peer), value: rec },
          ...this.contactOps(contact, check.contact),
        ]);
        this.contacts.set(peer, check.contact);
        this.summarizeDm(rec);
        return;
      }
      const r = await startOnline(rec, check.contact, this.ctx());
      await this.applyDm(contact, r);
      return;
    }
    const id = this.nextId("b");
    const next = startFetching(rec, this.o.now());
    await this.commit([{ op: "put", key: KEYS.dm(peer), value: next }]);
    this.inflight.set(id, { kind: "fetch", name: peer });
    this.send({ v: PROTOCOL_VERSION, t: "fetch_bundle", id, username: peer });
    this.summarizeDm(next);
  }

  private async onBundle(f: FrameOf<ServerFrame, "bundle">): Promise<void> {
    const fl = this.inflight.get(f.id);
    if (fl?.kind !== "fetch" || fl.name !== f.username) return;
    this.inflight.delete(f.id);
    const rec = await this.loadDm(f.username);
    if (rec.pending?.kind !== "fetching") return;
    const before = this.contacts.get(f.username);
    const r = await startFromBundle(rec, before ?? null, f, this.ctx(), await this.loadPrekeys());
    await this.applyDm(before, r);
  }

  /**
   * Persist a dm transition (record, contact, prekeys, outgoing bodies, flushed queue) in ONE
   * batch, then hand the frames to the transport and tell the UI (write-ahead, §10.1).
   */
  private async applyDm(
    before: Contact | undefined,
    r: DmResult,
    extraOps: StoreOp[] = [],
  ): Promise<void> {
    const peer = r.record.peer;
    let rec = r.record;
    const ops: StoreOp[] = [...extraOps, ...this.contactOps(before, r.contact)];
    if (r.prekeys) ops.push({ op: "put", key: KEYS.prekeys, value: r.prekeys });
    const frames: FrameOf<ClientFrame, "send">[] = [];
    for (const body of r.send) {
      const { frame, op } = this.directFrame(peer, body);
      ops.push(op);
      frames.push(frame);
    }
    // The peer receipted these: nothing to send again on a repair (§8.10).
    for (const c of r.received) {
      if (c.t === "receipt")
        for (const id of c.ids) ops.push({ op: "delete", key: KEYS.sent(peer, id) });
    }
    // The peer repaired its side onto a new session and could not read some of ours (§8.10):
    // every text it has not receipted goes again, same id and time, on the session it holds.
    const retried = r.received.some((c) => c.t === "retry");
    const resend: SentText[] = retried ? await this.unreceipted(peer, ops) : [];
    let resent = 0;
    const sendable = canSendNow(rec) && r.contact.changedKey === null;
    if (sendable && rec.repair !== null && !rec.repair.asked) {
      // Our repair's new session can send: ask the peer to send again, first of all (§8.10).
      const enc = await encryptDm(rec, r.contact, { t: "retry" }, this.ctx());
      rec = { ...enc.record, repair: { ...rec.repair, asked: true } };
      const { frame, op } = this.directFrame(peer, enc.body);
      ops.push(op);
      frames.push(frame);
    }
    if (!sendable && resend.length > 0) {
      // Sending is blocked (a key change awaits the user): they wait in the queue (§8.7).
      const queued = new Set(rec.queue.map((q) => q.id));
      for (const t of resend) {
        if (queued.has(t.id) || rec.queue.length >= MAX_QUEUE) continue;
        rec = enqueue(rec, t);
        resent++;
      }
    }
    if (sendable && (rec.queue.length > 0 || resend.length > 0)) {
      const queued = new Set(rec.queue.map((q) => q.id));
      const texts = [...resend.filter((t) => !queued.has(t.id)), ...rec.queue];
      for (const q of texts) {
        const content: TextContent = { t: "text", id: q.id, ts: q.ts, text: q.text };
        const enc = await encryptDm(rec, r.contact, content, this.ctx());
        rec = enc.record;
        const { frame, op } = this.directFrame(peer, enc.body, {
          conversationId: dmId(peer),
          messageId: q.id,
        });
        ops.push(op, this.sentOp(peer, q));
        frames.push(frame);
      }
      resent = resend.length;
      rec = { ...rec, queue: [] };
    }
    ops.push({ op: "put", key: KEYS.dm(peer), value: rec });
    await this.commit(ops);
    this.contacts.set(peer, r.contact);
    for (const f of frames) this.send(f);
    this.dmNotes(peer, r.notes);
    if (resent > 0) {
      const what = resent === 1 ? "1 message" : `${resent} messages`;
      this.system(
        dmId(peer),
        "resending",
        `${peer} could not read ${what} (a new or restored device); sending again`,
        { username: peer, count: resent },
      );
      for (const t of resend) this.delivery(dmId(peer), t.id, "sending");
    }
    for (const c of r.received) {
      if (c.t === "retry") continue;
      if (c.t === "text") {
        this.emitReceived(dmId(peer), peer, c);
        // Acknowledge end to end (§8.6); a receipt is never receipted itself.
        this.receiptsDue.set(peer, [...(this.receiptsDue.get(peer) ?? []), c.id]);
      } else {
        // Authenticated by the session: the only source of "delivered" (§6, §8.6).
        for (const id of c.ids) this.delivery(dmId(peer), id, "delivered");
      }
    }
    if (r.received.length > 0) this.trackDmGaps(rec);
    this.summarizeDm(rec);
  }

  /**
   * The texts `peer` has not receipted, oldest first, for a repair to send again (§8.10); those
   * older than SENT_KEEP_MS are dropped (delete ops added to `ops`) instead of sent.
   */
  private async unreceipted(peer: string, ops: StoreOp[]): Promise<SentText[]> {
    const out: SentText[] = [];
    const cutoff = this.o.now() - SENT_KEEP_MS;
    for (const { key, value } of await this.store.list(KEYS.sentOf(peer))) {
      const r = v.safeParse(SentTextSchema, value);
      if (r.success && r.output.ts >= cutoff) out.push(r.output);
      else ops.push({ op: "delete", key });
    }
    return out.sort((a, b) => a.ts - b.ts || (a.id < b.id ? -1 : 1));
  }

  /**
   * Send the due end-to-end receipts (§8.6): one `receipt` content per peer (chunked at
   * MAX_RECEIPT_IDS), through the ratchet and the outbox like any message, with no delivery
   * state of its own. Best effort: without a usable session the ids are dropped (the sender
   * then keeps showing "sent", never a false "delivered").
   */
  private async flushReceipts(): Promise<void> {
    const due = [...this.receiptsDue.entries()];
    this.receiptsDue.clear();
    for (const [peer, ids] of due) {
      const contact = this.contacts.get(peer);
      let rec = await this.loadDm(peer);
      if (!contact || contact.changedKey || !canSendNow(rec)) continue;
      const ops: StoreOp[] = [];
      const frames: FrameOf<ClientFrame, "send">[] = [];
      for (let i = 0; i < ids.length; i += MAX_RECEIPT_IDS) {
        const content: DmContent = { t: "receipt", ids: ids.slice(i, i + MAX_RECEIPT_IDS) };
        const enc = await encryptDm(rec, contact, content, this.ctx());
        rec = enc.record;
        const { frame, op } = this.directFrame(peer, enc.body);
        ops.push(op);
        frames.push(frame);
      }
      ops.push({ op: "put", key: KEYS.dm(peer), value: rec });
      await this.commit(ops);
      for (const f of frames) this.send(f);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Gap detection (§8.8, §9.5): a message key skipped over and still unused after a grace

  /** Note the skipped keys of a 1:1 record's sessions; a key gone from the record was used. */
  private trackDmGaps(rec: DmRecord): void {
    const conversationId = dmId(rec.peer);
    const now = new Set<string>();
    for (const s of [rec.current, ...rec.previous]) {
      for (const k of s?.ratchet.skipped ?? []) now.add(`${conversationId}|${k.dh}|${k.n}`);
    }
    this.trackGaps(conversationId, now, () => true);
  }

  /**
   * Same for a group's sender chains. A gap whose epoch the record no longer holds (a second
   * commit dropped it) can never be filled: it is reported at once.
   */
  private trackGroupGaps(rec: GroupRecord): void {
    const conversationId = groupId(rec.group);
    const now = new Set<string>();
    const epochs = new Set<number>();
    for (const ep of [rec.current, rec.previous]) {
      if (ep === null) continue;
      epochs.add(ep.epoch);
      for (const rx of ep.receivers)
        for (const k of rx.skipped) now.add(`${conversationId}|${ep.epoch}|${rx.name}|${k.n}`);
    }
    this.trackGaps(conversationId, now, (key) => epochs.has(Number(key.split("|")[1])));
  }

  private trackGaps(
    conversationId: ConversationId,
    skipped: Set<string>,
    fillable: (key: string) => boolean,
  ): void {
    const lost: string[] = [];
    for (const key of [...this.gaps.keys()]) {
      if (!key.startsWith(`${conversationId}|`) || skipped.has(key)) continue;
      if (!fillable(key)) lost.push(key);
      else this.gaps.delete(key); // its message arrived late (or its key was evicted)
    }
    const fresh: string[] = [];
    for (const key of skipped) {
      if (this.seenGaps.has(key)) continue;
      this.seenGaps.add(key);
      // The sender of a skipped key: the peer (1:1) or the chain's owner (group).
      const from = conversationId.startsWith("dm:")
        ? conversationId.slice(3)
        : (key.split("|")[2] ?? "");
      this.gaps.set(key, { conversationId, from });
      fresh.push(key);
    }
    if (lost.length > 0) this.reportGaps(lost);
    if (fresh.length > 0) this.scheduleGapCheck(fresh);
  }

  private scheduleGapCheck(keys: string[]): void {
    this.schedule(GAP_GRACE_MS, () => {
      void this.run(async () => {
        // Offline, the missing message may still sit in our mailbox: decide after the next
        // connection's drain (onWelcome schedules a fresh check).
        if (this.authed) this.reportGaps(keys);
      }).catch(() => undefined);
    });
  }

  /** One `missing` line per conversation and sender for the keys still open. */
  private reportGaps(keys: string[]): void {
    const counts = new Map<string, { conversationId: ConversationId; from: string; n: number }>();
    for (const key of keys) {
      const g = this.gaps.get(key);
      if (!g) continue;
      this.gaps.delete(key);
      const k = `${g.conversationId}|${g.from}`;
      const c = counts.get(k) ?? { ...g, n: 0 };
      c.n++;
      counts.set(k, c);
    }
    for (const c of counts.values()) {
      const what = c.n === 1 ? "1 message" : `${c.n} messages`;
      this.system(c.conversationId, "missing", `${what} from ${c.from} did not arrive`, {
        username: c.from,
      });
    }
  }

  private dmNotes(peer: string, notes: DmNote[]): void {
    const id = dmId(peer);
    for (const n of notes) {
      if (n.kind === "session_started") {
        this.system(id, "session_started", `Secure session with ${peer} established (${n.mode})`, {
          username: peer,
        });
        if (!n.pq) {
          this.system(
            id,
            "not_post_quantum",
            `This session with ${peer} is not post-quantum: ${peer}'s app publishes no post-quantum keys`,
            { username: peer },
          );
        }
      } else if (n.kind === "key_changed") {
        this.system(
          id,
          "key_changed",
          `${peer}'s safety number changed; sending is blocked until you accept`,
          {
            username: peer,
          },
        );
      }
    }
  }

  private emitReceived(conversationId: ConversationId, from: string, c: TextContent): void {
    const message: ChatMessage = {
      id: c.id,
      conversationId,
      from,
      direction: "in",
      text: c.text,
      sentAt: c.ts,
      at: this.o.now(),
    };
    this.emit({ type: "message", message });
  }

  sendText(conversationId: ConversationId, text: string): Promise<string> {
    return this.run(async () => {
      if (this.stale) throw new CoreError("stale_state", "another instance owns this state");
      const content: TextContent = {
        t: "text",
        id: toB64u(this.random(12)),
        ts: this.o.now(),
        text,
      };
      // Before anything is encrypted or queued: an entry the wire cannot carry must never reach
      // the outbox (§8.6, §10.1). The caller keeps the text and can split it.
      checkTextFits(content, LIMITS.maxBodyChars);
      if (conversationId.startsWith("dm:")) await this.sendDm(conversationId.slice(3), content);
      else await this.sendGroup(conversationId.slice(6), content);
      return content.id;
    });
  }

  private outgoing(conversationId: ConversationId, c: TextContent): void {
    this.emit({
      type: "message",
      message: {
        id: c.id,
        conversationId,
        from: this.username,
        direction: "out",
        text: c.text,
        sentAt: c.ts,
        at: c.ts,
        delivery: "sending",
      },
    });
  }

  private async sendDm(peer: string, content: TextContent): Promise<void> {
    const contact = this.contacts.get(peer);
    if (contact?.changedKey)
      throw new CoreError("key_changed", `${peer}'s key changed; accept it first`);
    const rec = await this.loadDm(peer);
    if (contact && canSendNow(rec)) {
      const enc = await encryptDm(rec, contact, content, this.ctx());
      const { frame, op } = this.directFrame(peer, enc.body, {
        conversationId: dmId(peer),
        messageId: content.id,
      });
      await this.commit([
        { op: "put", key: KEYS.dm(peer), value: enc.record },
        op,
        this.sentOp(peer, content),
      ]);
      this.outgoing(dmId(peer), content);
      this.send(frame);
      return;
    }
    const queued = enqueue(rec, { id: content.id, ts: content.ts, text: content.text });
    this.outgoing(dmId(peer), content);
    await this.ensureSession(queued);
  }

  /** Keep a sent text until the peer receipts it, for a repair to send again (§8.10). */
  private sentOp(peer: string, c: { id: string; ts: number; text: string }): StoreOp {
    const value: SentText = { id: c.id, ts: c.ts, text: c.text };
    return { op: "put", key: KEYS.sent(peer, c.id), value };
  }

  private async onDeliver(f: FrameOf<ServerFrame, "deliver">): Promise<void> {
    let ack = true;
    try {
      const item = f.item;
      if (item.kind === "direct") await this.onDirect(f.from, b64(item.body, "body"));
      else if (item.kind === "commit")
        await this.onCommit(item.group, item.epoch, item.core, item.wrap, f.from, f.fromKey);
      else await this.onGroupMessage(f.from, item.group, item.epoch, b64(item.body, "body"));
    } catch (e) {
      // The relay delivers at least once: a message we already processed comes back as a
      // replay after a lost ack — acknowledge it silently.
      if (isCoreError(e, "replay")) return;
      if (isCoreError(e, "stale_state")) {
        ack = false;
        throw e;
      }
      // Only a typed failure of the item itself (CoreError) is final. Anything else is local —
      // storage refused the write (IndexedDB, quota) or the engine hit a bug — and the item was
      // not stored: leave it un-acknowledged so the relay delivers it again on the next
      // connection instead of it being lost (§10.1).
      if (!isCoreError(e)) {
        ack = false;
        throw e;
      }
      const conv = f.item.kind === "direct" ? dmId(f.from) : groupId(f.item.group);
      const code = isCoreError(e) ? e.code : "malformed";
      if (f.item.kind === "commit") {
        const prev = this.refusedEpochs.get(f.item.group) ?? -1;
        this.refusedEpochs.set(f.item.group, Math.max(prev, f.item.epoch));
      }
      if (f.item.kind === "direct" && REPAIRABLE.has(code) && f.from !== this.username) {
        await this.repair(f.from, code);
      } else {
        this.emitError(code, e instanceof Error ? e.message : "bad message", conv);
        this.system(
          conv,
          "decrypt_failed",
          `A message from ${f.from} could not be read (${code})`,
          { username: f.from },
        );
      }
      if (f.item.kind === "commit") await this.evaluateGroup(f.item.group);
    } finally {
      if (ack) this.send({ v: PROTOCOL_VERSION, t: "ack", mids: [f.mid] });
    }
  }

  /**
   * A direct body from `peer` we cannot decrypt for want of the session it was made on (§8.10):
   * our state was lost or replaced (a restore on a new device) or is older than the peer's.
   * Make a new session and, on it, ask the peer to send again what we have not receipted — at
   * most once per REPAIR_INTERVAL_MS; a failure inside that window is covered by the same ask.
   */
  private async repair(peer: string, code: CoreErrorCode): Promise<void> {
    const next = beginRepair(await this.loadDm(peer), this.o.now());
    if (next === null) return;
    this.system(
      dmId(peer),
      "repairing",
      `A message from ${peer} could not be read (${code}); making a new secure session and asking ${peer} to send it again`,
      { username: peer },
    );
    await this.ensureSession(next);
  }

  private async onDirect(from: string, body: Uint8Array): Promise<void> {
    if (from === this.username) throw new CoreError("malformed", "direct message from ourselves");
    const rec = await this.loadDm(from);
    const before = this.contacts.get(from);
    // The prekey state (hundreds of keys) is parsed only for the message that needs it.
    const prekeys = needsPrekeys(body) ? await this.loadPrekeys() : null;
    const r = await receiveDm(rec, before ?? null, prekeys, body, this.ctx());
    await this.applyDm(before, r);
  }

  /**
   * The relay's `receipt` only claims the recipient acknowledged the item: a lying relay can
   * forge it for a message it dropped (SECURITY.md L3). It changes no state (§6): "sent" comes
   * from `accepted`, "delivered" only from the recipient's end-to-end receipt (§8.6).
   */
  private async onReceipt(_f: FrameOf<ServerFrame, "receipt">): Promise<void> {}

  private async onAccepted(f: FrameOf<ServerFrame, "accepted">): Promise<void> {
    const seq = Number(f.id.slice(1));
    if (f.id.startsWith("o") && Number.isSafeInteger(seq)) {
      const key = KEYS.outbox(seq);
      const entry = await this.outboxEntry(key, await this.store.get(key));
      if (entry === null) return;
      await this.commit([{ op: "delete", key }]);
      if (entry.conversationId && entry.messageId) {
        this.delivery(entry.conversationId as ConversationId, entry.messageId, "sent");
      }
      return;
    }
    const fl = this.inflight.get(f.id);
    if (!fl) return;
    if (fl.kind === "upload") {
      this.inflight.delete(f.id);
      this.uploading = false;
    } else if (fl.kind === "commit") {
      this.inflight.delete(f.id);
      const rec = await this.loadGroup(fl.name);
      if (rec.pendingCommit?.id !== f.id) return;
      const p = rec.pendingCommit;
      const next = applyOwnCommit(rec, this.hub, this.me(), this.o.now());
      await this.commit([{ op: "put", key: KEYS.group(fl.name), value: next }]);
      this.trackGroupGaps(next);
      this.commitLines(fl.name, next, p.added, p.removed, this.username);
      this.summarizeGroup(next);
      await this.evaluateGroup(fl.name);
    } else if (fl.kind !== "fetch") this.inflight.delete(f.id);
  }

  private delivery(conversationId: ConversationId, messageId: string, state: DeliveryState): void {
    this.emit({ type: "delivery", conversationId, messageId, state });
  }

  private async onRelayError(f: FrameOf<ServerFrame, "error">): Promise<void> {
    const id = f.id;
    if (f.code === "device_replaced") {
      // Another device claimed the identity (a restore from backup, §4.3). Reconnecting would
      // only be refused again; the user may take it back (reclaimDevice).
      this.retired = true;
      this.emit({ type: "connection", state: "retired" });
      return;
    }
    if (id?.startsWith("o")) {
      const key = KEYS.outbox(Number(id.slice(1)));
      const entry = await this.outboxEntry(key, await this.store.get(key));
      if (entry !== null) {
        // Transient refusals keep the entry: it is resent on the next connection (§10.1).
        // not_authenticated: the frame overtook our auth (e.g. across a relay restart).
        if (f.code !== "rate_limited" && f.code !== "internal" && f.code !== "not_authenticated") {
          await this.commit([{ op: "delete", key }]);
          if (entry.conversationId && entry.messageId) {
            this.delivery(entry.conversationId as ConversationId, entry.messageId, "failed");
          }
        }
        const conv = entry.conversationId as ConversationId | undefined;
        this.emitError("relay_error", `${f.code}: ${f.message}`, conv);
        return;
      }
    }
    const fl = id ? this.inflight.get(id) : undefined;
    if (id && fl) {
      this.inflight.delete(id);
      if (fl.kind === "upload") this.uploading = false;
      if (fl.kind === "fetch") {
        const rec = await this.loadDm(fl.name);
        const next = { ...rec, pending: null };
        await this.commit([{ op: "put", key: KEYS.dm(fl.name), value: next }]);
        this.summarizeDm(next);
        this.emitError("relay_error", `${f.code}: ${f.message}`, dmId(fl.name));
        return;
      }
      if (fl.kind === "commit") {
        // Lost a race (stale_epoch / roster_mismatch): rebuild on the relay's new state (§9.2.4).
        const rec = await this.loadGroup(fl.name);
        if (rec.pendingCommit?.id === id) {
          if (f.code === "bad_frame" || f.code === "too_large") {
            // Not a race: the same state would build the same refused frame. Give up on this
            // epoch instead of rebuilding at once (§9.2.4).
            this.unsendableCommits.set(fl.name, rec.pendingCommit.parentEpoch);
            this.emitError("relay_error", `${f.code}: ${f.message}`, groupId(fl.name));
          }
          await this.commit([
            { op: "put", key: KEYS.group(fl.name), value: { ...rec, pendingCommit: null } },
          ]);
        }
        await this.evaluateGroup(fl.name);
        return;
      }
      if (fl.kind === "join") {
        const rec = await this.loadGroup(fl.name);
        if (rec.status === "joining") {
          const next = { ...rec, status: "none" as const };
          await this.commit([{ op: "put", key: KEYS.group(fl.name), value: next }]);
          this.summarizeGroup(next);
        }
      }
      this.emitError(
        "relay_error",
        `${f.code}: ${f.message}`,
        fl.kind === "upload" ? undefined : groupId(fl.name),
      );
      return;
    }
    this.emitError("relay_error", `${f.code}: ${f.message}`);
  }

  // -------------------------------------------------------------------------------------------
  // Trust

  acceptKeyChange(username: string): Promise<void> {
    return this.run(async () => {
      const c = this.contacts.get(username);
      if (!c?.changedKey) return;
      const next = acceptChange(c, this.o.now());
      const rec = await this.loadDm(username);
      // Sessions made with the old key are dropped; the held envelopes (made for the new key) are
      // processed now, and queued texts go out under a fresh handshake.
      const fresh: DmRecord = {
        ...rec,
        current: null,
        previous: [],
        pending: null,
        held: [],
        seenInits: [],
      };
      await this.commit([
        { op: "put", key: KEYS.contact(username), value: next },
        { op: "put", key: KEYS.dm(username), value: fresh },
      ]);
      this.contacts.set(username, next);
      this.system(dmId(username), "key_accepted", `You accepted ${username}'s new key`, {
        username,
      });
      let cur = fresh;
      for (const body of rec.held) {
        try {
          const r = await receiveDm(
            cur,
            next,
            await this.loadPrekeys(),
            b64(body, "held"),
            this.ctx(),
          );
          await this.applyDm(next, r);
          cur = await this.loadDm(username);
        } catch (e) {
          if (isCoreError(e)) this.emitError(e.code, e.message, dmId(username));
        }
      }
      await this.ensureSession(await this.loadDm(username));
      for (const name of this.relayGroups.keys()) {
        const g = await this.loadGroup(name);
        this.summarizeGroup(g);
      }
    });
  }

  markVerified(username: string): Promise<void> {
    return this.run(async () => {
      const c = this.contacts.get(username);
      if (!c) throw new CoreError("unknown_session", "no pinned key for that user");
      if (c.changedKey) throw new CoreError("key_changed", "accept the key change first");
      const next = markVerified(c);
      await this.commit([{ op: "put", key: KEYS.contact(username), value: next }]);
      this.contacts.set(username, next);
      this.system(dmId(username), "verified", `You marked ${username} as verified`, { username });
      this.summarizeDm(await this.loadDm(username));
    });
  }

  async safetyNumber(username: string): Promise<string> {
    const c = this.contacts.get(username);
    if (!c) throw new CoreError("unknown_session", "no pinned key for that user");
    return safetyNumber(
      { username: this.username, identityKey: this.o.identity.publicKey },
      { username, identityKey: fromB64u(c.identityKey) },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Groups

  joinGroup(name: string): Promise<void> {
    return this.run(async () => {
      const rec = await this.loadGroup(name);
      const next: GroupRecord = rec.status === "member" ? rec : { ...rec, status: "joining" };
      await this.commit([{ op: "put", key: KEYS.group(name), value: next }]);
      const id = this.nextId("j");
      this.inflight.set(id, { kind: "join", name });
      this.send({ v: PROTOCOL_VERSION, t: "join", id, group: name });
      this.summarizeGroup(next);
    });
  }

  leaveGroup(name: string): Promise<void> {
    return this.run(async () => {
      const id = this.nextId("l");
      this.inflight.set(id, { kind: "leave", name });
      this.send({ v: PROTOCOL_VERSION, t: "leave", id, group: name });
    });
  }

  private async onLeft(name: string): Promise<void> {
    const rec = await this.loadGroup(name);
    // `left` answering the leave half of a rejoin (§9.4): we hold no keys and wait for our join.
    if (this.rejoining.delete(name)) return;
    // Forget every key of the group: a departed member must not read later epochs (§9.4).
    const next: GroupRecord = {
      group: name,
      status: "left",
      current: null,
      previous: null,
      pendingCommit: null,
    };
    await this.commit([{ op: "put", key: KEYS.group(name), value: next }]);
    if (rec.status !== "left")
      this.system(groupId(name), "left", `You left ${name}`, { username: this.username });
    this.summarizeGroup(next);
  }

  private commitLines(
    name: string,
    rec: GroupRecord,
    added: string[],
    removed: string[],
    by: string,
  ): void {
    const id = groupId(name);
    for (const n of removed)
      if (!added.includes(n)) this.system(id, "left", `${n} left`, { username: n });
    for (const n of added) this.system(id, "joined", `${n} joined`, { username: n });
    const epoch = rec.current?.epoch ?? 0;
    this.system(id, "epoch", `New group key (epoch ${epoch}) from ${by}`, { epoch, username: by });
  }

  private async onCommit(
    name: string,
    epoch: number,
    core: string,
    wrap: string,
    from: string,
    fromKey: string,
  ): Promise<void> {
    const rec = await this.loadGroup(name);
    // Our own commit echoed back (self-wrap), or an old duplicate: nothing to do.
    if (rec.status === "member" && rec.current && epoch <= rec.current.epoch) return;
    const prekeys = await this.loadPrekeys();
    const spkSecret = (id: number) => {
      const k = prekeys.spk.id === id ? prekeys.spk : prekeys.oldSpks.find((o) => o.id === id);
      return k ? fromB64u(k.priv) : null;
    };
    const r = await receiveCommit({
      record: rec,
      hub: this.hub,
      me: this.me(),
      itemEpoch: epoch,
      core: b64(core, "core"),
      wrap: b64(wrap, "wrap"),
      spkSecret,
      now: this.o.now(),
      from: { name: from, identityKey: fromKey },
    });
    // A roster key that contradicts a pin, or the relay's own record of that name, refuses the
    // whole commit (§8.7, §9.4 step 5): applying it would switch the group to a key someone
    // else holds. Nothing is re-pinned or flagged, so a forged commit cannot poison contacts;
    // only names we have no pin for are pinned (TOFU), once the commit is otherwise valid.
    const state = this.relayGroups.get(name);
    const relayKeys = new Map(
      [...(state?.members ?? []), ...(state?.pendingJoins ?? [])].map((m) => [
        m.username,
        m.identityKey,
      ]),
    );
    const ops: StoreOp[] = [{ op: "put", key: KEYS.group(name), value: r.record }];
    const pins: Contact[] = [];
    for (const m of r.view.core.roster) {
      if (m.name === this.username) continue;
      const known = relayKeys.get(m.name);
      if (known !== undefined && known !== m.ik) {
        throw new CoreError("key_changed", `commit gives ${m.name} a key the relay does not list`);
      }
      const c = this.contacts.get(m.name);
      const check = checkKey(c ?? null, m.name, m.ik, this.o.now());
      if (check.result === "changed") {
        throw new CoreError(
          "key_changed",
          `commit gives ${m.name} a key other than the pinned one`,
        );
      }
      if (check.result === "pinned") {
        ops.push({ op: "put", key: KEYS.contact(m.name), value: check.contact });
        pins.push(check.contact);
      }
    }
    await this.commit(ops);
    for (const c of pins) this.contacts.set(c.username, c);
    this.trackGroupGaps(r.record);
    this.commitLines(name, r.record, r.view.core.added, r.view.core.removed, r.view.core.committer);
    this.summarizeGroup(r.record);
    await this.evaluateGroup(name);
  }

  private async onGroupMessage(
    from: string,
    name: string,
    epoch: number,
    body: Uint8Array,
  ): Promise<void> {
    const rec = await this.loadGroup(name);
    const r = await decryptGroup({ record: rec, hub: this.hub, sender: from, epoch, body });
    await this.commit([{ op: "put", key: KEYS.group(name), value: r.record }]);
    this.trackGroupGaps(r.record);
    this.emitReceived(groupId(name), from, r.content);
  }

  private async sendGroup(name: string, content: TextContent): Promise<void> {
    const rec = await this.loadGroup(name);
    const state = this.relayGroups.get(name);
    if (rec.status !== "member" || rec.current === null)
      throw new CoreError("not_member", `not a member of ${name}`);
    // Nothing may be sent under an epoch a leaver still knows (§9.4).
    if (state && state.pendingLeaves.length > 0)
      throw new CoreError("removal_pending", "a removal is pending");
    if (state && state.epoch !== rec.current.epoch)
      throw new CoreError("stale_epoch", "waiting for the new epoch");
    if (rec.current.roster.some((m) => this.contacts.get(m.name)?.changedKey)) {
      throw new CoreError("key_changed", "a member's key changed; accept it first");
    }
    const enc = await encryptGroup({
      record: rec,
      hub: this.hub,
      me: this.me(),
      sign: (m) => ed25519Sign(this.o.identity.privateKey, m),
      content,
    });
    const { id, seq } = this.newOutId();
    const frame = {
      v: PROTOCOL_VERSION,
      t: "group_send",
      id,
      group: name,
      epoch: enc.epoch,
      body: toB64u(enc.body),
    } as const;
    await this.commit([
      { op: "put", key: KEYS.group(name), value: enc.record },
      this.outbox(frame, seq, { conversationId: groupId(name), messageId: content.id }),
    ]);
    this.outgoing(groupId(name), content);
    this.send(frame);
    await this.evaluateGroup(name);
  }

  /**
   * Decide whether we must commit now (§9.2.4): as a pending joiner; as the chosen remaining
   * member for a pending leave (lowest online name first, others after rank × delay); or for a
   * periodic update (§9.6).
   */
  private async evaluateGroup(name: string): Promise<void> {
    const state = this.relayGroups.get(name);
    if (!state || !this.authed || this.stale) return;
    let rec = await this.loadGroup(name);
    // Our own commit was accepted (we hold its epoch) but the relay's `group` frame for it has
    // not arrived yet: `state` still lists us as a pending joiner (or the leaver as pending), and
    // acting on it would build a second commit on the old epoch that the relay refuses as
    // `stale_epoch` (SECURITY.md L13). The frame is on its way; decide then (§9.2.1).
    if (rec.current !== null && rec.current.epoch > state.epoch) return;
    const me = this.username;
    const isMember = state.members.some((m) => m.username === me);
    const joining = state.pendingJoins.some((m) => m.username === me);
    if (rec.status === "member" && !isMember && !joining) {
      // The relay no longer lists us (we left from elsewhere): forget the keys.
      return this.onLeft(name);
    }
    if (rec.pendingCommit !== null) return;
    if (joining) {
      if (rec.status !== "joining" && rec.status !== "member") {
        rec = { ...rec, status: "joining" };
      }
      return this.makeCommit(name, state, rec);
    }
    const leaving = new Set(state.pendingLeaves);
    const refused = this.refusedEpochs.get(name);
    if (
      isMember &&
      !leaving.has(me) &&
      // A re-joiner whose join a concurrent commit folded in without adding it (§9.4) is stuck
      // the same way: listed as a member, holding no keys, its commit refused.
      (rec.status === "member" || rec.status === "joining") &&
      (rec.current?.epoch ?? -1) < state.epoch &&
      refused !== undefined &&
      refused >= state.epoch
    ) {
      // The relay moved the group to an epoch whose commit we refused (forged by a joiner or
      // member, or one we can never open): no valid commit for it will ever reach us, and
      // waiting would freeze the group for every honest member. Drop our keys and re-join,
      // exactly like a member whose state was lost (§9.4); our own commit re-keys the group.
      this.refusedEpochs.delete(name);
      const none = emptyGroup(name);
      await this.commit([{ op: "put", key: KEYS.group(name), value: none }]);
      this.summarizeGroup(none);
      return this.rejoin(name, none);
    }
    if (isMember && !leaving.has(me) && rec.status === "none") {
      // The relay lists us as a member but we hold no keys and none are coming (state lost,
      // e.g. identity imported on a new device): leave and join again to get a fresh epoch.
      return this.rejoin(name, rec);
    }
    if (!isMember || rec.status !== "member" || rec.current === null) return;
    if (rec.current.epoch !== state.epoch) return; // a commit is on its way through the mailbox
    if (leaving.has(me)) return;
    const candidates = state.members
      .map((m) => m.username)
      .filter((u) => !leaving.has(u) && (u === me || this.online.has(u)))
      .sort();
    const rank = candidates.indexOf(me);
    if (state.pendingLeaves.length > 0) {
      if (rank === 0) return this.makeCommit(name, state, rec);
      this.later(`${name}:${state.epoch}`, rank * this.tuning.fallbackCommitDelayMs, () =>
        this.evaluateFallback(name, state.epoch),
      );
      return;
    }
    if (state.pendingJoins.length > 0) return;
    const cur = rec.current;
    const dueByCount = cur.sent >= this.tuning.groupUpdateAfterMessages;
    const dueByTime = rank === 0 && this.o.now() - cur.startedAt >= this.tuning.groupUpdateAfterMs;
    if (dueByCount || dueByTime) return this.makeCommit(name, state, rec);
  }

  private async rejoin(name: string, rec: GroupRecord): Promise<void> {
    const next: GroupRecord = { ...rec, status: "joining" };
    this.rejoining.add(name);
    await this.commit([{ op: "put", key: KEYS.group(name), value: next }]);
    const l = this.nextId("l");
    const j = this.nextId("j");
    this.inflight.set(l, { kind: "leave", name });
    this.inflight.set(j, { kind: "join", name });
    this.send({ v: PROTOCOL_VERSION, t: "leave", id: l, group: name });
    this.send({ v: PROTOCOL_VERSION, t: "join", id: j, group: name });
    this.summarizeGroup(next);
  }

  private later(key: string, ms: number, fn: () => Promise<void>): void {
    if (this.timers.has(key)) return;
    const cancel = this.schedule(ms, () => {
      this.timers.delete(key);
      void this.run(fn).catch(() => undefined);
    });
    this.timers.set(key, cancel);
  }

  /** A fallback committer's turn came: commit if the leave is still pending at that epoch. */
  private async evaluateFallback(name: string, epoch: number): Promise<void> {
    const state = this.relayGroups.get(name);
    const rec = await this.loadGroup(name);
    if (!state || state.epoch !== epoch || state.pendingLeaves.length === 0) return;
    if (rec.pendingCommit !== null || rec.current?.epoch !== epoch) return;
    await this.makeCommit(name, state, rec);
  }

  private async makeCommit(name: string, state: GroupState, rec: GroupRecord): Promise<void> {
    const unsendable = this.unsendableCommits.get(name);
    if (unsendable === state.epoch) return;
    if (unsendable !== undefined) this.unsendableCommits.delete(name);
    const { roster, added, removed } = nextRoster(state);
    if (!roster.some((m) => m.name === this.username)) return;
    // Never wrap the epoch secret to a key that contradicts a pin (relay MITM, §8.7).
    const ops: StoreOp[] = [];
    for (const m of roster) {
      if (m.name === this.username) {
        if (m.ik !== this.identityKey)
          throw new CoreError("identity_mismatch", "relay lists us with another key");
        continue;
      }
      const c = this.contacts.get(m.name);
      const check = checkKey(c ?? null, m.name, m.ik, this.o.now());
      if (check.result === "changed") {
        if (c?.changedKey !== m.ik) {
          this.contacts.set(m.name, check.contact);
          await this.commit([{ op: "put", key: KEYS.contact(m.name), value: check.contact }]);
          this.system(groupId(name), "key_changed", `${m.name}'s safety number changed`, {
            username: m.name,
          });
          this.emitError("key_changed", `${m.name}'s key changed; not committing`, groupId(name));
        }
        this.summarizeGroup(rec);
        return;
      }
      if (check.result === "pinned") {
        ops.push({ op: "put", key: KEYS.contact(m.name), value: check.contact });
        this.contacts.set(m.name, check.contact);
      }
    }
    const built = await createCommit({
      hub: this.hub,
      group: name,
      parentEpoch: state.epoch,
      committer: this.username,
      committerIk: this.o.identity.publicKey,
      sign: (m) => ed25519Sign(this.o.identity.privateKey, m),
      roster,
      added,
      removed,
      random: this.random,
    });
    const id = this.nextId("c");
    const frame = {
      v: PROTOCOL_VERSION,
      t: "commit",
      id,
      group: name,
      parentEpoch: state.epoch,
      members: roster.map((m) => m.name),
      core: toB64u(built.core),
      wraps: built.wraps.map((w) => ({ to: w.to, wrap: toB64u(w.wrap) })),
    } as const;
    // The limits are sized for the largest legal commit (§7.1), so this never trips with a
    // conforming relay; but a frame over them would be refused as `too_large` without an `id`
    // (we could not tell it was our commit) — never send it, and do not retry this epoch.
    if (
      frame.core.length > LIMITS.maxCommitCoreChars ||
      JSON.stringify(frame).length > LIMITS.maxFrameBytes
    ) {
      this.unsendableCommits.set(name, state.epoch);
      if (ops.length > 0) await this.commit(ops);
      this.emitError("relay_error", "too_large: the commit exceeds the frame limit", groupId(name));
      return;
    }
    const next: GroupRecord = {
      ...rec,
      pendingCommit: {
        id,
        parentEpoch: state.epoch,
        secret: toB64u(built.secret),
        roster,
        added,
        removed,
        at: this.o.now(),
      },
    };
    ops.push({ op: "put", key: KEYS.group(name), value: next });
    await this.commit(ops);
    this.inflight.set(id, { kind: "commit", name });
    this.send(frame);
  }
}
