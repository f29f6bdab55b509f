/**
 * Browser helpers for the end-to-end tests: one persistent Chromium profile per test user
 * (Debian's /usr/bin/chromium driven by playwright-core), with a CDP session that records every
 * WebSocket frame the page sends — the tests assert that no plaintext ever leaves the browser.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, type CDPSession, chromium, type Page } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface BrowserUser {
  name: string;
  dir: string;
  context: BrowserContext;
  page: Page;
  cdp: CDPSession;
  /** Payloads of every WebSocket frame the page sent (CDP Network.webSocketFrameSent). */
  framesSent: string[];
  /** Console errors and page errors, for diagnosis when a test fails. */
  errors: string[];
  close(): Promise<void>;
}

export interface LaunchOptions {
  viewport?: { width: number; height: number };
  /** Reuse an existing profile directory (to relaunch the same user). */
  dir?: string;
}

export async function launchUser(
  name: string,
  url: string,
  opts: LaunchOptions = {},
): Promise<BrowserUser> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), `parley-e2e-${name}-`));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    viewport: opts.viewport ?? { width: 1280, height: 800 },
    colorScheme: "light",
    serviceWorkers: "allow",
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  const framesSent: string[] = [];
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.webSocketFrameSent", (e) => framesSent.push(e.response.payloadData));
  await page.goto(url);
  return {
    name,
    dir,
    context,
    page,
    cdp,
    framesSent,
    errors,
    async close() {
      await context.close().catch(() => {});
    },
  };
}

export function removeProfile(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
