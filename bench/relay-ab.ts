/**
 * Repeated pairs of one relay case, for questions one bench run cannot answer: a p99 over 4 s of
 * bursty load is set by the worst burst or two, so one pair moves by ±50% from run to run, on
 * both sides. This runs `pairs` pairs (the server under test, then the bare server, as
 * bench/relay.ts does) and prints each pair and the medians. Not part of `npm run bench`.
 *
 *   node bench/build.mjs && node dist/bench/relay-ab.mjs [pairs] [clients] [target]
 *
 * `target`: `hub` (Parley, the hub's route; default), `users` (Parley, users' routes),
 * `trivial` (bench/trivial-do: a hibernating object that forwards, no protocol and no storage —
 * the floor of the platform under the same `wrangler dev`) or `trivial-frames` (the same object
 * exchanging Parley's frames per message: an `accepted` out, an `ack` in) or `trivial-peers`
 * (trivial objects, one per client, each `send` one call to the recipient's object, with
 * Parley's frames: the floor of users' routes). `mode` is 1:1 direct; the offered
 * rate is the bench's (`perClientRate`). Environment:
 *  - `BENCH_AB_OFFERED=N`: group fan-out instead, at N offered deliveries/s (as the bench's
 *    latency-vs-load series: `clients` members each sending N / (clients·(clients−1)) per s);
 *  - `BENCH_PERSIST_RAM=1`: wrangler's persist directory in /dev/shm, so that SQLite's commits
 *    (each ends in an fsync on the object's thread under `wrangler dev`) do not touch the disk;
 *  - `BENCH_RELAY_PORT`, `BENCH_BARE_PORT`: as for the bench;
 *  - `BENCH_TRACE=FILE`: each run appends one JSON line to FILE (its target, its start and
 *    `performance.timeOrigin`, and each delivery's send and arrival time, ms), to see which
 *    bursts set a p99.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { startWranglerDev } from "../test/support/wrangler-dev";
import { freezeWorker } from "./frozen-worker";
import { median } from "./lib";
import { cpuSeconds, descendantsNamed, rssMiB, startNodeChild } from "./procs";
import { BARE_PORT, perClientRate, WRANGLER_PORT } from "./relay";
import {
  bareProtocolTarget,
  bareTarget,
  type LoadResult,
  parleyTarget,
  runLoad,
} from "./relay-load";

const pairs = Number(process.argv[2] ?? 6);
const clients = Number(process.argv[3] ?? 50);
const which = process.argv[4] ?? "hub";
if (!["hub", "users", "trivial", "trivial-frames", "trivial-peers"].includes(which))
  throw new Error(`unknown target ${which}`);
const ram = process.env.BENCH_PERSIST_RAM === "1";
const persistTo = ram ? mkdtempSync("/dev/shm/parley-ab-") : undefined;

// The Worker is frozen first: if that fails, no server has been started yet.
const config = which.startsWith("trivial")
  ? join(process.cwd(), "bench/trivial-do/wrangler.toml")
  : freezeWorker(process.cwd(), "dist/bench/worker-ab");
const bare = await startNodeChild(
  join(process.cwd(), "dist/bench/bare-server.mjs"),
  [String(BARE_PORT)],
  /listening/,
);
const dev = await startWranglerDev({
  port: WRANGLER_PORT,
  root: process.cwd(),
  config,
  ...(persistTo !== undefined ? { persistTo } : {}),
}).catch(async (e: unknown) => {
  await bare.stop();
  throw e;
});
const workerd = () =>
  descendantsNamed(dev.pid, "workerd").sort((a, b) => rssMiB(b) - rssMiB(a))[0] as number;
let hubN = 0;
const target = () =>
  which.startsWith("trivial")
    ? bareProtocolTarget(dev.wsUrl, "trivial DO", which !== "trivial", which === "trivial-peers")
    : parleyTarget(dev.url, `ab${Date.now() % 100000}x${hubN++}`, "bench", which === "users");
const offered = Number(process.env.BENCH_AB_OFFERED ?? 0);
const mode = offered > 0 ? ("group" as const) : ("direct" as const);
const rate = offered > 0 ? offered / (clients * (clients - 1)) : perClientRate("direct", clients);
try {
  console.log(
    `${pairs} pairs, ${mode === "group" ? `group fan-out at ${offered} deliveries/s` : "1:1 direct"}, ${clients} clients × ${rate}/s, target ${which}` +
      `${ram ? ", persist directory in /dev/shm" : ""}`,
  );
  await runLoad(target(), { clients: 2, mode: "direct", perClientRate: 5, seconds: 1 });
  const rows: Array<{ p: LoadResult; b: LoadResult; cpu: number }> = [];
  for (let i = 0; i < pairs; i++) {
    const c0 = cpuSeconds(workerd());
    const p = await runLoad(target(), { clients, mode, perClientRate: rate, seconds: 4 });
    const cpu = ((cpuSeconds(workerd()) - c0) * 1e6) / Math.max(1, p.delivered);
    const b = await runLoad(bareTarget(BARE_PORT), {
      clients,
      mode,
      perClientRate: rate,
      seconds: 4,
    });
    rows.push({ p, b, cpu });
    console.log(
      `  ${which} p50 ${p.p50ms.toFixed(2)} p99 ${p.p99ms.toFixed(2)} ms (${p.delivered}/${p.expected}), ` +
        `workerd ${cpu.toFixed(0)} µs/delivery | bare p50 ${b.p50ms.toFixed(2)} p99 ${b.p99ms.toFixed(2)} ms` +
        ` | p99 ratio ${(p.p99ms / b.p99ms).toFixed(2)}×` +
        ` | first round ${p.firstRoundMs.toFixed(1)} vs ${b.firstRoundMs.toFixed(1)} ms`,
    );
    await new Promise((r) => setTimeout(r, 1500));
  }
  const p99 = median(rows.map((r) => r.p.p99ms));
  const b99 = median(rows.map((r) => r.b.p99ms));
  console.log(
    `median: ${which} p50 ${median(rows.map((r) => r.p.p50ms)).toFixed(2)} p99 ${p99.toFixed(2)} ms, ` +
      `workerd ${median(rows.map((r) => r.cpu)).toFixed(0)} µs/delivery | bare p50 ` +
      `${median(rows.map((r) => r.b.p50ms)).toFixed(2)} p99 ${b99.toFixed(2)} ms | ratio of medians ` +
      `${(p99 / b99).toFixed(2)}×, median of ratios ${median(rows.map((r) => r.p.p99ms / r.b.p99ms)).toFixed(2)}×`,
  );
} finally {
  await dev.stop();
  await bare.stop();
  if (persistTo !== undefined) rmSync(persistTo, { recursive: true, force: true });
}
process.exit(0);
