/**
 * What the service worker does with a push (PROTOCOL.md §7.9, §12.7): the push only says that
 * something arrived, so the worker fetches and decrypts it itself, as a tab would, and then shows
 * what the user's setting allows (push.ts `notificationsFor`).
 *
 * One writer of the ratchet (§10.2, §12.2): the worker takes the same Web Lock a tab takes
 * (`LOCK_NAME`), and only if nobody holds it. A tab that holds it is running the engine already:
 * it is told (a `parley-push` message, so a tab whose socket went quiet reconnects at once) and the
 * worker stops there. A focused window means the user is looking at Parley: no notification.
 * Under the lock the worker opens the same sealed IndexedDB stores, connects, lets the engine
 * receive, decrypt, store and acknowledge until the connection has been quiet for a moment, writes
 * what arrived to the history (so the app shows each message once when it opens), disconnects and
 * releases the lock. With the passphrase lock on the keys cannot be unsealed without the user: the
 * notification says "New message" and nothing is fetched.
 */
import type {
  ChatMessage,
  ConversationId,
  DeliveryState,
  ParleyEvent,
} from "../../../shared/core/client-api";
import { createEngine } from "../engine/create";
import { Connection, type ConnState } from "../net/connection";
import { relayUrl } from "../net/relay-url";
import {
  applyContent,
  applyDelivery,
  initialChatState,
  loadHistory,
  messageEntry,
  systemEntry,
} from "../state/model";
import { IdbClientStore } from "../storage/client-store";
import { openParleyDb } from "../storage/db";
import { loadOrCreateDeviceKey } from "../storage/device-key";
import { HistoryStore } from "../storage/history";
import { readLock } from "../storage/lock";
import { readMessagePrefs } from "../storage/prefs";
import { loadProfile } from "../storage/profile";
import type { HistoryEntry } from "../storage/schemas";
import {
  GENERIC_NOTIFICATION,
  type NotificationSpec,
  notificationsFor,
  PUSH_FRAME_PREFIX,
  readNotifyContent,
} from "./push";
import { LOCK_NAME } from "./tab-lock";

/** The connection counts as drained after this long without an engine event (ms). */
export const QUIET_MS = 1500;
/** The longest a push keeps the worker connected (browsers stop a worker after ~30 s). */
export const MAX_CONNECTED_MS = 20_000;

/** Where the worker's fetch stands: go on, drained, or over without having drained. */
export type FetchProgress = "wait" | "drained" | "gave-up";

export interface FetchState {
  /** The engine has resynced (`welcome`) on a connection of this fetch. */
  ready: boolean;
  /** Frames the engine is still working on. */
  working: number;
  /** The last frame or engine event (ms). */
  lastEvent: number;
  /** When the fetch began (ms). */
  started: number;
  /** The connection stopped for good (replaced, retired, closed): no retry will come. */
  stopped: boolean;
}

/**
 * The receive loop's decision, pure. Drained: resynced, nothing in hand, quiet for QUIET_MS. A
 * connection that failed or dropped is not the end: the connection retries with its backoff
 * (connection.ts), as a phone on a flaky network needs, within MAX_CONNECTED_MS.
 */
export function fetchProgress(st: FetchState, now: number): FetchProgress {
  if (st.ready && st.working === 0 && now - st.lastEvent >= QUIET_MS) return "drained";
  if (st.stopped || now - st.started >= MAX_CONNECTED_MS) return "gave-up";
  return "wait";
}

export type PushOutcome =
  | "focused"
  | "tab"
  | "locked"
  | "shown"
  | "nothing"
  | "no-profile"
  | "failed";

export interface PushDeps {
  /** The app's open windows. */
  windows(): Promise<ReadonlyArray<{ focused: boolean; postMessage(m: unknown): void }>>;
  show(n: NotificationSpec): Promise<void>;
  location: { protocol: string; host: string; origin: string };
}

/** Handle one push event. Never rejects. */
export async function handlePush(deps: PushDeps): Promise<PushOutcome> {
  try {
    const windows = await deps.windows();
    for (const w of windows) w.postMessage({ type: "parley-push" });
    if (windows.some((w) => w.focused)) return "focused";
    const outcome = await navigator.locks.request(
      LOCK_NAME,
      { ifAvailable: true },
      async (lock): Promise<PushOutcome> => (lock === null ? "tab" : receive(deps)),
    );
    return outcome;
  } catch (e) {
    console.warn("push: could not fetch messages", e instanceof Error ? e.name : e);
    // Something arrived that could not be fetched: say so, without content, rather than nothing.
    await deps.show(GENERIC_NOTIFICATION).catch(() => {});
    return "failed";
  }
}

