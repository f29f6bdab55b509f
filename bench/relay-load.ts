/**
 * Relay load driver: N WebSocket clients on 127.0.0.1 send 1:1 or group traffic at a
 * bounded, fixed offered rate for a bounded time, against Parley's relay (`wrangler dev`, full
 * protocol: authenticated, mailbox with acks, group epochs) and against the bare `ws` fan-out
 * server. Each body carries its send time, so every delivery yields a latency sample.
 */
import { appendFileSync } from "node:fs";
import WebSocket from "ws";
import { authTranscript, signedPrekeyTranscript } from "../shared/auth";
import { ACK_GATHER } from "../shared/core/client";
import { makeLeaves, publicLeaf } from "../shared/core/group-leaves";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  randomBytes,
  x25519GenerateKeyPair,
} from "../shared/crypto";
import { fromB64u, toB64u } from "../shared/encoding";
import { type ClientFrame, type Leaf, LIMITS, type ServerFrame } from "../shared/protocol";

/**
 * Acknowledge once ACK_GATHER deliveries are pending (the engine's own bound: well inside the
 * relay's unacknowledged-delivery window, and few enough ack frames that they do not eat the
 * per-connection frame budget), or after ACK_DELAY_MS.
 */
const ACK_DELAY_MS = 10;
/** Longest wait for an expected frame (welcome, group state, accepted) before a run fails. */
const WAIT_MS = 60_000;

export interface Delivery {
  from: string;
  body: string;
}

export interface LoadClient {
  name: string;
  sendDirect(to: string, body: string): void;
  sendGroup(body: string): void;
  onDeliver(cb: (d: Delivery) => void): void;
  close(): void;
}

export interface Target {
  label: string;
  connect(name: string): Promise<LoadClient>;
  /** Make all clients members of one group (bare server: everyone is). */
  formGroup(clients: LoadClient[]): Promise<void>;
  /**
   * Make each client a contact of the one that writes to it (client i writes to client i+1),
   * as people who talk are: their messages are then not message requests (PROTOCOL.md §7.3.1).
   * The bare server has no such notion.
   */
  formContacts?(clients: LoadClient[]): Promise<void>;
}

/**
 * A load client's acknowledgements on `ws`: `add` holds a delivered mid, sent with the others
 * once ACK_GATHER are held or ACK_DELAY_MS after the first; `flush` sends what is held now.
 */
function acker(ws: WebSocket): { add(mid: string): void; flush(): void } {
  const held: string[] = [];
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    while (held.length > 0) {
      const mids = held.splice(0, LIMITS.maxAckIds);
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ v: 1, t: "ack", mids }));
    }
  };
  return {
    add(mid) {
      held.push(mid);
      if (held.length >= ACK_GATHER) flush();
      else timer ??= setTimeout(flush, ACK_DELAY_MS);
    },
    flush,
  };
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((res, rej) => {
    ws.once("open", () => res());
    ws.once("error", rej);
  });
}

// ---------------------------------------------------------------------------------------------
// Bare server

export function bareTarget(port: number): Target {
  return bareProtocolTarget(`ws://127.0.0.1:${port}`, "bare ws");
}

/**
 * A server speaking the bare server's protocol at `url` (also bench/trivial-do's object). With
 * `parleyFrames` (bench/trivial-do only) each message also costs the frames a Parley message
 * does: the object answers a `send` with an `accepted`, and the client acknowledges deliveries
 * as the Parley load clients below do (`acker`). With `peers` (bench/trivial-do only) each
 * client connects to an object of its own name, and a `send` is one call from the sender's
 * object to the recipient's: the floor of users' routes.
 */
export function bareProtocolTarget(
  url: string,
  label: string,
  parleyFrames = false,
  peers = false,
): Target {
  let nextId = 0;
  return {
    label,
    async connect(name) {
      const at = peers ? `${url}?room=${encodeURIComponent(name)}` : url;
      const ws = new WebSocket(at, { perMessageDeflate: false });
      await opened(ws);
      const ready = new Promise<void>((res) => ws.once("message", () => res()));
      ws.send(
        JSON.stringify({
          t: "hello",
          name,
          ...(parleyFrames ? { frames: "parley" } : {}),
          ...(peers ? { peers: true } : {}),
        }),
      );
      await ready;
      let cb: (d: Delivery) => void = () => {};
      const acks = acker(ws);
      ws.on("message", (data) => {
        const f = JSON.parse(String(data)) as {
          t: string;
          mid: string;
          from: string;
          body: string;
        };
        if (f.t !== "deliver") return;
        if (parleyFrames) acks.add(f.mid);
        cb({ from: f.from, body: f.body });
      });
      return {
        name,
        sendDirect: (to, body) =>
          ws.send(
            JSON.stringify(
              parleyFrames
                ? { v: 1, t: "send", id: String(++nextId), to, body }
                : { t: "send", to, body },
            ),
          ),
        sendGroup: (body) => ws.send(JSON.stringify({ t: "group_send", body })),
        onDeliver: (c) => {
          cb = c;
        },
        close: () => ws.close(),
      };
    },
    async formGroup() {},
  };
}

