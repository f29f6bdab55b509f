/**
 * Notifications while Parley is closed (PROTOCOL.md §7.9, §12.7), in Chromium against a real
 * `wrangler dev`: with no page of the app open, a push is delivered to bob's service worker
 * (CDP `ServiceWorker.deliverPushMessage` — headless Chromium has no push service to subscribe
 * to offline; the relay's own pushes are tested against a local push service in
 * test/node/relay-push.test.ts). The worker takes the Web Lock, fetches and decrypts alice's
 * message itself and shows it as bob's setting says; the notification is read back through
 * `registration.getNotifications()` from a page of the same origin that is not the app
 * (`/robots.txt`). Last, the page's own subscription (made with a PushManager that hands out a
 * subscription of a local push service) is registered with the relay, whose real push then
 * reaches that service, VAPID-verified and decrypted.
 */
import type { Worker } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { LOCK_NAME } from "../../pwa/src/platform/tab-lock";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { PushService, type TestSubscription, testVapidKeys } from "../support/push-service";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { onboard, openChat, seesMessage, send, shot } from "./ui";

const PORT = testPort(8810);
let relay: WranglerDev;
let alice: BrowserUser;
let bob: BrowserUser;
let registrationId = "";
/** The service worker's console (its push outcomes, its warnings), shown when a wait fails. */
const swLog: string[] = [];
/** A local push service: the relay's real pushes for bob's page-registered subscription. */
let service: PushService;
let pushSub: TestSubscription;
const vapid = testVapidKeys();

interface Shown {
  title: string;
  body: string;
  tag: string;
}

beforeAll(async () => {
  service = await PushService.start();
  pushSub = service.subscribe();
  relay = await startWranglerDev({
    port: PORT,
    vars: {
      VAPID_PUBLIC_KEY: vapid.publicKey,
      VAPID_PRIVATE_KEY: vapid.privateKey,
      VAPID_SUBJECT: "mailto:ops@parley.test",
      PUSH_ALLOW_LOOPBACK: "1",
      PRESENCE_EVERYONE_HUBS: "*",
    },
  });
  alice = await launchUser("alice", `${relay.url}/`);
  bob = await launchUser("bob", `${relay.url}/`);
  await onboard(alice.page, "alice");
  await onboard(bob.page, "bob");
  await bob.context.grantPermissions(["notifications"], { origin: relay.url });
  await bob.page.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, {
    timeout: 30_000,
  });
  // The worker's registration id, for CDP's push delivery.
  const found = new Promise<string>((resolve) => {
    bob.cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => {
      for (const r of e.registrations) {
        if (r.scopeURL === `${relay.url}/` && !r.isDeleted) resolve(r.registrationId);
      }
    });
  });
  await bob.cdp.send("ServiceWorker.enable");
  registrationId = await found;
  const hook = (w: Worker) => w.on("console", (m) => swLog.push(`${Date.now()} ${m.text()}`));
  for (const w of bob.context.serviceWorkers()) hook(w);
  bob.context.on("serviceworker", hook);
});

afterAll(async () => {
  for (const x of [alice, bob]) {
    await x?.close();
    if (x) removeProfile(x.dir);
  }
  await relay?.stop();
  await service?.stop();
});

/** A same-origin page that is not the app, to read the worker's notifications from. */
async function notifications(): Promise<Shown[]> {
  const probe = await bob.context.newPage();
  try {
    await probe.goto(`${relay.url}/robots.txt`);
    return await probe.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration();
      const list = (await reg?.getNotifications()) ?? [];
      return list.map((n) => ({ title: n.title, body: n.body, tag: n.tag }));
    });
  } finally {
    await probe.close();
  }
}

async function clearNotifications(): Promise<void> {
  const probe = await bob.context.newPage();
  try {
    await probe.goto(`${relay.url}/robots.txt`);
    await probe.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration();
      for (const n of (await reg?.getNotifications()) ?? []) n.close();
    });
  } finally {
    await probe.close();
  }
}

async function waitForNotifications(): Promise<Shown[]> {
  for (let i = 0; i < 120; i++) {
    const shown = await notifications();
    if (shown.length > 0) return shown;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`no notification appeared; sw log:\n${swLog.join("\n")}`);
}

async function push(): Promise<void> {
  await bob.cdp.send("ServiceWorker.deliverPushMessage", {
    origin: relay.url,
    registrationId,
    data: '{"v":1,"t":"wake"}',
  });
}

