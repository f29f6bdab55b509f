/**
 * An in-memory relay for protocol-core tests: the same rules as the real relay (worker/relay),
 * reusing its pure modules (groups.ts roster/commit sequencing, auth.ts transcripts, mailbox.ts
 * rules, directory.ts upload checks). Frames cross a JSON boundary both ways and are parsed with
 * parseClientFrame / parseServerFrame, exactly like over a WebSocket.
 *
 * Test hooks: `intercept(to, frame)` lets a test play the malicious relay (rewrite a bundle, a
 * presence list, a delivered body; return null to drop); `log` records every frame sent to a
 * client so tests can assert on real ciphertext.
 */
import { randomBytes } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import {
  type ClientFrame,
  type DeliverItem,
  type ErrorCode,
  errorFrame,
  type FrameOf,
  type GroupState,
  LIMITS,
  type OneTimePrekey,
  PROTOCOL_VERSION,
  parseClientFrame,
  parseServerFrame,
  type ServerFrame,
  type SignedPrekey,
} from "../../shared/protocol";
import { verifyAuthFrame, verifySignedPrekey } from "../../worker/relay/auth";
import { checkUpload, prekeysLow } from "../../worker/relay/directory";
import * as groups from "../../worker/relay/groups";
import { mailboxHasRoom } from "../../worker/relay/mailbox";

export interface ClientEnd {
  onConnected(): void;
  onServerFrame(frame: ServerFrame): Promise<void>;
  onDisconnected(): void;
  whenIdle?(): Promise<void>;
}

interface User {
  username: string;
  identityKey: string;
  signedPrekey: SignedPrekey;
  opks: OneTimePrekey[];
}

interface Item {
  mid: number;
  to: string;
  from: string;
  fromKey: string;
  ts: number;
  item: DeliverItem;
}

export class Conn {
  username: string | null = null;
  closed = false;
  readonly challenge = toB64u(randomBytes(32));
  /** Frames waiting to be handed to the client, in order. */
  readonly out: ServerFrame[] = [];
  pumping: Promise<void> | null = null;
  readonly sent = new Set<number>();
  constructor(
    readonly relay: MemoryRelay,
    readonly end: ClientEnd,
  ) {}

  /** What the engine's transport calls. */
  fromClient(frame: ClientFrame): void {
    if (this.closed) return;
    this.relay.receive(this, JSON.stringify(frame));
  }
}

export class MemoryRelay {
  readonly users = new Map<string, User>();
  readonly groups = new Map<string, groups.GroupRecord>();
  readonly mailbox: Item[] = [];
  readonly conns = new Set<Conn>();
  readonly log: Array<{ to: string | null; frame: ServerFrame }> = [];
  readonly clientLog: Array<{ from: string | null; frame: ClientFrame }> = [];
  intercept: ((to: string | null, frame: ServerFrame) => ServerFrame | null) | null = null;
  readonly failures: string[] = [];
  private nextMid = 1;
  private chain: Promise<void> = Promise.resolve();
  private busy = 0;
  clock = 1_700_000_000_000;

  constructor(
    readonly hub = "main",
    readonly origin = "https://parley.test",
  ) {
    this.groups.set("broadcast", groups.emptyGroup("broadcast"));
  }

  now(): number {
    return this.clock;
  }

  connect(end: ClientEnd): Conn {
    const c = new Conn(this, end);
    this.conns.add(c);
    this.engines.add(end);
    end.onConnected();
    this.push(c, {
      v: PROTOCOL_VERSION,
      t: "hello",
      hub: this.hub,
      challenge: c.challenge,
      time: this.now(),
    });
    return c;
  }

  disconnect(c: Conn): void {
    if (c.closed) return;
    c.closed = true;
    this.conns.delete(c);
    c.end.onDisconnected();
    this.pushPresence();
  }

  online(username: string): Conn | undefined {
    for (const c of this.conns) if (c.username === username && !c.closed) return c;
    return undefined;
  }

  /** Engines that are not connected but may still be working (timers): awaited by settle. */
  readonly engines = new Set<ClientEnd>();

