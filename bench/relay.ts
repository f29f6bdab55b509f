/**
 * Relay throughput, latency, CPU and memory: the Parley relay under `wrangler dev`
 * (port 8793) and the bare `ws` fan-out server (port 8796, bench/bare-server.ts) side by side,
 * each configuration run against both back to back (alternating which goes first). Loopback
 * only, bounded durations; both servers are stopped by PID (process group) at the end.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { ACK_GATHER } from "../shared/core/client";
import { LIMITS } from "../shared/protocol";
import { startWranglerDev, type WranglerDev } from "../test/support/wrangler-dev";
import { freezeWorker } from "./frozen-worker";
import { median, openInBatches, type Row } from "./lib";
import { cpuSeconds, descendantsNamed, rssMiB, startNodeChild } from "./procs";
import {
  bareProtocolTarget,
  bareTarget,
  type LoadResult,
  parleyTarget,
  runLoad,
  type Target,
} from "./relay-load";

/**
 * Pairs whose medians are a latency goal's figure: the 50-client 1:1 case (and its floors) and
 * the group fan-out at 2,000 deliveries/s. A p99 over 4 s of bursty load is set by the worst
 * burst or two, and one pair moves by ±50% on either side from run to run.
 */
export const GOAL_PAIRS = 5;

/** Ports (overridable, e.g. to run beside the test suite, whose wrangler ports are 8790–8798). */
export const WRANGLER_PORT = Number(process.env.BENCH_RELAY_PORT ?? 8793);
export const BARE_PORT = Number(process.env.BENCH_BARE_PORT ?? 8796);
/** The trivial hibernating Durable Object of the memory baseline (bench/trivial-do). */
export const TRIVIAL_PORT = Number(process.env.BENCH_TRIVIAL_PORT ?? 8799);
/** The `wrangler dev` of the idle-memory run on users' routes (routedObjectsRss). */
const ROUTED_MEMORY_PORT = Number(process.env.BENCH_ROUTED_MEMORY_PORT ?? 8800);

export interface RelayRun extends LoadResult {
  /** Server CPU µs per delivery (workerd, or the bare server's node process). */
  cpuUsPerDelivery: number;
}

export interface RelayFigures {
  matrix: Row[];
  series: Array<{ target: string; offered: number; delivered: number; p50: number; p99: number }>;
  rss: Row[];
  runs: RelayRun[];
  summary: {
    fanout50: { parley: number; bare: number } | null;
    /** 1:1 direct, 50 clients: p99 latency (ms). */
    direct50: { parley: number; bare: number } | null;
    /**
     * The same load through bench/trivial-do's object (it forwards; no protocol, no storage)
     * under its own `wrangler dev`, against the bare server: what the platform alone costs.
     */
    trivial50: { trivial: number; bare: number } | null;
    /**
     * The same object answering with Parley's frames per message (an `accepted` to the sender,
     * an `ack` from the recipient 10 ms later, as the Parley load clients send), still storing
     * nothing: the platform's floor for the protocol's frame pattern.
     */
    trivialFrames50: { trivial: number; bare: number } | null;
    /**
     * The same object once per client (`?room=`), each `send` one call from the sender's object
     * to the recipient's, with Parley's frames: the platform's floor for users' routes.
     */
    trivialPeers50: { trivial: number; bare: number } | null;
    /** The same at 2 clients: one conversation, two trivial objects (p99 ms). */
    trivialPeers2: { trivial: number; bare: number } | null;
    /** The same on user objects (each client on its user's route; medians of GOAL_PAIRS). */
    routed50: { parley: number; bare: number } | null;
    /**
     * 1:1 direct on user objects at 2 clients: one conversation, two objects (p99 ms; medians of
     * GOAL_PAIRS, as its floor, trivialPeers2).
     */
    routed2: { parley: number; bare: number } | null;
    /** Group fan-out at 20 clients on users' routes: throughput (deliveries/s) and p99 (ms). */
    routedGroup20: { parley: number; bare: number; p99: number; bareP99: number } | null;
    p99at2000: { parley: number; bare: number } | null;
    cpu: { parley: number; bare: number } | null;
    /** Idle connection memory (KiB per connection): the relay's and a trivial hibernating DO's. */
    idle: { parley: number; trivial: number } | null;
    /**
     * The same on users' routes, each idle user on its own object, against the trivial object
     * once per socket (KiB per connection): the users' first connections, and the same users
     * connecting again to the objects they made (`returning`).
     */
    idleRouted: {
      parley: number;
      returning: number;
      trivial: number;
    } | null;
  };
}

