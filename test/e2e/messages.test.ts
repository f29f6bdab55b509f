/**
 * Everyday messaging in Chromium (PROTOCOL.md §8.6.1, §12.6), alice and bob against a real
 * `wrangler dev`: reply with a quote, react, edit with its earlier version on request, typing,
 * read receipts off by default and then on, delete for everyone, a disappearing timer set by one
 * side that removes the message (and its stored row) on both, search that jumps to a message,
 * delete for me, mute and archive, a newer client's message shown as "unsupported message" —
 * at desktop size and at 390 px. Screenshots go to
 * test-results/screenshots/messages-*.png.
 */
import type { Locator, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import WebSocket from "ws";
import { ed25519KeyPairFromSeed, randomBytes } from "../../shared/crypto";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { attach, detach, newWireUser, until, type WireUser } from "../support/capture";
import { status } from "../support/clients";
import { asNewerClient } from "../support/newer-client";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { onboard, openChat, seesMessage, seesOnline, send, shot } from "./ui";

const PORT = testPort(8818);
/** The people of these stories find each other in the online list: a hub whose users see
 * everyone online (PROTOCOL.md §6.3); that strangers see nothing is tested in relay-presence. */
const EVERYONE_ONLINE = { PRESENCE_EVERYONE_HUBS: "*" };
let relay: WranglerDev;
const users: Record<string, BrowserUser> = {};
/** An engine in Node standing in for a newer version of Parley (test/support/newer-client.ts). */
let nova: WireUser | undefined;

function page(name: string): Page {
  const x = users[name];
  if (!x) throw new Error(`${name} not launched`);
  return x.page;
}

const bubble = (p: Page, text: string): Locator =>
  p.locator('[data-testid="message"]', { hasText: text }).first();

async function act(p: Page, text: string, action: string): Promise<void> {
  await bubble(p, text).getByTestId("message-actions").click();
  await p.getByTestId("message-menu").getByTestId(action).click();
}

/** The sealed history rows of the page whose key is exactly `key` (runs in the page). */
function rowCount(p: Page, key: string): Promise<number> {
  return p.evaluate(
    (k) =>
      new Promise<number>((resolve, reject) => {
        const open = indexedDB.open("parley");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const req = open.result.transaction("history").objectStore("history").count(k);
          req.onsuccess = () => {
            open.result.close();
            resolve(req.result);
          };
        };
      }),
    key,
  );
}

async function setPref(p: Page, testid: string, on: boolean): Promise<void> {
  await p.getByTestId("open-settings").click();
  const box = p.getByTestId(testid);
  if ((await box.isChecked()) !== on) await box.click();
  await p.keyboard.press("Escape");
  await p.getByTestId("settings-dialog").waitFor({ state: "detached" });
}

beforeAll(async () => {
  relay = await startWranglerDev({ port: PORT, vars: EVERYONE_ONLINE });
  for (const name of ["alice", "bob"]) {
    users[name] = await launchUser(name, `${relay.url}/`);
    await onboard(page(name), name);
  }
  await seesOnline(page("alice"), "bob");
  await seesOnline(page("bob"), "alice");
  await openChat(page("alice"), "bob");
  await openChat(page("bob"), "alice");
});

afterAll(async () => {
  if (nova !== undefined) await detach(nova);
  for (const u of Object.values(users)) {
    await u.close();
    removeProfile(u.dir);
  }
  await relay?.stop();
});

