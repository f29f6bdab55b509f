/**
 * Start and stop a real `wrangler dev` for integration tests (Node only). The process runs in its
 * own process group and is stopped by killing that group by PID, never by name, so parallel test
 * runs of other engineers are never touched. Each run persists to a fresh temp directory.
 *
 *   const dev = await startWranglerDev({ port: 8790 });            // http / ws
 *   const tls = await startWranglerDev({ port: 8791, https: true }); // https / wss, self-signed
 *   ...; await dev.stop();
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export interface WranglerDev {
  /** e.g. http://127.0.0.1:8790 */
  url: string;
  /** e.g. ws://127.0.0.1:8790/ws */
  wsUrl: string;
  pid: number;
  /** Everything wrangler printed so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

export interface StartOptions {
  port: number;
  https?: boolean;
  /** Milliseconds to wait for /health (default 90 s: the first start bundles the Worker). */
  timeoutMs?: number;
  /** Extra `--var KEY:VALUE` pairs. */
  vars?: Record<string, string>;
  /**
   * Persist to this directory instead of a fresh temp one, and keep it on stop (the caller owns
   * it): a relay restarted with the same directory keeps its mailboxes (soak test).
   */
  persistTo?: string;
  /** Repository root to run wrangler in (default: derived from this file, else the cwd). */
  root?: string;
  /**
   * Other wrangler config files, the first the Worker that gets the requests (default: the
   * relay's wrangler.toml with the PWA's pwa/wrangler.toml, as `npm start` runs them).
   */
  config?: string | readonly string[];
}

/**
 * The repository root. `import.meta.dirname` is undefined or points elsewhere when this file is
 * bundled (bench/soak scripts run from dist/): those pass `root`, or run from the repo root.
 */
function repoRoot(): string {
  const here = import.meta.dirname;
  if (here !== undefined && existsSync(resolve(here, "../../wrangler.toml"))) {
    return resolve(here, "../..");
  }
  return process.cwd();
}

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** GET that accepts wrangler's self-signed certificate (tests only). */
export function httpGet(url: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  const u = new URL(url);
  const lib = u.protocol === "https:" ? https : http;
  return new Promise((resolveP, reject) => {
    const req = lib.request(
      u,
      { method: "GET", headers, rejectUnauthorized: false, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolveP({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolveP) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    sock.once("connect", () => {
      sock.destroy();
      resolveP(true);
    });
    sock.once("error", () => resolveP(false));
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Group already gone.
  }
}

/**
 * A test's fixed port, shifted by `PARLEY_PORT_OFFSET` so that two checkouts can run their
 * suites side by side on one machine without their relays colliding.
 */
export function testPort(base: number): number {
  const offset = Number(process.env.PARLEY_PORT_OFFSET ?? 0);
  return base + (Number.isSafeInteger(offset) ? offset : 0);
}

export async function startWranglerDev(opts: StartOptions): Promise<WranglerDev> {
  const scheme = opts.https === true ? "https" : "http";
  // Refuse a port something else already listens on: polling /health would otherwise "find" it.
  if (await portInUse(opts.port)) throw new Error(`port ${opts.port} is already in use`);
  const persist = opts.persistTo ?? mkdtempSync(join(tmpdir(), "parley-wrangler-"));
  const args = [
    "wrangler",
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(opts.port),
    "--inspector-port",
    String(opts.port + 1000),
    "--local-protocol",
    scheme,
    "--persist-to",
    persist,
    "--show-interactive-dev-session=false",
    "--log-level",
    "warn",
  ];
  for (const [k, v] of Object.entries(opts.vars ?? {})) args.push("--var", `${k}:${v}`);
  const configs =
    opts.config === undefined
      ? ["wrangler.toml", "pwa/wrangler.toml"]
      : typeof opts.config === "string"
        ? [opts.config]
        : opts.config;
  for (const c of configs) args.push("--config", c);
  const child = spawn("npx", args, {
    cwd: opts.root ?? repoRoot(),
    detached: true, // own process group, so stop() can end wrangler and workerd together
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, CI: "1", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" },
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  const url = `${scheme}://127.0.0.1:${opts.port}`;
  const stop = async () => {
    if (!exited) {
      killGroup(child, "SIGTERM");
      const deadline = Date.now() + 5000;
      while (!exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (!exited) killGroup(child, "SIGKILL");
    }
    if (opts.persistTo === undefined) rmSync(persist, { recursive: true, force: true });
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`wrangler dev exited early:\n${out}`);
    }
    try {
      const r = await httpGet(`${url}/health`);
      if (r.status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`wrangler dev did not become healthy on ${url}:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
  return {
    url,
    wsUrl: `${scheme === "https" ? "wss" : "ws"}://127.0.0.1:${opts.port}/ws`,
    pid: child.pid ?? 0,
    output: () => out,
    stop,
  };
}
