/**
 * Everyday messaging in the app (PROTOCOL.md §8.6.1, §12.6): replies, reactions, edits, deletes,
 * the disappearing timer and its expiry, typing indicators, read receipts, mute and archive, and
 * search. The decisions are shared/core/messages.ts's (through state/model.ts); this wires them
 * to the engine, the sealed history and the UI's signals.
 */
import { createSignal } from "solid-js";
import type {
  ConversationId,
  OutgoingAction,
  ParleyClientApi,
  ParleyEvent,
} from "../../../shared/core/client-api";
import type { MessageRef } from "../../../shared/core/message-content";
import { MAX_READ_IDS } from "../../../shared/core/message-content";
import { canDeleteForEveryone } from "../../../shared/core/messages";
import type { SearchIndex } from "../search/search-index";
import {
  applyContent,
  type ChatState,
  expireAll,
  nextExpiryAll,
  removeEntry,
  TYPING_SHOW_MS,
  timerOf,
} from "../state/model";
import type { Db } from "../storage/db";
import { type HistoryStore, rowKey } from "../storage/history";
import {
  DEFAULT_MESSAGE_PREFS,
  type MessagePrefs,
  readMessagePrefs,
  writeMessagePrefs,
} from "../storage/prefs";
import type { HistoryEntry, HistoryMessage } from "../storage/schemas";

/** What the composer is doing in a conversation besides writing a new message. */
export type ComposeMode = { t: "reply"; to: MessageRef } | { t: "edit"; id: string };

/** A typing state goes out at most this often while the user keeps typing (§8.6.1). */
export const TYPING_RESEND_MS = 4_000;

export interface MessagingDeps {
  state: ChatState;
  mutate(fn: (s: ChatState) => void): void;
  persist(entry: HistoryEntry): void;
  /** Delete an entry's row, in order with the other history writes. */
  unpersist(entry: HistoryEntry): void;
  engine(): ParleyClientApi | null;
  history(): HistoryStore | null;
  db(): Db | null;
  report(err: unknown): void;
  /** Persist a conversation's local flags (mute, archive) with its read mark. */
  saveMeta(id: ConversationId): void;
}

