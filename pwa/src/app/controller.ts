/**
 * The app's wiring: tab ownership → storage → engine + connection → stores. Components call the
 * actions here and render the stores; they never touch the engine, the socket or IndexedDB.
 */
import { batch, createSignal } from "solid-js";
import { createStore, produce } from "solid-js/store";
import type {
  ConversationId,
  ParleyClientApi,
  ParleyEvent,
} from "../../../shared/core/client-api";
import { NAME_RE } from "../../../shared/protocol";
import { createEngine } from "../engine/create";
import { type ConnState, Connection } from "../net/connection";
import { notifyHidden, notificationPermission, requestNotifications } from "../platform/notify";
import { createTabLock, type Ownership } from "../platform/tab-lock";
import { IdbClientStore } from "../storage/client-store";
import { type Db, openParleyDb } from "../storage/db";
import { loadOrCreateDeviceKey } from "../storage/device-key";
import { HistoryStore } from "../storage/history";
import { createProfile, loadProfile, type Profile } from "../storage/profile";
import type { HistoryMessage } from "../storage/schemas";
import {
  applyDelivery,
  applySummary,
  BROADCAST,
  type ChatState,
  type ConnView,
  convIdOf,
  emptyConv,
  initialChatState,
  loadHistory,
  markRead,
  messageEntry,
  parseConvId,
  systemEntry,
  upsertEntry,
} from "../state/model";
import { createToasts } from "./toasts";

export const HUB = "main";

export type Phase =
  | { p: "boot" }
  | { p: "blocked" }
  | { p: "lost" }
  | { p: "onboarding"; error?: string }
  | { p: "creating"; username: string; step: number }
  | { p: "ready" }
  | { p: "fatal"; message: string };

export const CREATE_STEPS = [
  "Generating your identity key",
  "Sealing it on this device",
  "Connecting to the relay",
  "Publishing your prekeys",
] as const;

