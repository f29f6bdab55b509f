/**
 * A lying relay, seen from the PWA (verification): after frank and gina have talked, the
 * relay starts announcing another identity key for gina (Playwright routes frank's WebSocket
 * through a rewriting proxy). Frank's screen must show the key-change banner, block sending, and
 * show a safety number that no longer matches gina's — never a silent new session.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { onboard, openChat, seesMessage, send, shot } from "./ui";

const PORT = testPort(8792);
let relay: WranglerDev;
let frank: BrowserUser;
let gina: BrowserUser;
/** While true, the proxy replaces gina's key in every presence frame sent to frank. */
let lying = false;
const FAKE_KEY = toB64u(randomBytes(32));

beforeAll(async () => {
  relay = await startWranglerDev({
    port: PORT,
    // Every hub shows everyone online (a hub default, PROTOCOL.md §6.3): these stories meet
    // strangers in the people list.
    vars: { PRESENCE_EVERYONE_HUBS: "*" },
  });
  frank = await launchUser("frank", `${relay.url}/`);
  gina = await launchUser("gina", `${relay.url}/`);
  await onboard(frank.page, "frank");
  await onboard(gina.page, "gina");
});

afterAll(async () => {
  for (const x of [frank, gina]) {
    await x?.close();
    if (x) removeProfile(x.dir);
  }
  await relay?.stop();
});

async function safetyNumber(user: BrowserUser, peer: string): Promise<string | null> {
  await openChat(user.page, peer);
  await user.page.getByTestId("open-verify").click();
  const el = user.page.getByTestId("safety-number");
  await el.waitFor();
  const n = await el.getAttribute("data-digits");
  await user.page.keyboard.press("Escape");
  return n;
}

describe("relay substitutes an identity key", () => {
  test("before: frank and gina talk and see the same safety number", async () => {
    await openChat(frank.page, "gina");
    await send(frank.page, "hello gina");
    await openChat(gina.page, "frank");
    await seesMessage(gina.page, "hello gina");
    expect(await safetyNumber(frank, "gina")).toBe(await safetyNumber(gina, "frank"));
  });

  test("while hidden, a message raises a notification that carries no text", async () => {
    await gina.context.grantPermissions(["notifications"], { origin: relay.url });
    const g = gina.page;
    // Headless pages are always "visible": make gina's look hidden, and record notifications.
    await g.evaluate(() => {
      Object.defineProperty(document, "visibilityState", {
        configurable: true,
        get: () => "hidden",
      });
      const seen: { title: string; body: string }[] = [];
      (window as unknown as { seenNotes: typeof seen }).seenNotes = seen;
      ServiceWorkerRegistration.prototype.showNotification = async (title, options) => {
        seen.push({ title, body: options?.body ?? "" });
      };
    });
    await g.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
    await send(frank.page, "notification canary: the key is under the mat");
    await g.waitForFunction(
      () => (window as unknown as { seenNotes: unknown[] }).seenNotes.length > 0,
      undefined,
      { timeout: 30_000 },
    );
    const notes = await g.evaluate(() => (window as unknown as { seenNotes: unknown[] }).seenNotes);
    expect(notes).toEqual([{ title: "Parley", body: "New message from frank" }]);
    // Hidden means unread: the badge counts it even though the chat is open.
    await g.getByTestId("user-frank").getByTestId("unread").waitFor();
  });

  test("after: key-change banner, sending blocked, safety numbers differ", async () => {
    // Every socket frank opens from now on goes through the proxy.
    await frank.context.routeWebSocket(/\/ws/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((m) => server.send(m));
      server.onMessage((m) => {
        if (!lying || typeof m !== "string") return ws.send(m);
        const frame = JSON.parse(m) as {
          t: string;
          users?: { username: string; identityKey: string }[];
          online?: { username: string; identityKey: string }[];
        };
        // Every presence frame lies about gina: the snapshot, and the deltas after it (on users'
        // routes the "everyone" list arrives as a delta once the lobby answers, §4.1).
        const listed =
          frame.t === "presence" ? frame.users : frame.t === "presence_delta" ? frame.online : [];
        for (const u of listed ?? []) if (u.username === "gina") u.identityKey = FAKE_KEY;
        ws.send(JSON.stringify(frame));
      });
    });
    lying = true;
    await frank.page.reload();
    const p = frank.page;
    await p.getByTestId("my-username").filter({ hasText: "frank" }).waitFor({ timeout: 30_000 });
    await openChat(p, "gina");
    await p.getByTestId("key-change-banner").waitFor({ timeout: 30_000 });
    await p.getByTestId("chat-status").filter({ hasText: "Key changed" }).waitFor();
    expect(await p.getByTestId("composer").isDisabled()).toBe(true);
    expect(await p.getByTestId("send").isDisabled()).toBe(true);
    await p.getByText("gina's safety number changed").first().waitFor();
    // The sidebar marks gina too, for anyone not looking at this chat.
    const mark = p.getByTestId("user-gina").getByTestId("key-changed-mark");
    await mark.waitFor();
    expect(await mark.getAttribute("aria-label")).toBe("safety number changed");
    await shot(p, "desktop-key-changed");
    const seenByFrank = await safetyNumber(frank, "gina");
    const seenByGina = await safetyNumber(gina, "frank");
    expect(seenByFrank).toMatch(/^\d{60}$/);
    expect(seenByFrank).not.toBe(seenByGina);
  });

  test("accepting the new key is an explicit act: the banner goes, sending is allowed again", async () => {
    const p = frank.page;
    await openChat(p, "gina");
    await p.getByTestId("accept-key").click();
    await p.getByTestId("key-change-banner").waitFor({ state: "detached", timeout: 30_000 });
    await p.waitForFunction(
      () => !(document.querySelector('[data-testid="composer"]') as HTMLTextAreaElement).disabled,
      undefined,
      { timeout: 30_000 },
    );
    await p.getByTestId("chat-status").filter({ hasNotText: "Key changed" }).waitFor();
  });
});
