/**
 * Message notifications while the page is hidden (Notification API). Permission is requested only
 * from a user gesture (the bell button). The text deliberately carries no message content: the
 * notification shade is outside Parley's protection and lock screens show it to anyone.
 */
export type NotifyPermission = NotificationPermission | "unsupported";

export function notificationPermission(): NotifyPermission {
  return typeof Notification === "undefined" ? "unsupported" : Notification.permission;
}

export async function requestNotifications(): Promise<NotifyPermission> {
  if (typeof Notification === "undefined") return "unsupported";
  return Notification.requestPermission();
}

export async function notifyHidden(title: string, body: string, tag: string): Promise<void> {
  if (document.visibilityState === "visible") return;
  if (notificationPermission() !== "granted") return;
  const options: NotificationOptions = { body, tag, icon: "/icons/icon-192.png" };
  try {
    // Installed PWAs on Android only allow notifications through the service worker.
    const reg = await navigator.serviceWorker?.getRegistration();
    if (reg) {
      await reg.showNotification(title, options);
      return;
    }
    new Notification(title, options);
  } catch {
    // A blocked or unsupported notification must never break message handling.
  }
}
