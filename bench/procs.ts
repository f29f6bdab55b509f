/**
 * Process helpers for the relay bench and the soak (Node only): CPU time and RSS from /proc, the
 * workerd descendant of a `wrangler dev`, and a child Node process started in its own process
 * group and stopped by PID — never by name, so other engineers' processes are never touched.
 */
import { type ChildProcess, execSync, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

let clkTck: number | undefined;
function ticksPerSec(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execSync("getconf CLK_TCK").toString().trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** User + system CPU seconds consumed so far by `pid` (fields 14 and 15 of /proc/pid/stat). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) may contain spaces: split after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / ticksPerSec();
}

/** Resident set size of `pid` in MiB (VmRSS). */
export function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(status);
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return null;
  }
}

/** PIDs of every process descended from `root` whose command name is `comm`. */
export function descendantsNamed(root: number, comm: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === root) continue;
    let name = "";
    try {
      name = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      continue;
    }
    if (name !== comm) continue;
    for (let p: number | null = pid, hops = 0; p !== null && p > 1 && hops < 16; hops++) {
      p = parentOf(p);
      if (p === root) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

export interface Child {
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

/** Start `node script args…` in its own process group; resolves once it prints `readyLine`. */
export async function startNodeChild(
  script: string,
  args: string[],
  readyLine: RegExp,
  timeoutMs = 15_000,
): Promise<Child> {
  const child: ChildProcess = spawn(process.execPath, [script, ...args], {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  const stop = async () => {
    if (exited || child.pid === undefined) return;
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      return;
    }
    const deadline = Date.now() + 5000;
    while (!exited && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (!exited) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${script} did not start:\n${out}`));
    }, timeoutMs);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (readyLine.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited (${code}):\n${out}`));
    });
  });
  return { pid: child.pid ?? 0, output: () => out, stop };
}
