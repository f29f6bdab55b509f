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

/** Every user launched and not yet closed: what a failed test's report shows (describeOpen). */
const open = new Set<BrowserUser>();

/**
 * What each open browser shows: its URL, the first lines of its page's text and its last
 * errors. Printed when an end-to-end test fails (test/e2e/setup.ts), so that a timeout waiting
 * for some text says which screen was there instead.
 */
export async function describeOpen(): Promise<string> {
  const parts = await Promise.all(
    [...open].map(async (u) => {
      const text = await u.page
        .evaluate(() => document.body?.textContent ?? "")
        .then((t) => t.replace(/\s+/g, " ").slice(0, 300))
        .catch((e: unknown) => `(unreadable: ${e instanceof Error ? e.message : String(e)})`);
      const errors = u.errors.slice(-5).map((e) => `\n    error: ${e.slice(0, 300)}`);
      return `  ${u.name} at ${u.page.url()}: ${text}${errors.join("")}`;
    }),
  );
  return parts.join("\n");
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
  const user: BrowserUser = {
    name,
    dir,
    context,
    page,
    cdp,
    framesSent,
    errors,
    async close() {
      open.delete(user);
      await context.close().catch(() => {});
    },
  };
  open.add(user);
  await page.goto(url);
  return user;
}

export function removeProfile(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
