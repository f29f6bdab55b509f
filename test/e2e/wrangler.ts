/**
 * Minimal `wrangler dev` starter for the e2e suite (same shape as test/support/wrangler-dev.ts:
 * `startWranglerDev({ port }) → { url, wsUrl, stop() }`). Fresh `--persist-to` directory per run
 * so usernames bound in an earlier run never collide; stopped by killing its process group.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface WranglerDev {
  url: string;
  wsUrl: string;
  log: () => string;
  stop(): Promise<void>;
}

export async function startWranglerDev(opts: { port: number }): Promise<WranglerDev> {
  const persist = mkdtempSync(join(tmpdir(), "parley-e2e-state-"));
  let log = "";
  const child: ChildProcess = spawn(
    "npx",
    [
      "wrangler",
      "dev",
      "--ip",
      "127.0.0.1",
      "--port",
      String(opts.port),
      "--persist-to",
      persist,
      "--show-interactive-dev-session=false",
    ],
    { detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, CI: "1" } },
  );
  child.stdout?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const url = `http://127.0.0.1:${opts.port}`;
  const stop = async () => {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // already gone
      }
      await new Promise((r) => setTimeout(r, 500));
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // exited on SIGTERM
      }
    }
    rmSync(persist, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) return { url, wsUrl: `ws://127.0.0.1:${opts.port}/ws`, log: () => log, stop };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  await stop();
  throw new Error(`wrangler dev did not become healthy on ${url}:\n${log.slice(-3000)}`);
}