/**
 * Per-client message rate for a configuration, inside the relay's per-connection frame budget:
 * each client sends `r` frames and acks (n − 1)·r deliveries (group) or r (direct) in frames of
 * ACK_GATHER (the load clients gather as the engine does, bench/relay-load.ts),
 * and must stay below LIMITS.connRatePerSec with some headroom.
 */
export function perClientRate(mode: "direct" | "group", clients: number): number {
  const budget = LIMITS.connRatePerSec * 0.85;
  const received = mode === "group" ? clients - 1 : 1;
  return Math.floor(budget / (1 + received / ACK_GATHER));
}

async function measured(
  target: Target,
  pidOf: () => number,
  opts: Parameters<typeof runLoad>[1],
): Promise<RelayRun> {
  let pid = pidOf();
  let cpu0 = Number.NaN;
  let cpu1 = Number.NaN;
  const r = await runLoad(target, {
    ...opts,
    onStart: () => {
      pid = pidOf();
      cpu0 = cpuOrNaN(pid);
    },
    onEnd: () => {
      cpu1 = cpuOrNaN(pid);
    },
  });
  const run = { ...r, cpuUsPerDelivery: ((cpu1 - cpu0) * 1e6) / Math.max(1, r.delivered) };
  await settle(pidOf());
  return run;
}

/** CPU seconds, or NaN when the process is gone (wrangler restarted workerd mid-run). */
function cpuOrNaN(pid: number): number {
  try {
    return cpuSeconds(pid);
  } catch {
    return Number.NaN;
  }
}

/**
 * Wait until the server is idle again (< 5% of a core over 500 ms, at most 90 s): a run the
 * relay could not keep up with leaves frames it already received still to process, and that
 * work must not land on the next run's figures.
 */
async function settle(pid: number): Promise<void> {
  const deadline = Date.now() + 90_000;
  let last = cpuOrNaN(pid);
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    const now = cpuOrNaN(pid);
    if (!(now - last >= 0.025)) return;
    last = now;
  }
}

/** One row of the relay matrix: the relay's run `p` beside the bare server's `q`. */
function matrixRow(mode: string, clients: number, fanout: number, p: RelayRun, q: RelayRun): Row {
  return {
    mode,
    clients,
    "offered msgs/s": p.offeredMsgsPerSec,
    "offered deliveries/s": p.offeredMsgsPerSec * fanout,
    "parley deliveries/s": p.deliveriesPerSec,
    "bare deliveries/s": q.deliveriesPerSec,
    "parley/bare": `${(p.deliveriesPerSec / q.deliveriesPerSec).toFixed(2)}×`,
    "parley p50/p99 ms": `${p.p50ms.toFixed(1)} / ${p.p99ms.toFixed(1)}`,
    "bare p50/p99 ms": `${q.p50ms.toFixed(1)} / ${q.p99ms.toFixed(1)}`,
    "p99 parley/bare": `${(p.p99ms / q.p99ms).toFixed(2)}×`,
    "undelivered at end of drain (parley/bare)": `${p.expected - p.delivered} / ${q.expected - q.delivered}`,
  };
}

function findWorkerd(dev: WranglerDev): number {
  const pids = descendantsNamed(dev.pid, "workerd");
  if (pids.length === 0) throw new Error("no workerd process under wrangler dev");
  // One workerd serves the Worker and its Durable Objects; take the largest if several.
  return pids.sort((a, b) => rssMiB(b) - rssMiB(a))[0] as number;
}

