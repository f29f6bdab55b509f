/**
 * What a notification says for messages received while Parley was closed, per the user's
 * setting (pwa/src/platform/push.ts, PROTOCOL.md §12.7): the same words in the service worker
 * and in an open but hidden tab.
 */
import { describe, expect, it } from "vitest";
import { notificationsFor, PREVIEW_CHARS } from "../../pwa/src/platform/push";
import type { ChatMessage, ConversationId } from "../../shared/core/client-api";

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
