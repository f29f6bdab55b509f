/**
 * Message requests in Chromium (PROTOCOL.md §7.3.1, §8.11, §12.6) against a real `wrangler dev`:
 * a first message from someone bob never talked to opens as a request with Accept and Block;
 * opening it does not accept it; Accept removes the banner; Block makes the relay refuse the
 * sender, whose next message shows as failed with the reason in words. Screenshots go to
 * test-results/screenshots/requests-*.png.
 */
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, test } from "vitest";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { onboard, openChat, seesMessage, seesOnline, send, shot } from "./ui";

const PORT = testPort(8822);
/** People find each other in the online list here (PROTOCOL.md §6.3). */
const EVERYONE_ONLINE = { PRESENCE_EVERYONE_HUBS: "*" };
let relay: WranglerDev;
const users: Record<string, BrowserUser> = {};

function page(name: string): Page {
  const x = users[name];
  if (!x) throw new Error(`${name} not launched`);
  return x.page;
}

beforeAll(async () => {
  relay = await startWranglerDev({ port: PORT, vars: EVERYONE_ONLINE });
  for (const name of ["alice", "bob", "mallory"]) {
    users[name] = await launchUser(name, `${relay.url}/`);
    await onboard(page(name), name);
  }
  await seesOnline(page("alice"), "bob");
  await seesOnline(page("mallory"), "bob");
});

afterAll(async () => {
  for (const u of Object.values(users)) {
    await u.close();
    removeProfile(u.dir);
  }
  await relay?.stop();
});

describe("message requests", () => {
  test("a stranger's first message is a request; opening it does not accept it; Accept does", async () => {
    const a = page("alice");
    const b = page("bob");
    await openChat(a, "bob");
    await send(a, "hi bob, it's alice from the club");
    await openChat(b, "alice");
    await seesMessage(b, "it's alice from the club");
    const banner = b.getByTestId("request-banner");
    await banner.filter({ hasText: "Message request from alice" }).waitFor({ timeout: 30_000 });
    await shot(b, "requests-banner");
    await b.getByTestId("accept-request").click();
    await banner.waitFor({ state: "detached", timeout: 30_000 });
    await send(b, "hi alice");
    await seesMessage(a, "hi alice");
  });

  test("Block: the relay refuses the sender, whose message shows as not delivered", async () => {
    const m = page("mallory");
    const b = page("bob");
    await openChat(m, "bob");
    await send(m, "cheap watches");
    await openChat(b, "mallory");
    await seesMessage(b, "cheap watches");
    await b.getByTestId("block-request").click();
    await b
      .getByTestId("request-banner")
      .filter({ hasText: "You blocked mallory" })
      .waitFor({ timeout: 30_000 });
    await b.getByTestId("composer").and(b.locator(":disabled")).waitFor({ timeout: 30_000 });
    await shot(b, "requests-blocked");
    await send(m, "really cheap watches");
    await m
      .locator('[data-testid="message"]', { hasText: "really cheap watches" })
      .locator('[data-delivery="failed"]')
      .waitFor({ timeout: 30_000 });
    await m
      .locator(".toast", { hasText: "have not accepted your message request" })
      .waitFor({ timeout: 30_000 });
    await shot(m, "requests-refused");
    // Unblock: mallory's messages are taken again.
    await b.getByTestId("accept-request").click();
    await b.getByTestId("request-banner").waitFor({ state: "detached", timeout: 30_000 });
    await send(m, "sorry");
    await seesMessage(b, "sorry");
  });
});