// ---------------------------------------------------------------------------------------------
// Parley relay (real protocol frames; group commits carry random bytes in place of HPKE wraps —
// the relay never looks inside them, so its cost is the same)

interface ParleyConn extends LoadClient {
  frames: ServerFrame[];
  waitFor<T extends ServerFrame["t"]>(
    t: T,
    pred?: (f: Extract<ServerFrame, { t: T }>) => boolean,
  ): Promise<Extract<ServerFrame, { t: T }>>;
  raw(f: ClientFrame): void;
  groupEpoch: number;
  /** Leaf keys for the bench group's join (PROTOCOL.md §9.3). */
  leaves: Leaf[];
}

/** Relay `error` frames seen by the Parley load clients, by code (reported with each run). */
export const errors = new Map<string, number>();

/** A load user's keys: made once per name (parleyTarget). */
interface UserKeys {
  identity: Awaited<ReturnType<typeof generateIdentityKeyPair>>;
  spk: Awaited<ReturnType<typeof x25519GenerateKeyPair>>;
  spkSig: Uint8Array;
  leaves: ReturnType<typeof publicLeaf>[];
}

async function userKeys(hub: string, group: string): Promise<UserKeys> {
  const identity = await generateIdentityKeyPair();
  const spk = await x25519GenerateKeyPair();
  const spkSig = await ed25519Sign(identity.privateKey, signedPrekeyTranscript(1, spk.publicKey));
  const leaves = (
    await makeLeaves({
      hub,
      group,
      epoch: 0,
      count: 2,
      random: randomBytes,
      sign: (m) => ed25519Sign(identity.privateKey, m),
    })
  ).map(publicLeaf);
  return { identity, spk, spkSig, leaves };
}

/**
 * `routed`: each client opens its user's route (`&user=`), so each user is its own object and a
 * 1:1 message is one call between objects (docs/ARCHITECTURE.md "User objects").
 */