/**
 * Bob closes Parley: his only app page leaves for about:blank (socket and Web Lock go with it).
 * The lock is let go a moment after the page goes: until then the worker leaves the push to the
 * app's tab (push-receive.ts), so wait for it, as a real push comes long after a tab closed.
 */
async function closeApp(): Promise<void> {
  await bob.page.goto("about:blank");
  const probe = await bob.context.newPage();
  try {
    await probe.goto(`${relay.url}/robots.txt`);
    await probe.waitForFunction(
      async (name) => !(await navigator.locks.query()).held?.some((l) => l.name === name),
      LOCK_NAME,
      { timeout: 30_000, polling: 100 },
    );
  } finally {
    await probe.close();
  }
}

async function openApp(): Promise<void> {
  await bob.page.goto(`${relay.url}/`);
  await bob.page.getByTestId("my-username").filter({ hasText: "bob" }).waitFor({ timeout: 30_000 });
}

async function chooseContent(choice: "full" | "name" | "none"): Promise<void> {
  await bob.page.getByTestId("open-settings").click();
  await bob.page.getByTestId(`notify-${choice}`).check();
  await bob.page.keyboard.press("Escape");
}

/** Alice sends `text` and waits until the relay accepted it (stored for offline bob). */
async function aliceSends(text: string): Promise<void> {
  await send(alice.page, text);
  await alice.page
    .locator('[data-testid="message"]', { hasText: text })
    .locator('[data-delivery="sent"], [data-delivery="delivered"]')
    .first()
    .waitFor({ timeout: 30_000 });
}

describe("notifications while Parley is closed", () => {
  test("bob's worker fetches and decrypts alice's message and shows sender and text", async () => {
    await openChat(alice.page, "bob");
    await send(alice.page, "hello bob");
    await openChat(bob.page, "alice");
    await seesMessage(bob.page, "hello bob");
    await send(bob.page, "hello alice");
    await seesMessage(alice.page, "hello alice");
    await chooseContent("full");
    await closeApp();
    await aliceSends("push canary: lunch at noon");
    await push();
    const shown = await waitForNotifications();
    expect(shown).toEqual([
      { title: "alice", body: "push canary: lunch at noon", tag: "dm:alice" },
    ]);
  });

  test("after reopening, the message is in bob's history exactly once", async () => {
    await openApp();
    await openChat(bob.page, "alice");
    await seesMessage(bob.page, "push canary: lunch at noon");
    await bob.page.getByTestId("chat-status").waitFor();
    // Online again: anything the relay still held would have arrived by now behind `welcome`.
    await send(bob.page, "back online");
    await seesMessage(alice.page, "back online");
    const texts = await bob.page.locator('[data-testid="message-text"]').allInnerTexts();
    expect(texts.filter((t) => t === "push canary: lunch at noon")).toHaveLength(1);
    await shot(bob.page, "push-reopened");
  });

  test('setting "nothing": the notification shows no name and no text', async () => {
    await chooseContent("none");
    await clearNotifications();
    await closeApp();
    await aliceSends("push canary two: the door code is 4711");
    await push();
    const shown = await waitForNotifications();
    expect(shown).toEqual([{ title: "Parley", body: "New message", tag: "parley" }]);
    for (const n of shown) expect(`${n.title} ${n.body}`).not.toMatch(/alice|4711|door/);
    await openApp();
    await openChat(bob.page, "alice");
    await seesMessage(bob.page, "push canary two: the door code is 4711");
  });

  test("a focused tab of the app suppresses the notification", async () => {
    await clearNotifications();
    await bob.page.bringToFront();
    await bob.page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { pushOutcomes: string[] }).pushOutcomes = seen;
      navigator.serviceWorker.addEventListener("message", (e) => {
        const d = e.data as { type?: string; outcome?: string };
        if (d.type === "parley-push-done" && d.outcome) seen.push(d.outcome);
      });
    });
    await push();
    await bob.page.waitForFunction(
      () => (window as unknown as { pushOutcomes: string[] }).pushOutcomes.length > 0,
      undefined,
      { timeout: 30_000 },
    );
    const outcomes = await bob.page.evaluate(
      () => (window as unknown as { pushOutcomes: string[] }).pushOutcomes,
    );
    expect(outcomes).toEqual(["focused"]);
    expect(await notifications()).toEqual([]);
  });

  test("a notification's click target opens its conversation (the app was closed)", async () => {
    // notificationclick opens `/?open=<conversation>` when no window of the app is open.
    await bob.page.goto(`${relay.url}/?open=${encodeURIComponent("dm:alice")}`);
    await bob.page
      .getByTestId("conv-title")
      .filter({ hasText: "alice" })
      .waitFor({ timeout: 30_000 });
    expect(new URL(bob.page.url()).search).toBe("");
  });

  test('with the passphrase lock on, the worker cannot open the keys: "New message" only', async () => {
    await chooseContent("full");
    const p = bob.page;
    await p.getByTestId("open-settings").click();
    await p.fill("#lock-pass", "bob's long passphrase");
    await p.fill("#lock-pass2", "bob's long passphrase");
    await p.getByTestId("lock-on").click();
    await p.getByText("Lock is on.").waitFor({ timeout: 30_000 });
    await p.keyboard.press("Escape");
    await clearNotifications();
    await closeApp();
    await aliceSends("push canary three: sealed");
    await push();
    const shown = await waitForNotifications();
    expect(shown).toEqual([{ title: "Parley", body: "New message", tag: "parley" }]);
    // The message waits on the relay until bob unlocks.
    await p.goto(`${relay.url}/`);
    await p.fill("#unlock-pass", "bob's long passphrase");
    await p.getByTestId("unlock").click();
    await openChat(p, "alice");
    await seesMessage(p, "push canary three: sealed");
  });
});

