/**
 * Profiling aid for the relay ("if missed, profile"): starts `wrangler dev`, attaches to
 * its inspector (port + 1000), records a V8 CPU profile of the Worker/Durable Object while the
 * load driver runs group fan-out, and writes it to bench/results/relay.cpuprofile (open it in
 * Chrome DevTools). Usage: node dist/bench/profile-relay.mjs [clients] [perClientRate] [mode]
 * [routed] (`routed`: every client on its user's route, docs/ARCHITECTURE.md "User objects").
 * `BENCH_PROFILE_SECONDS` (default 5): workerd's inspector samples at roughly 60 Hz whatever
 * interval is asked for, so a profile that should rank functions needs a longer run.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import WebSocket from "ws";
import { httpGet, startWranglerDev } from "../test/support/wrangler-dev";
import { parleyTarget, runLoad } from "./relay-load";

const port = Number(process.env.BENCH_RELAY_PORT ?? 8793);
const clients = Number(process.argv[2] ?? 20);
const rate = Number(process.argv[3] ?? 10);
const mode = (process.argv[4] ?? "group") as "group" | "direct";
const routed = process.argv[5] === "routed";
const dev = await startWranglerDev({ port, root: process.cwd() });
try {
  const list = JSON.parse((await httpGet(`http://127.0.0.1:${port + 1000}/json`)).body) as Array<{
    webSocketDebuggerUrl: string;
    title?: string;
  }>;
  const target = list[0];
  if (!target) throw new Error("no inspector target");
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((r) => ws.once("open", r));
  let id = 0;
  const pending = new Map<number, (v: unknown) => void>();
  ws.on("message", (d) => {
    const m = JSON.parse(String(d)) as { id?: number; result?: unknown };
    if (m.id !== undefined) pending.get(m.id)?.(m.result);
  });
  const call = (method: string, params: object = {}) =>
    new Promise<unknown>((res) => {
      const i = ++id;
      pending.set(i, res);
      ws.send(JSON.stringify({ id: i, method, params }));
    });
  // Warm up (the first request starts the Durable Object), then profile a steady run.
  await runLoad(parleyTarget(dev.url, "warm"), {
    clients: 2,
    mode: "direct",
    perClientRate: 5,
    seconds: 1,
  });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 200 });
  const t = parleyTarget(dev.url, `prof${Date.now() % 10000}`, "bench", routed);
  const r = await runLoad(t, {
    clients,
    mode,
    perClientRate: rate,
    seconds: Number(process.env.BENCH_PROFILE_SECONDS ?? 5),
    onStart: () => void call("Profiler.start"),
  });
  const prof = (await call("Profiler.stop")) as { profile?: unknown } | undefined;
  if (prof?.profile === undefined) throw new Error("the inspector returned no profile");
  console.log(JSON.stringify(r));
  mkdirSync("bench/results", { recursive: true });
  writeFileSync(join("bench/results", "relay.cpuprofile"), JSON.stringify(prof.profile));
  ws.close();
} finally {
  await dev.stop();
}
