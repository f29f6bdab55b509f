/**
 * Closed groups in the PWA end to end (PROTOCOL.md §9.7): three Chromium profiles against a real
 * `wrangler dev`. alice creates the invite-only #club; carol, not invited, is refused; alice
 * invites bob from a 1:1 chat and bob joins from the invitation; carol joins with an invite link
 * (its secret only in the URL fragment); alice, the admin, removes carol, who reads nothing after.
 * Screenshots (desktop and 390 px) go to test-results/screenshots/.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { onboard, openChat, openGroup, seesMessage, seesOnline, send, shot } from "./ui";

const PORT = testPort(8796);
/** The people of these stories find each other in the online list: a hub whose users see
 * everyone online (PROTOCOL.md §6.3); that strangers see nothing is tested in relay-presence. */
const EVERYONE_ONLINE = { PRESENCE_EVERYONE_HUBS: "*" };
let relay: WranglerDev;
const users: Record<string, BrowserUser> = {};

function u(name: "alice" | "bob" | "carol"): BrowserUser {
  const x = users[name];
  if (!x) throw new Error(`${name} not launched`);
  return x;
}

beforeAll(async () => {
  relay = await startWranglerDev({ port: PORT, vars: EVERYONE_ONLINE });
  for (const name of ["alice", "bob", "carol"] as const) {
    users[name] = await launchUser(name, `${relay.url}/`);
  }
});

afterAll(async () => {
  for (const x of Object.values(users)) {
    await x.close();
    removeProfile(x.dir);
  }
  await relay?.stop();
});

describe("closed groups in the PWA", () => {
  test("alice creates an invite-only group", async () => {
    for (const name of ["alice", "bob", "carol"] as const) await onboard(u(name).page, name);
    const a = u("alice").page;
    await a.getByTestId("new-group").click();
    await a.getByTestId("new-group-name").fill("club");
    await a.getByTestId("new-group-title").fill("The Club");
    await shot(a, "desktop-new-group");
    expect(await a.getByTestId("policy-invite").isChecked()).toBe(true);
    await a.getByTestId("create-group").click();
    await openGroup(a, "club");
    await send(a, "club is open for business");
  }, 90_000);

  test("a stranger cannot get in without an invitation", async () => {
    const c = u("carol").page;
    await c.fill("#join-group", "club");
    await c.locator(".join-form button[type=submit]").click();
    await c
      .getByText(/That group is invite only/)
      .first()
      .waitFor({ timeout: 30_000 });
    await shot(c, "desktop-invite-required");
  }, 60_000);

  test("alice invites bob from a 1:1 chat; bob joins from the invitation", async () => {
    const a = u("alice").page;
    const b = u("bob").page;
    await seesOnline(a, "bob");
    await openChat(a, "bob");
    await send(a, "hi bob");
    await openChat(b, "alice");
    await seesMessage(b, "hi bob");
    await openGroup(a, "club");
    await a.getByRole("button", { name: "Members" }).click();
    await a.getByTestId("invite-who").selectOption("bob");
    await a.getByTestId("invite-send").click();
    await shot(a, "desktop-group-members-admin");
    await a.keyboard.press("Escape");
    await b.getByTestId("accept-invite-club").waitFor({ timeout: 30_000 });
    await shot(b, "desktop-invitation");
    await b.getByTestId("accept-invite-club").click();
    await openGroup(b, "club");
    await send(b, "thanks for the invite");
    await openGroup(a, "club");
    await seesMessage(a, "thanks for the invite");
  }, 120_000);

  test("carol joins with an invite link whose secret stays in the fragment", async () => {
    const a = u("alice").page;
    const c = u("carol").page;
    await a.getByRole("button", { name: "Members" }).click();
    await a.getByTestId("invite-link").click();
    const url = await a.getByTestId("invite-link-url").inputValue();
    expect(url).toMatch(/#\/join\/club\/[A-Za-z0-9_-]{43}$/);
    const secret = url.slice(url.lastIndexOf("/") + 1);
    await a.keyboard.press("Escape");
    await c.goto(url);
    await openGroup(c, "club");
    await send(c, "carol via link");
    await seesMessage(a, "carol via link");
    // the address bar no longer carries the secret, and no frame carried it to the relay
    expect(c.url()).not.toContain(secret);
    for (const x of Object.values(users)) {
      for (const f of x.framesSent) expect(f).not.toContain(secret);
    }
  }, 120_000);

  test("alice (admin) removes carol, who reads nothing after; members see roles", async () => {
    const a = u("alice").page;
    const b = u("bob").page;
    const c = u("carol").page;
    await a.getByRole("button", { name: "Members" }).click();
    await a.getByTestId("role-admin-alice").waitFor();
    await a.getByTestId("remove-carol").click();
    await a.keyboard.press("Escape");
    // carol is told she is out
    await c.getByText("You left").first().waitFor({ timeout: 30_000 });
    await send(a, "after carol");
    await seesMessage(b, "after carol");
    expect(
      await c.locator('[data-testid="message-text"]', { hasText: "after carol" }).count(),
    ).toBe(0);
    // bob, not an admin, sees the roles and no admin controls
    await b.getByRole("button", { name: "Members" }).click();
    await b.getByTestId("role-admin-alice").waitFor();
    expect(await b.getByTestId("remove-alice").count()).toBe(0);
    await shot(b, "desktop-group-members");
    await b.setViewportSize({ width: 390, height: 844 });
    await shot(b, "phone-group-members");
    expect(await b.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  }, 120_000);
});
