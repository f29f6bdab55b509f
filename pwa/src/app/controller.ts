/**
 * The app's wiring: tab ownership → storage → engine + connection → stores. Components call the
 * actions here and render the stores; they never touch the engine, the socket or IndexedDB.
 */
import { batch, createSignal } from "solid-js";
import { createStore, produce } from "solid-js/store";
import type {
  ConversationId,
  LinkRequest,
  OwnDevices,
  ParleyClientApi,
  ParleyEvent,
} from "../../../shared/core/client-api";
import type { FileRef, Invite } from "../../../shared/core/content";
import {
  initLinkedStore,
  type LinkedIdentity,
  type LinkProgress,
  NewDeviceLink,
} from "../../../shared/core/link-device";
import { NAME_RE, type PresenceScope } from "../../../shared/protocol";
import { createEngine } from "../engine/create";
import { DEFAULT_BACKOFF, VISIBLE_BACKOFF } from "../net/backoff";
import { Connection, type ConnState } from "../net/connection";
import { relayUrl } from "../net/relay-url";
import { notificationPermission, notifyHidden, requestNotifications } from "../platform/notify";
import {
  DEFAULT_NOTIFY_CONTENT,
  type NotifyContent,
  notificationsFor,
  PUSH_FRAME_PREFIX,
  readNotifyContent,
  syncPushSubscription,
  writeNotifyContent,
} from "../platform/push";
import { createTabLock, type Ownership } from "../platform/tab-lock";
import {
  applyDelivery,
  applyLink,
  applySessionEnded,
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
import { MAX_TEXT_CHARS, outgoingText } from "../state/split";
import { BackupError, exportIdentity, importIdentity } from "../storage/backup";
import { IdbClientStore } from "../storage/client-store";
import { type Db, openParleyDb } from "../storage/db";
import { loadOrCreateDeviceKey } from "../storage/device-key";
import { HistoryStore } from "../storage/history";
import {
  buildHistoryArchive,
  HISTORY_ARCHIVE_NAME,
  HISTORY_ARCHIVE_TYPE,
  type HistoryRange,
  parseHistoryArchive,
  rangeStart,
} from "../storage/history-archive";
import { disableLock, enableLock, LockError, readLock, unlock } from "../storage/lock";
import { createProfile, loadProfile, type Profile, readSeed } from "../storage/profile";
import type { ConvMeta, HistoryEntry, HistoryMessage } from "../storage/schemas";
import { TransferStore } from "../storage/transfers";
import { formatDay, formatTime } from "../ui/format";
import {
  describeError,
  describeLinkError,
  describeThrown,
  LINK_ERROR_TEXT,
  LINK_WORDS,
  unknownUserText,
  type Worded,
} from "../ui/wording";
import { createTransfers, fileKey } from "./attachments";
import { createMessaging } from "./messaging";
import { createToasts } from "./toasts";

export const HUB = "main";

export type Phase =
  | { p: "boot" }
  | { p: "blocked" }
  | { p: "lost" }
  | { p: "locked"; error?: string }
  /** `taken`: the name the relay refused as someone else's (it may be ours, from a backup). */
  | { p: "onboarding"; error?: string; taken?: string }
  /** `detail`: what the current step is doing when it may take a while (a history download). */
  | { p: "creating"; username: string; step: number; detail?: string }
  /**
   * A new device waiting to be linked (PROTOCOL.md §4.8): `code` once made; `expired` when the
   * offer ended (its socket closed); `error` an answer that was refused meanwhile.
   */
  | { p: "linking"; code: string | null; expired: boolean; error?: string }
  | { p: "ready" }
  | { p: "fatal"; message: string };

export const CREATE_STEPS = [
  "Generating your identity key",
  "Sealing it on this device",
  "Connecting to the relay",
  "Publishing your prekeys",
] as const;

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
      if (s.reason === "replaced") return { kind: "replaced" };
      return s.reason === "retired" ? { kind: "retired" } : { kind: "stopped" };
  }
}