export function createMessaging(d: MessagingDeps) {
  const [prefs, setPrefsSignal] = createSignal<MessagePrefs>(DEFAULT_MESSAGE_PREFS);
  const [compose, setCompose] = createSignal<Partial<Record<ConversationId, ComposeMode>>>({});
  /** The message to scroll to and highlight (a search hit); `seq` re-triggers the same one. */
  const [focus, setFocus] = createSignal<{ conv: ConversationId; key: string; seq: number } | null>(
    null,
  );
  /** Our clock, ticking while someone is shown typing, so the indicator goes away on time. */
  const [now, setNow] = createSignal(Date.now());

  let expiryTimer: ReturnType<typeof setTimeout> | undefined;
  let typingTick: ReturnType<typeof setTimeout> | undefined;
  const typingSent = new Map<ConversationId, number>();
  let index: SearchIndex | null = null;
  let focusSeq = 0;

  const me = () => d.state.me?.username ?? "";

  async function send(conv: ConversationId, action: OutgoingAction): Promise<boolean> {
    const e = d.engine();
    if (!e) return false;
    try {
      await e.sendAction(conv, action);
      return true;
    } catch (err) {
      d.report(err);
      return false;
    }
  }

  /** Remove entries from the view, their rows and the search index (deleted or expired). */
  function forget(entries: readonly HistoryEntry[]) {
    if (entries.length === 0) return;
    for (const e of entries) d.unpersist(e);
    void refreshStoredIndex();
  }

  /**
   * Keep the sealed index free of what left history: in step now if it is loaded, otherwise
   * the stored one is dropped (rebuilt from history at the next search).
   */
  async function refreshStoredIndex() {
    const h = d.history();
    if (!h) return;
    try {
      if (index === null) await h.putSearchIndex(null);
      else if (await index.sync(docs())) await h.putSearchIndex(index.toJSON());
    } catch (err) {
      console.warn("could not update the search index", err);
    }
  }

  /** Run the disappearing-message sweep now and set it for the next expiry (§8.6.1). */
  function sweep() {
    clearTimeout(expiryTimer);
    let gone: HistoryEntry[] = [];
    d.mutate((s) => {
      gone = expireAll(s, Date.now());
    });
    forget(gone);
    const next = nextExpiryAll(d.state);
    if (next !== undefined) {
      // Capped: a far timer is re-armed rather than overflowing setTimeout's 32-bit delay.
      const ms = Math.min(Math.max(next - Date.now(), 0), 2 ** 30);
      expiryTimer = setTimeout(sweep, ms + 50);
    }
  }

  function tickTyping() {
    clearTimeout(typingTick);
    setNow(Date.now());
    const any = Object.values(d.state.convs).some((c) =>
      Object.values(c.typing).some((until) => until > Date.now()),
    );
    if (any) typingTick = setTimeout(tickTyping, 1000);
  }

  return {
    prefs,
    compose,
    focus,
    now,
    /** After history is loaded: read the settings, sweep what expired while closed. */
    async loaded() {
      const db = d.db();
      if (db) setPrefsSignal(await readMessagePrefs(db));
      sweep();
    },
    /** A text arrived or was sent: its author stopped typing; it may disappear later. */
    onMessage(entry: HistoryMessage) {
      if (entry.direction === "in" && d.state.convs[entry.conversationId]?.typing[entry.from]) {
        d.mutate((s) => {
          const c = s.convs[entry.conversationId];
          if (c) delete c.typing[entry.from];
        });
      }
      if (entry.exp !== undefined) sweep();
    },
    onContent(ev: Extract<ParleyEvent, { type: "content" }>) {
      let put: HistoryEntry[] = [];
      d.mutate((s) => {
        const r = applyContent(s, ev, { me: me(), readReceipts: prefs().readReceipts });
        put = r.put;
      });
      for (const e of put) d.persist(e);
      // Read on another device of ours (§4.9): the read mark is kept like one made here.
      if (ev.content.t === "read" && ev.direction === "out") d.saveMeta(ev.conversationId);
      if (ev.content.t === "typing") tickTyping();
      // A deleted message's words leave the search index too.
      if (ev.content.t === "delete" && put.length > 0) void refreshStoredIndex();
    },
    async setPref(p: Partial<MessagePrefs>) {
      const next = { ...prefs(), ...p };
      setPrefsSignal(next);
      const db = d.db();
      if (db) await writeMessagePrefs(db, next);
    },
    startReply(conv: ConversationId, to: MessageRef) {
      setCompose((m) => ({ ...m, [conv]: { t: "reply", to } }));
    },
    startEdit(conv: ConversationId, id: string) {
      setCompose((m) => ({ ...m, [conv]: { t: "edit", id } }));
    },
    cancelCompose(conv: ConversationId) {
      setCompose((m) => {
        const { [conv]: _gone, ...rest } = m;
        return rest;
      });
    },
    /**
     * The message being replied to in `conv`, if any, for files sent now: the reply goes with the
     * first file (as it would with a text) and the composer leaves reply mode. Edit mode stays: a
     * file is never an edit.
     */
    takeReply(conv: ConversationId): MessageRef | undefined {
      const mode = compose()[conv];
      if (mode?.t !== "reply") return undefined;
      setCompose((m) => {
        const { [conv]: _gone, ...rest } = m;
        return rest;
      });
      return mode.to;
    },
    /** Options for a new text in `conv`: the reply being composed, the conversation's timer. */
    textOptions(conv: ConversationId) {
      const c = d.state.convs[conv];
      const mode = compose()[conv];
      const exp = c ? timerOf(c) : 0;
      return {
        ...(mode?.t === "reply" ? { reply: mode.to } : {}),
        ...(exp > 0 ? { exp } : {}),
      };
    },
    react: (conv: ConversationId, target: MessageRef, emoji: string) =>
      send(conv, { t: "react", target, emoji }),
    edit: (conv: ConversationId, id: string, text: string) =>
      send(conv, { t: "edit", target: id, text }),
    async deleteForEveryone(conv: ConversationId, id: string) {
      const m = d.state.convs[conv]?.entries.find(
        (e): e is HistoryMessage => e.kind === "msg" && e.direction === "out" && e.id === id,
      );
      if (!m || !canDeleteForEveryone(m, Date.now())) return false;
      return send(conv, { t: "delete", target: id });
    },
    /** Delete for me: only this device forgets it (§12.6). */
    deleteForMe(conv: ConversationId, entry: HistoryMessage) {
      let removed = false;
      d.mutate((s) => {
        removed = removeEntry(s, conv, entry);
      });
      if (removed) forget([entry]);
    },
    setTimer: (conv: ConversationId, ms: number) => send(conv, { t: "timer", ms }),
    /** The user typed in `conv` (or cleared it): tell the others, throttled, if allowed. */
    typing(conv: ConversationId, on: boolean) {
      if (!prefs().typing) return;
      const last = typingSent.get(conv) ?? 0;
      if (on && Date.now() - last < TYPING_RESEND_MS) return;
      if (!on && last === 0) return;
      typingSent.set(conv, on ? Date.now() : 0);
      void d
        .engine()
        ?.sendAction(conv, { t: "typing", on })
        .catch(() => undefined);
    },
    /**
     * We read `conv` up to now: send read receipts for what arrived since `since` (1:1); with
     * read receipts off — and in a group, which has none — only our own other devices hear of
     * it (PROTOCOL.md §4.9).
     */
    readSince(conv: ConversationId, since: number) {
      const ownDevicesOnly = !prefs().readReceipts || conv.startsWith("group:");
      const ids = (d.state.convs[conv]?.entries ?? [])
        .filter((e) => e.kind === "msg" && e.direction === "in" && e.at > since && !e.unsupported)
        .map((e) => e.id);
      for (let i = 0; i < ids.length; i += MAX_READ_IDS) {
        const chunk = ids.slice(i, i + MAX_READ_IDS);
        void send(
          conv,
          ownDevicesOnly ? { t: "read", ids: chunk, ownDevicesOnly } : { t: "read", ids: chunk },
        );
      }
    },
    setMuted(conv: ConversationId, muted: boolean) {
      d.mutate((s) => {
        const c = s.convs[conv];
        if (c) c.muted = muted;
      });
      d.saveMeta(conv);
    },
    setArchived(conv: ConversationId, archived: boolean) {
      d.mutate((s) => {
        const c = s.convs[conv];
        if (c) c.archived = archived;
      });
      d.saveMeta(conv);
    },
    /** Search every conversation's history; hits in time order of relevance. */
    async search(query: string) {
      const h = d.history();
      if (!h) return [];
      if (index === null) {
        const { SearchIndex } = await import("../search/search-index");
        index = SearchIndex.open(await h.getSearchIndex());
      }
      if (await index.sync(docs())) await h.putSearchIndex(index.toJSON());
      const byKey = new Map<string, HistoryMessage>();
      for (const c of Object.values(d.state.convs)) {
        for (const e of c.entries) if (e.kind === "msg") byKey.set(rowKey(e), e);
      }
      return index.search(query).flatMap((hit) => {
        const m = byKey.get(hit.key);
        return m ? [{ key: hit.key, message: m }] : [];
      });
    },
    jumpTo(conv: ConversationId, key: string) {
      focusSeq++;
      setFocus({ conv, key, seq: focusSeq });
    },
  };

  /** Every message search may find: not deleted, not unsupported, with text. */
  function docs() {
    const out = [];
    for (const c of Object.values(d.state.convs)) {
      for (const e of c.entries) {
        if (e.kind !== "msg" || e.deleted === true || e.unsupported !== undefined) continue;
        if (e.text.length === 0) continue;
        out.push({
          key: rowKey(e),
          conv: e.conversationId,
          from: e.from,
          text: e.text,
          rev: e.editedAt ?? e.at,
        });
      }
    }
    return out;
  }
}

export type Messaging = ReturnType<typeof createMessaging>;
export { TYPING_SHOW_MS };
