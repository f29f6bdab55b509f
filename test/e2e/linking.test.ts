/**
 * Linked devices in Chromium (PROTOCOL.md §4.6–§4.9), four profiles against a real `wrangler
 * dev`: alice's laptop (desktop), alice's phone (390 px), bob and carol. alice runs the
 * invite-only #crew with bob and carol. The laptop links the phone by the typed code, after a
 * confirm dialog naming it and choosing how much history goes along; the phone connects as a
 * linked device with alice's identity, her verified contact bob, their earlier messages and her
 * groups, which it joins as its own member (§4.7). Both list the two devices; alice writes to bob
 * and to #crew from the phone, the laptop shows both as sent, and the answers reach both devices;
 * carol sees alice as one person on two devices. Then the laptop removes the phone, which is
 * told at once, and #crew goes on without it. Screenshots go to test-results/screenshots/linking-*.png.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type BrowserUser, launchUser } from "../support/browser";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import {
  closeUsers,
  onboard,
  openChat,
  openGroup,
  seesMessage,
  seesOnline,
  send,
  shot,
  withStandInScanner,
} from "./ui";

const PORT = testPort(8826);
const EVERYONE_ONLINE = { PRESENCE_EVERYONE_HUBS: "*" };
let relay: WranglerDev;
let laptop: BrowserUser;
let phone: BrowserUser;
let bob: BrowserUser;
let carol: BrowserUser;
let tablet: BrowserUser | undefined;

beforeAll(async () => {
  relay = await startWranglerDev({ port: PORT, vars: EVERYONE_ONLINE });
  const url = `${relay.url}/`;
  laptop = await launchUser("alice-laptop", url);
  bob = await launchUser("bob", url);
  await onboard(laptop.page, "alice");
  await onboard(bob.page, "bob");
  // alice talks to bob and verifies him: the pin and its verified flag go to the phone.
  await seesOnline(laptop.page, "bob");
  await openChat(laptop.page, "bob");
  await send(laptop.page, "hello from the laptop");
  await seesOnline(bob.page, "alice");
  await openChat(bob.page, "alice");
  await seesMessage(bob.page, "hello from the laptop");
  await laptop.page.getByTestId("open-verify").click();
  await laptop.page.getByTestId("mark-verified").click();
  await laptop.page.getByTestId("verified-note").waitFor();
  await laptop.page.keyboard.press("Escape");
  // alice's invite-only #crew: bob and carol come in by her invitations (§9.7.3).
  carol = await launchUser("carol", url);
  await onboard(carol.page, "carol");
  const l = laptop.page;
  await l.getByTestId("new-group").click();
  await l.getByTestId("new-group-name").fill("crew");
  await l.getByTestId("create-group").click();
  await openGroup(l, "crew");
  await send(l, "crew starts here");
  await seesOnline(l, "carol");
  await openChat(l, "carol");
  await send(l, "hi carol");
  for (const [who, page] of [
    ["bob", bob.page],
    ["carol", carol.page],
  ] as const) {
    await openGroup(l, "crew");
    await l.getByRole("button", { name: "Members" }).click();
    await l.getByTestId("invite-who").selectOption(who);
    await l.getByTestId("invite-send").click();
    await l.keyboard.press("Escape");
    await openChat(page, "alice");
    // carol has not written to alice yet: the chat is a message request she accepts first.
    if (who === "carol") await page.getByTestId("accept-request").click();
    await page.getByTestId("accept-invite-crew").waitFor({ timeout: 30_000 });
    await page.getByTestId("accept-invite-crew").click();
    await openGroup(page, "crew");
    await send(page, `${who} is in`);
  }
  await openGroup(l, "crew");
  await seesMessage(l, "carol is in");
  phone = await launchUser("alice-phone", url, { viewport: { width: 390, height: 844 } });
}, 240_000);

afterAll(async () => {
  await closeUsers([laptop, phone, bob, carol, tablet]);
  await relay?.stop();
});

describe("linking a phone to alice's laptop", () => {
  test("the laptop links the phone by its typed code; the phone is alice with bob verified", async () => {
    const p = phone.page;
    await p.getByTestId("link-box").locator("summary").click();
    await shot(p, "linking-phone-onboarding");
    await p.getByTestId("link-device-name").fill("phone");
    await p.getByTestId("link-start").click();
    const codeEl = p.getByTestId("link-code");
    await codeEl.waitFor({ timeout: 30_000 });
    const code = ((await codeEl.textContent()) ?? "").trim();
    expect(code).toMatch(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){4}$/);
    await p.locator("svg.qr").waitFor();
    await shot(p, "linking-phone-code");

    const l = laptop.page;
    await l.getByTestId("open-settings").click();
    const devices = l.getByTestId("devices");
    await devices.waitFor();
    // This Chromium has no BarcodeDetector: no promise of scanning, typing it is.
    expect(await l.getByTestId("link-scan").count()).toBe(0);
    // A mistyped code: refused before anything is signed, and said so.
    const wrong = `${code.slice(0, -1)}${code.endsWith("0") ? "1" : "0"}`;
    await l.getByTestId("link-code-input").fill(wrong);
    await l.getByTestId("link-check").click();
    await l
      .getByTestId("devices-error")
      .filter({ hasText: "does not match" })
      .waitFor({ timeout: 30_000 });
    // The right code, typed in lower case with spaces (the reader ignores both).
    // By keyboard: Enter in the field sends it, the dialog's field has the focus, Tab reaches
    // "Link device" and Enter presses it.
    await l.getByTestId("link-code-input").fill(code.toLowerCase().replaceAll("-", " "));
    await l.getByTestId("link-code-input").press("Enter");
    const confirm = l.getByTestId("link-confirm");
    await confirm.waitFor({ timeout: 30_000 });
    expect(await confirm.textContent()).toContain("“phone” asks to join your account.");
    await l.getByTestId("this-device-name").fill("laptop");
    await shot(l, "linking-laptop-confirm");
    expect(
      await l.evaluate(() => document.activeElement?.getAttribute("data-testid") ?? null),
    ).toBe("this-device-name");
    // Then how much history goes along (§4.8.5): a month by default, and "all" chosen here.
    await l.keyboard.press("Tab");
    expect(
      await l.evaluate(() => document.activeElement?.getAttribute("data-testid") ?? null),
    ).toBe("link-history");
    expect(await l.getByTestId("link-history").inputValue()).toBe("month");
    await l.getByTestId("link-history").selectOption("all");
    await l.keyboard.press("Tab");
    expect(
      await l.evaluate(() => document.activeElement?.getAttribute("data-testid") ?? null),
    ).toBe("link-approve");
    await l.keyboard.press("Enter");
    await l.getByTestId("devices-note").waitFor({ timeout: 30_000 });

    // The phone makes its store from the transfer and connects as alice.
    await p.getByTestId("my-username").filter({ hasText: "alice" }).waitFor({ timeout: 60_000 });
    // bob's key came pinned and verified with the transfer: the phone says so at once.
    await p.getByTestId("new-chat").click();
    await p.getByTestId("new-chat-dialog").waitFor();
    await p.fill("#new-chat-name", "bob");
    await p.getByTestId("new-chat-open").click();
    await p.getByTestId("conv-title").filter({ hasText: "bob" }).waitFor();
    // The conversation's earlier messages came with the encrypted history archive.
    await seesMessage(p, "hello from the laptop");
    await p.getByTestId("open-verify").click();
    await p.getByTestId("verified-note").waitFor({ timeout: 30_000 });
    await shot(p, "linking-phone-bob-verified");
    await p.keyboard.press("Escape");

    // The laptop lists both devices, itself marked.
    const rows = devices.getByTestId("device-row");
    await expect.poll(() => rows.count(), { timeout: 30_000 }).toBe(2);
    const laptopRow = rows.filter({ hasText: "laptop" });
    await laptopRow.getByTestId("this-device").waitFor();
    expect(await rows.filter({ hasText: "phone" }).getByTestId("this-device").count()).toBe(0);
    await shot(l, "linking-laptop-devices");

    // So does the phone, marking itself.
    await p.getByTestId("open-settings").click();
    const phoneRows = p.getByTestId("devices").getByTestId("device-row");
    await expect.poll(() => phoneRows.count(), { timeout: 30_000 }).toBe(2);
    await phoneRows.filter({ hasText: "phone" }).getByTestId("this-device").waitFor();
    await p.getByTestId("devices").scrollIntoViewIfNeeded();
    await shot(p, "linking-phone-devices");
    await p.keyboard.press("Escape");
    // Both devices of alice are connected at once: the laptop was not replaced.
    expect(await l.getByTestId("retired-banner").count()).toBe(0);
  }, 180_000);

  test("alice chats from the phone: bob reads it, the laptop shows it as sent, bob's answer reaches both", async () => {
    const p = phone.page;
    const l = laptop.page;
    // The phone (390 px) still shows the chat with bob it opened after linking.
    await p.getByTestId("conv-title").filter({ hasText: "bob" }).waitFor();
    await send(p, "hello bob, from my phone");
    await openChat(bob.page, "alice");
    await seesMessage(bob.page, "hello bob, from my phone");
    // Sent-sync (PROTOCOL §4.9): the laptop shows what the phone sent, as alice's own.
    await l.keyboard.press("Escape");
    await openChat(l, "bob");
    await seesMessage(l, "hello bob, from my phone");
    expect(
      await l.locator("li.msg.out", { hasText: "hello bob, from my phone" }).count(),
    ).toBeGreaterThan(0);
    // bob's answer goes to each of alice's devices, each on its own session.
    await send(bob.page, "got it on both?");
    await seesMessage(p, "got it on both?");
    await seesMessage(l, "got it on both?");
    await shot(p, "linking-phone-chat");
    await shot(l, "linking-laptop-chat");
  }, 120_000);

  test("the phone is in #crew as its own device: carol reads it, the laptop shows it as sent", async () => {
    const p = phone.page;
    const l = laptop.page;
    const c = carol.page;
    // The phone joined alice's group at its first connection; a member added it without an
    // invitation, since it is a device of alice (§9.7.2). At 390 px the list is a step back.
    await p.getByRole("button", { name: "Back to conversations" }).click();
    await openGroup(p, "crew");
    await send(p, "crew, from my phone");
    await openGroup(c, "crew");
    await seesMessage(c, "crew, from my phone");
    await openGroup(l, "crew");
    await seesMessage(l, "crew, from my phone");
    expect(await l.locator("li.msg.out", { hasText: "crew, from my phone" }).count()).toBe(1);
    await send(c, "hello to both of alice's devices");
    await seesMessage(p, "hello to both of alice's devices");
    await seesMessage(l, "hello to both of alice's devices");
    // carol sees one person on two devices, not two members.
    await c.getByRole("button", { name: "Members" }).click();
    const dialog = c.getByTestId("members-dialog");
    await dialog.waitFor();
    const aliceRow = dialog.locator("li", { hasText: "alice" });
    await expect
      .poll(async () => (await aliceRow.getByTestId("member-devices").textContent())?.trim(), {
        timeout: 30_000,
      })
      .toBe("2 devices");
    expect(await dialog.locator("ul.roster > li").count()).toBe(3);
    await shot(c, "linking-carol-members");
    await c.keyboard.press("Escape");
    // Leaving is the person's: the laptop's confirm says the phone leaves too (§4.7).
    await l.getByTestId("conv-leave").click();
    await l.getByTestId("leave-all-devices").waitFor();
    await l.keyboard.press("Escape");
    expect(await c.getByTestId("leave-all-devices").count()).toBe(0);
    await shot(p, "linking-phone-group");
    // Back to Settings → Devices for the removal.
    await l.getByTestId("open-settings").click();
    await l.getByTestId("devices").waitFor();
  }, 120_000);

  test("the laptop removes the phone after a confirm; the phone is told", async () => {
    const l = laptop.page;
    const phoneRow = l.getByTestId("device-row").filter({ hasText: "phone" });
    await phoneRow.getByTestId("device-remove").click();
    const confirm = l.getByTestId("remove-confirm");
    await confirm.waitFor();
    expect(await confirm.textContent()).toContain("Remove phone?");
    await l.getByTestId("remove-approve").click();
    await expect.poll(() => l.getByTestId("device-row").count(), { timeout: 30_000 }).toBe(1);
    await phone.page.getByTestId("removed-banner").waitFor({ timeout: 30_000 });
    await shot(phone.page, "linking-phone-removed");
    await shot(l, "linking-laptop-removed");
    // #crew goes on without the phone: its removal is committed, and what carol writes next
    // reaches the laptop, never the phone.
    await l.keyboard.press("Escape");
    await openGroup(l, "crew");
    await l
      .getByTestId("system-line")
      .filter({ hasText: "your removed device left" })
      .first()
      .waitFor({ timeout: 30_000 });
    await send(carol.page, "after the phone was removed");
    await seesMessage(l, "after the phone was removed");
    expect(
      await phone.page
        .locator('[data-testid="message-text"]', {
          hasText: "after the phone was removed",
        })
        .count(),
    ).toBe(0);
  }, 120_000);

  test("with BarcodeDetector the laptop links a tablet by scanning its code", async () => {
    await withStandInScanner(laptop.context);
    const l = laptop.page;
    await l.reload();
    await l.getByTestId("my-username").filter({ hasText: "alice" }).waitFor({ timeout: 30_000 });
    tablet = await launchUser("alice-tablet", `${relay.url}/`);
    const t = tablet.page;
    await t.getByTestId("link-box").locator("summary").click();
    await t.getByTestId("link-device-name").fill("tablet");
    await t.getByTestId("link-start").click();
    const code = ((await t.getByTestId("link-code").textContent({ timeout: 30_000 })) ?? "").trim();

    await l.getByTestId("open-settings").click();
    await l.getByTestId("devices").waitFor();
    // Another QR code in view first (a safety number): ignored, the camera keeps looking.
    await l.evaluate(() => {
      (window as unknown as { scanPayload: string }).scanPayload =
        `parley-safety-number:v1:${"1".repeat(60)}`;
    });
    await l.getByTestId("link-scan").click();
    await l.locator(".scanner-video").waitFor();
    expect(await l.getByTestId("link-confirm").count()).toBe(0);
    await l.evaluate((c) => {
      (window as unknown as { scanPayload: string }).scanPayload = c;
    }, code);
    const confirm = l.getByTestId("link-confirm");
    await confirm.waitFor({ timeout: 30_000 });
    expect(await confirm.textContent()).toContain("“tablet” asks to join your account.");
    // The list exists already: this device keeps the name it has there.
    expect(await l.getByTestId("this-device-name").count()).toBe(0);
    await l.getByTestId("link-approve").click();
    await t.getByTestId("my-username").filter({ hasText: "alice" }).waitFor({ timeout: 60_000 });
    const rows = l.getByTestId("device-row");
    await expect
      .poll(
        async () =>
          (await rows.locator(".device-name").allInnerTexts()).map((x) => x.trim()).sort(),
        { timeout: 30_000 },
      )
      .toEqual(["laptop", "tablet"]);
    await shot(l, "linking-laptop-scanned");
  }, 180_000);
});
