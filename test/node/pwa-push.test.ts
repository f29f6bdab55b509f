/**
 * What a notification says for messages received while Parley was closed, per the user's
 * setting (pwa/src/platform/push.ts, PROTOCOL.md §12.7): the same words in the service worker
 * and in an open but hidden tab.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { notificationsFor, PREVIEW_CHARS, syncPushSubscription } from "../../pwa/src/platform/push";
import {
  type FetchState,
  fetchProgress,
  MAX_CONNECTED_MS,
  QUIET_MS,
} from "../../pwa/src/platform/push-receive";
import type { ChatMessage, ConversationId } from "../../shared/core/client-api";
import type { ClientFrame } from "../../shared/protocol";

let n = 0;
function msg(
  conv: ConversationId,
  from: string,
  text: string,
  direction: "in" | "out" = "in",
): ChatMessage {
  n++;
  return { id: `m${n}`, conversationId: conv, from, direction, text, sentAt: n, at: n };
}

describe("notificationsFor", () => {
  const batch = [
    msg("dm:alice", "alice", "first"),
    msg("dm:alice", "alice", "lunch at noon"),
    msg("group:team", "carol", "standup moved"),
    msg("dm:alice", "bob", "my own reply", "out"),
  ];

  it('"full": sender and the newest text, one notification per conversation', () => {
    expect(notificationsFor(batch, "full")).toEqual([
      {
        title: "alice",
        body: "lunch at noon (+1 more)",
        tag: "dm:alice",
        conversationId: "dm:alice",
      },
      {
        title: "carol in #team",
        body: "standup moved",
        tag: "group:team",
        conversationId: "group:team",
      },
    ]);
  });

  it('"name": the sender, never the text', () => {
    const shown = notificationsFor(batch, "name");
    expect(shown.map((s) => s.body)).toEqual([
      "New message from alice (+1 more)",
      "New message from carol in #team",
    ]);
    for (const s of shown) expect(`${s.title} ${s.body}`).not.toMatch(/lunch|standup|first/);
  });

  it('"nothing": neither name nor text, and one tag, so they collapse into one', () => {
    const shown = notificationsFor(batch, "none");
    for (const s of shown) {
      expect(s).toMatchObject({ title: "Parley", body: "New message", tag: "parley" });
    }
  });

  it("outgoing messages alone show nothing; long texts are cut", () => {
    expect(notificationsFor([msg("dm:alice", "bob", "mine", "out")], "full")).toEqual([]);
    const long = "x".repeat(PREVIEW_CHARS + 50);
    const [s] = notificationsFor([msg("dm:dave", "dave", long)], "full");
    expect(s?.body).toBe(`${"x".repeat(PREVIEW_CHARS)}…`);
  });
});

/** A browser as far as syncPushSubscription sees it: permission, PushManager, /push/vapid. */
function fakeBrowser(opts: {
  permission: NotificationPermission;
  relayKey: string | null;
  subscribedWith?: string;
}) {
  const log: string[] = [];
  const keyBytes = (k: string) => Buffer.from(k, "base64url");
  let current: { key: string } | null =
    opts.subscribedWith === undefined ? null : { key: opts.subscribedWith };
  const subscription = () => ({
    options: {
      applicationServerKey: current === null ? null : new Uint8Array(keyBytes(current.key)).buffer,
    },
    toJSON: () => ({
      endpoint: `https://push.example.org/${current?.key.slice(0, 8)}`,
      keys: { p256dh: `B${"A".repeat(86)}`, auth: "A".repeat(22) },
    }),
    unsubscribe: async () => {
      log.push(`unsubscribe ${current?.key.slice(0, 4)}`);
      current = null;
      return true;
    },
  });
  const pushManager = {
    getSubscription: async () => (current === null ? null : subscription()),
    subscribe: async (o: { applicationServerKey: Uint8Array }) => {
      current = { key: Buffer.from(o.applicationServerKey).toString("base64url") };
      log.push(`subscribe ${current.key.slice(0, 4)}`);
      return subscription();
    },
  };
  vi.stubGlobal("navigator", { serviceWorker: { ready: Promise.resolve({ pushManager }) } });
  vi.stubGlobal("PushManager", class {});
  vi.stubGlobal("Notification", { permission: opts.permission });
  vi.stubGlobal("fetch", async () =>
    opts.relayKey === null
      ? new Response("{}", { status: 404 })
      : Response.json({ key: opts.relayKey }),
  );
  const frames: ClientFrame[] = [];
  return { log, frames, send: (f: ClientFrame) => frames.push(f) };
}