describe("the page keeps its push subscription registered", () => {
  test("with permission, bob's page subscribes with the relay's key and the relay's pushes reach the push service", async () => {
    // Headless Chromium cannot reach a browser push service offline: bob's PushManager hands out
    // a subscription of the local push service instead (endpoint and keys made in Node).
    await bob.context.addInitScript(
      (sub: { endpoint: string; p256dh: string; auth: string }) => {
        let current: unknown = null;
        PushManager.prototype.getSubscription = async () => current as PushSubscription | null;
        PushManager.prototype.subscribe = async (opts?: PushSubscriptionOptionsInit) => {
          const key = opts?.applicationServerKey as Uint8Array;
          current = {
            endpoint: sub.endpoint,
            options: { applicationServerKey: key.slice().buffer },
            toJSON: () => ({
              endpoint: sub.endpoint,
              keys: { p256dh: sub.p256dh, auth: sub.auth },
            }),
            unsubscribe: async () => {
              current = null;
              return true;
            },
          };
          return current as PushSubscription;
        };
      },
      { endpoint: pushSub.endpoint, p256dh: pushSub.keys.p256dh, auth: pushSub.keys.auth },
    );
    // The passphrase lock is still on from the test before: unlock, as the user would.
    await bob.page.goto(`${relay.url}/`);
    await bob.page.fill("#unlock-pass", "bob's long passphrase");
    await bob.page.getByTestId("unlock").click();
    await bob.page
      .getByTestId("my-username")
      .filter({ hasText: "bob" })
      .waitFor({ timeout: 30_000 });
    // After `welcome` the page registers the subscription on its socket (sent before it closes).
    for (let i = 0; i < 120 && !bob.framesSent.some((f) => f.includes('"push_subscribe"')); i++) {
      await new Promise((r) => setTimeout(r, 250));
    }
    const frame = bob.framesSent.find((f) => f.includes('"push_subscribe"')) ?? "";
    expect(JSON.parse(frame)).toMatchObject({
      t: "push_subscribe",
      endpoint: pushSub.endpoint,
      keys: pushSub.keys,
      vapidKey: vapid.publicKey,
    });
    await closeApp();
    await aliceSends("push canary four: through the push service");
    for (let i = 0; i < 120 && service.pushesTo(pushSub).length === 0; i++) {
      await new Promise((r) => setTimeout(r, 250));
    }
    const got = service.pushesTo(pushSub);
    expect(service.failures).toEqual([]);
    expect(got.length).toBeGreaterThanOrEqual(1);
    expect(got[0]?.vapidKey).toBe(vapid.publicKey);
    expect(got[0]?.plaintext).toBe('{"v":1,"t":"wake"}');
    expect(got[0]?.plaintext).not.toMatch(/alice|canary/);
  });
});
