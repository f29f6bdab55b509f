/**
 * The tests' local push service (test/support/push-service.ts, started by the project's global
 * setup) as seen from workerd: make a subscription, read what it received, script its answers,
 * and run the hub's alarm (pushes go out from it) until something arrived.
 */
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { stubFor } from "./relay-store";

export interface Received {
  received: Array<{
    plaintext: string;
    vapidKey: string;
    topic: string | null;
    ttl: string | null;
  }>;
  attempts: Array<{ status: number }>;
  failures: string[];
}

export async function control<T>(path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${env.PUSH_SERVICE}/control/${path}`, {
    method: body === undefined && path.startsWith("received") ? "GET" : "POST",
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return (await res.json()) as T;
}

export const newSubscription = () =>
  control<{ id: string; endpoint: string; keys: { p256dh: string; auth: string } }>("subscribe");
export const received = (id: string) => control<Received>(`received/${id}`);

/** The `push_subscribe` frame for `sub` under the relay's VAPID key. */
export function subscribeFrame(
  id: string,
  sub: { endpoint: string; keys: { p256dh: string; auth: string } },
) {
  return {
    v: 1,
    t: "push_subscribe",
    id,
    endpoint: sub.endpoint,
    keys: sub.keys,
    vapidKey: env.VAPID_PUBLIC_KEY,
  } as const;
}

/** Poll `cond`, running the hub's alarm between tries (a push is sent from the alarm). */
export async function until(
  hub: string,
  cond: () => Promise<boolean>,
  what: string,
): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await cond()) return;
    await runDurableObjectAlarm(stubFor(hub));
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}
