/**
 * PWA figures: initial JavaScript gzipped, from the vite build output (dist/pwa), and
 * the time from navigation start to "connected and ready" in headless Chromium against a real
 * `wrangler dev`: the top bar's status pill turns to tone "ok" ("Online") once the relay has
 * welcomed the engine (pwa/src/ui/TopBar.tsx, format.ts chatStatusLabel).
 *
 * Baselines from the same page load: DOMContentLoaded, and a raw WebSocket to the same relay
 * opened from the same page until its first frame (`hello`) — the floor any client pays.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { startWranglerDev } from "../test/support/wrangler-dev";
import { launch } from "./chromium";
import type { Row } from "./lib";

export interface PwaFigures {
  size: Row[];
  load: Row[];
  summary: { initialJsGzKiB: number; readyMs: number; dclMs: number; wsHelloMs: number };
}

function gz(path: string): { raw: number; gz: number } {
  const b = readFileSync(path);
  return { raw: b.length, gz: gzipSync(b, { level: 9 }).length };
}

export function pwaSizes(dist = "dist/pwa"): { rows: Row[]; initialGz: number } {
  const html = readFileSync(join(dist, "index.html"), "utf8");
  const initial = new Set<string>();
  for (const m of html.matchAll(/<script[^>]*\ssrc="\/([^"]+)"/g)) if (m[1]) initial.add(m[1]);
  for (const m of html.matchAll(/<link[^>]*rel="modulepreload"[^>]*href="\/([^"]+)"/g))
    if (m[1]) initial.add(m[1]);
  const rows: Row[] = [];
  let initialGz = 0;
  let initialRaw = 0;
  for (const f of initial) {
    const s = gz(join(dist, f));
    initialGz += s.gz;
    initialRaw += s.raw;
    rows.push({ file: f, KiB: s.raw / 1024, "KiB gzipped": s.gz / 1024, initial: "yes" });
  }
  for (const f of readdirSync(join(dist, "assets"))) {
    const p = `assets/${f}`;
    if (initial.has(p) || !/\.(js|css)$/.test(f)) continue;
    const s = gz(join(dist, p));
    rows.push({
      file: p,
      KiB: s.raw / 1024,
      "KiB gzipped": s.gz / 1024,
      initial: f.endsWith(".css") ? "css" : "no",
    });
  }
  rows.push({
    file: "initial JS total",
    KiB: initialRaw / 1024,
    "KiB gzipped": initialGz / 1024,
    initial: "",
  });
  return { rows, initialGz };
}

const median = (xs: number[]) =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

export async function runPwa(
  port: number,
  log: (s: string) => void = () => {},
): Promise<PwaFigures> {
  const sizes = pwaSizes();
  const dev = await startWranglerDev({ port, root: process.cwd() });
  const b = await launch();
  try {
    const page = b.context.pages()[0] ?? (await b.context.newPage());
    await page.addInitScript(() => {
      const w = window as unknown as { __readyAt?: number; __formAt?: number };
      const mark = () => {
        if (
          w.__readyAt === undefined &&
          document.querySelector('[data-testid="chat-status"] [data-tone="ok"]')
        )
          w.__readyAt = performance.now();
        if (w.__formAt === undefined && document.querySelector("#username"))
          w.__formAt = performance.now();
      };
      new MutationObserver(mark).observe(document, {
        subtree: true,
        childList: true,
        attributes: true,
      });
    });
    const timing = async () =>
      page.evaluate(() => {
        const w = window as unknown as { __readyAt?: number; __formAt?: number };
        const nav = performance.getEntriesByType("navigation")[0] as
          | PerformanceNavigationTiming
          | undefined;
        return {
          ready: w.__readyAt ?? Number.NaN,
          form: w.__formAt ?? Number.NaN,
          dcl: nav?.domContentLoadedEventEnd ?? Number.NaN,
        };
      });
    // First visit: onboarding form, then create an identity.
    await page.goto(dev.url);
    await page.locator("#username").waitFor({ timeout: 60_000 });
    const first = await timing();
    await page.fill("#username", `bench${Date.now() % 100000}`);
    await page.getByRole("button", { name: "Create my identity" }).click();
    await page.locator('[data-testid="chat-status"] [data-tone="ok"]').waitFor({ timeout: 60_000 });
    // Returning user: reload N times (service worker installed, identity in IndexedDB).
    const runs = Number(process.env.BENCH_PWA_RELOADS ?? 5);
    const ready: number[] = [];
    const dcl: number[] = [];
    const hello: number[] = [];
    for (let i = 0; i < runs; i++) {
      await page.reload();
      await page
        .locator('[data-testid="chat-status"] [data-tone="ok"]')
        .waitFor({ timeout: 60_000 });
      const t = await timing();
      ready.push(t.ready);
      dcl.push(t.dcl);
      hello.push(
        await page.evaluate(
          (url) =>
            new Promise<number>((resolve, reject) => {
              const t0 = performance.now();
              const ws = new WebSocket(url);
              ws.onmessage = () => {
                resolve(performance.now() - t0);
                ws.close();
              };
              ws.onerror = () => reject(new Error("ws failed"));
            }),
          `${dev.wsUrl}?hub=benchprobe`,
        ),
      );
      log(
        `  reload ${i + 1}: ready ${t.ready.toFixed(0)} ms, DOMContentLoaded ${t.dcl.toFixed(0)} ms`,
      );
    }
    const r = median(ready);
    const d = median(dcl);
    const h = median(hello);
    return {
      size: sizes.rows,
      load: [
        {
          measure: "first visit: onboarding form shown",
          ms: first.form,
          "× DOMContentLoaded": `${(first.form / first.dcl).toFixed(2)}×`,
        },
        {
          measure: "returning: connected and ready (median)",
          ms: r,
          "× DOMContentLoaded": `${(r / d).toFixed(2)}×`,
        },
        { measure: "returning: DOMContentLoaded (median)", ms: d, "× DOMContentLoaded": "1.00×" },
        {
          measure: "raw WebSocket open → hello from the page (median)",
          ms: h,
          "× DOMContentLoaded": `${(h / d).toFixed(2)}×`,
        },
        {
          measure: "ready − (DOMContentLoaded + raw hello)",
          ms: r - d - h,
          "× DOMContentLoaded": "",
        },
      ],
      summary: { initialJsGzKiB: sizes.initialGz / 1024, readyMs: r, dclMs: d, wsHelloMs: h },
    };
  } finally {
    await b.close();
    await dev.stop();
  }
}
