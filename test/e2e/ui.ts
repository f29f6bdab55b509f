/** Page-level steps the e2e stories share: onboarding, opening chats, sending, reading the log. */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";

export const SHOTS = join(process.cwd(), "test-results", "screenshots");

export async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

export async function onboard(page: Page, username: string): Promise<void> {
  await page.locator("#username").waitFor({ timeout: 30_000 });
  await page.fill("#username", username);
  await page.getByRole("button", { name: "Create my identity" }).click();
  await page.getByTestId("my-username").filter({ hasText: username }).waitFor({ timeout: 30_000 });
}

/** Waits until the sidebar lists `who` as online. */
export async function seesOnline(page: Page, who: string, online = true): Promise<void> {
  await page
    .locator(`[data-testid="user-${who}"][data-online="${online ? "true" : "false"}"]`)
    .waitFor({ timeout: 30_000 });
}

export async function openChat(page: Page, who: string): Promise<void> {
  await page.getByTestId(`user-${who}`).click();
  await page.getByTestId("conv-title").filter({ hasText: who }).waitFor();
}

export async function openGroup(page: Page, group: string): Promise<void> {
  await page.getByTestId(`group-${group}`).click();
  await page
    .getByTestId("conv-title")
    .filter({ hasText: `#${group}` })
    .waitFor();
}

export async function send(page: Page, text: string): Promise<void> {
  const box = page.getByTestId("composer");
  await box.waitFor();
  // Wait for the composer to accept input (session secure / group key received).
  await page.waitForFunction(
    () => !(document.querySelector('[data-testid="composer"]') as HTMLTextAreaElement).disabled,
    undefined,
    { timeout: 30_000 },
  );
  await box.fill(text);
  await box.press("Enter");
  await page
    .locator('[data-testid="message"]')
    .filter({ hasText: text })
    .first()
    .waitFor({ timeout: 30_000 });
}

export async function seesMessage(page: Page, text: string, timeout = 30_000): Promise<void> {
  await page
    .locator('[data-testid="message-text"]', { hasText: text })
    .first()
    .waitFor({ timeout });
}

export async function messageTexts(page: Page): Promise<string[]> {
  return page.locator('[data-testid="message-text"]').allInnerTexts();
}

export async function statusText(page: Page): Promise<string> {
  return ((await page.getByTestId("chat-status").textContent()) ?? "").trim();
}

/**
 * alice and bob at `url` (each in its own Chromium profile), onboarded, in a chat with each other
 * opened by alice's `hello` (on a hub where everyone is shown online, PROTOCOL.md §6.3).
 */
export async function chatPair(url: string, hello: string): Promise<[BrowserUser, BrowserUser]> {
  const alice = await launchUser("alice", url);
  const bob = await launchUser("bob", url);
  await onboard(alice.page, "alice");
  await onboard(bob.page, "bob");
  await seesOnline(alice.page, "bob");
  await openChat(alice.page, "bob");
  await send(alice.page, hello);
  await seesOnline(bob.page, "alice");
  await openChat(bob.page, "alice");
  await seesMessage(bob.page, hello);
  return [alice, bob];
}

/** Close each launched user's browser and remove its profile. */
export async function closeUsers(users: readonly (BrowserUser | undefined)[]): Promise<void> {
  for (const x of users) {
    if (x === undefined) continue;
    await x.close();
    removeProfile(x.dir);
  }
}

/**
 * A browser with the Shape Detection API: a stand-in BarcodeDetector "sees" `window.scanPayload`
 * in a synthetic camera stream (headless Chromium has neither a camera nor the detector).
 */
export async function withStandInScanner(context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    const w = window as unknown as { scanPayload?: string; BarcodeDetector?: unknown };
    w.BarcodeDetector = class {
      async detect() {
        return w.scanPayload ? [{ rawValue: w.scanPayload }] : [];
      }
    };
    navigator.mediaDevices.getUserMedia = async () => {
      const canvas = document.createElement("canvas");
      canvas.width = 4;
      canvas.height = 3;
      canvas.getContext("2d")?.fillRect(0, 0, 4, 3);
      return canvas.captureStream(1);
    };
  });
}