  /** Wait until no frame is in flight in either direction and every engine is idle. */
  async settle(): Promise<void> {
    for (let i = 0; i < 10_000; i++) {
      await this.chain;
      for (const e of [...this.engines, ...[...this.conns].map((c) => c.end)]) await e.whenIdle?.();
      const pumps = [...this.conns]
        .map((c) => c.pumping)
        .filter((p): p is Promise<void> => p !== null);
      if (pumps.length === 0 && this.busy === 0) {
        await new Promise((r) => setTimeout(r, 0));
        const again = [...this.conns].some((c) => c.pumping !== null) || this.busy > 0;
        if (!again) return;
      }
      await Promise.all(pumps);
      await new Promise((r) => setTimeout(r, 0));
    }
    throw new Error("memory relay did not settle");
  }

  // -------------------------------------------------------------------------------------------
  // Relay → client

  push(c: Conn, frame: ServerFrame): void {
    if (c.closed) return;
    const f = this.intercept ? this.intercept(c.username, frame) : frame;
    if (f === null) return;
    // Across the wire: JSON text, parsed by the client-side boundary parser.
    const parsed = parseServerFrame(JSON.stringify(f));
    if (!parsed.ok) throw new Error(`memory relay produced an invalid frame: ${parsed.code}`);
    this.log.push({ to: c.username, frame: parsed.frame });
    c.out.push(parsed.frame);
    if (c.pumping === null) c.pumping = this.pump(c);
  }

  private async pump(c: Conn): Promise<void> {
    await Promise.resolve();
    while (c.out.length > 0 && !c.closed) {
      const f = c.out.shift() as ServerFrame;
      await c.end.onServerFrame(f);
    }
    c.pumping = null;
  }

  // -------------------------------------------------------------------------------------------
  // Client → relay (one event at a time, like a Durable Object)

  receive(c: Conn, raw: string): void {
    this.busy++;
    this.chain = this.chain
      .then(() => this.handle(c, raw))
      .catch((e) => {
        // A relay bug must fail the test, not hang it: recorded and asserted by the harness.
        this.failures.push(String(e));
      })
      .finally(() => {
        this.busy--;
      });
  }

  private async handle(c: Conn, raw: string): Promise<void> {
    if (c.closed) return;
    const parsed = parseClientFrame(raw);
    if (!parsed.ok) {
      this.push(c, errorFrame(parsed.code, parsed.id));
      return;
    }
    const f = parsed.frame;
    this.clientLog.push({ from: c.username, frame: f });
    if (f.t === "ping") {
      this.push(c, { v: PROTOCOL_VERSION, t: "pong" });
      return;
    }
    if (f.t === "auth") return this.auth(c, f);
    const me = c.username === null ? undefined : this.users.get(c.username);
    if (me === undefined)
      return this.push(c, errorFrame("not_authenticated", "id" in f ? f.id : undefined));
    switch (f.t) {
      case "upload_prekeys":
        return this.upload(c, me, f);
      case "fetch_bundle":
        return this.fetchBundle(c, f);
      case "send":
        return this.send(c, me, f);
      case "ack":
        return this.ack(me, f);
      case "join":
        return this.join(c, me, f);
      case "leave":
        return this.leave(c, me, f);
      case "commit":
        return this.commit(c, me, f);
      case "group_send":
        return this.groupSend(c, me, f);
    }
  }

  private fail(c: Conn, code: ErrorCode, id?: string): void {
    this.push(c, errorFrame(code, id));
  }

  private async auth(c: Conn, f: FrameOf<ClientFrame, "auth">): Promise<void> {
    if (c.username !== null) {
      this.fail(c, "already_authenticated");
      return;
    }
    const r = await verifyAuthFrame(
      { hub: this.hub, origin: this.origin, challenge: fromB64u(c.challenge) },
      f,
    );
    if (!r.ok) {
      this.fail(c, r.code);
      return this.disconnect(c);
    }
    const existing = this.users.get(f.username);
    if (existing && existing.identityKey !== f.identityKey) {
      this.fail(c, "name_taken");
      return this.disconnect(c);
    }
    for (const u of this.users.values()) {
      if (u.identityKey === f.identityKey && u.username !== f.username) {
        this.fail(c, "identity_bound");
        return this.disconnect(c);
      }
    }
    const user: User = existing ?? {
      username: f.username,
      identityKey: f.identityKey,
      signedPrekey: f.signedPrekey,
      opks: [],
    };
    const spkChanged = existing !== undefined && existing.signedPrekey.id !== f.signedPrekey.id;
    user.signedPrekey = f.signedPrekey;
    this.users.set(f.username, user);
    const older = this.online(f.username);
    if (older) {
      this.push(older, errorFrame("replaced"));
      this.disconnect(older);
    }
    c.username = f.username;
    const involved = [...this.groups.values()].filter((g) => groups.isInvolved(g, f.username));
    this.push(c, {
      v: PROTOCOL_VERSION,
      t: "welcome",
      username: f.username,
      identityKey: f.identityKey,
      oneTimePrekeysRemaining: user.opks.length,
      groups: involved.map((g) => this.groupState(g)),
    });
    if (prekeysLow(user.opks.length)) {
      this.push(c, { v: PROTOCOL_VERSION, t: "prekeys_low", remaining: user.opks.length });
    }
    this.pushPresence();
    if (spkChanged) for (const g of involved) this.pushGroup(g);
    this.drain(c);
  }