export async function runRelay(log: (s: string) => void = () => {}): Promise<RelayFigures> {
  const here = dirname(fileURLToPath(import.meta.url));
  const seconds = Number(process.env.BENCH_RELAY_SECONDS ?? 4);
  const bare = await startNodeChild(
    join(here, "bare-server.mjs"),
    [String(BARE_PORT)],
    /listening/,
  );
  let dev: WranglerDev | null = null;
  try {
    const config = freezeWorker(process.cwd(), "dist/bench/worker");
    dev = await startWranglerDev({ port: WRANGLER_PORT, root: process.cwd(), config });
    const devNow = dev;
    // wrangler dev restarts workerd when watched sources change (other people edit the tree
    // while this runs): look the process up again for every run rather than once.
    const workerd = () => findWorkerd(devNow);
    log(`  wrangler dev pid ${dev.pid}, workerd pid ${workerd()}, bare server pid ${bare.pid}`);
    const url = dev.url;
    let hubN = 0;
    const parley = () => parleyTarget(url, `bench${Date.now() % 100000}x${hubN++}`);
    const parleyRouted = () =>
      parleyTarget(url, `bench${Date.now() % 100000}x${hubN++}`, "bench", true);
    const bareT = bareTarget(BARE_PORT);
    const pidOf = (t: Target) => (t.label === "bare ws" ? () => bare.pid : workerd);

    // Warm-up: the first Durable Object request compiles and starts things.
    await measured(parley(), workerd, { clients: 2, mode: "direct", perClientRate: 5, seconds: 1 });

    const runs: RelayRun[] = [];
    const pair = async (
      mode: "direct" | "group",
      clients: number,
      rate: number,
      i: number,
      make: () => Target = parley,
    ) => {
      const targets = i % 2 === 0 ? [make(), bareT] : [bareT, make()];
      const out: RelayRun[] = [];
      for (const t of targets) {
        const r = await measured(t, pidOf(t), { clients, mode, perClientRate: rate, seconds });
        log(
          `  ${t.label.padEnd(12)} ${mode.padEnd(6)} ${String(clients).padStart(2)} clients × ${rate}/s: ` +
            `${Math.round(r.deliveriesPerSec)} deliveries/s (${r.delivered}/${r.expected}), ` +
            `p50 ${r.p50ms.toFixed(1)} ms, p99 ${r.p99ms.toFixed(1)} ms, ` +
            `cpu ${r.cpuUsPerDelivery.toFixed(0)} µs/delivery, first round ${r.firstRoundMs.toFixed(1)} ms${Object.keys(r.errors).length ? ` errors ${JSON.stringify(r.errors)}` : ""}`,
        );
        out.push(r);
        runs.push(r);
      }
      return out;
    };

    const matrix: Row[] = [];
    let i = 0;
    /**
     * A latency goal's figure (GOAL_PAIRS): the medians of the p99s of `first` and GOAL_PAIRS − 1
     * more pairs of the same case, their order alternating.
     */
    const goalMedians = async (
      first: RelayRun[],
      mode: "direct" | "group",
      clients: number,
      rate: number,
      make: () => Target = parley,
    ): Promise<{ parley: number; bare: number }> => {
      const ps: number[] = [];
      const qs: number[] = [];
      for (let k = 0; k < GOAL_PAIRS; k++) {
        const rs = k === 0 ? first : await pair(mode, clients, rate, i++, make);
        ps.push((rs.find((r) => r.target !== "bare ws") as RelayRun).p99ms);
        qs.push((rs.find((r) => r.target === "bare ws") as RelayRun).p99ms);
      }
      return { parley: median(ps), bare: median(qs) };
    };
    let fanout50: RelayFigures["summary"]["fanout50"] = null;
    let direct50: RelayFigures["summary"]["direct50"] = null;
    for (const mode of ["direct", "group"] as const) {
      for (const clients of [2, 10, 50]) {
        const rate = perClientRate(mode, clients);
        const [a, b] = await pair(mode, clients, rate, i++);
        const p = [a, b].find((r) => r?.target !== "bare ws") as RelayRun;
        const q = [a, b].find((r) => r?.target === "bare ws") as RelayRun;
        if (mode === "group" && clients === 50)
          fanout50 = { parley: p.deliveriesPerSec, bare: q.deliveriesPerSec };
        if (mode === "direct" && clients === 50)
          direct50 = await goalMedians([p, q], mode, clients, rate);
        matrix.push(matrixRow(mode, clients, mode === "group" ? clients - 1 : 1, p, q));
      }
    }

    // The 50-client 1:1 case through an object that only forwards, right after the relay's.
    const {
      plain: trivial50,
      frames: trivialFrames50,
      peers: trivialPeers50,
      peers2: trivialPeers2,
    } = await trivialDirect(50, seconds, bareT, log);

    // Latency vs load: group fanout, 20 clients, offered deliveries/s stepped up.
    const series: RelayFigures["series"] = [];
    let p99at2000: RelayFigures["summary"]["p99at2000"] = null;
    const seriesClients = 20;
    for (const offered of [500, 1000, 2000, 4000, 8000]) {
      const rate = offered / (seriesClients * (seriesClients - 1));
      if (rate > perClientRate("group", seriesClients)) continue;
      const rs = await pair("group", seriesClients, rate, i++);
      for (const r of rs) {
        series.push({
          target: r.target,
          offered,
          delivered: r.deliveriesPerSec,
          p50: r.p50ms,
          p99: r.p99ms,
        });
      }
      // The goal's figure; the series above keeps the first pair.
      if (offered === 2000) p99at2000 = await goalMedians(rs, "group", seriesClients, rate);
    }

    // CPU per delivery: the 50-client group runs (the heaviest, most deliveries).
    const g50 = runs.filter((r) => r.mode === "group" && r.clients === 50);
    const pc = g50.find((r) => r.target !== "bare ws");
    const bc = g50.find((r) => r.target === "bare ws");
    const cpu = pc && bc ? { parley: pc.cpuUsPerDelivery, bare: bc.cpuUsPerDelivery } : null;

    // Memory: 500 idle authenticated connections.
    const idle = Number(process.env.BENCH_IDLE_CONNECTIONS ?? 500);
    const rss: Row[] = [];
    for (const [t, pid, label, proc] of [
      [parley(), workerd(), "parley", "workerd"],
      [bareT, bare.pid, "bare ws", "node"],
    ] as const) {
      rss.push(await idleRss(pid, idle, (k) => t.connect(`i${k}`), label, proc, log));
    }
    // 1:1 on user objects: each client on its own user's route, each message one call from the
    // sender's object to the recipient's. Last of the relay's runs: at 50 clients it saturates
    // the one local workerd thread, and its objects stay resident, which must not weigh on the
    // hub's figures above. Under `wrangler dev` every object shares one workerd
    // thread, so this shows the cost of the extra hop, not the spread production would give.
    // At 2 clients (one conversation) the two objects have the thread to themselves: each pair
    // of objects does that much work per message at 50 clients too, where production runs the
    // pairs side by side.
    let routed2: RelayFigures["summary"]["direct50"] = null;
    let routed50: RelayFigures["summary"]["direct50"] = null;
    for (const clients of [2, 10, 50]) {
      const rate = perClientRate("direct", clients);
      const rs = await pair("direct", clients, rate, i++, parleyRouted);
      const p = rs.find((r) => r.target !== "bare ws") as RelayRun;
      const q = rs.find((r) => r.target === "bare ws") as RelayRun;
      if (clients === 2) routed2 = await goalMedians(rs, "direct", clients, rate, parleyRouted);
      // Medians, as the floor it is read against (trivialPeers50).
      if (clients === 50) routed50 = await goalMedians(rs, "direct", clients, rate, parleyRouted);
      matrix.push(matrixRow("direct, user objects", clients, 1, p, q));
    }
    // Groups on users' routes: each group message goes to the group's home, which hands a copy
    // to each member's object to store (docs/ARCHITECTURE.md "User objects, group homes ...").
    // 10 and 20 clients: past that the one local workerd thread saturates, as above.
    let routedGroup20: RelayFigures["summary"]["routedGroup20"] = null;
    for (const clients of [10, 20]) {
      const rate = perClientRate("group", clients);
      const rs = await pair("group", clients, rate, i++, parleyRouted);
      const p = rs.find((r) => r.target !== "bare ws") as RelayRun;
      const q = rs.find((r) => r.target === "bare ws") as RelayRun;
      if (clients === 20)
        routedGroup20 = {
          parley: p.deliveriesPerSec,
          bare: q.deliveriesPerSec,
          p99: p.p99ms,
          bareP99: q.p99ms,
        };
      matrix.push(matrixRow("group, user objects", clients, clients - 1, p, q));
    }

    // The same measure for the least a hibernating Durable Object can be (bench/trivial-do),
    // under the same `wrangler dev`, in this run (PROTOCOL-independent baseline).
    const trivial = await trivialObjectRss(idle, log);
    rss.push(trivial);
    const parleyRow = rss.find((x) => x.server === "parley (workerd)");
    const idleKiB =
      parleyRow === undefined
        ? null
        : {
            parley: Number(parleyRow["KiB per connection"]),
            trivial: Number(trivial["KiB per connection"]),
          };
    // Users' routes, the PWA's: every idle user is an object, so the like-for-like baseline is
    // the trivial object once per socket. Each in a `wrangler dev` of its own (above).
    const routedRows = await routedObjectsRss(idle, config, log);
    const trivialEach = await trivialObjectRss(idle, log, true);
    rss.push(routedRows.first, routedRows.returning, trivialEach);
    const idleRouted = {
      parley: Number(routedRows.first["KiB per connection"]),
      returning: Number(routedRows.returning["KiB per connection"]),
      trivial: Number(trivialEach["KiB per connection"]),
    };
    return {
      matrix,
      series,
      rss,
      runs,
      summary: {
        fanout50,
        direct50,
        trivial50,
        trivialFrames50,
        trivialPeers50,
        trivialPeers2,
        routed2,
        routed50,
        routedGroup20,
        p99at2000,
        cpu,
        idle: idleKiB,
        idleRouted,
      },
    };
  } finally {
    await dev?.stop();
    await bare.stop();
  }
}

