/**
 * Soak: real `ParleyClient` engines (MemoryStore) in this Node process, connected over
 * `ws` to a real `wrangler dev` relay on 127.0.0.1, exchanging 1:1 and group traffic at a bounded
 * rate. Every message text carries (sender, conversation, sequence number), so at the end we can
 * count, per receiver, what was lost, what surfaced twice (after the engine's dedupe) and what
 * failed to decrypt. Optionally the relay process group is SIGKILLed mid-run and restarted on
 * the same --persist-to directory: clients reconnect, the outbox resends, the mailbox delivers.
 *
 * Used by `npm run soak` (scripts/soak.ts) and by test/node/soak-short.test.ts.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { ParleyClient } from "../shared/core/client";
import type { ConversationId, ParleyEvent } from "../shared/core/client-api";
import { MemoryStore } from "../shared/core/store";
import { generateIdentityKeyPair } from "../shared/crypto";
import { type ClientFrame, parseServerFrame } from "../shared/protocol";
import { startWranglerDev, type WranglerDev } from "../test/support/wrangler-dev";

export interface SoakOptions {
  clients: number;
  /** Seconds of traffic. */
  seconds: number;
  /** Members per group (clients are split into groups of this size; the rest only chat 1:1). */
  groupSize: number;
  /** Each client sends one message every this many ms, alternating 1:1 and group. */
  intervalMs: number;
  /** Kill the relay (SIGKILL, whole process group) at half time and restart it. */
  restart: boolean;
  /**
   * Each client opens its user's route (`&user=`, docs/ARCHITECTURE.md "User objects"): every
   * user is its own object. Groups are not served there: use with a group size above `clients`.
   */
  routed?: boolean;
  port: number;
  /** Seconds to wait for stragglers after the traffic stops. */
  drainSeconds?: number;
  log?: (s: string) => void;
}

export interface SoakCounts {
  clients: number;
  seconds: number;
  restarts: number;
  sentDirect: number;
  sentGroup: number;
  /** (receiver, message) pairs that should arrive. */
  expected: number;
  received: number;
  lost: number;
  duplicated: number;
  decryptFailures: number;
  /** A message whose text names a different sender than the authenticated one. */
  misattributed: number;
  /** Sends the engine refused (e.g. waiting for a new epoch); retried, never counted as sent. */
  refusedSends: number;
  reconnects: number;
  /** Engine `error` events by code. */
  errors: Record<string, number>;
  /** The first lost (receiver|sender|conversation|seq) keys, to find where one went. */
  lostKeys: string[];
}

const HUB = "soak";
const FAILURE_CODES = new Set(["decrypt_failed", "bad_signature", "too_far", "malformed"]);

/** One engine and its socket, reconnecting with a short backoff until stopped. */
class SoakClient {
  ws: WebSocket | null = null;
  stopped = false;
  reconnects = 0;
  online = false;
  private opened = 0;

  constructor(
    readonly name: string,
    readonly client: ParleyClient,
    private readonly wsUrl: string,
    private readonly origin: string,
  ) {}

  static async create(name: string, baseUrl: string, routed = false): Promise<SoakClient> {
    let self: SoakClient | null = null;
    const client = await ParleyClient.create({
      hub: HUB,
      origin: baseUrl,
      username: name,
      identity: await generateIdentityKeyPair(),
      store: new MemoryStore(),
      transport: { send: (f: ClientFrame) => self?.send(f) },
      now: () => Date.now(),
    });
    const route = routed ? `&user=${name}` : "";
    self = new SoakClient(
      name,
      client,
      `${baseUrl.replace(/^http/, "ws")}/ws?hub=${HUB}${route}`,
      baseUrl,
    );
    client.subscribe((e) => {
      if (e.type === "connection") (self as SoakClient).online = e.state === "online";
    });
    return self;
  }

  send(f: ClientFrame): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(f));
  }

  connect(): void {
    if (this.stopped) return;
    const ws = new WebSocket(this.wsUrl, {
      headers: { Origin: this.origin },
      perMessageDeflate: false,
      maxPayload: 1024 * 1024,
    });
    this.ws = ws;
    ws.on("open", () => {
      if (this.opened++ > 0) this.reconnects++;
      this.client.onConnected();
    });
    ws.on("message", (data) => {
      const r = parseServerFrame(String(data));
      if (r.ok) void this.client.onServerFrame(r.frame);
    });
    ws.on("error", () => {
      // 'close' follows; reconnect happens there.
    });
    ws.on("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.client.onDisconnected();
      if (!this.stopped) setTimeout(() => this.connect(), 300 + Math.floor(Math.random() * 400));
    });
  }

  stop(): void {
    this.stopped = true;
    this.ws?.close();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`soak: timed out waiting for ${what}`);
    await sleep(100);
  }
}