describe("everyday messaging", () => {
  test("reply quotes, reactions show on both sides", async () => {
    const a = page("alice");
    const b = page("bob");
    await send(a, "lunch at noon?");
    await seesMessage(b, "lunch at noon?");
    await act(b, "lunch at noon?", "action-reply");
    await b.getByTestId("compose-mode").filter({ hasText: "Replying to alice" }).waitFor();
    await send(b, "yes, meet at the harbour");
    const reply = bubble(a, "meet at the harbour");
    await reply.waitFor({ timeout: 30_000 });
    expect(await reply.getByTestId("quote").innerText()).toContain("lunch at noon?");

    await act(a, "meet at the harbour", "react-👍");
    await bubble(b, "meet at the harbour")
      .getByTestId("reaction")
      .filter({ hasText: "👍" })
      .waitFor({ timeout: 30_000 });
    await shot(a, "messages-reply-react");
  });

  test("edit shows 'edited' and the earlier version on request", async () => {
    const a = page("alice");
    const b = page("bob");
    await act(a, "lunch at noon?", "action-edit");
    await a.getByTestId("compose-mode").filter({ hasText: "Editing" }).waitFor();
    expect(await a.getByTestId("composer").inputValue()).toBe("lunch at noon?");
    await a.getByTestId("composer").fill("lunch at one?");
    await a.getByTestId("composer").press("Enter");
    await seesMessage(b, "lunch at one?");
    const edited = bubble(b, "lunch at one?");
    await edited.getByTestId("edited").locator("summary").click();
    expect(await edited.getByTestId("versions").innerText()).toContain("lunch at noon?");
    // The quote in bob's reply follows the edit: it shows what this device now holds.
    expect(await bubble(b, "meet at the harbour").getByTestId("quote").innerText()).toContain(
      "lunch at one?",
    );
    await shot(b, "messages-edited");
  });

  test("typing shows while the other side types", async () => {
    const a = page("alice");
    const b = page("bob");
    await b.getByTestId("composer").fill("thinking…");
    await a.getByTestId("typing").filter({ hasText: "bob is typing" }).waitFor({ timeout: 30_000 });
    await shot(a, "messages-typing");
    await b.getByTestId("composer").fill("");
    await a.getByTestId("typing").filter({ hasText: /^$/ }).waitFor({ timeout: 30_000 });
  });

  test("read receipts: off by default, then on in both settings", async () => {
    const a = page("alice");
    const b = page("bob");
    await send(a, "receipt check one");
    await seesMessage(b, "receipt check one");
    await bubble(a, "receipt check one")
      .locator('[data-delivery="delivered"]')
      .waitFor({ timeout: 30_000 });
    await setPref(a, "pref-read-receipts", true);
    await setPref(b, "pref-read-receipts", true);
    await send(a, "receipt check two");
    await seesMessage(b, "receipt check two");
    await bubble(a, "receipt check two")
      .locator('[data-delivery="read"]')
      .waitFor({ timeout: 30_000 });
    // The first one was read before receipts were on: it stays "delivered".
    expect(
      await bubble(a, "receipt check one").locator("[data-delivery]").getAttribute("data-delivery"),
    ).toBe("delivered");
  });

  test("delete for everyone leaves a tombstone on both sides", async () => {
    const a = page("alice");
    const b = page("bob");
    await send(a, "oops, wrong chat");
    await seesMessage(b, "oops, wrong chat");
    await act(a, "oops, wrong chat", "action-delete-everyone");
    for (const p of [a, b]) {
      await p
        .locator('[data-testid="message-text"]', { hasText: "This message was deleted" })
        .waitFor({ timeout: 30_000 });
      expect(await p.locator('[data-testid="message-text"]', { hasText: "oops" }).count()).toBe(0);
    }
    await shot(b, "messages-deleted");
  });

  test("delete for me removes the message and its row on this device only", async () => {
    const a = page("alice");
    const b = page("bob");
    await send(a, "a note bob may tidy away");
    await seesMessage(b, "a note bob may tidy away");
    const key = (await bubble(b, "a note bob may tidy away").getAttribute("data-key")) ?? "";
    expect(await rowCount(b, key)).toBe(1);
    await act(b, "a note bob may tidy away", "action-delete-me");
    await b.getByTestId("confirm-dialog").waitFor();
    await shot(b, "messages-delete-for-me-confirm");
    await b.getByTestId("confirm-ok").click();
    await bubble(b, "a note bob may tidy away").waitFor({ state: "detached", timeout: 30_000 });
    expect(await rowCount(b, key)).toBe(0);
    // alice still has it: nothing was sent.
    expect(await bubble(a, "a note bob may tidy away").count()).toBe(1);
    await shot(b, "messages-deleted-for-me");
  });

  test("a disappearing timer set by one side removes messages and their rows on both", async () => {
    const a = page("alice");
    const b = page("bob");
    await b.getByTestId("open-conv-options").click();
    await b.getByTestId("timer-select").selectOption("30000");
    await b.keyboard.press("Escape");
    for (const [p, text] of [
      [a, "bob set messages to disappear after 30 seconds"],
      [b, "You set messages to disappear after 30 seconds"],
    ] as const) {
      await p.getByTestId("system-line").filter({ hasText: text }).waitFor({ timeout: 30_000 });
    }
    await shot(a, "messages-timer-line");
    await send(a, "this will self-destruct");
    await seesMessage(b, "this will self-destruct");
    await shot(b, "messages-disappearing");
    const keys = await Promise.all(
      [a, b].map((p) => bubble(p, "this will self-destruct").getAttribute("data-key")),
    );
    expect(await rowCount(a, keys[0] ?? "")).toBe(1);
    for (const p of [a, b]) {
      await bubble(p, "this will self-destruct").waitFor({ state: "detached", timeout: 60_000 });
    }
    expect(await rowCount(a, keys[0] ?? "")).toBe(0);
    expect(await rowCount(b, keys[1] ?? "")).toBe(0);
    // Off again (from the other side), so the rest of the story keeps its messages.
    await a.getByTestId("open-conv-options").click();
    await a.getByTestId("timer-select").selectOption("0");
    await a.keyboard.press("Escape");
    await b
      .getByTestId("system-line")
      .filter({ hasText: "alice turned off disappearing messages" })
      .waitFor({ timeout: 30_000 });
  }, 120_000);

  test("search finds a message in history and jumps to it", async () => {
    const a = page("alice");
    for (let i = 0; i < 12; i++) await send(a, `filler message ${i}`);
    await a.getByTestId("open-search").click();
    await a.getByTestId("search-input").fill("harbour");
    const hit = a.getByTestId("search-hit").filter({ hasText: "meet at the harbour" });
    await hit.waitFor({ timeout: 30_000 });
    await shot(a, "messages-search");
    await hit.click();
    const target = a.locator(".msg.focused", { hasText: "meet at the harbour" });
    await target.waitFor({ timeout: 30_000 });
    await expect.poll(() => target.isVisible()).toBe(true);
    const inView = await target.evaluate((el) => {
      const r = el.getBoundingClientRect();
      const log = el.closest(".log")?.getBoundingClientRect();
      return log !== undefined && r.top >= log.top && r.bottom <= log.bottom;
    });
    expect(inView).toBe(true);
    // The index at rest is sealed: the stored row holds no message word in the clear.
    const stored = await a.evaluate(
      () =>
        new Promise<string>((resolve) => {
          const open = indexedDB.open("parley");
          open.onsuccess = () => {
            const req = open.result
              .transaction("history")
              .objectStore("history")
              .get("search|index");
            req.onsuccess = () => {
              const ct = (req.result as { box: { ct: Uint8Array } } | undefined)?.box.ct;
              open.result.close();
              resolve(ct ? new TextDecoder("latin1").decode(ct) : "");
            };
          };
        }),
    );
    expect(stored.length).toBeGreaterThan(0);
    expect(stored).not.toContain("harbour");
  });

  test("mute and archive", async () => {
    const a = page("alice");
    const b = page("bob");
    await a.getByTestId("open-conv-options").click();
    await a.getByTestId("mute").check();
    await a.getByTestId("archive").check();
    await a.keyboard.press("Escape");
    await a.getByTestId("user-bob").waitFor({ state: "detached" });
    await a.getByTestId("archived").waitFor();
    await a.getByTestId("archived").locator("summary").click();
    await a.getByTestId("archived-bob").getByTestId("muted-mark").waitFor();
    // Muted: a new message does not bring it back out of the archive.
    await send(b, "are you still there?");
    await seesMessage(a, "are you still there?");
    expect(await a.getByTestId("user-bob").count()).toBe(0);
    await shot(a, "messages-archived");
    await a.getByTestId("open-conv-options").click();
    await a.getByTestId("archive").uncheck();
    await a.getByTestId("mute").uncheck();
    await a.keyboard.press("Escape");
    await a.getByTestId("user-bob").waitFor();
  });

  test("a newer client's message type shows as 'unsupported message'; the chat goes on", async () => {
    const b = page("bob");
    const origin = new URL(relay.url).origin;
    nova = await newWireUser({
      hub: "main",
      origin,
      name: "nova",
      identity: await ed25519KeyPairFromSeed(randomBytes(32)),
    });
    await attach(
      nova,
      new WebSocket(`${origin.replace(/^http/, "ws")}/ws?hub=main&user=nova`, {
        headers: { Origin: origin },
      }),
    );
    const n = nova;
    await n.client.startChat("bob");
    await until(() => status(n, "dm:bob") === "secure", "nova–bob secure", 60_000);
    const first = await n.client.sendText("dm:bob", "hello from a newer app");
    await asNewerClient(() =>
      n.client.sendAction("dm:bob", {
        t: "react",
        target: { id: first, from: "nova" },
        emoji: "🧪",
      }),
    );
    await n.client.sendText("dm:bob", "did the poll arrive?");
    await seesOnline(b, "nova");
    await openChat(b, "nova");
    await seesMessage(b, "did the poll arrive?");
    await b
      .locator('[data-testid="message-text"]', { hasText: "Unsupported message" })
      .waitFor({ timeout: 30_000 });
    expect(await b.locator('[data-testid="message"]').count()).toBe(3);
    await shot(b, "messages-unsupported");
    await b.setViewportSize({ width: 390, height: 844 });
    await shot(b, "messages-phone-unsupported");
    await b.setViewportSize({ width: 1280, height: 800 });
    await openChat(b, "alice");
  });

  test("at 390 px: the message menu and chat options fit the phone", async () => {
    const a = page("alice");
    await a.setViewportSize({ width: 390, height: 844 });
    await bubble(a, "meet at the harbour").scrollIntoViewIfNeeded();
    await bubble(a, "meet at the harbour").getByTestId("message-actions").click();
    const menu = a.getByTestId("message-menu");
    await menu.waitFor();
    const box = await menu.boundingBox();
    expect(box && box.x >= 0 && box.x + box.width <= 390).toBe(true);
    await shot(a, "messages-phone-menu");
    await a.keyboard.press("Escape");
    await menu.waitFor({ state: "detached" });
    await a.getByTestId("open-conv-options").click();
    await a.getByTestId("conv-options").waitFor();
    await shot(a, "messages-phone-options");
    expect(await a.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await a.keyboard.press("Escape");
    await a.getByTestId("open-search").click();
    await a.getByTestId("search-input").fill("lunch");
    await a.getByTestId("search-hit").first().waitFor();
    await shot(a, "messages-phone-search");
    expect(await a.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await a.keyboard.press("Escape");
    if (await a.getByTestId("search-dialog").isVisible()) await a.keyboard.press("Escape");
    await a.getByTestId("search-dialog").waitFor({ state: "detached" });
    // Each feature's look at phone width: reply with reaction, edit history, tombstone, timer line.
    await bubble(a, "meet at the harbour").scrollIntoViewIfNeeded();
    await shot(a, "messages-phone-reply-react");
    const edited = bubble(a, "lunch at one?");
    await edited.scrollIntoViewIfNeeded();
    await edited.getByTestId("edited").locator("summary").click();
    await edited.getByTestId("versions").waitFor();
    await shot(a, "messages-phone-edited");
    await a
      .locator('[data-testid="message-text"]', { hasText: "This message was deleted" })
      .first()
      .scrollIntoViewIfNeeded();
    await shot(a, "messages-phone-deleted");
    await a
      .getByTestId("system-line")
      .filter({ hasText: "set messages to disappear" })
      .first()
      .scrollIntoViewIfNeeded();
    await shot(a, "messages-phone-timer-line");
    expect(await a.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    const bad = Object.values(users).flatMap((u) =>
      u.errors.filter((e) => /Content Security Policy|Refused to|Uncaught/i.test(e)),
    );
    expect(bad).toEqual([]);
  });
});