/**
 * workerd's RSS with `n` idle authenticated users on users' routes — each user's socket on the
 * user's own object, as the PWA connects — under a `wrangler dev` of its own, so that no object
 * of the other runs is resident beside them. Twice: the users' first connections (each object
 * made and its tables created), then, after a restart of `wrangler dev` on the same storage, the
 * same users connecting again (objects that exist, as for a user who comes back).
 */
async function routedObjectsRss(
  n: number,
  config: readonly string[],
  log: (s: string) => void,
): Promise<{ first: Row; returning: Row }> {
  const persistTo = mkdtempSync(join(tmpdir(), "parley-bench-idle-"));
  const url = `http://127.0.0.1:${ROUTED_MEMORY_PORT}`;
  // One target: a name connected again keeps its identity (relay-load.ts parleyTarget).
  const t = parleyTarget(url, `idle${Date.now() % 100000}`, "bench", true);
  const measure = async (label: string, warm: string): Promise<Row> => {
    const dev = await startWranglerDev({
      port: ROUTED_MEMORY_PORT,
      root: process.cwd(),
      config,
      persistTo,
    });
    try {
      const pid = findWorkerd(dev);
      // The first object compiles the Worker: warmed before the baseline is read.
      (await t.connect(warm)).close();
      await new Promise((r) => setTimeout(r, 500));
      return await idleRss(pid, n, (k) => t.connect(`i${k}`), label, "workerd", log);
    } finally {
      await dev.stop();
    }
  };
  try {
    const first = await measure("parley, users' routes: an object per user", "warm1");
    const returning = await measure("the same users again, their objects made before", "warm2");
    return { first, returning };
  } finally {
    rmSync(persistTo, { recursive: true, force: true });
  }
}