export async function runSoak(o: SoakOptions): Promise<SoakCounts> {
  const log = o.log ?? (() => {});
  const persist = mkdtempSync(join(tmpdir(), "parley-soak-"));
  const root = process.cwd();
  let dev: WranglerDev = await startWranglerDev({ port: o.port, persistTo: persist, root });
  const clients: SoakClient[] = [];
  try {
    const tag = (Date.now() % 100000).toString(36);
    for (let i = 0; i < o.clients; i++) {
      clients.push(await SoakClient.create(`s${tag}-${i}`, dev.url, o.routed === true));
    }
    const counts: SoakCounts = {
      clients: o.clients,
      seconds: o.seconds,
      restarts: 0,
      sentDirect: 0,
      sentGroup: 0,
      expected: 0,
      received: 0,
      lost: 0,
      duplicated: 0,
      decryptFailures: 0,
      misattributed: 0,
      refusedSends: 0,
      reconnects: 0,
      errors: {},
      lostKeys: [],
    };
    // receiver|sender|conversation|seq → times seen
    const seen = new Map<string, number>();
    const expected = new Set<string>();
    // Texts the engines showed as outgoing: a send that reports an error after the message went
    // out (persisted and handed over) still counts as sent.
    const outgoing = new Set<string>();
    for (const c of clients) {
      c.client.subscribe((e: ParleyEvent) => {
        if (e.type === "message" && e.message.direction === "out") {
          outgoing.add(e.message.text);
        } else if (e.type === "message" && e.message.direction === "in") {
          const m = /^soak (\S+) (\S+) (\d+)$/.exec(e.message.text);
          if (!m || m[1] !== e.message.from) {
            counts.misattributed++;
            return;
          }
          const key = `${c.name}|${m[1]}|${m[2]}|${m[3]}`;
          seen.set(key, (seen.get(key) ?? 0) + 1);
        } else if (e.type === "system" && e.line.kind === "decrypt_failed") {
          counts.decryptFailures++;
        } else if (e.type === "error") {
          counts.errors[e.code] = (counts.errors[e.code] ?? 0) + 1;
          if (FAILURE_CODES.has(e.code)) counts.decryptFailures++;
        }
      });
      c.connect();
    }
    await until("all clients online", () => clients.every((c) => c.online), 60_000);
    log(`  ${clients.length} clients online`);

    // Groups: consecutive clients, joined one at a time (each join is committed before the next).
    const groups: Array<{ name: string; members: SoakClient[] }> = [];
    for (let g = 0; (g + 1) * o.groupSize <= clients.length; g++) {
      groups.push({
        name: `soak${g}`,
        members: clients.slice(g * o.groupSize, (g + 1) * o.groupSize),
      });
    }
    const summary = (c: SoakClient, id: ConversationId) =>
      c.client.conversations().find((x) => x.id === id);
    await Promise.all(
      groups.map(async (g) => {
        const id: ConversationId = `group:${g.name}`;
        for (let k = 0; k < g.members.length; k++) {
          const m = g.members[k] as SoakClient;
          await m.client.joinGroup(g.name);
          await until(
            `${m.name} in ${g.name}`,
            () => {
              const s = summary(m, id);
              return s !== undefined && s.members.length === k + 1 && s.joining !== true;
            },
            60_000,
          );
        }
        await until(
          `${g.name} roster everywhere`,
          () => g.members.every((m) => summary(m, id)?.members.length === g.members.length),
          60_000,
        );
      }),
    );
    log(`  ${groups.length} groups of ${o.groupSize} formed`);

    // 1:1: a ring, each client talks to the next one.
    const peerOf = (i: number) => clients[(i + 1) % clients.length] as SoakClient;
    for (let i = 0; i < clients.length; i++) {
      await (clients[i] as SoakClient).client.startChat(peerOf(i).name);
    }
    // Each takes the one who writes to it as a contact, as people who talk do: its messages are
    // then not message requests, whose small share a relay restart could fill (PROTOCOL.md
    // §7.3.1).
    for (let i = 0; i < clients.length; i++) {
      const writer = clients[(i + clients.length - 1) % clients.length] as SoakClient;
      await (clients[i] as SoakClient).client.acceptContact(writer.name);
    }
    await until(
      "1:1 sessions secure",
      () =>
        clients.every((c, i) => {
          return summary(c, `dm:${peerOf(i).name}`)?.session === "ready";
        }),
      60_000,
    );
    log("  1:1 sessions secure");

    // Traffic.
    const groupOf = new Map<SoakClient, { name: string; members: SoakClient[] }>();
    for (const g of groups) for (const m of g.members) groupOf.set(m, g);
    const seq = new Map<string, number>();
    const next = (k: string) => {
      const n = (seq.get(k) ?? 0) + 1;
      seq.set(k, n);
      return n;
    };
    const start = Date.now();
    const end = start + o.seconds * 1000;
    let restarted = false;
    const restartAt = start + (o.seconds * 1000) / 2;
    const senders = clients.map(async (c, i) => {
      let turn = i % 2;
      await sleep(Math.floor(Math.random() * o.intervalMs));
      while (Date.now() < end) {
        const g = groupOf.get(c);
        const useGroup = turn++ % 2 === 1 && g !== undefined;
        const conv = useGroup ? (g?.name as string) : "dm";
        const id: ConversationId = useGroup ? `group:${conv}` : `dm:${peerOf(i).name}`;
        const n = (seq.get(`${c.name}|${conv}`) ?? 0) + 1;
        const text = `soak ${c.name} ${conv} ${n}`;
        try {
          try {
            await c.client.sendText(id, text);
          } catch (e) {
            if (!outgoing.has(text)) throw e;
          }
          next(`${c.name}|${conv}`);
          if (useGroup && g) {
            counts.sentGroup++;
            for (const m of g.members)
              if (m !== c) expected.add(`${m.name}|${c.name}|${conv}|${n}`);
          } else {
            counts.sentDirect++;
            expected.add(`${peerOf(i).name}|${c.name}|dm|${n}`);
          }
        } catch {
          // Refused before anything was persisted or sent (e.g. stale_epoch while a commit is in
          // flight): the same sequence number is tried again next turn.
          counts.refusedSends++;
        }
        await sleep(o.intervalMs);
      }
    });
    const killer = (async () => {
      if (!o.restart) return;
      while (Date.now() < restartAt) await sleep(100);
      log(`  killing relay process group ${dev.pid} (SIGKILL)`);
      try {
        process.kill(-dev.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
      await dev.stop();
      await sleep(1000);
      dev = await startWranglerDev({ port: o.port, persistTo: persist, root });
      counts.restarts++;
      restarted = true;
      log(`  relay restarted (pid ${dev.pid}) on the same --persist-to directory`);
    })();
    await Promise.all([...senders, killer]);
    log(
      `  traffic done: ${counts.sentDirect} direct + ${counts.sentGroup} group messages, ${expected.size} expected deliveries`,
    );
    if (o.restart && !restarted) throw new Error("soak: restart did not happen");

    // Drain: everyone back online, then wait for the last deliveries.
    await until("all clients back online", () => clients.every((c) => c.online), 90_000);
    const drainEnd = Date.now() + (o.drainSeconds ?? 60) * 1000;
    const missing = () => {
      let n = 0;
      for (const k of expected) if (!seen.has(k)) n++;
      return n;
    };
    while (missing() > 0 && Date.now() < drainEnd) await sleep(250);
    // Give duplicates a chance to show up too.
    await sleep(1500);
    await Promise.all(clients.map((c) => c.client.whenIdle()));

    counts.expected = expected.size;
    for (const k of expected) {
      const n = seen.get(k) ?? 0;
      if (n === 0) {
        counts.lost++;
        if (counts.lostKeys.length < 20) counts.lostKeys.push(k);
      } else {
        counts.received++;
        counts.duplicated += n - 1;
      }
    }
    // Anything seen that was never expected (e.g. from a send we counted as refused) is a bug too.
    for (const [k, n] of seen) if (!expected.has(k)) counts.duplicated += n;
    counts.reconnects = clients.reduce((a, c) => a + c.reconnects, 0);
    return counts;
  } finally {
    for (const c of clients) c.stop();
    await dev.stop();
    rmSync(persist, { recursive: true, force: true });
  }
}
