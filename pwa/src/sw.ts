/**
 * Parley's service worker (PROTOCOL.md §12.7): precaches the app shell and answers navigations
 * with it (offline start), and shows notifications for Web Pushes while the app is closed
 * (platform/push-receive.ts). vite-plugin-pwa builds it (injectManifest) and fills in the
 * precache manifest.
 *
 * The worker-only types (ServiceWorkerGlobalScope, PushEvent, …) are described here as far as
 * they are used, so the PWA keeps one TypeScript configuration (DOM).
 */
import { clientsClaim } from "workbox-core";
import {
  cleanupOutdatedCaches,
  createHandlerBoundToURL,
  precacheAndRoute,
} from "workbox-precaching";
import { NavigationRoute, registerRoute } from "workbox-routing";
import type { NotificationSpec } from "./platform/push";
import { handlePush, type PushOutcome } from "./platform/push-receive";

interface ExtendableEventLike extends Event {
  waitUntil(p: Promise<unknown>): void;
}
interface NotificationClickLike extends ExtendableEventLike {
  notification: Notification;
}
interface WindowClientLike {
  url: string;
  focused: boolean;
  focus(): Promise<unknown>;
  postMessage(m: unknown): void;
}
interface ServiceWorkerScope {
  __WB_MANIFEST: Array<{ url: string; revision: string | null }>;
  location: { protocol: string; host: string; origin: string };
  registration: ServiceWorkerRegistration;
  clients: {
    matchAll(o: { type: "window"; includeUncontrolled: boolean }): Promise<WindowClientLike[]>;
    openWindow(url: string): Promise<unknown>;
  };
  skipWaiting(): Promise<void>;
  addEventListener(type: "push", h: (e: ExtendableEventLike) => void): void;
  addEventListener(type: "notificationclick", h: (e: NotificationClickLike) => void): void;
  addEventListener(type: "message", h: (e: MessageEvent) => void): void;
}

// Module scope: this `self` is the worker's global (the precache manifest is injected at the
// literal `self.__WB_MANIFEST`).
declare const self: ServiceWorkerScope;
const sw = self;

/** A path naming a file (robots.txt, an icon): not the app, even on our origin. */
const FILE_PATH = /\/[^/]+\.[A-Za-z0-9]+$/;

precacheAndRoute(self.__WB_MANIFEST);
cleanupOutdatedCaches();
// The relay endpoints are never served from cache, and a file that is not there (robots.txt, a
// stale /assets/ name) is the network's 404, not the app (worker/http.ts).
registerRoute(
  new NavigationRoute(createHandlerBoundToURL("index.html"), {
    denylist: [/^\/ws/, /^\/health/, /^\/push\//, /^\/assets\//, FILE_PATH],
  }),
);
// The first worker takes control of the open page at once (so the app works offline from the
// first visit); later versions wait for the user's "Reload" (registerType "prompt"), which
// posts SKIP_WAITING.
clientsClaim();
sw.addEventListener("message", (e) => {
  if ((e.data as { type?: unknown } | null)?.type === "SKIP_WAITING") void sw.skipWaiting();
});

/** The app's open windows (pages of our origin showing the app, not a file). */
async function windows(): Promise<WindowClientLike[]> {
  const all = await sw.clients.matchAll({ type: "window", includeUncontrolled: true });
  return all.filter((w) => !FILE_PATH.test(new URL(w.url).pathname));
}

async function show(n: NotificationSpec): Promise<void> {
  await sw.registration.showNotification(n.title, {
    body: n.body,
    tag: n.tag,
    icon: "/icons/icon-192.png",
    data: { conversationId: n.conversationId },
  });
}

/** The last push's outcome, for the app's windows (and the end-to-end tests) to observe. */
async function report(outcome: PushOutcome): Promise<void> {
  // One word, no content: what a developer (or a failing end-to-end test) reads to see why a
  // push showed nothing.
  console.info("push:", outcome);
  for (const w of await windows()) w.postMessage({ type: "parley-push-done", outcome });
}

sw.addEventListener("push", (e) => {
  e.waitUntil(
    handlePush({ windows, show, location: sw.location }).then((outcome) => report(outcome)),
  );
});

sw.addEventListener("notificationclick", (e) => {
  e.notification.close();
  const data = e.notification.data as { conversationId?: unknown } | null;
  const conv = typeof data?.conversationId === "string" ? data.conversationId : "";
  const url = conv === "" ? "/" : `/?open=${encodeURIComponent(conv)}`;
  e.waitUntil(
    (async () => {
      const open = await windows();
      const w = open[0];
      if (w !== undefined) {
        // The app is open (in the background): bring it forward on that conversation.
        w.postMessage({ type: "parley-open", conversationId: conv });
        await w.focus();
        return;
      }
      await sw.clients.openWindow(url);
    })(),
  );
});