/** A row of the memory table: a server's RSS (MiB) before and with `n` idle connections. */
function rssRow(server: string, n: number, before: number, after: number): Row {
  return {
    server,
    connections: n,
    "RSS before MiB": before,
    "RSS with connections MiB": after,
    "KiB per connection": ((after - before) * 1024) / n,
  };
}

/**
 * The memory row of `n` idle connections opened by `open` (8 at a time): `pid`'s RSS before, and
 * 1.5 s after the last opened; then closed. `label` names the server; `proc` its process.
 */
async function idleRss(
  pid: number,
  n: number,
  open: (k: number) => Promise<{ close(): void }>,
  label: string,
  proc: string,
  log: (s: string) => void,
): Promise<Row> {
  const before = rssMiB(pid);
  const conns = await openInBatches(n, open);
  await new Promise((r) => setTimeout(r, 1500));
  const after = rssMiB(pid);
  for (const c of conns) c.close();
  await new Promise((r) => setTimeout(r, 500));
  log(`  ${label}: RSS ${before.toFixed(1)} → ${after.toFixed(1)} MiB with ${n} idle connections`);
  return rssRow(`${label} (${proc})`, n, before, after);
}

/** One socket to the trivial object, open once its first echo came back (as an auth would). */
function openEcho(url: string, origin: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { Origin: origin }, perMessageDeflate: false });
    ws.once("open", () => ws.send('{"v":1,"t":"hi"}'));
    ws.once("message", () => resolve(ws));
    ws.once("error", reject);
  });
}

