import { startWranglerDev } from "../test/support/wrangler-dev";
import { freezeWorker } from "./frozen-worker";
import { parleyTarget, runLoad } from "./relay-load";
const config = freezeWorker(process.cwd(), "dist/bench/worker-probe");
const dev = await startWranglerDev({ port: 8795, root: process.cwd(), config });
try {
  const r = await runLoad(parleyTarget(dev.url, `pr${Date.now() % 100000}`, "bench", false), { clients: 50, mode: "direct", perClientRate: 32, seconds: 8 });
  console.log(r.delivered, r.p99ms);
  await new Promise((r) => setTimeout(r, 1000));
  console.log(dev.output().split("\n").filter((l) => l.includes("SQLPROBE")).slice(-1)[0]);
} finally { await dev.stop(); }
process.exit(0);
