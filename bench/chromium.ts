/**
 * Headless Chromium runs for the bench (Node side): the primitive table inside the PWA's real
 * runtime, served from 127.0.0.1 (a secure context, so WebCrypto is there), and the PWA's page
 * load → "connected and ready" time against a real `wrangler dev`.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "../test/support/browser";
import type { PrimitiveRow } from "./primitives";

export async function launch(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "parley-bench-chromium-"));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    serviceWorkers: "allow",
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Serve one HTML page that loads the bundled primitives, run them, return the rows. */
export async function chromiumPrimitives(bundlePath: string): Promise<PrimitiveRow[]> {
  const js = readFileSync(bundlePath);
  const server = http.createServer((req, res) => {
    if (req.url === "/primitives.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(js);
    } else {
      res.writeHead(200, { "content-type": "text/html" });
      res.end('<!doctype html><meta charset="utf-8"><script src="/primitives.js"></script>');
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const b = await launch();
  try {
    const page = b.context.pages()[0] ?? (await b.context.newPage());
    await page.goto(`http://127.0.0.1:${port}/`);
    return (await page.evaluate(
      () =>
        (
          globalThis as unknown as { runParleyPrimitives: () => Promise<unknown> }
        ).runParleyPrimitives(),
      undefined,
    )) as PrimitiveRow[];
  } finally {
    await b.close();
    await new Promise((r) => server.close(r));
  }
}