export function parleyTarget(
  baseUrl: string,
  hub: string,
  group = "bench",
  routed = false,
): Target {
  const origin = baseUrl;
  const hubUrl = `${baseUrl.replace(/^http/, "ws")}/ws?hub=${hub}`;
  let nextId = 0;
  /** Each name's keys: a name connected again is the same identity (a returning user). */
  const keys = new Map<string, Promise<UserKeys>>();
  const keysOf = (name: string) => {
    let k = keys.get(name);
    if (k === undefined) {
      k = userKeys(hub, group);
      keys.set(name, k);
    }
    return k;
  };
  return {
    label: "parley relay",
    async connect(name) {
      const { identity, spk, spkSig, leaves } = await keysOf(name);
      // No await from here until the handlers below are on: a socket that opens (and gets its
      // `hello`) while this function waits would lose both events and hang the run.
      const wsUrl = routed ? `${hubUrl}&user=${name}` : hubUrl;
      const ws = new WebSocket(wsUrl, { headers: { Origin: origin }, perMessageDeflate: false });
      const waiters: Array<{ t: string; pred: (f: never) => boolean; res: (f: never) => void }> =
        [];
      let cb: (d: Delivery) => void = () => {};
      const acks = acker(ws);
      const conn: ParleyConn = {
        name,
        frames: [],
        groupEpoch: 0,
        leaves,
        raw: (f) => ws.send(JSON.stringify(f)),
        sendDirect: (to, body) =>
          ws.send(JSON.stringify({ v: 1, t: "send", id: String(++nextId), to, body })),
        sendGroup: (body) =>
          ws.send(
            JSON.stringify({
              v: 1,
              t: "group_send",
              id: String(++nextId),
              group,
              epoch: conn.groupEpoch,
              body,
            }),
          ),
        onDeliver: (c) => {
          cb = c;
        },
        close: () => {
          acks.flush();
          ws.close();
        },
        waitFor(t, pred = () => true) {
          // Bounded: a relay that stops answering fails the run instead of hanging the bench.
          return new Promise((res, rej) => {
            const timer = setTimeout(
              () => rej(new Error(`${name}: no ${t} frame within ${WAIT_MS} ms`)),
              WAIT_MS,
            );
            waiters.push({
              t,
              pred: pred as never,
              res: ((f: never) => {
                clearTimeout(timer);
                res(f);
              }) as never,
            });
          });
        },
      };
      ws.on("message", async (data) => {
        // The driver trusts the relay it measures: plain JSON.parse, the same per-frame work as
        // for the bare server (schema validation is the product client's job, not the load's).
        const f = JSON.parse(String(data)) as ServerFrame;
        if (process.env.BENCH_DEBUG_FRAMES)
          process.stderr.write(`${name} <- ${String(data).slice(0, 160)}\n`);
        if (f.t === "hello") {
          const device = identity.publicKey.slice(0, 16);
          const sig = await ed25519Sign(
            identity.privateKey,
            authTranscript(
              { hub: f.hub, origin, challenge: fromB64u(f.challenge) },
              name,
              identity.publicKey,
              { id: 1, key: spk.publicKey, sig: spkSig },
              { id: device, claim: false },
            ),
          );
          conn.raw({
            v: 1,
            t: "auth",
            username: name,
            identityKey: toB64u(identity.publicKey),
            signedPrekey: { id: 1, key: toB64u(spk.publicKey), sig: toB64u(spkSig) },
            device: toB64u(device),
            claim: false,
            sig: toB64u(sig),
          });
        } else if (f.t === "deliver") {
          acks.add(f.mid);
          if (f.item.kind !== "commit") cb({ from: f.from, body: f.item.body });
        } else if (f.t === "group" && f.state.group === group) {
          conn.groupEpoch = f.state.epoch;
        } else if (f.t === "error") {
          errors.set(f.code, (errors.get(f.code) ?? 0) + 1);
        }
        for (let i = 0; i < waiters.length; i++) {
          const w = waiters[i];
          if (w && w.t === f.t && w.pred(f as never)) {
            waiters.splice(i, 1);
            w.res(f as never);
            break;
          }
        }
      });
      const welcome = conn.waitFor("welcome");
      await opened(ws);
      await welcome;
      return conn;
    },
    async formContacts(clients) {
      const all = clients as ParleyConn[];
      await Promise.all(
        all.map((c, i) => {
          const from = all[(i + all.length - 1) % all.length] as ParleyConn;
          const id = String(++nextId);
          const accepted = c.waitFor("accepted", (f) => f.id === id);
          c.raw({ v: 1, t: "contact", id, user: from.name, state: "accepted" });
          return accepted;
        }),
      );
    },
    async formGroup(clients) {
      // Joiners commit one at a time (the relay sequences commits; §9): roster grows by one each.
      const roster: string[] = [];
      for (const c of clients as ParleyConn[]) {
        const state = c.waitFor("group", (f) =>
          f.state.pendingJoins.some((m) => m.username === c.name),
        );
        c.raw({ v: 1, t: "join", id: String(++nextId), group, leaves: c.leaves });
        const g = (await state).state;
        const heads = new Map(
          [...g.members, ...g.pendingJoins].map((m) => [m.username, m.leaf.id]),
        );
        roster.push(c.name);
        const accepted = c.waitFor("accepted");
        c.raw({
          v: 1,
          t: "commit",
          id: String(++nextId),
          group,
          parentEpoch: g.epoch,
          members: [...roster],
          core: toB64u(randomBytes(200 + 40 * roster.length)),
          wraps: roster.map((to) => ({
            to,
            leaf: heads.get(to) ?? 0,
            wrap: toB64u(randomBytes(80)),
          })),
          interim: toB64u(randomBytes(32)),
        });
        await accepted;
      }
      // Let every member learn the final epoch.
      await new Promise((r) => setTimeout(r, 300));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// One run

export interface LoadResult {
  target: string;
  mode: "direct" | "group";
  clients: number;
  /** Messages sent per second, all clients together (offered). */
  offeredMsgsPerSec: number;
  expected: number;
  delivered: number;
  deliveriesPerSec: number;
  p50ms: number;
  p99ms: number;
  /**
   * The warm-up round (not in the figures above): every client's first message at once, on
   * conversations nobody has written in yet — its slowest delivery (ms), or NaN if one was lost.
   */
  firstRoundMs: number;
  /** Relay error frames by code during the run (e.g. rate_limited). */
  errors: Record<string, number>;
}

function makeBody(seq: number): string {
  const b = new Uint8Array(100);
  const dv = new DataView(b.buffer);
  dv.setFloat64(0, performance.now());
  dv.setUint32(8, seq);
  return toB64u(b);
}

function sentAt(body: string): number {
  const b = fromB64u(body);
  return new DataView(b.buffer, b.byteOffset).getFloat64(0);
}

/**
 * Each client sends `perClientRate` messages/s for `seconds` (1:1: to its partner in a ring;
 * group: to the group), then the driver waits up to `drainMs` for stragglers.
 */
export async function runLoad(
  target: Target,
  opts: {
    clients: number;
    mode: "direct" | "group";
    perClientRate: number;
    seconds: number;
    drainMs?: number;
    /** Called right before the first message and right after the drain (CPU sampling). */
    onStart?: () => void;
    onEnd?: () => void;
  },
): Promise<LoadResult> {
  const clients: LoadClient[] = [];
  for (let i = 0; i < opts.clients; i++)
    clients.push(await target.connect(`c${i}-${Date.now() % 100000}`));
  if (opts.mode === "group") await target.formGroup(clients);
  else await target.formContacts?.(clients);
  const latencies: number[] = [];
  const tracing = process.env.BENCH_TRACE !== undefined;
  const trace: Array<[number, number]> = [];
  let delivered = 0;
  let lastDeliveryAt = 0;
  let measuring = false;
  let warm: { got: number; worst: number } | null = null;
  for (const c of clients) {
    c.onDeliver((d) => {
      if (warm !== null) {
        warm.got++;
        warm.worst = Math.max(warm.worst, performance.now() - sentAt(d.body));
      }
      if (!measuring) return;
      delivered++;
      lastDeliveryAt = performance.now();
      latencies.push(performance.now() - sentAt(d.body));
      if (tracing) trace.push([sentAt(d.body), performance.now()]);
    });
  }
  // Let connection set-up traffic (presence, commits, acks) settle before measuring.
  await new Promise((r) => setTimeout(r, 300));
  // Warm-up, not measured: one round of the load (every client's first message at once), all
  // of it awaited. A conversation's first message does once-per-conversation work a
  // conversation in progress does not (the relay records who wrote to whom, for presence, and
  // loads the sender's counters), and on a fresh hub those 50 firsts come in one burst. The
  // figures are of conversations in progress; the round's worst delivery is `firstRoundMs`.
  const fanout = opts.mode === "group" ? opts.clients - 1 : 1;
  warm = { got: 0, worst: 0 };
  clients.forEach((c, i) => {
    const body = makeBody(0xffff_ffff - i);
    if (opts.mode === "group") c.sendGroup(body);
    else c.sendDirect(clients[(i + 1) % clients.length]?.name ?? c.name, body);
  });
  const warmEnd = performance.now() + 10_000;
  while (warm.got < clients.length * fanout && performance.now() < warmEnd)
    await new Promise((r) => setTimeout(r, 5));
  const firstRoundMs = warm.got >= clients.length * fanout ? warm.worst : Number.NaN;
  warm = null;
  await new Promise((r) => setTimeout(r, 300));
  errors.clear();
  measuring = true;
  opts.onStart?.();
  let sent = 0;
  const tickMs = 20;
  const perTick = (opts.perClientRate * tickMs) / 1000;
  const start = performance.now();
  let carry = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (performance.now() - start >= opts.seconds * 1000) {
        clearInterval(timer);
        resolve();
        return;
      }
      carry += perTick;
      const n = Math.floor(carry);
      carry -= n;
      for (let k = 0; k < n; k++) {
        clients.forEach((c, i) => {
          const body = makeBody(sent++);
          if (opts.mode === "group") c.sendGroup(body);
          else c.sendDirect(clients[(i + 1) % clients.length]?.name ?? c.name, body);
        });
      }
    }, tickMs);
  });
  const expected = sent * fanout;
  const drainEnd = performance.now() + (opts.drainMs ?? 5000);
  while (delivered < expected && performance.now() < drainEnd) {
    await new Promise((r) => setTimeout(r, 50));
  }
  measuring = false;
  opts.onEnd?.();
  // Which bursts set the p99 (bench/relay-ab.ts, `BENCH_TRACE`).
  const tracePath = process.env.BENCH_TRACE;
  if (tracePath !== undefined) {
    const line = { label: target.label, start, origin: performance.timeOrigin, trace };
    appendFileSync(tracePath, `${JSON.stringify(line)}\n`);
  }
  const elapsed = (Math.max(lastDeliveryAt, start + opts.seconds * 1000) - start) / 1000;
  for (const c of clients) c.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ??
    Number.NaN;
  return {
    target: target.label,
    mode: opts.mode,
    clients: opts.clients,
    offeredMsgsPerSec: opts.perClientRate * opts.clients,
    expected,
    delivered,
    deliveriesPerSec: delivered / elapsed,
    p50ms: pct(50),
    p99ms: pct(99),
    firstRoundMs,
    errors: Object.fromEntries(errors),
  };
}
