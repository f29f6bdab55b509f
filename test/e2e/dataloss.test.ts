/**
 * The two ways Parley used to lose messages while showing "Secure", as a real user meets them:
 *
 * 1. alice restores her identity from a backup file in a second browser profile and back: bob's
 *    messages reach whichever browser holds the identity, none lost, each shown delivered to him;
 *    the browser left behind says it was replaced instead of pretending to be connected.
 * 2. a 100 KB paste: refused before encryption, the text kept in the composer; messages queued
 *    offline afterwards still go out, and a reload finds nothing damaged.
 *
 * alice (two profiles) and bob in their own `wrangler dev`.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { messageTexts, onboard, openChat, seesMessage, send, shot } from "./ui";

const PORT = testPort(8806);
/** The people of these stories find each other in the online list: a hub whose users see
 * everyone online (PROTOCOL.md §6.3); that strangers see nothing is tested in relay-presence. */
const EVERYONE_ONLINE = { PRESENCE_EVERYONE_HUBS: "*" };
const PASS = "a long enough passphrase";
let relay: WranglerDev;
const users: BrowserUser[] = [];
let alice: BrowserUser;
let alice2: BrowserUser;
let bob: BrowserUser;

beforeAll(async () => {
  relay = await startWranglerDev({ port: PORT, vars: EVERYONE_ONLINE });
  alice = await launchUser("alice", `${relay.url}/`);
  bob = await launchUser("bob", `${relay.url}/`);
  users.push(alice, bob);
  await onboard(alice.page, "alice");
  await onboard(bob.page, "bob");
});

afterAll(async () => {
  for (const x of users) {
    await x.close();
    removeProfile(x.dir);
  }
  await relay?.stop();
});

async function delivered(user: BrowserUser, text: string): Promise<void> {
  await user.page
    .locator('[data-testid="message"]', { hasText: text })
    .locator('[data-delivery="delivered"]')
    .waitFor({ timeout: 45_000 });
}

async function exportIdentity(user: BrowserUser): Promise<string> {
  const p = user.page;
  await p.getByTestId("open-settings").click();
  await p.fill("#export-pass", PASS);
  await p.fill("#export-pass2", PASS);
  const [download] = await Promise.all([
    p.waitForEvent("download"),
    p.getByTestId("export-identity").click(),
  ]);
  await p.keyboard.press("Escape");
  return download.path();
}

describe("no message lost", () => {
  test("restore on a second profile: bob's next messages arrive there, none lost", async () => {
    await openChat(alice.page, "bob");
    await send(alice.page, "hi bob, from my laptop");
    await openChat(bob.page, "alice");
    await seesMessage(bob.page, "hi bob, from my laptop");
    await send(bob.page, "hi alice");
    await delivered(bob, "hi alice");

    const file = await exportIdentity(alice);
    alice2 = await launchUser("alice-restored", `${relay.url}/`);
    users.push(alice2);
    const q = alice2.page;
    await q.getByText("Restore from a backup file").click();
    await q.getByTestId("restore-file").setInputFiles(file);
    await q.fill("#restore-pass", PASS);
    await q.getByTestId("restore-submit").click();
    await q.getByTestId("my-username").filter({ hasText: "alice" }).waitFor({ timeout: 30_000 });

    // The first browser is told at once, and does not claim to be connected.
    await alice.page.getByTestId("retired-banner").waitFor({ timeout: 30_000 });
    expect(await alice.page.getByTestId("chat-status").textContent()).not.toMatch(/Secure/);
    await shot(alice.page, "desktop-replaced-by-restore");

    // bob writes on the session the old browser held: the new one cannot read it, repairs the
    // session, and bob sends it again by himself. Both arrive; both are delivered.
    await send(bob.page, "written after alice moved");
    await send(bob.page, "and one more");
    await openChat(q, "bob");
    await seesMessage(q, "written after alice moved", 45_000);
    await seesMessage(q, "and one more", 45_000);
    await delivered(bob, "written after alice moved");
    await delivered(bob, "and one more");
    // Once each, in order.
    const texts = (await messageTexts(q)).filter((t) => /after alice moved|one more/.test(t));
    expect(texts).toEqual(["written after alice moved", "and one more"]);
    await send(q, "new browser here");
    await seesMessage(bob.page, "new browser here");
    await shot(q, "desktop-restored-healed");
  });

  test("back on the first profile: it takes the identity back, and still nothing is lost", async () => {
    await alice.page.getByTestId("reclaim-device").click();
    await alice.page.getByTestId("retired-banner").waitFor({ state: "detached", timeout: 30_000 });
    await alice2.page.getByTestId("retired-banner").waitFor({ timeout: 30_000 });
    await send(bob.page, "welcome back to the laptop");
    await openChat(alice.page, "bob");
    await seesMessage(alice.page, "welcome back to the laptop", 45_000);
    await delivered(bob, "welcome back to the laptop");
    await send(alice.page, "laptop again");
    await seesMessage(bob.page, "laptop again");
    // Nothing bob sent is stuck at a single tick.
    const stuck = await bob.page
      .locator('[data-testid="message"].out [data-delivery]:not([data-delivery="delivered"])')
      .count();
    expect(stuck).toBe(0);
  });

  test("a 100 KB paste is refused and kept; messages queued offline afterwards go out", async () => {
    const p = bob.page;
    await openChat(p, "alice");
    const paste = "lorem ipsum dolor sit amet ".repeat(4000).slice(0, 100_000);
    const box = p.getByTestId("composer");
    await box.fill(paste);
    await box.press("Enter");
    // Kept in the composer, never shown as a message "sending".
    await p.waitForFunction(
      (n) =>
        (document.querySelector('[data-testid="composer"]') as HTMLTextAreaElement).value.length ===
        n,
      paste.length,
      { timeout: 10_000 },
    );
    expect(
      await p.locator('[data-testid="message"]', { hasText: "lorem ipsum dolor" }).count(),
    ).toBe(0);
    await box.fill("");

    // Offline for sure: a reload with no network (the service worker serves the app shell).
    await p.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, {
      timeout: 30_000,
    });
    await bob.context.setOffline(true);
    try {
      await p.reload();
      await p.getByTestId("my-username").filter({ hasText: "bob" }).waitFor({ timeout: 30_000 });
      await openChat(p, "alice");
      await p
        .getByTestId("chat-status")
        .filter({ hasText: "Offline" })
        .waitFor({ timeout: 30_000 });
      await send(p, "queued offline one");
      await send(p, "queued offline two");
    } finally {
      await bob.context.setOffline(false);
    }
    await p
      .getByTestId("chat-status")
      .filter({ hasNotText: "Offline" })
      .waitFor({ timeout: 60_000 });
    await seesMessage(alice.page, "queued offline one", 60_000);
    await seesMessage(alice.page, "queued offline two", 60_000);
    await delivered(bob, "queued offline two");

    // A reload finds nothing damaged and nothing stuck.
    const errors: string[] = [];
    await p.reload();
    await p.getByTestId("my-username").filter({ hasText: "bob" }).waitFor({ timeout: 30_000 });
    await p.waitForTimeout(1500);
    errors.push(...(await p.locator(".toast").allInnerTexts()));
    expect(errors.join("\n")).not.toMatch(/could not be read|outbox/i);
    await openChat(p, "alice");
    await seesMessage(p, "queued offline two");
    await openChat(alice.page, "bob");
    await send(bob.page, "after the reload");
    await seesMessage(alice.page, "after the reload");
  });
});
