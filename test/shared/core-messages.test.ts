/**
 * Everyday-messaging contents (PROTOCOL.md §8.6.1): their strict schemas at the one parse of
 * decrypted content, a newer client's type shown as unsupported, and the pure decisions of
 * shared/core/messages.ts — only the author edits or deletes, deletes within the window, one
 * reaction per person, disappearing messages removed whole.
 */
import { describe, expect, it } from "vitest";
import {
  decodeContent,
  decodeDmContent,
  encodeContent,
  MAX_TEXT_CHARS,
} from "../../shared/core/content";
import { isCoreError } from "../../shared/core/errors";
import {
  DELETE_WINDOW_MS,
  DISAPPEAR_MAX_MS,
  DISAPPEAR_MIN_MS,
  MAX_REACTION_CHARS,
  MAX_READ_IDS,
} from "../../shared/core/message-content";
import {
  applyDelete,
  applyEdit,
  applyReaction,
  canDeleteForEveryone,
  currentTimer,
  formatDuration,
  MAX_EDIT_VERSIONS,
  nextExpiry,
  reactionSummary,
  type StoredMessage,
  sweepExpired,
  timerLineText,
} from "../../shared/core/messages";
import { pad } from "../../shared/core/padding";
import { utf8 } from "../../shared/encoding";

const raw = (x: unknown) => pad(utf8(JSON.stringify(x)));

function code(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (e) {
    return isCoreError(e) ? e.code : "other";
  }
}

const ref = { id: "m1", from: "alice" };

describe("content schemas (§8.6.1)", () => {
  const valid = [
    { t: "text", id: "a", ts: 1, text: "hi", reply: ref },
    { t: "text", id: "a", ts: 1, text: "hi", exp: 60_000 },
    { t: "react", id: "r", ts: 2, target: ref, emoji: "👍" },
    { t: "react", id: "r", ts: 2, target: ref, emoji: "" },
    { t: "edit", id: "e", ts: 3, target: "m1", text: "fixed" },
    { t: "delete", id: "d", ts: 4, target: "m1" },
    { t: "timer", id: "t", ts: 5, ms: 0 },
    { t: "timer", id: "t", ts: 5, ms: DISAPPEAR_MIN_MS },
    { t: "typing", on: true },
  ];

  it("round-trip in 1:1 and group messages alike", () => {
    for (const c of valid) {
      expect(decodeDmContent(raw(c))).toEqual(c);
      expect(decodeContent(raw(c))).toEqual(c);
    }
    const read = { t: "read" as const, ids: ["m1", "m2"] };
    expect(decodeDmContent(encodeContent(read))).toEqual(read);
  });

  it("refuse what breaks a limit or adds a key (malformed, never unsupported)", () => {
    const bad = [
      { t: "text", id: "a", ts: 1, text: "hi", reply: { id: "m1" } },
      { t: "text", id: "a", ts: 1, text: "hi", reply: { id: "m1", from: "Not A Name" } },
      { t: "text", id: "a", ts: 1, text: "hi", exp: DISAPPEAR_MIN_MS - 1 },
      { t: "text", id: "a", ts: 1, text: "hi", exp: DISAPPEAR_MAX_MS + 1 },
      { t: "react", id: "r", ts: 2, target: ref, emoji: "x".repeat(MAX_REACTION_CHARS + 1) },
      { t: "react", id: "r", ts: 2, target: "m1", emoji: "👍" },
      { t: "edit", id: "e", ts: 3, target: "m1", text: "x".repeat(MAX_TEXT_CHARS + 1) },
      { t: "edit", id: "e", ts: 3, target: "m1", text: "x", from: "alice" },
      { t: "delete", id: "d", ts: 4, target: "bad id!" },
      { t: "delete", id: "d", ts: 4 },
      { t: "timer", id: "t", ts: 5, ms: 1000 },
      { t: "timer", id: "t", ts: 5, ms: -1 },
      { t: "typing", on: "yes" },
      { t: "typing", on: true, id: "x" },
      { t: "read", ids: [] },
      { t: "read", ids: Array.from({ length: MAX_READ_IDS + 1 }, (_, i) => `m${i}`) },
    ];
    for (const c of bad) {
      expect(
        code(() => decodeDmContent(raw(c))),
        JSON.stringify(c),
      ).toBe("malformed");
      expect(
        code(() => decodeContent(raw(c))),
        JSON.stringify(c),
      ).toBe("malformed");
    }
  });

  it("keeps read receipts out of groups", () => {
    expect(code(() => decodeContent(raw({ t: "read", ids: ["m1"] })))).toBe("malformed");
  });

  it("shows a newer client's content type as unsupported instead of failing", () => {
    const poll = { t: "poll", id: "p1", ts: 9, question: "lunch?", options: ["a", "b"] };
    expect(decodeDmContent(raw(poll))).toEqual({ t: "unsupported", type: "poll", id: "p1", ts: 9 });
    expect(decodeContent(raw({ t: "sticker_v2", pack: 3 }))).toEqual({
      t: "unsupported",
      type: "sticker_v2",
    });
    // Not a content at all, or a type name no client would use: still malformed.
    for (const x of [[], "text", 7, { t: 5 }, { t: "" }, { t: "Poll!" }, { t: "x".repeat(33) }]) {
      expect(
        code(() => decodeDmContent(raw(x))),
        JSON.stringify(x),
      ).toBe("malformed");
    }
  });
});