export function createParley() {
  const [state, setState] = createStore<ChatState>(initialChatState());
  const [phase, setPhase] = createSignal<Phase>({ p: "boot" });
  const [visible, setVisible] = createSignal(document.visibilityState === "visible");
  const [notifyPerm, setNotifyPerm] = createSignal(notificationPermission());
  const [lockOn, setLockOn] = createSignal(false);
  /** What notifications show while Parley is closed (platform/push.ts, PROTOCOL.md §12.7). */
  const [notifyContent, setNotifyContent] = createSignal<NotifyContent>(DEFAULT_NOTIFY_CONTENT);
  const toasts = createToasts();
  const transfers = createTransfers({
    engine: () => engine,
    online: () => state.conn.kind === "online",
    origin: location.origin,
    onError: (text) => toasts.show({ kind: "error", text }),
    store: () => transferStore,
    // A file obeys the conversation's disappearing timer like a text (§8.6.1).
    sendOptions: (conv) => {
      const exp = messaging.textOptions(conv).exp;
      return exp !== undefined ? { exp } : {};
    },
  });
  const mutate = (fn: (s: ChatState) => void) => setState(produce(fn));

  let db: Db | null = null;
  let deviceKey: CryptoKey | null = null;
  let profile: Profile | null = null;
  let history: HistoryStore | null = null;
  let transferStore: TransferStore | null = null;
  let engine: ParleyClientApi | null = null;
  let conn: Connection | null = null;
  let unsubscribe: (() => void) | null = null;
  let everReady = false;
  /** The waiting socket of a new device being linked, and its link (PROTOCOL.md §4.8.2). */
  let linking: { conn: Connection; link: NewDeviceLink } | null = null;
  /** Our own devices as our accepted list names them (Settings → Devices). */
  const [ownDevices, setOwnDevices] = createSignal<OwnDevices | null>(null);
  /** Devices this device just linked: their own_devices notice is ours, not an alarm. */
  const justLinked = new Set<string>();
  /** The relay said this device was removed from our list (§4.7): it stays stopped. */
  let removedHere = false;
  /** Unsent text per conversation; persisted sealed (history.ts) a moment after each change. */
  const drafts = new Map<string, string>();
  const draftTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /**
   * Conversations the user closed while they were empty (a mistyped name): the engine keeps its
   * record and reports it again on every reconnect, so they stay out of the list until reopened
   * (ConvMeta.hidden, stored with the read mark).
   */
  const closed = new Set<string>();

  const lock = createTabLock(onOwnership);

  const messaging = createMessaging({
    state,
    mutate,
    persist: (e) => persist(e),
    unpersist: (e) => unpersist(e),
    engine: () => engine,
    history: () => history,
    db: () => db,
    report: (e) => report(e),
    saveMeta: (id) => saveMeta(id),
  });

  function onOwnership(o: Ownership) {
    if (o === "owner" || o === "unsupported") {
      if (phase().p === "boot" || phase().p === "blocked" || phase().p === "lost") void boot();
    } else if (o === "blocked") {
      setPhase({ p: "blocked" });
    } else if (o === "lost") {
      // Another tab took over: drop the socket before it opens its own, keep nothing running.
      void shutdown();
      setPhase({ p: "lost" });
    }
  }

  async function boot() {
    try {
      setPhase({ p: "boot" });
      db ??= await openParleyDb();
      if (await readLock(db)) {
        setLockOn(true);
        setPhase({ p: "locked" });
        return;
      }
      await openWith(await loadOrCreateDeviceKey(db));
    } catch (e) {
      setPhase({ p: "fatal", message: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Everything after the device key is known (stored, or unlocked with the passphrase). */
  async function openWith(key: CryptoKey) {
    if (!db) return;
    deviceKey = key;
    history = new HistoryStore(db, deviceKey);
    transferStore = new TransferStore(db, deviceKey);
    const stored = await loadProfile(db, deviceKey);
    if (!stored) {
      setPhase({ p: "onboarding" });
      return;
    }
    await loadLocal();
    everReady = true;
    setNotifyContent(await readNotifyContent(db));
    setPhase({ p: "ready" });
    await start(stored);
    openFromUrl();
  }

  async function loadLocal() {
    if (!history) return;
    const [entries, meta, storedDrafts] = await Promise.all([
      history.loadAll(),
      history.convMeta(),
      history.loadDrafts(),
    ]);
    drafts.clear();
    for (const [id, text] of storedDrafts) drafts.set(id, text);
    closed.clear();
    for (const [id, m] of meta) if (m.hidden === true) closed.add(id);
    mutate((s) => {
      s.convs = {};
      loadHistory(s, entries, meta);
      s.convs[convIdOf("group", BROADCAST)] ??= emptyConv(convIdOf("group", BROADCAST));
      for (const [id, m] of meta) {
        const c = s.convs[id];
        if (!c) continue;
        c.muted = m.muted === true;
        c.archived = m.archived === true;
      }
    });
    await messaging.loaded();
    if (history.rejected > 0) {
      toasts.show({
        kind: "error",
        text: `${history.rejected} stored message${history.rejected === 1 ? "" : "s"} could not be read (altered or damaged).`,
      });
    }
  }

  async function onboard(rawName: string, restore?: { seed: Uint8Array; hub: string }) {
    const username = rawName.trim().toLowerCase();
    if (!NAME_RE.test(username) || username.length > 32) {
      setPhase({
        p: "onboarding",
        error: "Use 1–32 lower-case letters, digits, - or _, starting with a letter or digit.",
      });
      return;
    }
    if (!db || !history || !deviceKey) return;
    setPhase({ p: "creating", username, step: 0 });
    try {
      // A fresh identity starts from a clean engine store (an earlier attempt may have left one).
      await db.clear("engine");
      const profile = await createProfile(
        db,
        deviceKey,
        username,
        restore?.hub ?? HUB,
        Date.now(),
        restore?.seed,
      );
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
    const name = profile?.username;
    await shutdown();
    if (db) {
      await db.delete("meta", "profile");
      await db.clear("engine");
    }
    setPhase(
      name !== undefined
        ? { p: "onboarding", error: message, taken: name }
        : { p: "onboarding", error: message },
    );
  }

  async function start(p: Profile) {
    if (!db || !deviceKey) return;
    profile = p;
    const store = new IdbClientStore(db, deviceKey);
    const c = new Connection({
      url: relayUrl(location, p.hub, { user: p.username }),
      onOpen: () => engine?.onConnected(),
      onFrame: (f) => {
        // Answers to this page's push subscription frames are handled here, not by the engine.
        if ((f.t === "accepted" || f.t === "error") && f.id?.startsWith(PUSH_FRAME_PREFIX)) {
          onPushAnswer(f.t === "error" ? f.code : null);
          return;
        }
        void engine?.onServerFrame(f);
      },
      onClose: () => engine?.onDisconnected(),
      onState: (s) => {
        setState("conn", removedHere && s.s === "stopped" ? { kind: "removed" } : connView(s));
        // Back online: uploads that failed for want of a connection go again (attachments.ts).
        if (s.s === "online") transfers.resume();
        // Who is online is only known while we are: offline, nobody is shown as online.
        if (s.s !== "online" && s.s !== "open") setState("presence", []);
        const ph = phase();
        if (s.s === "open" && ph.p === "creating") setPhase({ ...ph, step: 3 });
        // Each authenticated connection re-registers this device's push subscription (§7.9).
        if (s.s === "online") {
          pushRetried = false;
          void syncPush();
        }
      },
      onBadFrame: (code) => console.warn("relay sent a frame that failed parsing:", code),
      backoff: () => (visible() ? VISIBLE_BACKOFF : DEFAULT_BACKOFF),
    });
    conn = c;
    engine = await createEngine({
      hub: p.hub,
      origin: location.origin,
      username: p.username,
      identity: p.identity,
      store,
      transport: { send: (f) => c.send(f) },
      now: Date.now,
    });
    const e = engine;
    setState("me", {
      username: e.username,
      fingerprint: e.fingerprint,
      identityKey: e.identityKey,
    });
    mutate((s) => {
      for (const sum of e.conversations()) if (shown(sum.id)) applySummary(s, sum);
      s.presence = e.presence();
      s.presenceScope = e.presenceScope();
    });
    unsubscribe = e.subscribe((ev) => void onEvent(ev));
    c.start();
  }

  /** Whether this connection already re-subscribed after `push_key_changed` (no loops). */
  let pushRetried = false;

  function syncPush(opts: { resubscribe?: boolean } = {}) {
    const c = conn;
    if (!c) return Promise.resolve();
    return syncPushSubscription((f) => c.send(f), opts).then(() => undefined);
  }

  /** The relay's answer to a push frame: a rotated VAPID key means subscribing again (§7.9). */
  function onPushAnswer(code: string | null) {
    if (code === "push_key_changed" && !pushRetried) {
      pushRetried = true;
      void syncPush({ resubscribe: true });
    } else if (code !== null) {
      console.warn("relay refused the push subscription:", code);
    }
  }

  /** The service worker's messages: a push arrived, or a notification was clicked. */
  function onWorkerMessage(e: MessageEvent) {
    const d = e.data as { type?: unknown; conversationId?: unknown } | null;
    if (d?.type === "parley-push") {
      // Something is waiting on the relay: a socket that went quiet reconnects at once.
      conn?.retryNow();
    } else if (d?.type === "parley-open" && typeof d.conversationId === "string") {
      openFromNotification(d.conversationId);
    }
  }
  navigator.serviceWorker?.addEventListener("message", onWorkerMessage);
  // Permission changed in the browser's settings: subscribe or unsubscribe to match.
  void navigator.permissions
    ?.query({ name: "notifications" })
    .then((st) => {
      st.onchange = () => {
        setNotifyPerm(notificationPermission());
        void syncPush();
      };
    })
    .catch(() => undefined);

  function openFromNotification(id: string) {
    const p = parseConvId(id);
    if (p === null) return;
    actions.openChat(p.name);
    if (p.kind === "group") actions.select(convIdOf("group", p.name));
  }

  // An invite link opened in a tab that already shows the app changes only the fragment.
  window.addEventListener("hashchange", () => void joinFromLink());

  /** A notification clicked while the app was closed opened `/?open=<conversation>`. */
  function openFromUrl() {
    const url = new URL(location.href);
    const id = url.searchParams.get("open");
    if (id === null) return;
    url.searchParams.delete("open");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    openFromNotification(id);
  }

  /**
   * An invite link (`#/join/<group>/<secret>`, PROTOCOL.md §9.7.3) opened the app: the secret is
   * in the fragment, which the browser never sends to the relay. Joined once we are ready; the
   * fragment is cleared so a reload or a shared screenshot of the address bar does not carry it.
   */
  async function joinFromLink() {
    const m = /^#\/join\/([a-z0-9][a-z0-9_-]{0,31})\/([A-Za-z0-9_-]{43})$/.exec(location.hash);
    if (m === null || !engine) return;
    const [, group, secret] = m as unknown as [string, string, string];
    window.history.replaceState(null, "", location.pathname + location.search);
    const id = convIdOf("group", group);
    mutate((s) => {
      s.convs[id] ??= emptyConv(id);
    });
    actions.select(id);
    try {
      await engine.joinWithLink(group, secret);
    } catch (e) {
      report(e);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Linking (PROTOCOL.md §4.8): this browser as the new device

  /** Make a code and wait on an unauthenticated socket for another device of ours to answer. */
  async function startLinking(deviceName: string) {
    if (!db || !deviceKey) return;
    stopLinking();
    setPhase({ p: "linking", code: null, expired: false });
    let conn: Connection | null = null;
    const link = await NewDeviceLink.start(HUB, deviceName, (f) => conn?.send(f));
    const c = new Connection({
      url: relayUrl(location, HUB, { link: link.rendezvous }),
      onOpen: () => undefined,
      onFrame: (f) => {
        void link.onServerFrame(f).then(
          (p) => onLinkProgress(c, p),
          (e) => console.warn("link answer failed:", e),
        );
      },
      onClose: () => undefined,
      onState: (st) => {
        // The offer lives as long as its socket (§4.8.3): closed or expired, the code is dead,
        // and a reconnect must not offer it again past its ten minutes.
        if (linking?.conn === c && (st.s === "waiting" || st.s === "stopped")) expireLinking();
      },
    });
    conn = c;
    linking = { conn: c, link };
    setPhase({ p: "linking", code: link.code, expired: false });
    c.start();
  }

  function stopLinking() {
    const l = linking;
    linking = null;
    l?.link.cancel();
    l?.conn.stop();
  }

  function expireLinking() {
    stopLinking();
    const ph = phase();
    if (ph.p === "linking") setPhase({ ...ph, expired: true });
  }

  async function onLinkProgress(c: Connection, p: LinkProgress) {
    if (linking?.conn !== c) return;
    const ph = phase();
    if (ph.p !== "linking") return;
    if (p.t === "failed") expireLinking();
    else if (p.t === "refused")
      setPhase({ ...ph, error: LINK_ERROR_TEXT[p.code] ?? LINK_ERROR_TEXT.malformed });
    else if (p.t === "linked") await finishLinking(p.linked);
  }

  /**
   * The transfer checked out: make this browser's store from it and connect as the linked
   * device on a fresh socket (the waiting one is closed; the stored list admits us, §4.7).
   */
  async function finishLinking(linked: LinkedIdentity) {
    stopLinking();
    if (!db || !deviceKey) return;
    setPhase({ p: "creating", username: linked.username, step: 1 });
    try {
      await db.clear("engine");
      await initLinkedStore(new IdbClientStore(db, deviceKey), linked, Date.now());
      if (linked.history !== undefined) await importHistory(linked.username, linked.history);
      // createProfile seals the seed and wipes this copy.
      const p = await createProfile(
        db,
        deviceKey,
        linked.username,
        HUB,
        Date.now(),
        linked.identitySeed,
      );
      await loadLocal();
      setPhase({ p: "creating", username: linked.username, step: 2 });
      await start(p);
    } catch (e) {
      await db.clear("engine");
      await db.delete("meta", "profile");
      setPhase({ p: "onboarding", error: describeThrown(e).text });
    }
  }

  /**
   * The new device: bring over the history the other device chose to send (§4.8.5). The
   * archive's digest and AEAD are checked while it is opened, then each entry against the
   * history schema. Failing this loses no part of linking: the device is linked either way, and
   * the person is told its earlier messages did not come.
   */
  async function importHistory(username: string, ref: FileRef): Promise<void> {
    const h = history;
    if (h === null) return;
    setPhase({ p: "creating", username, step: 1, detail: LINK_WORDS.historyComing });
    try {
      const { entries, rejected } = parseHistoryArchive(
        await transfers.downloadBytes(ref),
        username,
      );
      for (const entry of entries) await h.put(entry);
      if (rejected > 0) toasts.show({ kind: "error", text: LINK_WORDS.historyRejected(rejected) });
    } catch (e) {
      console.warn("history transfer failed", e);
      toasts.show({ kind: "error", text: LINK_WORDS.historyFailed });
    }
  }

  // -------------------------------------------------------------------------------------------
  // Linking: this browser as the existing device (Settings → Devices)

  /**
   * The history archive for a device being linked (PROTOCOL.md §4.8.5): what this device's
   * history holds since the chosen range's start, encrypted and uploaded; undefined for "none".
   */
  async function exportHistory(range: HistoryRange): Promise<FileRef | undefined> {
    const now = Date.now();
    const since = rangeStart(range, now);
    const h = history;
    if (since === null || h === null) return undefined;
    // What the view shows but has not reached IndexedDB yet goes too.
    await writes;
    const all = [...(await h.loadAll()).values()].flat();
    const archive = buildHistoryArchive(all, since, now);
    if (archive === null) return undefined;
    return transfers.uploadBytes(archive.bytes, {
      name: HISTORY_ARCHIVE_NAME,
      type: HISTORY_ARCHIVE_TYPE,
    });
  }

  async function refreshDevices() {
    const e = engine;
    if (!e) return;
    try {
      setOwnDevices(await e.ownDevices());
    } catch (err) {
      report(err);
    }
  }

  /**
   * Drop the socket and the engine. Resolves once the engine has stopped: nothing of it writes
   * after that, so the caller may re-key or clear the store (ParleyClient.stop).
   */
  function shutdown(): Promise<void> {
    unsubscribe?.();
    unsubscribe = null;
    conn?.stop();
    conn = null;
    const e = engine;
    engine = null;
    return e === null ? Promise.resolve() : e.stop();
  }

  async function onEvent(ev: ParleyEvent) {
    switch (ev.type) {
      case "ready": {
        everReady = true;
        setState("me", {
          username: ev.username,
          fingerprint: ev.fingerprint,
          identityKey: engine?.identityKey ?? "",
        });
        if (phase().p === "creating") setPhase({ p: "ready" });
        void refreshDevices();
        void joinFromLink();
        return;
      }
      case "connection":
        if (ev.state === "removed") {
          removedHere = true;
          setState("conn", { kind: "removed" });
        }
        mutate((s) => applyLink(s, ev.state === "online"));
        return;
      case "presence":
        setState("presence", ev.users);
        return;
      case "settings":
        setState("presenceScope", ev.presence);
        return;
      case "conversation":
        if (!shown(ev.conversation.id)) return;
        mutate((s) => applySummary(s, ev.conversation));
        return;
      case "message": {
        const entry = messageEntry(ev.message);
        const id = entry.conversationId;
        reopen(id);
        const looking = state.selected === id && visible();
        let fresh = false;
        mutate((s) => {
          fresh = upsertEntry(s, entry, { countUnread: !looking });
        });
        // Read while looking at it: persist the read mark too, or a reload shows it unread.
        if (looking) readConv(id);
        // An incoming duplicate was ignored: its stored row stays as first received (M1).
        if (fresh || entry.direction === "out") persist(entry);
        if (fresh) messaging.onMessage(entry);
        const c = state.convs[id];
        // A new message brings an archived chat back, unless it is muted too.
        if (fresh && entry.direction === "in" && c?.archived && !c.muted)
          messaging.setArchived(id, false);
        if (fresh && entry.direction === "in" && !c?.muted) {
          // Worded as the service worker words them, per the user's choice (platform/push.ts).
          for (const n of notificationsFor([ev.message], notifyContent())) {
            void notifyHidden(n.title, n.body, n.tag);
          }
        }
        return;
      }
      case "delivery": {
        let updated: HistoryMessage | null = null;
        mutate((s) => {
          updated = applyDelivery(s, ev.conversationId, ev.messageId, ev.state);
        });
        if (updated) persist(updated);
        return;
      }
      case "content":
        messaging.onContent(ev);
        return;
      case "own_devices":
        // Prominent and sticky: a device of ours we did not link means our identity key is in
        // someone else's hands (SECURITY.md L25).
        void refreshDevices();
        for (const d of ev.added) {
          if (justLinked.delete(d.id)) {
            toasts.show({ kind: "info", text: LINK_WORDS.linked(d.name) });
            continue;
          }
          toasts.show({
            kind: "error",
            sticky: true,
            text: `A new device was linked to your account: ${d.name}, ${formatDay(d.addedAt)} ${formatTime(d.addedAt)}. If this was not you, someone else holds your identity.`,
          });
        }
        for (const d of ev.removed)
          toasts.show({ kind: "info", text: `A device was removed from your account: ${d.name}` });
        return;
      case "system": {
        const entry = systemEntry(ev.line);
        mutate((s) => {
          upsertEntry(s, entry, { countUnread: false });
        });
        persist(entry);
        return;
      }
      case "error": {
        // The relay's code, typed on the event (PROTOCOL.md §11.1): no matching on its text.
        if (!everReady && ev.relayCode === "name_taken") {
          await abandonOnboarding("That username is taken in this hub. Pick another one.");
          return;
        }
        // Taken over by another connection: the notice under the top bar says so, with "Use here".
        if (ev.relayCode === "replaced") return;
        const conv = ev.conversationId ? parseConvId(ev.conversationId) : null;
        if (conv?.kind === "direct" && ev.conversationId && ev.relayCode === "unknown_user") {
          const id = ev.conversationId;
          mutate((s) => {
            const c = s.convs[id];
            if (c) c.missingUser = true;
          });
          showError({ text: unknownUserText(conv.name), details: `${ev.code}: ${ev.message}` });
          return;
        }
        showError(describeError(ev.code, ev.message));
        return;
      }
    }
  }

  /**
   * History writes in event order: a message and its later delivery update seal asynchronously,
   * and the older write must never land last (a reload would show "sending" again).
   */
  let writes: Promise<void> = Promise.resolve();
  function persist(entry: HistoryEntry) {
    // Deleted for everyone: its file goes from this device too (the tombstone has no key).
    if (entry.kind === "msg" && entry.deleted === true) transfers.forget(fileKey(entry));
    const h = history;
    if (!h) return;
    writes = writes
      .then(() => h.put(entry))
      .catch((e: unknown) => console.warn("could not store history entry", e));
  }

  /** Delete a row (delete for me, expiry), in order with the other history writes. */
  function unpersist(entry: HistoryEntry) {
    if (entry.kind === "msg") transfers.forget(fileKey(entry));
    const h = history;
    if (!h) return;
    writes = writes
      .then(() => h.remove(entry))
      .catch((e: unknown) => console.warn("could not delete history entry", e));
  }

  /** A conversation's local bookkeeping as stored (read mark, hidden, mute, archive). */
  function metaOf(id: string, hidden = false): ConvMeta {
    const c = state.convs[id];
    const m: ConvMeta = { lastReadAt: c?.lastReadAt ?? 0 };
    if (hidden) m.hidden = true;
    if (c?.muted) m.muted = true;
    if (c?.archived) m.archived = true;
    return m;
  }

  function saveMeta(id: string) {
    void history?.putConvMeta(id, metaOf(id));
  }

  /** Is this conversation in the list (not closed by the user, or it has something in it)? */
  function shown(id: string): boolean {
    return !closed.has(id) || (state.convs[id]?.entries.length ?? 0) > 0;
  }

  function reopen(id: ConversationId) {
    if (!closed.delete(id)) return;
    saveMeta(id);
  }

  function showError(w: Worded) {
    toasts.show(
      w.details !== null
        ? { kind: "error", text: w.text, details: w.details }
        : { kind: "error", text: w.text },
    );
  }

  const report = (err: unknown) => showError(describeThrown(err));
  /** Run an engine verb whose refusal the user should see as a toast, not as a thrown error. */
  const reported = async (verb: () => Promise<unknown> | undefined): Promise<void> => {
    try {
      await verb();
    } catch (e) {
      report(e);
    }
  };

  /** Write a conversation's draft now (cancelling a pending delayed write). */
  function persistDraft(id: string) {
    const t = draftTimers.get(id);
    if (t !== undefined) clearTimeout(t);
    draftTimers.delete(id);
    const h = history;
    if (!h) return;
    const text = drafts.get(id) ?? "";
    writes = writes
      .then(() => h.putDraft(id, text, Date.now()))
      .catch((e: unknown) => console.warn("could not store draft", e));
  }

  /** Stop the engine, switch the device key (lock on/off), start again with the new key. */
  async function switchKey(make: (current: CryptoKey) => Promise<CryptoKey>) {
    if (!db || !deviceKey || !profile) throw new LockError("Parley is not ready yet.");
    const p = profile;
    await shutdown();
    try {
      const key = await make(deviceKey);
      deviceKey = key;
      history = new HistoryStore(db, key);
      transferStore = new TransferStore(db, key);
    } finally {
      await start(p);
    }
  }

  const actions = {
    onboard: (name: string) => onboard(name),
    async unlock(passphrase: string) {
      if (!db) return;
      try {
        const key = await unlock(db, passphrase);
        setPhase({ p: "boot" });
        await openWith(key);
      } catch (e) {
        setPhase({
          p: "locked",
          error: e instanceof LockError ? e.message : `Could not unlock: ${String(e)}`,
        });
      }
    },
    /** Turn the passphrase lock on; returns an error text or null. */
    async enableLock(passphrase: string): Promise<string | null> {
      try {
        await switchKey((cur) => enableLock(db as Db, cur, passphrase));
        setLockOn(true);
        return null;
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
    },
    async disableLock(): Promise<string | null> {
      const p = profile;
      if (!p) return "Parley is not ready yet.";
      try {
        await switchKey((cur) => disableLock(db as Db, cur, p.identity.privateKey));
        setLockOn(false);
        return null;
      } catch (e) {
        return e instanceof Error ? e.message : String(e);
      }
    },
    /** Drop every key from memory: a reload starts at the lock screen. */
    lockNow() {
      void shutdown();
      location.reload();
    },
    /** Restore an identity from a passphrase-encrypted backup file (storage/backup.ts). */
    async restore(fileText: string, passphrase: string): Promise<string | null> {
      try {
        const r = await importIdentity(fileText, passphrase);
        await onboard(r.username, { seed: r.seed, hub: r.hub });
        return null;
      } catch (e) {
        return e instanceof BackupError ? e.message : `Could not restore: ${String(e)}`;
      }
    },
    /** The identity as a passphrase-encrypted file's text (the caller offers it as a download). */
    async exportIdentity(passphrase: string): Promise<{ filename: string; text: string }> {
      if (!db || !deviceKey || !profile) throw new BackupError("Parley is not ready yet.");
      const seed = await readSeed(db, deviceKey);
      try {
        const file = await exportIdentity(
          seed,
          profile.username,
          profile.hub,
          profile.identity.publicKey,
          passphrase,
        );
        return {
          filename: `parley-identity-${profile.username}.json`,
          text: `${JSON.stringify(file, null, 2)}\n`,
        };
      } finally {
        seed.fill(0);
      }
    },
    takeOver: () => lock.acquire(true),
    /** First run: link this browser to an account used on another device (§4.8). */
    startLinking: (deviceName: string) => startLinking(deviceName),
    /** Back to the first-run choices; the code is dropped. */
    cancelLinking() {
      stopLinking();
      setPhase({ p: "onboarding" });
    },
    ownDevices,
    refreshDevices,
    /** The offer behind a typed or scanned code, checked against it; or the reason it is refused. */
    async fetchLinkOffer(code: string): Promise<{ request: LinkRequest } | { error: string }> {
      const e = engine;
      if (!e) return { error: "Parley is not ready yet." };
      try {
        return { request: await e.fetchLinkOffer(code) };
      } catch (err) {
        return { error: describeLinkError(err).text };
      }
    },
    /** The user confirmed: link the device (§4.8.3). Null on success, else the reason. */
    async approveLink(
      request: LinkRequest,
      thisDeviceName: string,
      range: HistoryRange = "none",
    ): Promise<string | null> {
      const e = engine;
      if (!e || !db || !deviceKey) return "Parley is not ready yet.";
      let archive: FileRef | undefined;
      try {
        archive = await exportHistory(range);
      } catch (err) {
        return `Your messages could not be prepared for the new device: ${describeThrown(err).text}`;
      }
      const seed = await readSeed(db, deviceKey);
      justLinked.add(request.device);
      try {
        await e.approveLink(request, {
          identitySeed: seed,
          thisDeviceName,
          ...(archive !== undefined ? { history: archive } : {}),
        });
        return null;
      } catch (err) {
        justLinked.delete(request.device);
        return describeLinkError(err).text;
      } finally {
        seed.fill(0);
        void refreshDevices();
      }
    },
    /** Remove another device of ours (§4.7): null on success, else the reason. */
    async removeDevice(id: string): Promise<string | null> {
      const e = engine;
      if (!e) return "Parley is not ready yet.";
      try {
        await e.removeDevice(id);
        return null;
      } catch (err) {
        return describeLinkError(err).text;
      } finally {
        void refreshDevices();
      }
    },
    /**
     * Use this browser for the identity again after it was restored elsewhere (§4.3): the next
     * auth claims it, and the other device is the one told it was replaced.
     */
    async reclaimDevice() {
      try {
        await engine?.reclaimDevice();
        conn?.start();
      } catch (e) {
        report(e);
      }
    },
    retryNow: () => conn?.retryNow(),
    /** "Signed in elsewhere": take the relay connection back (the newest connection wins). */
    useHere: () => conn?.start(),
    /** The saved draft of a conversation ("" when none). */
    draftOf: (id: string): string => drafts.get(id) ?? "",
    /** Remember what is typed; it is sealed to disk shortly after typing pauses. */
    keepDraft(id: string, text: string) {
      if ((drafts.get(id) ?? "") === text) return;
      if (text.length === 0) drafts.delete(id);
      else drafts.set(id, text);
      const t = draftTimers.get(id);
      if (t !== undefined) clearTimeout(t);
      draftTimers.set(
        id,
        setTimeout(() => persistDraft(id), 300),
      );
    },
    /** Write every pending draft now (the page is being hidden or closed). */
    flushDrafts() {
      for (const id of [...draftTimers.keys()]) persistDraft(id);
    },
    setVisible(v: boolean) {
      setVisible(v);
      if (!v) return;
      const sel = state.selected;
      if (sel) readConv(sel);
      // Back in front (phones freeze background tabs): do not sit out the rest of a backoff.
      conn?.retryNow();
    },
    select(id: ConversationId | null) {
      setState("selected", id);
      if (!id) return;
      readConv(id);
      const p = parseConvId(id);
      // Asking again: the name may have been registered since the relay last said "unknown".
      if (p?.kind === "direct" && state.conn.kind === "online") {
        mutate((s) => {
          const c = s.convs[id];
          if (c) c.missingUser = false;
        });
      }
      // Selecting a person starts (or resumes) the 1:1 chat: the engine fetches the bundle and
      // handshakes only if there is no session yet (idempotent otherwise). Starting a chat
      // accepts the person (PROTOCOL.md §8.11), so a message request or a blocked person is
      // only shown: the banner's Accept (or replying) decides.
      if (
        p?.kind === "direct" &&
        engine &&
        state.conn.kind === "online" &&
        state.convs[id]?.contact === undefined
      ) {
        engine.startChat(p.name).catch(report);
      }
    },
    openChat(username: string) {
      const id = convIdOf("direct", username);
      reopen(id);
      mutate((s) => {
        s.convs[id] ??= emptyConv(id);
      });
      actions.select(id);
    },
    /** Drop a conversation that never held anything (e.g. a mistyped name) from the list. */
    closeChat(id: ConversationId) {
      const c = state.convs[id];
      if (!c || c.entries.length > 0) return;
      closed.add(id);
      void history?.putConvMeta(id, metaOf(id, true));
      mutate((s) => {
        delete s.convs[id];
        if (s.selected === id) s.selected = null;
      });
    },
    async endChat(username: string) {
      try {
        await engine?.endChat(username);
      } catch (e) {
        report(e);
        return;
      }
      // The engine forgets the session without an event; say so in the conversation. The next
      // message (or reopening the chat) runs a fresh handshake.
      const id = convIdOf("direct", username);
      const line = systemEntry({
        conversationId: id,
        kind: "session_ended",
        text: "You ended the secure session. The next message starts a new one.",
        username,
        at: Date.now(),
      });
      mutate((s) => {
        upsertEntry(s, line, { countUnread: false });
        applySessionEnded(s, id);
      });
      persist(line);
    },
    /**
     * Hand one message to the engine; true once it accepted it (encrypted and stored in its
     * write-ahead outbox). The caller keeps the text until then, so a refusal loses nothing.
     */
    /** Send `text` as the edit of our message `mid` (§8.6.1); true once the engine took it. */
    async sendEdit(text: string, id: ConversationId, mid: string): Promise<boolean> {
      const trimmed = outgoingText(text);
      if (trimmed.trim().length === 0 || trimmed.length > MAX_TEXT_CHARS) return false;
      const ok = await messaging.edit(id, mid, trimmed);
      if (ok) messaging.cancelCompose(id);
      return ok;
    },
    async send(text: string, id: ConversationId | null = state.selected): Promise<boolean> {
      const trimmed = outgoingText(text);
      if (!id || trimmed.trim().length === 0) return false;
      // The engine refuses longer text; the composer offers to split it instead (split.ts).
      if (trimmed.length > MAX_TEXT_CHARS) return false;
      // Offline is fine: the engine encrypts now, keeps the frame in its write-ahead outbox and
      // sends it after the next welcome (PROTOCOL.md §10.1).
      if (!engine) return false;
      try {
        await engine.sendText(id, trimmed, messaging.textOptions(id));
        messaging.cancelCompose(id);
        messaging.typing(id, false);
        return true;
      } catch (e) {
        report(e);
        return false;
      }
    },
    async joinGroup(rawName: string) {
      const name = rawName.trim().toLowerCase();
      if (!NAME_RE.test(name) || name.length > 32) {
        toasts.show({
          kind: "error",
          text: "Group names use lower-case letters, digits, - and _.",
        });
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
    /** Create a group with a signed state (PROTOCOL.md §9.7.1): invite-only unless `open`. */
    async createGroup(rawName: string, title: string, policy: "open" | "invite") {
      const name = rawName.trim().toLowerCase();
      if (!NAME_RE.test(name) || name.length > 32) {
        toasts.show({
          kind: "error",
          text: "Group names use lower-case letters, digits, - and _.",
        });
        return;
      }
      const id = convIdOf("group", name);
      mutate((s) => {
        s.convs[id] ??= emptyConv(id);
      });
      actions.select(id);
      try {
        await engine?.createGroup(name, { title: title.trim() || name, policy });
      } catch (e) {
        report(e);
      }
    },
    /** Send `username` an invitation in an end-to-end 1:1 message (§9.7.3). */
    async inviteToGroup(group: string, username: string) {
      try {
        await engine?.inviteToGroup(group, username);
        toasts.show({ kind: "info", text: `Invitation sent to ${username}.` });
      } catch (e) {
        report(e);
      }
    },
    async acceptInvite(invite: Invite) {
      const id = convIdOf("group", invite.group);
      mutate((s) => {
        s.convs[id] ??= emptyConv(id);
      });
      actions.select(id);
      try {
        await engine?.acceptInvite(invite);
      } catch (e) {
        report(e);
      }
    },
    /** A new invite link (admins): the secret only in the link's fragment (§9.7.3). */
    async createInviteLink(group: string): Promise<string | null> {
      try {
        const secret = await engine?.createInviteLink(group);
        if (secret === undefined) return null;
        return `${location.origin}${location.pathname}#/join/${group}/${secret}`;
      } catch (e) {
        report(e);
        return null;
      }
    },
    revokeInviteLinks: (group: string) => reported(() => engine?.revokeInviteLinks(group)),
    removeMember: (group: string, username: string) =>
      reported(() => engine?.removeMember(group, username)),
    promoteMember: (group: string, username: string) =>
      reported(() => engine?.promoteMember(group, username)),
    demoteMember: (group: string, username: string) =>
      reported(() => engine?.demoteMember(group, username)),
    leaveGroup: (name: string) => reported(() => engine?.leaveGroup(name)),
    acceptKeyChange: (username: string) => reported(() => engine?.acceptKeyChange(username)),
    /** Accept a message request, or unblock (PROTOCOL.md §8.11). */
    acceptContact: (username: string) => reported(() => engine?.acceptContact(username)),
    /** Block a person: the relay refuses their messages to us (PROTOCOL.md §8.11). */
    blockContact: (username: string) => reported(() => engine?.blockContact(username)),
    /** Who may see us online: people we talk to, or everyone on this hub (§6.3). */
    setPresence: (scope: PresenceScope) => reported(() => engine?.setPresence(scope)),
    markVerified: (username: string) => reported(() => engine?.markVerified(username)),
    safetyNumber(username: string): Promise<string> {
      if (!engine) return Promise.reject(new Error("not ready"));
      return engine.safetyNumber(username);
    },
    async enableNotifications() {
      setNotifyPerm(await requestNotifications());
      await syncPush();
    },
    /** Choose what notifications show while Parley is closed (name and text / name / nothing). */
    async setNotifyContent(c: NotifyContent) {
      setNotifyContent(c);
      if (db) await writeNotifyContent(db, c);
    },
  };

  function readConv(id: ConversationId) {
    const now = Date.now();
    const since = state.convs[id]?.lastReadAt ?? 0;
    batch(() => mutate((s) => markRead(s, id, now)));
    saveMeta(id);
    messaging.readSince(id, since);
  }

  return {
    state,
    phase,
    toasts,
    notifyPerm,
    notifyContent,
    lockOn,
    actions,
    messaging,
    /** Attachment uploads and downloads (attachments.ts). */
    transfers,
    /** Start: ask for tab ownership; everything else follows from it. */
    init: () => lock.acquire(false),
  };
}

export type Parley = ReturnType<typeof createParley>;
