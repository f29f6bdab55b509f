/** Pure parts of the PWA: conversation view transitions, reconnect backoff, status labels. */
import { describe, expect, test } from "vitest";
import { backoffDelay, DEFAULT_BACKOFF } from "../../pwa/src/net/backoff";
import {
  applyDelivery,
  applyLink,
  applySessionEnded,
  applySummary,
  convIdOf,
  initialChatState,
  loadHistory,
  markRead,
  parseConvId,
  sendBlockedReason,
  sortedConvs,
  upsertEntry,
} from "../../pwa/src/state/model";
import { conversationStatus } from "../../pwa/src/state/status";
import type { HistoryEntry, HistoryMessage } from "../../pwa/src/storage/schemas";
import { chatStatusLabel } from "../../pwa/src/ui/format";
import { connectionNotice } from "../../pwa/src/ui/wording";
import type { ConversationSummary } from "../../shared/core/client-api";

function msg(id: string, at: number, over: Partial<HistoryMessage> = {}): HistoryMessage {
  return {
    kind: "msg",
    id,
    conversationId: "dm:bob",
    from: "bob",
    direction: "in",
    text: `text ${id}`,
    sentAt: at,
    at,
    ...over,
  };
}

describe("backoff", () => {
  test("grows exponentially, is capped, and jitter spans [floor, upper]", () => {
    expect(backoffDelay(0, 0)).toBe(DEFAULT_BACKOFF.floorMs);
    expect(backoffDelay(0, 1)).toBe(1000);
    expect(backoffDelay(3, 1)).toBe(8000);
    expect(backoffDelay(10, 1)).toBe(30_000);
    expect(backoffDelay(1000, 1)).toBe(30_000);
    for (let a = 0; a < 12; a++) {
      for (const r of [0, 0.25, 0.5, 0.999]) {
        const d = backoffDelay(a, r);
        expect(d).toBeGreaterThanOrEqual(DEFAULT_BACKOFF.floorMs);
        expect(d).toBeLessThanOrEqual(DEFAULT_BACKOFF.capMs);
      }
    }
    // out-of-range randomness is clamped, never negative or beyond the cap
    expect(backoffDelay(2, -5)).toBe(DEFAULT_BACKOFF.floorMs);
    expect(backoffDelay(2, 7)).toBe(4000);
  });
});

describe("conversation model", () => {
  test("conversation ids round-trip", () => {
    expect(parseConvId(convIdOf("direct", "bob"))).toEqual({ kind: "direct", name: "bob" });
    expect(parseConvId(convIdOf("group", "broadcast"))).toEqual({
      kind: "group",
      name: "broadcast",
    });
    expect(parseConvId("weird:x")).toBeNull();
  });

  test("entries stay in time order, duplicates are ignored instead of doubling", () => {
    const s = initialChatState();
    expect(upsertEntry(s, msg("b", 20), { countUnread: true })).toBe(true);
    expect(upsertEntry(s, msg("a", 10), { countUnread: true })).toBe(true);
    expect(upsertEntry(s, msg("c", 30), { countUnread: true })).toBe(true);
    expect(upsertEntry(s, msg("b", 20, { text: "edited" }), { countUnread: true })).toBe(false);
    const c = s.convs["dm:bob"];
    expect(c?.entries.map((e) => e.id)).toEqual(["a", "b", "c"]);
    // a sender cannot rewrite a message it already sent
    expect(c?.entries[1]?.kind === "msg" && c.entries[1].text).toBe("text b");
    expect(c?.unread).toBe(3);
    markRead(s, "dm:bob", 99);
    expect(s.convs["dm:bob"]?.unread).toBe(0);
    expect(s.convs["dm:bob"]?.lastReadAt).toBe(99);
  });

  test("a message sent again after a repair takes its place among its sender's messages", () => {
    const s = initialChatState();
    // bob wrote m1 then m2; m1 was sent again after a session repair and arrived last.
    upsertEntry(s, msg("mine", 5, { direction: "out", from: "alice" }), { countUnread: false });
    upsertEntry(s, msg("m2", 40, { sentAt: 20 }), { countUnread: true });
    upsertEntry(s, msg("m1", 50, { sentAt: 10 }), { countUnread: true });
    expect(s.convs["dm:bob"]?.entries.map((e) => e.id)).toEqual(["mine", "m1", "m2"]);
    // Another sender's later message is not reordered by bob's clock.
    upsertEntry(s, msg("c1", 60, { from: "carol", sentAt: 1 }), { countUnread: true });
    expect(s.convs["dm:bob"]?.entries.map((e) => e.id)).toEqual(["mine", "m1", "m2", "c1"]);
    // A reload (history stored in arrival order) shows the same order.
    const stored = [...(s.convs["dm:bob"]?.entries ?? [])].sort((a, b) => a.at - b.at);
    const again = initialChatState();
    loadHistory(again, new Map([["dm:bob", stored]]), new Map());
    expect(again.convs["dm:bob"]?.entries.map((e) => e.id)).toEqual(["mine", "m1", "m2", "c1"]);
  });

  test("outgoing messages never count as unread", () => {
    const s = initialChatState();
    upsertEntry(s, msg("o", 1, { direction: "out", from: "alice" }), { countUnread: true });
    expect(s.convs["dm:bob"]?.unread).toBe(0);
  });

  test("delivery state only moves forward", () => {
    const s = initialChatState();
    upsertEntry(s, msg("m", 1, { direction: "out", delivery: "sending" }), { countUnread: false });
    expect(applyDelivery(s, "dm:bob", "m", "delivered")?.delivery).toBe("delivered");
    expect(applyDelivery(s, "dm:bob", "m", "sent")).toBeNull();
    const e = s.convs["dm:bob"]?.entries[0];
    expect(e?.kind === "msg" && e.delivery).toBe("delivered");
    expect(applyDelivery(s, "dm:bob", "missing", "sent")).toBeNull();
    expect(applyDelivery(s, "dm:nobody", "m", "sent")).toBeNull();
  });

  test("history load counts unread against lastReadAt", () => {
    const s = initialChatState();
    const entries: HistoryEntry[] = [msg("a", 10), msg("b", 20), msg("c", 30)];
    loadHistory(s, new Map([["dm:bob", entries]]), new Map([["dm:bob", { lastReadAt: 15 }]]));
    expect(s.convs["dm:bob"]?.unread).toBe(2);
  });

  test("summaries merge; broadcast sorts first; sending is blocked when it must be", () => {
    const s = initialChatState();
    const g = (name: string, extra: Partial<ConversationSummary> = {}): ConversationSummary => ({
      id: convIdOf("group", name),
      kind: "group",
      name,
      keyChanged: false,
      members: [],
      epoch: 1,
      ...extra,
    });
    applySummary(s, g("alpha"));
    applySummary(s, g("broadcast", { epoch: -1 }));
    applySummary(s, g("zeta", { removalPending: true }));
    expect(sortedConvs(s).groups.map((c) => c.name)).toEqual(["broadcast", "alpha", "zeta"]);
    const conv = (id: string) => {
      const c = s.convs[id];
      if (!c) throw new Error(id);
      return c;
    };
    expect(sendBlockedReason(conv("group:alpha"))).toBeNull();
    expect(sendBlockedReason(conv("group:broadcast"))).toMatch(/Join/);
    expect(sendBlockedReason(conv("group:zeta"))).toMatch(/left/);
    applySummary(s, {
      id: "dm:eve",
      kind: "direct",
      name: "eve",
      keyChanged: true,
      members: [],
    });
    expect(sendBlockedReason(conv("dm:eve"))).toMatch(/safety number/);
  });
});