const msg = (over: Partial<StoredMessage> & { id: string; from: string }): StoredMessage => ({
  kind: "msg",
  direction: "in",
  text: "original",
  sentAt: 1000,
  at: 1000,
  ...over,
});

describe("edit (§8.6.1)", () => {
  const entries = [
    msg({ id: "m1", from: "alice" }),
    msg({ id: "m2", from: "bob", direction: "out" }),
  ];

  it("the author changes the text; earlier versions are kept for 'history'", () => {
    const r = applyEdit(entries, { by: "alice", target: "m1", text: "fixed", at: 2000 });
    expect(r.ok && r.entry).toMatchObject({
      text: "fixed",
      editedAt: 2000,
      edits: [{ text: "original", at: 1000 }],
    });
    expect(r.ok && r.index).toBe(0);
    expect(entries[0]?.text).toBe("original"); // pure: the input is unchanged
    if (!r.ok) return;
    const again = applyEdit([r.entry], { by: "alice", target: "m1", text: "third", at: 3000 });
    expect(again.ok && again.entry.edits).toEqual([
      { text: "original", at: 1000 },
      { text: "fixed", at: 2000 },
    ]);
  });

  it("is refused from anyone but the author", () => {
    expect(applyEdit(entries, { by: "carol", target: "m1", text: "forged", at: 2000 })).toEqual({
      ok: false,
      reason: "not_author",
    });
    expect(applyEdit(entries, { by: "bob", target: "m1", text: "forged", at: 2000 })).toEqual({
      ok: false,
      reason: "not_author",
    });
    expect(applyEdit(entries, { by: "alice", target: "zz", text: "x", at: 2000 })).toEqual({
      ok: false,
      reason: "not_found",
    });
  });

  it("keeps a bounded number of versions and never edits a deleted message", () => {
    let e = [msg({ id: "m1", from: "alice" })];
    for (let i = 0; i < MAX_EDIT_VERSIONS + 5; i++) {
      const r = applyEdit(e, { by: "alice", target: "m1", text: `v${i}`, at: 2000 + i });
      if (!r.ok) throw new Error(r.reason);
      e = [r.entry];
    }
    expect(e[0]?.edits).toHaveLength(MAX_EDIT_VERSIONS);
    const d = applyDelete(e, { by: "alice", target: "m1" }, 2000);
    if (!d.ok) throw new Error(d.reason);
    expect(applyEdit([d.entry], { by: "alice", target: "m1", text: "back", at: 9 })).toEqual({
      ok: false,
      reason: "deleted",
    });
  });
});

describe("delete for everyone (§8.6.1)", () => {
  const m = msg({
    id: "m1",
    from: "alice",
    reactions: [{ from: "bob", emoji: "👍" }],
    edits: [{ text: "old", at: 900 }],
    editedAt: 950,
    reply: { id: "m0", from: "bob" },
  });

  it("leaves a tombstone without text, versions, reactions or quote", () => {
    const r = applyDelete([m], { by: "alice", target: "m1" }, 1000 + DELETE_WINDOW_MS);
    expect(r.ok && r.entry).toEqual({
      kind: "msg",
      id: "m1",
      from: "alice",
      direction: "in",
      text: "",
      sentAt: 1000,
      at: 1000,
      deleted: true,
    });
  });

  it("drops an attached file's reference, and with it the file's key", () => {
    const withFile = {
      ...m,
      file: { blob: "b".repeat(43), key: "k".repeat(43), digest: "d".repeat(43), name: "x.jpg" },
    };
    const r = applyDelete([withFile], { by: "alice", target: "m1" }, 1000);
    expect(r.ok).toBe(true);
    expect(r.ok && "file" in r.entry).toBe(false);
    expect(JSON.stringify(r.ok && r.entry)).not.toContain("k".repeat(43));
  });

  it("is refused after the window (our clock) and from anyone but the author", () => {
    expect(applyDelete([m], { by: "alice", target: "m1" }, 1001 + DELETE_WINDOW_MS)).toEqual({
      ok: false,
      reason: "too_late",
    });
    expect(applyDelete([m], { by: "carol", target: "m1" }, 1000)).toEqual({
      ok: false,
      reason: "not_author",
    });
  });

  it("is offered for our own messages inside the window only", () => {
    const own = msg({ id: "o", from: "bob", direction: "out" });
    expect(canDeleteForEveryone(own, 1000 + DELETE_WINDOW_MS)).toBe(true);
    expect(canDeleteForEveryone(own, 1001 + DELETE_WINDOW_MS)).toBe(false);
    expect(canDeleteForEveryone(m, 1000)).toBe(false);
  });
});