/**
 * 1:1 direct at `clients` through the trivial object (bench/trivial-do), under a `wrangler dev`
 * of its own that lives only for this, each pair then through the bare server: the medians of
 * GOAL_PAIRS pairs' p99 (ms), with the object only forwarding (`plain`), with it and the
 * load clients exchanging Parley's frames per message (`frames`: `accepted`, `ack`), and with
 * an object per client, each message one call between two objects (`peers`, with the frames).
 */
async function trivialDirect(
  clients: number,
  seconds: number,
  bareT: Target,
  log: (s: string) => void,
): Promise<{
  plain: { trivial: number; bare: number };
  frames: { trivial: number; bare: number };
  peers: { trivial: number; bare: number };
  peers2: { trivial: number; bare: number };
}> {
  const dev = await startWranglerDev({
    port: TRIVIAL_PORT,
    root: process.cwd(),
    config: join(process.cwd(), "bench/trivial-do/wrangler.toml"),
  });
  try {
    const loadOf = (n: number) => ({
      clients: n,
      mode: "direct" as const,
      perClientRate: perClientRate("direct", n),
      seconds,
    });
    const run = async (frames: boolean, peers = false, n = clients) => {
      const load = loadOf(n);
      const label = peers
        ? "trivial DO per client, one call per message"
        : frames
          ? "trivial DO with Parley's frames"
          : "trivial DO";
      const t = bareProtocolTarget(dev.wsUrl, label, frames, peers);
      await runLoad(t, { clients: 2, mode: "direct", perClientRate: 5, seconds: 1 });
      const ps: number[] = [];
      const qs: number[] = [];
      for (let k = 0; k < GOAL_PAIRS; k++) {
        const p = await runLoad(t, load);
        const q = await runLoad(bareT, load);
        log(
          `  ${label}, direct ${n} clients: p50 ${p.p50ms.toFixed(1)} ms, p99 ${p.p99ms.toFixed(1)} ms ` +
            `(${p.delivered}/${p.expected}); bare p50 ${q.p50ms.toFixed(1)} ms, p99 ${q.p99ms.toFixed(1)} ms`,
        );
        ps.push(p.p99ms);
        qs.push(q.p99ms);
      }
      return { trivial: median(ps), bare: median(qs) };
    };
    const plain = await run(false);
    const frames = await run(true);
    const peers = await run(true, true);
    return { plain, frames, peers, peers2: await run(true, true, 2) };
  } finally {
    await dev.stop();
  }
}

/**
 * workerd's RSS with `n` idle sockets on the trivial hibernating object (bench/trivial-do): all
 * on one object, or (`perSocket`) each on an object of its own, as users' routes give each user.
 */
async function trivialObjectRss(
  n: number,
  log: (s: string) => void,
  perSocket = false,
): Promise<Row> {
  const dev = await startWranglerDev({
    port: TRIVIAL_PORT,
    root: process.cwd(),
    config: join(process.cwd(), "bench/trivial-do/wrangler.toml"),
  });
  try {
    const label = perSocket ? "trivial hibernating DO per socket" : "trivial hibernating DO";
    return await idleRss(
      findWorkerd(dev),
      n,
      (k) => openEcho(perSocket ? `${dev.wsUrl}?room=r${k}` : dev.wsUrl, dev.url),
      label,
      "workerd",
      log,
    );
  } finally {
    await dev.stop();
  }
}