  private pushPresence(): void {
    const users = [...this.conns]
      .filter((c) => c.username !== null && !c.closed)
      .map((c) => {
        const u = this.users.get(c.username as string) as User;
        return { username: u.username, identityKey: u.identityKey };
      })
      .sort((a, b) => (a.username < b.username ? -1 : 1));
    for (const c of this.conns)
      if (c.username !== null) this.push(c, { v: PROTOCOL_VERSION, t: "presence", users });
  }

  private async upload(
    c: Conn,
    me: User,
    f: FrameOf<ClientFrame, "upload_prekeys">,
  ): Promise<void> {
    if (f.signedPrekey && !(await verifySignedPrekey(fromB64u(me.identityKey), f.signedPrekey))) {
      return this.fail(c, "bad_signature", f.id);
    }
    const known = new Set(me.opks.map((k) => k.id));
    const fresh = f.oneTimePrekeys.filter((k) => !known.has(k.id));
    const check = checkUpload(f.oneTimePrekeys, me.opks.length, fresh.length);
    if (!check.ok) {
      this.fail(c, check.code, f.id);
      return;
    }
    me.opks.push(...fresh);
    if (f.signedPrekey) me.signedPrekey = f.signedPrekey;
    this.push(c, { v: PROTOCOL_VERSION, t: "accepted", id: f.id });
  }

  private fetchBundle(c: Conn, f: FrameOf<ClientFrame, "fetch_bundle">): void {
    const u = this.users.get(f.username);
    if (!u) {
      this.fail(c, "unknown_user", f.id);
      return;
    }
    // Each one-time prekey is handed out once.
    const opk = u.opks.shift() ?? null;
    this.push(c, {
      v: PROTOCOL_VERSION,
      t: "bundle",
      id: f.id,
      username: u.username,
      identityKey: u.identityKey,
      signedPrekey: u.signedPrekey,
      oneTimePrekey: opk,
    });
  }

  private countFor(to: string): number {
    return this.mailbox.filter((i) => i.to === to).length;
  }

  private enqueue(from: User, to: string, item: DeliverItem): number {
    const mid = this.nextMid++;
    this.mailbox.push({
      mid,
      to,
      from: from.username,
      fromKey: from.identityKey,
      ts: this.now(),
      item,
    });
    return mid;
  }

  private drain(c: Conn): void {
    if (c.username === null || c.closed) return;
    const inFlight = this.mailbox.filter((i) => i.to === c.username && c.sent.has(i.mid)).length;
    let room = LIMITS.deliverWindow - inFlight;
    for (const i of this.mailbox) {
      if (room <= 0) break;
      if (i.to !== c.username || c.sent.has(i.mid)) continue;
      c.sent.add(i.mid);
      room--;
      this.push(c, {
        v: PROTOCOL_VERSION,
        t: "deliver",
        mid: String(i.mid),
        from: i.from,
        fromKey: i.fromKey,
        ts: i.ts,
        item: i.item,
      });
    }
  }

  private deliverTo(username: string): void {
    const c = this.online(username);
    if (c) this.drain(c);
  }

  private send(c: Conn, me: User, f: FrameOf<ClientFrame, "send">): void {
    if (!this.users.has(f.to)) {
      this.fail(c, "unknown_user", f.id);
      return;
    }
    if (!mailboxHasRoom("direct", this.countFor(f.to))) {
      this.fail(c, "mailbox_full", f.id);
      return;
    }
    const mid = this.enqueue(me, f.to, { kind: "direct", body: f.body });
    this.push(c, { v: PROTOCOL_VERSION, t: "accepted", id: f.id, mid: String(mid) });
    this.deliverTo(f.to);
  }