const KEY_A = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 1)]).toString("base64url");
const KEY_B = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 2)]).toString("base64url");

describe("syncPushSubscription", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
  });

  it("subscribes with the relay's key and registers the subscription", async () => {
    const b = fakeBrowser({ permission: "granted", relayKey: KEY_A });
    expect(await syncPushSubscription(b.send)).toBe("subscribed");
    expect(b.log).toEqual([`subscribe ${KEY_A.slice(0, 4)}`]);
    expect(b.frames).toMatchObject([{ t: "push_subscribe", vapidKey: KEY_A }]);
  });

  it("a rotated relay key: the old subscription is dropped and a new one made with the new key", async () => {
    const b = fakeBrowser({ permission: "granted", relayKey: KEY_B, subscribedWith: KEY_A });
    expect(await syncPushSubscription(b.send)).toBe("subscribed");
    expect(b.log).toEqual([`unsubscribe ${KEY_A.slice(0, 4)}`, `subscribe ${KEY_B.slice(0, 4)}`]);
    expect(b.frames).toMatchObject([{ t: "push_subscribe", vapidKey: KEY_B }]);
  });

  it("the same key: the existing subscription is registered again, unless a resubscribe is asked", async () => {
    const b = fakeBrowser({ permission: "granted", relayKey: KEY_A, subscribedWith: KEY_A });
    await syncPushSubscription(b.send);
    expect(b.log).toEqual([]);
    await syncPushSubscription(b.send, { resubscribe: true });
    expect(b.log).toEqual([`unsubscribe ${KEY_A.slice(0, 4)}`, `subscribe ${KEY_A.slice(0, 4)}`]);
    expect(b.frames.map((f) => f.t)).toEqual(["push_subscribe", "push_subscribe"]);
  });

  it("permission withdrawn: unsubscribed in the browser and at the relay", async () => {
    const b = fakeBrowser({ permission: "denied", relayKey: KEY_A, subscribedWith: KEY_A });
    expect(await syncPushSubscription(b.send)).toBe("unsubscribed");
    expect(b.log).toEqual([`unsubscribe ${KEY_A.slice(0, 4)}`]);
    expect(b.frames).toMatchObject([{ t: "push_unsubscribe" }]);
  });

  it("a relay without push: nothing is subscribed or sent", async () => {
    const b = fakeBrowser({ permission: "granted", relayKey: null });
    expect(await syncPushSubscription(b.send)).toBe("unavailable");
    expect(b.log).toEqual([]);
    expect(b.frames).toEqual([]);
  });
});

describe("fetchProgress: when the service worker's fetch behind a push ends", () => {
  const t0 = 1_000_000;
  const st = (over: Partial<FetchState> = {}): FetchState => ({
    ready: false,
    working: 0,
    lastEvent: t0,
    started: t0,
    stopped: false,
    ...over,
  });

  it("drained once resynced, nothing in hand and quiet for QUIET_MS", () => {
    const ready = st({ ready: true });
    expect(fetchProgress(ready, t0 + QUIET_MS - 1)).toBe("wait");
    expect(fetchProgress(ready, t0 + QUIET_MS)).toBe("drained");
    expect(fetchProgress({ ...ready, working: 1 }, t0 + QUIET_MS)).toBe("wait");
    expect(fetchProgress({ ...ready, lastEvent: t0 + 1000 }, t0 + QUIET_MS)).toBe("wait");
  });

  it("a connection that failed or dropped is waited for until MAX_CONNECTED_MS, not given up", () => {
    // Never resynced (the relay unreachable or busy): the connection's retries get their time.
    expect(fetchProgress(st(), t0 + QUIET_MS * 4)).toBe("wait");
    expect(fetchProgress(st(), t0 + MAX_CONNECTED_MS - 1)).toBe("wait");
    expect(fetchProgress(st(), t0 + MAX_CONNECTED_MS)).toBe("gave-up");
    // Resynced but still busy at the bound: over as well.
    expect(fetchProgress(st({ ready: true, working: 2 }), t0 + MAX_CONNECTED_MS)).toBe("gave-up");
  });

  it("a connection stopped for good ends the fetch at once, unless it had drained", () => {
    expect(fetchProgress(st({ stopped: true }), t0 + 1)).toBe("gave-up");
    expect(fetchProgress(st({ ready: true, stopped: true }), t0 + 1)).toBe("gave-up");
    expect(fetchProgress(st({ ready: true, stopped: true }), t0 + QUIET_MS)).toBe("drained");
  });
});
