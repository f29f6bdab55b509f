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
  /** The last frames' directions, seconds since launch and types, for diagnosis. */
  frameLog: string[];
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
 * What each open browser shows: its URL, the conversation open (title, status, last messages),
 * any connection notice, the first of its page's text, the last frames it exchanged (their `t`
 * only) and its last errors. Added to a failed end-to-end test's error (test/e2e/setup.ts), so
 * that a timeout waiting for some text says which screen was there instead.
 */
export async function describeOpen(): Promise<string> {
  const parts = await Promise.all(
    [...open].map(async (u) => {
      const seen = await u.page
        .evaluate(() => {
          const q = (id: string) =>
            (document.querySelector(`[data-testid="${id}"]`)?.textContent ?? "")
              .replace(/\s+/g, " ")
              .trim();
          const msgs = Array.from(document.querySelectorAll('[data-testid="message-text"]'))
            .slice(-3)
            .map((m) => (m.textContent ?? "").slice(0, 60));
          return [
            `me=${q("my-username") || "-"}`,
            `open=${q("conv-title") || "-"}`,
            `status=${q("chat-status") || "-"}`,
            `notice=${q("conn-notice") || "-"}`,
            `last=${JSON.stringify(msgs)}`,
            `text=${(document.body?.textContent ?? "").replace(/\s+/g, " ").slice(0, 200)}`,
          ].join(" | ");
        })
        .catch((e: unknown) => `(unreadable: ${e instanceof Error ? e.message : String(e)})`);
      const frames = u.frameLog.slice(-8).join(" ");
      const errors = u.errors.slice(-5).map((e) => `\n    error: ${e.slice(0, 300)}`);
      return `  ${u.name} at ${u.page.url()}: ${seen}\n    frames: ${frames}${errors.join("")}`;
    }),
  );
  return parts.join("\n");
}

/** A frame's type for the log: its `t`, or `?` for anything that is not a JSON object. */
function frameType(payload: string): string {
  try {
    const t = (JSON.parse(payload) as { t?: unknown }).t;
    return typeof t === "string" ? t : "?";
  } catch {
    return "?";
  }
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
  const frameLog: string[] = [];
  const started = Date.now();
  const logFrame = (dir: string, payload: string) => {
    frameLog.push(`${dir}${((Date.now() - started) / 1000).toFixed(1)}:${frameType(payload)}`);
    if (frameLog.length > 64) frameLog.splice(0, 32);
  };
  cdp.on("Network.webSocketFrameSent", (e) => {
    framesSent.push(e.response.payloadData);
    logFrame(">", e.response.payloadData);
  });
  cdp.on("Network.webSocketFrameReceived", (e) => logFrame("<", e.response.payloadData));
  cdp.on("Network.webSocketClosed", () =>
    frameLog.push(`closed@${((Date.now() - started) / 1000).toFixed(1)}`),
  );
  const user: BrowserUser = {
    name,
    dir,
    context,
    page,
    cdp,
    framesSent,
    errors,
    frameLog,
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
