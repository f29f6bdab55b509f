/**
 * Benchmark harness: every figure that matters is a ratio against a baseline measured in the same
 * run, because absolute timings drift on a shared 2-core machine. No timed assertions.
 */

/** A numeric setting from the environment (Node) or its default (browser: no `process`). */
export function envNum(name: string, fallback: number): number {
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process
    ?.env;
  const v = env?.[name];
  return v === undefined || v === "" ? fallback : Number(v);
}

export interface Measurement {
  name: string;
  iterations: number;
  /** Operations per second over the measured window. */
  opsPerSec: number;
  /** Mean microseconds per operation. */
  meanUs: number;
}

export interface MeasureOptions {
  /** Minimum wall time of the measured window, ms. */
  minMs?: number;
  minIterations?: number;
  maxIterations?: number;
  warmup?: number;
}

/** Runs `fn` repeatedly (after a warm-up) until both minimums are met; returns its rate. */
export async function measure(
  name: string,
  fn: (i: number) => unknown,
  options: MeasureOptions = {},
): Promise<Measurement> {
  const minMs = options.minMs ?? envNum("BENCH_MIN_MS", 1000);
  const minIterations = options.minIterations ?? 10;
  const maxIterations = options.maxIterations ?? 1_000_000;
  const warmup = options.warmup ?? 5;
  for (let i = 0; i < warmup; i++) await fn(i);
  let iterations = 0;
  const start = performance.now();
  let elapsed = 0;
  while ((elapsed < minMs || iterations < minIterations) && iterations < maxIterations) {
    await fn(iterations + warmup);
    iterations++;
    elapsed = performance.now() - start;
  }
  return {
    name,
    iterations,
    opsPerSec: (iterations * 1000) / elapsed,
    meanUs: (elapsed * 1000) / iterations,
  };
}

export interface Row {
  [column: string]: string | number;
}

function fmt(v: string | number): string {
  if (typeof v === "string") return v;
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString("en-US");
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** A GitHub-flavoured Markdown table: readable in a terminal and pasteable into PERFORMANCE.md. */
export function table(title: string, rows: Row[]): string {
  if (rows.length === 0) return `### ${title}\n\n(no rows)\n`;
  const cols = Object.keys(rows[0] ?? {});
  const cells = rows.map((r) => cols.map((c) => fmt(r[c] ?? "")));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const line = (vals: string[]) =>
    `| ${vals.map((v, i) => v.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [
    `### ${title}`,
    "",
    line(cols),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...cells.map(line),
    "",
  ].join("\n");
}

export function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

/** The median of `xs` (the mean of the middle two for an even count); 0 for none. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? Number.NaN;
}

export interface PairResult {
  a: Measurement;
  b: Measurement;
  /** a's rate over b's rate. */
  ratio: number;
}

/**
 * Measures two competitors in alternating short slices (a b b a a b …) and sums each side's
 * iterations and time, so load from other processes on this shared machine lands on both
 * sides alike and the ratio stays meaningful even when absolute rates drift.
 */
export async function comparePair(
  name: string,
  a: (i: number) => unknown,
  b: (i: number) => unknown,
  options: { slices?: number; sliceMs?: number; warmup?: number; warmupMs?: number } = {},
): Promise<PairResult> {
  const slices = options.slices ?? envNum("BENCH_SLICES", 8);
  const sliceMs = options.sliceMs ?? envNum("BENCH_SLICE_MS", 150);
  const warmup = options.warmup ?? 3;
  // Both sides run untimed, alternately, for at least `warmupMs` each before the measured
  // slices: V8 compiles hot JavaScript and WebAssembly in tiers (baseline first, optimised
  // after many calls), so a few calls leave a JS side in its baseline tiers for the first
  // slices while a native baseline (libsignal's Rust) is compiled ahead of time. What is
  // compared is each side's steady state; the same warm-up is given to both.
  const warmupMs = options.warmupMs ?? envNum("BENCH_WARMUP_MS", 400);
  const spent = { a: 0, b: 0 };
  for (let i = 0; i < warmup || spent.a < warmupMs || spent.b < warmupMs; i++) {
    let t = performance.now();
    await a(i);
    spent.a += performance.now() - t;
    t = performance.now();
    await b(i);
    spent.b += performance.now() - t;
  }
  const acc = { a: { n: 0, ms: 0 }, b: { n: 0, ms: 0 } };
  const run = async (fn: (i: number) => unknown, slot: { n: number; ms: number }) => {
    const start = performance.now();
    let elapsed = 0;
    let n = 0;
    while (elapsed < sliceMs || n < 1) {
      await fn(slot.n + n);
      n++;
      elapsed = performance.now() - start;
    }
    slot.n += n;
    slot.ms += elapsed;
  };
  for (let s = 0; s < slices; s++) {
    if (s % 2 === 0) {
      await run(a, acc.a);
      await run(b, acc.b);
    } else {
      await run(b, acc.b);
      await run(a, acc.a);
    }
  }
  const m = (label: string, x: { n: number; ms: number }): Measurement => ({
    name: `${name} ${label}`,
    iterations: x.n,
    opsPerSec: (x.n * 1000) / x.ms,
    meanUs: (x.ms * 1000) / x.n,
  });
  const ma = m("a", acc.a);
  const mb = m("b", acc.b);
  return { a: ma, b: mb, ratio: ma.opsPerSec / mb.opsPerSec };
}

/**
 * `open(k)` for k in [from, from + n), 8 at a time: the relay refuses an address holding too many
 * unauthenticated sockets, so idle connections are opened in small batches.
 */
export async function openInBatches<T>(
  n: number,
  open: (k: number) => Promise<T>,
  from = 0,
): Promise<T[]> {
  const out: T[] = [];
  for (let k = from; k < from + n; k += 8) {
    const batch = Array.from({ length: Math.min(8, from + n - k) }, (_, j) => open(k + j));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}
