/**
 * Idle connection memory in waves, for the question the bench's one reading cannot answer: what
 * an idle connection keeps once its object has been evicted. `npm run bench` reads workerd's RSS
 * 1.5 s after opening its idle connections, while every object is still resident. An object
 * whose sockets are all hibernatable is evicted after about 10 s without events (under `wrangler
 * dev` too: its constructor runs again at the next message), but the allocator does not give the
 * memory back to the system, so RSS cannot fall; it is reused instead. So this opens `n`
 * connections, waits `idle` seconds, and repeats: from the second wave on, each wave's growth is
 * what `n` more idle connections cost beside evicted ones. Not part of `npm run bench`.
 *
 *   node bench/build.mjs && node dist/bench/idle-memory.mjs [n] [users|unauth|trivial] [idle] [waves]
 *
 * `users`: authenticated Parley users, each on its own user's route (the PWA's topology);
 * `unauth`: sockets on users' routes that stop at the relay's `hello` (each object made and
 * started, no user authenticated: what the object costs before its user's first frame);
 * `trivial`: bench/trivial-do, each socket on an object of its own (`?room=`). Defaults: 200,
 * users, 20 s, 3 waves. `BENCH_IDLE_PORT` (default 8804) for its `wrangler dev`.
 */
import { join } from "node:path";
import WebSocket from "ws";
import { installNodeCryptoBackend } from "../node/crypto-backend";
import { startWranglerDev } from "../test/support/wrangler-dev";
import { openInBatches } from "./lib";
import { descendantsNamed, rssMiB } from "./procs";
import { parleyTarget } from "./relay-load";

installNodeCryptoBackend();
const n = Number(process.argv[2] ?? 200);
const which = process.argv[3] ?? "users";
if (which !== "users" && which !== "unauth" && which !== "trivial")
  throw new Error(`unknown target ${which}`);
const idleSeconds = Number(process.argv[4] ?? 20);
const waves = Number(process.argv[5] ?? 3);
const port = Number(process.env.BENCH_IDLE_PORT ?? 8804);
const trivial = which === "trivial";
const unauth = which === "unauth";

const dev = await startWranglerDev({
  port,
  root: process.cwd(),
  ...(trivial ? { config: join(process.cwd(), "bench/trivial-do/wrangler.toml") } : {}),
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
try {
  const pids = descendantsNamed(dev.pid, "workerd");
  const pid = pids.sort((a, b) => rssMiB(b) - rssMiB(a))[0];
  if (pid === undefined) throw new Error("no workerd process under wrangler dev");
  const hub = `idle${Date.now() % 100000}`;
  const users = parleyTarget(dev.url, hub, "bench", true);
  const open = async (k: number): Promise<{ close(): void }> => {
    if (which === "users") return users.connect(`u${k}`);
    const url = unauth ? `${dev.wsUrl}?hub=${hub}&user=u${k}` : `${dev.wsUrl}?room=r${k}`;
    const ws = new WebSocket(url, {
      headers: { Origin: dev.url },
      perMessageDeflate: false,
    });
    await new Promise<void>((resolve, reject) => {
      // The trivial object answers a first frame; the relay's `hello` comes unasked.
      ws.once("open", () => {
        if (!unauth) ws.send('{"v":1,"t":"hi"}');
      });
      ws.once("message", () => resolve());
      ws.once("error", reject);
    });
    return ws;
  };
  // The first object compiles the Worker: before the baseline is read.
  (await open(-1)).close();
  await sleep(500);
  const start = rssMiB(pid);
  let before = start;
  const conns: { close(): void }[] = [];
  for (let w = 0; w < waves; w++) {
    conns.push(...(await openInBatches(n, open, w * n)));
    await sleep(1500);
    const resident = rssMiB(pid);
    await sleep(idleSeconds * 1000);
    const idle = rssMiB(pid);
    const perConn = ((resident - before) * 1024) / n;
    process.stdout.write(
      `${which} wave ${w + 1}: ${conns.length} open; RSS ${before.toFixed(1)} → ${resident.toFixed(1)} MiB ` +
        `(+${perConn.toFixed(0)} KiB per new connection), ${idle.toFixed(1)} MiB after ${idleSeconds} s idle\n`,
    );
    before = idle;
  }
  for (const c of conns) c.close();
} finally {
  await dev.stop();
}