/** ws: or wss: to match the page, same host: the relay serves the app (PROTOCOL.md §4). */
export function relayUrl(loc: Location, hub = HUB): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws?hub=${encodeURIComponent(hub)}`;
}

function connView(s: ConnState): ConnView {
  switch (s.s) {
    case "idle":
      return { kind: "idle" };
    case "connecting":
      return { kind: "connecting" };
    case "open":
      return { kind: "authenticating" };
    case "online":
      return { kind: "online" };
    case "waiting":
      return { kind: "waiting", retryAt: s.retryAt };
    case "stopped":
      return s.reason === "replaced" ? { kind: "replaced" } : { kind: "stopped" };
  }
}

const QUEUED = "queued-";

export function createParley() {
  const [state, setState] = createStore<ChatState>(initialChatState());
  const [phase, setPhase] = createSignal<Phase>({ p: "boot" });
  const [visible, setVisible] = createSignal(document.visibilityState === "visible");
  const [notifyPerm, setNotifyPerm] = createSignal(notificationPermission());
  const toasts = createToasts();
  const mutate = (fn: (s: ChatState) => void) => setState(produce(fn));

  let db: Db | null = null;
  let history: HistoryStore | null = null;
  let engine: ParleyClientApi | null = null;
  let conn: Connection | null = null;
  let unsubscribe: (() => void) | null = null;
  let everReady = false;
  /** Texts typed while offline, sent in order after the next `ready`. */
  const outbox: HistoryMessage[] = [];

  const lock = createTabLock(onOwnership);

  function onOwnership(o: Ownership) {
    if (o === "owner" || o === "unsupported") {
      if (phase().p === "boot" || phase().p === "blocked" || phase().p === "lost") void boot();
    } else if (o === "blocked") {
      setPhase({ p: "blocked" });
    } else if (o === "lost") {
      // Another tab took over: drop the socket before it opens its own, keep nothing running.
      shutdown();
      setPhase({ p: "lost" });
    }
  }

  async function boot() {
    try {
      setPhase({ p: "boot" });
      db ??= await openParleyDb();
      const deviceKey = await loadOrCreateDeviceKey(db);
      history = new HistoryStore(db, deviceKey);
      const profile = await loadProfile(db);
      if (!profile) {
        setPhase({ p: "onboarding" });
        return;
      }
      await loadLocal();
      everReady = true;
      setPhase({ p: "ready" });
      await start(profile);
    } catch (e) {
      setPhase({ p: "fatal", message: e instanceof Error ? e.message : String(e) });
    }
  }

  async function loadLocal() {
    if (!history) return;
    const [entries, meta] = await Promise.all([history.loadAll(), history.convMeta()]);
    mutate((s) => {
      s.convs = {};
      loadHistory(s, entries, meta);
      s.convs[convIdOf("group", BROADCAST)] ??= emptyConv(convIdOf("group", BROADCAST));
    });
    outbox.length = 0;
    for (const list of entries.values()) {
      for (const e of list) if (e.kind === "msg" && e.id.startsWith(QUEUED)) outbox.push(e);
    }
    if (history.rejected > 0) {
      toasts.show({ kind: "error", text: `${history.rejected} stored messages could not be read.` });
    }
  }

  async function onboard(rawName: string) {
    const username = rawName.trim().toLowerCase();
    if (!NAME_RE.test(username) || username.length > 32) {
      setPhase({
        p: "onboarding",
        error: "Use 1–32 lower-case letters, digits, - or _, starting with a letter or digit.",
      });
      return;
    }
    if (!db || !history) return;
    setPhase({ p: "creating", username, step: 0 });
    try {
      // A fresh identity starts from a clean engine store (an earlier attempt may have left one).
      await db.clear("engine");
      const deviceKey = await loadOrCreateDeviceKey(db);
      const profile = await createProfile(db, deviceKey, username, HUB, Date.now());
      setPhase({ p: "creating", username, step: 1 });
      await loadLocal();
      setPhase({ p: "creating", username, step: 2 });
      await start(profile);
    } catch (e) {
      setPhase({ p: "onboarding", error: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Name taken before the first welcome: forget this identity and ask again. */
  async function abandonOnboarding(message: string) {
    shutdown();
    if (db) {
      await db.delete("meta", "profile");
      await db.clear("engine");
    }
    setPhase({ p: "onboarding", error: message });
  }

  async function start(profile: Profile) {
    if (!db) return;
    const store = new IdbClientStore(db);
    const c = new Connection({
      url: relayUrl(location),
      onOpen: () => engine?.onConnected(),
      onFrame: (f) => void engine?.onServerFrame(f),
      onClose: () => engine?.onDisconnected(),
      onState: (s) => {
        setState("conn", connView(s));
        const ph = phase();
        if (s.s === "open" && ph.p === "creating") setPhase({ ...ph, step: 3 });
      },
      onBadFrame: (code) => console.warn("relay sent a frame that failed parsing:", code),
    });
    conn = c;
    engine = await createEngine({
      hub: profile.hub,
      origin: location.origin,
      username: profile.username,
      identity: profile.identity,
      store,
      transport: { send: (f) => c.send(f) },
      now: Date.now,
    });
    const e = engine;
    setState("me", { username: e.username, fingerprint: e.fingerprint, identityKey: e.identityKey });
    mutate((s) => {
      for (const sum of e.conversations()) applySummary(s, sum);
      s.presence = e.presence();
    });
    unsubscribe = e.subscribe((ev) => void onEvent(ev));
    c.start();
  }

  function shutdown() {
    unsubscribe?.();
    unsubscribe = null;
    conn?.stop();
    conn = null;
    engine = null;
  }

  function isRelayNameTaken(message: string) {
    return /name_taken|belongs to another identity/i.test(message);
  }

  async function onEvent(ev: ParleyEvent) {
    switch (ev.type) {
      case "ready": {
        everReady = true;
        setState("me", { username: ev.username, fingerprint: ev.fingerprint, identityKey: engine?.identityKey ?? "" });
        if (phase().p === "creating") setPhase({ p: "ready" });
        void flushOutbox();
        return;
      }
      case "connection":
        return;
      case "presence":
        setState("presence", ev.users);
        return;
      case "conversation":
        mutate((s) => applySummary(s, ev.conversation));
        return;
      case "message": {
        const entry = messageEntry(ev.message);
        const id = entry.conversationId;
        const looking = state.selected === id && visible();
        let fresh = false;
        mutate((s) => {
          fresh = upsertEntry(s, entry, { countUnread: !looking });
          if (looking) markRead(s, id, Date.now());
        });
        await history?.put(entry);
        if (fresh && entry.direction === "in") {
          const conv = parseConvId(id);
          const where = conv?.kind === "group" ? ` in #${conv.name}` : "";
          void notifyHidden("Parley", `New message from ${entry.from}${where}`, id);
        }
        return;
      }
      case "delivery": {
        let updated: HistoryMessage | null = null;
        mutate((s) => {
          updated = applyDelivery(s, ev.conversationId, ev.messageId, ev.state);
        });
        if (updated) await history?.put(updated);
        return;
      }
      case "system": {
        const entry = systemEntry(ev.line);
        mutate((s) => {
          upsertEntry(s, entry, { countUnread: false });
        });
        await history?.put(entry);
        return;
      }
      case "error": {
        if (!everReady && isRelayNameTaken(ev.message)) {
          await abandonOnboarding("That username is taken in this hub. Pick another one.");
          return;
        }
        toasts.show({ kind: "error", text: ev.message });
        return;
      }
    }
  }

  async function flushOutbox() {
    const e = engine;
    while (e && outbox.length > 0 && state.conn.kind === "online") {
      const q = outbox[0];
      if (!q) break;
      try {
        await e.sendText(q.conversationId, q.text);
      } catch (err) {
        toasts.show({ kind: "error", text: `Could not send a queued message: ${String(err)}` });
        break;
      }
      outbox.shift();
      removeEntry(q.conversationId, q.id);
    }
  }

  function removeEntry(conv: ConversationId, id: string) {
    mutate((s) => {
      const c = s.convs[conv];
      if (c) c.entries = c.entries.filter((x) => x.id !== id);
    });
    void db?.delete("history", `${conv}|${id}`);
  }

  const report = (err: unknown) =>
    toasts.show({ kind: "error", text: err instanceof Error ? err.message : String(err) });

  const actions = {
    onboard,
    takeOver: () => lock.acquire(true),
    retryNow: () => conn?.retryNow(),
    setVisible(v: boolean) {
      setVisible(v);
      const sel = state.selected;
      if (v && sel) readConv(sel);
    },
    select(id: ConversationId | null) {
      setState("selected", id);
      if (!id) return;
      readConv(id);
      const p = parseConvId(id);
      const c = state.convs[id];
      // Selecting a person starts (or resumes) the 1:1 chat: the engine fetches the bundle and
      // handshakes only if there is no session yet.
      if (p?.kind === "direct" && engine && (!c || c.status === "offline" || c.status === "connecting")) {
        if (state.conn.kind === "online") engine.startChat(p.name).catch(report);
      }
    },
    openChat(username: string) {
      const id = convIdOf("direct", username);
      mutate((s) => {
        s.convs[id] ??= emptyConv(id);
      });
      actions.select(id);
    },
    async endChat(username: string) {
      try {
        await engine?.endChat(username);
      } catch (e) {
        report(e);
      }
    },
    async send(text: string): Promise<boolean> {
      const id = state.selected;
      const trimmed = text.replace(/\s+$/, "");
      if (!id || trimmed.trim().length === 0) return false;
      if (!engine || state.conn.kind !== "online") {
        // Offline: keep it (sealed in history) and send it after the next welcome.
        const now = Date.now();
        const q: HistoryMessage = {
          kind: "msg",
          id: `${QUEUED}${now.toString(36)}-${Math.random().toString(36).slice(2, 10)}`,
          conversationId: id,
          from: state.me?.username ?? "me",
          direction: "out",
          text: trimmed,
          sentAt: now,
          at: now,
          delivery: "sending",
        };
        outbox.push(q);
        mutate((s) => {
          upsertEntry(s, q, { countUnread: false });
        });
        await history?.put(q);
        return true;
      }
      try {
        await engine.sendText(id, trimmed);
        return true;
      } catch (e) {
        report(e);
        return false;
      }
    },
    async joinGroup(rawName: string) {
      const name = rawName.trim().toLowerCase();
      if (!NAME_RE.test(name) || name.length > 32) {
        toasts.show({ kind: "error", text: "Group names use lower-case letters, digits, - and _." });
        return;
      }
      const id = convIdOf("group", name);
      mutate((s) => {
        s.convs[id] ??= emptyConv(id);
      });
      actions.select(id);
      try {
        await engine?.joinGroup(name);
      } catch (e) {
        report(e);
      }
    },
    async leaveGroup(name: string) {
      try {
        await engine?.leaveGroup(name);
      } catch (e) {
        report(e);
      }
    },
    async acceptKeyChange(username: string) {
      try {
        await engine?.acceptKeyChange(username);
      } catch (e) {
        report(e);
      }
    },
    async markVerified(username: string) {
      try {
        await engine?.markVerified(username);
      } catch (e) {
        report(e);
      }
    },
    safetyNumber(username: string): Promise<string> {
      if (!engine) return Promise.reject(new Error("not ready"));
      return engine.safetyNumber(username);
    },
    async enableNotifications() {
      setNotifyPerm(await requestNotifications());
    },
  };

  function readConv(id: ConversationId) {
    const now = Date.now();
    batch(() => mutate((s) => markRead(s, id, now)));
    void history?.putConvMeta(id, { lastReadAt: now });
  }

  return {
    state,
    phase,
    toasts,
    notifyPerm,
    actions,
    /** Start: ask for tab ownership; everything else follows from it. */
    init: () => lock.acquire(false),
  };
}

export type Parley = ReturnType<typeof createParley>;