async function receive(deps: PushDeps): Promise<PushOutcome> {
  const db = await openParleyDb();
  try {
    if ((await db.get("meta", "profile")) === undefined) return "no-profile";
    if ((await readLock(db)) !== null) {
      await deps.show(GENERIC_NOTIFICATION);
      return "locked";
    }
    const key = await loadOrCreateDeviceKey(db);
    const profile = await loadProfile(db, key);
    if (profile === null) return "no-profile";
    const content = await readNotifyContent(db);
    const history = new HistoryStore(db, key);
    const received: ChatMessage[] = [];
    /** Delivery states and §8.6.1 contents, applied in order once the messages are stored. */
    const later: Later[] = [];
    let writes: Promise<void> = Promise.resolve();
    const persist = (entry: HistoryEntry) => {
      writes = writes.then(() => history.put(entry));
    };
    let lastEvent = Date.now();
    let ready = false;
    let stoppedFor: Extract<ConnState, { s: "stopped" }>["reason"] | null = null;
    /** Frames the engine is still working on: the lock is released only after them. */
    const working = new Set<Promise<void>>();
    const conn: Connection = new Connection({
      url: relayUrl(deps.location, profile.hub, { user: profile.username }),
      onOpen: () => engine.onConnected(),
      onFrame: (f) => {
        // Our own subscription frames are the page's business (push.ts).
        if ((f.t === "accepted" || f.t === "error") && f.id?.startsWith(PUSH_FRAME_PREFIX)) return;
        lastEvent = Date.now();
        const p = engine.onServerFrame(f);
        working.add(p);
        void p.finally(() => working.delete(p));
      },
      onClose: () => engine.onDisconnected(),
      onState: (s) => {
        if (s.s === "stopped") stoppedFor = s.reason;
      },
    });
    const engine = await createEngine({
      hub: profile.hub,
      origin: deps.location.origin,
      username: profile.username,
      identity: profile.identity,
      store: new IdbClientStore(db, key),
      transport: { send: (f) => conn.send(f) },
      now: Date.now,
    });
    const unsubscribe = engine.subscribe((ev) => {
      lastEvent = Date.now();
      if (ev.type === "ready") ready = true;
      else if (ev.type === "message") {
        if (ev.message.direction === "in") received.push(ev.message);
        persist(messageEntry(ev.message));
      } else if (ev.type === "system") persist(systemEntry(ev.line));
      else if (ev.type === "delivery") {
        later.push({ t: "delivery", conv: ev.conversationId, id: ev.messageId, state: ev.state });
      } else if (ev.type === "content") later.push({ t: "content", ev });
    });
    const started = Date.now();
    conn.start();
    let progress: FetchProgress = "wait";
    for (;;) {
      const st = { ready, working: working.size, lastEvent, started, stopped: stoppedFor !== null };
      progress = fetchProgress(st, Date.now());
      if (progress !== "wait") break;
      await new Promise((r) => setTimeout(r, 200));
    }
    conn.stop();
    // Every frame handled and its state written before another writer may take the lock.
    await Promise.allSettled([...working]);
    unsubscribe();
    await writes;
    const muted = new Set<string>();
    for (const [id, m] of await history.convMeta()) if (m.muted === true) muted.add(id);
    if (later.length > 0) {
      const prefs = await readMessagePrefs(db);
      await applyLater(history, later, { me: profile.username, readReceipts: prefs.readReceipts });
    }
    // A muted conversation notifies nothing, here as in the open app.
    const shown = notificationsFor(
      received.filter((m) => !muted.has(m.conversationId)),
      content,
    );
    for (const n of shown) await deps.show(n);
    if (shown.length > 0) return "shown";
    // The push said something arrived for this device and none of it could be fetched (relay
    // unreachable, connection refused, out of time): "New message" rather than silence. Not when
    // the app's own tab took the connection over (`replaced`: it is receiving and says so
    // itself), nor when this device was removed from its identity (`retired`: it gets nothing).
    const handedOff = stoppedFor === "replaced" || stoppedFor === "retired";
    if (progress === "gave-up" && received.length === 0 && !handedOff) {
      await deps.show(GENERIC_NOTIFICATION);
      return "failed";
    }
    return "nothing";
  } finally {
    db.close();
  }
}

type Later =
  | { t: "delivery"; conv: ConversationId; id: string; state: DeliveryState }
  | { t: "content"; ev: Extract<ParleyEvent, { type: "content" }> };

/**
 * Delivery states and the contents of PROTOCOL.md §8.6.1 (edits, deletes, reactions, timers,
 * read) that arrived while the app was closed, applied as the app's model does, in order.
 */
async function applyLater(
  history: HistoryStore,
  later: readonly Later[],
  opts: { me: string; readReceipts: boolean },
): Promise<void> {
  const s = initialChatState();
  loadHistory(s, await history.loadAll(), await history.convMeta());
  for (const x of later) {
    if (x.t === "delivery") {
      const updated = applyDelivery(s, x.conv, x.id, x.state);
      if (updated !== null) await history.put(updated);
    } else {
      for (const e of applyContent(s, x.ev, opts).put) await history.put(e);
    }
  }
}