  private ack(me: User, f: FrameOf<ClientFrame, "ack">): void {
    for (const m of f.mids) {
      const idx = this.mailbox.findIndex((i) => i.mid === Number(m) && i.to === me.username);
      if (idx < 0) continue;
      const [item] = this.mailbox.splice(idx, 1);
      if (item && item.item.kind === "direct") {
        const s = this.online(item.from);
        if (s) this.push(s, { v: PROTOCOL_VERSION, t: "receipt", mid: m, by: me.username });
      }
    }
    this.deliverTo(me.username);
  }

  groupState(g: groups.GroupRecord): GroupState {
    const member = (n: string) => {
      const u = this.users.get(n);
      return u
        ? [{ username: u.username, identityKey: u.identityKey, signedPrekey: u.signedPrekey }]
        : [];
    };
    return {
      group: g.name,
      epoch: g.epoch,
      members: g.members.flatMap(member),
      pendingJoins: g.pendingJoins.flatMap(member),
      pendingLeaves: [...g.pendingLeaves],
    };
  }

  private pushGroup(g: groups.GroupRecord): void {
    const state = this.groupState(g);
    for (const u of groups.audience(g)) {
      const c = this.online(u);
      if (c) this.push(c, { v: PROTOCOL_VERSION, t: "group", state });
    }
  }

  private join(c: Conn, me: User, f: FrameOf<ClientFrame, "join">): void {
    const g = this.groups.get(f.group) ?? groups.emptyGroup(f.group);
    const r = groups.join(g, me.username, LIMITS.maxGroupSize);
    if (!r.ok) {
      this.fail(c, r.code, f.id);
      return;
    }
    this.groups.set(f.group, r.group);
    this.push(c, { v: PROTOCOL_VERSION, t: "accepted", id: f.id });
    if (r.changed) this.pushGroup(r.group);
    else this.push(c, { v: PROTOCOL_VERSION, t: "group", state: this.groupState(r.group) });
  }

  private leave(c: Conn, me: User, f: FrameOf<ClientFrame, "leave">): void {
    const g = this.groups.get(f.group);
    if (!g) {
      this.fail(c, "not_member", f.id);
      return;
    }
    const r = groups.leave(g, me.username);
    if (!r.ok) {
      this.fail(c, r.code, f.id);
      return;
    }
    this.groups.set(f.group, r.group);
    this.push(c, { v: PROTOCOL_VERSION, t: "accepted", id: f.id });
    this.push(c, { v: PROTOCOL_VERSION, t: "left", group: f.group });
    if (r.changed) this.pushGroup(r.group);
  }

  private commit(c: Conn, me: User, f: FrameOf<ClientFrame, "commit">): void {
    const g = this.groups.get(f.group);
    if (!g) {
      this.fail(c, "not_member", f.id);
      return;
    }
    const r = groups.commit(g, {
      committer: me.username,
      parentEpoch: f.parentEpoch,
      members: f.members,
      wrapsTo: f.wraps.map((w) => w.to),
    });
    if (!r.ok) {
      this.fail(c, r.code, f.id);
      return;
    }
    this.groups.set(f.group, r.group);
    for (const w of f.wraps) {
      this.enqueue(me, w.to, {
        kind: "commit",
        group: f.group,
        epoch: r.group.epoch,
        core: f.core,
        wrap: w.wrap,
      });
    }
    this.push(c, { v: PROTOCOL_VERSION, t: "accepted", id: f.id });
    this.pushGroup(r.group);
    for (const w of f.wraps) this.deliverTo(w.to);
  }

  private groupSend(c: Conn, me: User, f: FrameOf<ClientFrame, "group_send">): void {
    const g = this.groups.get(f.group);
    if (!g) {
      this.fail(c, "not_member", f.id);
      return;
    }
    const r = groups.checkGroupSend(g, me.username, f.epoch);
    if (!r.ok) {
      this.fail(c, r.code, f.id);
      return;
    }
    for (const to of r.recipients) {
      if (!mailboxHasRoom("group", this.countFor(to))) continue;
      this.enqueue(me, to, { kind: "group", group: f.group, epoch: f.epoch, body: f.body });
    }
    this.push(c, { v: PROTOCOL_VERSION, t: "accepted", id: f.id });
    for (const to of r.recipients) this.deliverTo(to);
  }
}