describe("top bar status", () => {
  test("socket state wins while not online, then the chat's own status", () => {
    expect(chatStatusLabel({ kind: "waiting", retryAt: 10_500 }, "secure", 7_000).label).toBe(
      "Offline",
    );
    // The countdown moved from the pill to the connection notice under the top bar.
    expect(connectionNotice({ kind: "waiting", retryAt: 10_500 }, 7_000)?.text).toBe(
      "Reconnecting in 4 s…",
    );
    expect(chatStatusLabel({ kind: "connecting" }, "secure", 0).label).toBe("Connecting");
    expect(chatStatusLabel({ kind: "online" }, "handshaking", 0)).toEqual({
      label: "Handshaking",
      tone: "warn",
    });
    expect(chatStatusLabel({ kind: "online" }, "verified", 0).tone).toBe("good");
    expect(chatStatusLabel({ kind: "online" }, "key_changed", 0)).toEqual({
      label: "Key changed",
      tone: "bad",
    });
    expect(chatStatusLabel({ kind: "online" }, null, 0).label).toBe("Online");
  });
});

describe("conversation status (the view's reading of the engine's facts)", () => {
  const bob = { username: "bob", identityKey: "k", fingerprint: "f", verified: false };
  const dm = (extra: Partial<ConversationSummary>): ConversationSummary => ({
    id: "dm:bob",
    kind: "direct",
    name: "bob",
    keyChanged: false,
    session: "none",
    members: [bob],
    ...extra,
  });
  test("direct: the pin wins, then the link, then the session phase", () => {
    expect(conversationStatus(dm({ keyChanged: true, session: "ready" }), true)).toBe(
      "key_changed",
    );
    expect(conversationStatus(dm({ keyChanged: true }), false)).toBe("key_changed");
    expect(conversationStatus(dm({ session: "ready" }), false)).toBe("offline");
    expect(conversationStatus(dm({ session: "none" }), true)).toBe("connecting");
    expect(conversationStatus(dm({ session: "fetching" }), true)).toBe("connecting");
    expect(conversationStatus(dm({ session: "handshaking" }), true)).toBe("handshaking");
    expect(conversationStatus(dm({ session: "ready" }), true)).toBe("secure");
    const verified = dm({ session: "ready", members: [{ ...bob, verified: true }] });
    expect(conversationStatus(verified, true)).toBe("verified");
  });
  test("groups: member and not leaving is secure; joining is connecting", () => {
    const g = (extra: Partial<ConversationSummary>): ConversationSummary => ({
      id: "group:g",
      kind: "group",
      name: "g",
      keyChanged: false,
      members: [],
      epoch: -1,
      ...extra,
    });
    expect(conversationStatus(g({ epoch: 3 }), true)).toBe("secure");
    expect(conversationStatus(g({ epoch: 3, leaving: true }), true)).toBe("offline");
    expect(conversationStatus(g({ joining: true }), true)).toBe("connecting");
    expect(conversationStatus(g({}), true)).toBe("offline");
    expect(conversationStatus(g({ epoch: 3 }), false)).toBe("offline");
    expect(conversationStatus(g({ epoch: 3, keyChanged: true }), true)).toBe("key_changed");
  });
  test("a link change re-reads every conversation's status", () => {
    const s = initialChatState();
    applySummary(s, dm({ session: "ready" }));
    expect(s.convs["dm:bob"]?.status).toBe("offline");
    applyLink(s, true);
    expect(s.convs["dm:bob"]?.status).toBe("secure");
    applySessionEnded(s, "dm:bob");
    expect(s.convs["dm:bob"]?.status).toBe("connecting");
    applyLink(s, false);
    expect(s.convs["dm:bob"]?.status).toBe("offline");
  });
});
