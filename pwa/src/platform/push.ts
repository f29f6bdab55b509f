/**
 * Notifications while Parley is closed (Web Push, PROTOCOL.md §7.9, §12.7): the user's choice of
 * what a notification shows, what it says for a batch of messages (pure, shared by the page and
 * the service worker), and keeping this device's push subscription registered with the relay.
 *
 * The relay's push says only "something arrived" (a fixed, encrypted wake-up text). The service
 * worker then fetches and decrypts the messages itself (push-receive.ts), so what a notification
 * shows is decided here, on the device, by the user's setting.
 */
import * as v from "valibot";
import type { ChatMessage } from "../../../shared/core/client-api";
import { fromB64u, toB64u } from "../../../shared/encoding";
import type { ClientFrame } from "../../../shared/protocol";
import type { Db } from "../storage/db";

/** What a notification shows: sender and text, sender only, or nothing but "New message". */
export type NotifyContent = "full" | "name" | "none";
export const NOTIFY_CONTENTS: readonly NotifyContent[] = ["full", "name", "none"];
const NotifyContentSchema = v.picklist(["full", "name", "none"]);

/** `meta` record of the choice; not secret (it says nothing about anyone), so not sealed. */
export const NOTIFY_CONTENT_KEY = "notifyContent";
/** Until the user chooses: the sender's name, never the text (the lock screen shows it). */
export const DEFAULT_NOTIFY_CONTENT: NotifyContent = "name";

export async function readNotifyContent(db: Db): Promise<NotifyContent> {
  const r = v.safeParse(NotifyContentSchema, await db.get("meta", NOTIFY_CONTENT_KEY));
  return r.success ? r.output : DEFAULT_NOTIFY_CONTENT;
}

export async function writeNotifyContent(db: Db, c: NotifyContent): Promise<void> {
  await db.put("meta", c, NOTIFY_CONTENT_KEY);
}

/** Longest message text a notification shows; the rest is in the app. */
export const PREVIEW_CHARS = 140;

export interface NotificationSpec {
  title: string;
  body: string;
  /** One notification per conversation: a newer one replaces it. */
  tag: string;
  /** The conversation to open on click. */
  conversationId: string;
}

function where(conversationId: string): string {
  return conversationId.startsWith("group:") ? ` in #${conversationId.slice(6)}` : "";
}

/**
 * The notifications for messages received while Parley was closed: one per conversation, the
 * newest message's, worded per `content`. `locked`: the keys are sealed under a passphrase, so
 * nothing could be read — one generic notification.
 */
export function notificationsFor(
  received: readonly ChatMessage[],
  content: NotifyContent,
): NotificationSpec[] {
  const latest = new Map<string, { m: ChatMessage; n: number }>();
  for (const m of received) {
    if (m.direction !== "in") continue;
    const prev = latest.get(m.conversationId);
    latest.set(m.conversationId, { m, n: (prev?.n ?? 0) + 1 });
  }
  return [...latest.values()].map(({ m, n }) => {
    const more = n > 1 ? ` (+${n - 1} more)` : "";
    const tag = m.conversationId;
    if (content === "none") {
      return { title: "Parley", body: "New message", tag: "parley", conversationId: tag };
    }
    if (content === "name") {
      return {
        title: "Parley",
        body: `New message from ${m.from}${where(tag)}${more}`,
        tag,
        conversationId: tag,
      };
    }
    const text = m.text.length > PREVIEW_CHARS ? `${m.text.slice(0, PREVIEW_CHARS)}…` : m.text;
    return { title: `${m.from}${where(tag)}`, body: `${text}${more}`, tag, conversationId: tag };
  });
}

/** The one notification when messages arrived but could not be read (passphrase lock on). */
export const GENERIC_NOTIFICATION: NotificationSpec = {
  title: "Parley",
  body: "New message",
  tag: "parley",
  conversationId: "",
};

// ---------------------------------------------------------------------------------------------
// The page: keep this device's subscription registered (PROTOCOL.md §7.9)

/** Frame ids of push frames: the controller answers their `accepted`/`error` itself. */
export const PUSH_FRAME_PREFIX = "push-";
let frameSeq = 0;

export function pushSupported(): boolean {
  return (
    typeof navigator !== "undefined" &&
    "serviceWorker" in navigator &&
    typeof PushManager !== "undefined" &&
    typeof Notification !== "undefined"
  );
}

/** The relay's VAPID key (GET /push/vapid), or null when it sends no push. */
export async function fetchVapidKey(): Promise<string | null> {
  try {
    const res = await fetch("/push/vapid", { cache: "no-store" });
    if (!res.ok) return null;
    const r = v.safeParse(v.strictObject({ key: v.string() }), await res.json());
    if (!r.success) return null;
    return fromB64u(r.output.key).length === 65 ? r.output.key : null;
  } catch {
    return null;
  }
}

export type PushSync = "subscribed" | "unsubscribed" | "unavailable" | "failed";

/**
 * Bring the browser's push subscription and the relay's record in line with what is wanted:
 * notifications granted → subscribed with the relay's current key (a subscription made under
 * another key is dropped and made again) and registered; otherwise unsubscribed on both sides.
 * `send` puts a frame on the authenticated connection. Never throws.
 */
export async function syncPushSubscription(
  send: (frame: ClientFrame) => void,
  opts: { resubscribe?: boolean } = {},
): Promise<PushSync> {
  if (!pushSupported()) return "unavailable";
  try {
    const reg = await navigator.serviceWorker.ready;
    let sub = await reg.pushManager.getSubscription();
    if (Notification.permission !== "granted") {
      // Permission withdrawn (or never given): drop the browser's subscription and the relay's
      // record, which might outlive a subscription the browser discarded by itself.
      if (sub !== null || Notification.permission === "denied") {
        await sub?.unsubscribe();
        send({ v: 1, t: "push_unsubscribe", id: `${PUSH_FRAME_PREFIX}${++frameSeq}` });
      }
      return "unsubscribed";
    }
    const key = await fetchVapidKey();
    if (key === null) return "unavailable";
    const current = sub?.options.applicationServerKey;
    const sameKey =
      current != null && toB64u(new Uint8Array(current)) === key && opts.resubscribe !== true;
    if (sub !== null && !sameKey) {
      await sub.unsubscribe();
      sub = null;
    }
    sub ??= await reg.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: fromB64u(key) as Uint8Array<ArrayBuffer>,
    });
    const json = sub.toJSON();
    const p256dh = json.keys?.p256dh;
    const auth = json.keys?.auth;
    if (json.endpoint === undefined || p256dh === undefined || auth === undefined) return "failed";
    send({
      v: 1,
      t: "push_subscribe",
      id: `${PUSH_FRAME_PREFIX}${++frameSeq}`,
      endpoint: json.endpoint,
      keys: { p256dh, auth },
      vapidKey: key,
    });
    return "subscribed";
  } catch (e) {
    // No push service reachable (offline, or a browser without one): notifications while the
    // page is open still work; the next connection tries again.
    console.warn("push subscription failed:", e instanceof Error ? e.name : e);
    return "failed";
  }
}