describe("reactions (§8.6.1)", () => {
  const entries = [msg({ id: "m1", from: "alice" }), msg({ id: "m1", from: "carol" })];

  it("one reaction per person per message, replaced or removed", () => {
    let r = applyReaction(entries, { by: "bob", target: ref, emoji: "👍" });
    expect(r.ok && r.index).toBe(0);
    if (!r.ok) return;
    r = applyReaction([r.entry], { by: "dave", target: ref, emoji: "👍" });
    if (!r.ok) return;
    r = applyReaction([r.entry], { by: "bob", target: ref, emoji: "❤️" });
    if (!r.ok) return;
    expect(reactionSummary(r.entry)).toEqual([
      { emoji: "👍", from: ["dave"] },
      { emoji: "❤️", from: ["bob"] },
    ]);
    r = applyReaction([r.entry], { by: "bob", target: ref, emoji: "" });
    if (!r.ok) return;
    expect(r.entry.reactions).toEqual([{ from: "dave", emoji: "👍" }]);
    r = applyReaction([r.entry], { by: "dave", target: ref, emoji: "" });
    expect(r.ok && "reactions" in r.entry).toBe(false);
  });

  it("names a message by author and id: the same id of another sender is another message", () => {
    const r = applyReaction(entries, {
      by: "bob",
      target: { id: "m1", from: "carol" },
      emoji: "😮",
    });
    expect(r.ok && r.index).toBe(1);
    expect(
      applyReaction(entries, { by: "bob", target: { id: "m1", from: "eve" }, emoji: "x" }),
    ).toEqual({ ok: false, reason: "not_found" });
  });
});

describe("disappearing messages (§8.6.1)", () => {
  const entries = [
    { kind: "sys", id: "s1", sysKind: "timer", ms: 60_000, at: 500 },
    msg({ id: "a", from: "alice", at: 1000, exp: 60_000 }),
    msg({ id: "b", from: "alice", at: 2000 }),
    msg({ id: "c", from: "bob", at: 3000, exp: 5_000, direction: "out" }),
  ];

  it("expired messages are removed whole; others and system lines stay", () => {
    expect(nextExpiry(entries)).toBe(8000);
    const s1 = sweepExpired(entries, 7999);
    expect(s1.expired).toEqual([]);
    const s2 = sweepExpired(entries, 8000);
    expect(s2.expired.map((e) => e.id)).toEqual(["c"]);
    const s3 = sweepExpired(s2.kept, 61_000);
    expect(s3.expired.map((e) => e.id)).toEqual(["a"]);
    expect(s3.kept.map((e) => e.id)).toEqual(["s1", "b"]);
    expect(nextExpiry(s3.kept)).toBeUndefined();
  });

  it("the conversation's timer is the last timer line's", () => {
    expect(currentTimer(entries)).toBe(60_000);
    expect(
      currentTimer([...entries, { kind: "sys", id: "s2", sysKind: "timer", ms: 0, at: 9 }]),
    ).toBe(0);
    expect(currentTimer([])).toBe(0);
  });

  it("words timer changes", () => {
    expect(formatDuration(30_000)).toBe("30 seconds");
    expect(formatDuration(3_600_000)).toBe("1 hour");
    expect(formatDuration(7 * 86_400_000)).toBe("1 week");
    expect(timerLineText("alice", 300_000)).toBe("alice set messages to disappear after 5 minutes");
    expect(timerLineText(null, 0)).toBe("You turned off disappearing messages");
  });
});
