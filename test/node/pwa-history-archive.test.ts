/**
 * The history archive a linking device hands over (PROTOCOL.md §4.8.5): what goes in (the
 * chosen period, no disappeared messages, the newest when it does not all fit), and what the
 * new device accepts back (a whole document that parses; entry by entry, the history schema of
 * §12.3 and our own name on our outgoing messages).
 */
import { describe, expect, test } from "vitest";
import {
  buildHistoryArchive,
  HistoryArchiveError,
  MAX_ARCHIVE_ENTRIES,
  parseHistoryArchive,
  rangeStart,
} from "../../pwa/src/storage/history-archive";
import type { HistoryEntry, HistoryMessage } from "../../pwa/src/storage/schemas";
import { fromUtf8, utf8 } from "../../shared/encoding";

const DAY = 24 * 60 * 60 * 1000;
const NOW = 400 * DAY;

function msg(over: Partial<HistoryMessage>): HistoryMessage {
  return {
    kind: "msg",
    id: "m1",
    conversationId: "dm:bob",
    from: "bob",
    direction: "in",
    text: "hello",
    sentAt: NOW - DAY,
    at: NOW - DAY,
    ...over,
  };
}

function must<T>(x: T | null): T {
  if (x === null) throw new Error("expected an archive");
  return x;
}

function errorCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof HistoryArchiveError) return e.code;
    throw e;
  }
  return "none";
}

describe("building the archive", () => {
  test("the chosen period only, oldest first; a disappeared message stays behind", () => {
    const entries: HistoryEntry[] = [
      msg({ id: "today", at: NOW - 1000 }),
      msg({ id: "old", at: NOW - 40 * DAY }),
      msg({ id: "week", at: NOW - 6 * DAY }),
      msg({ id: "gone", at: NOW - 2 * DAY, exp: DAY }),
      msg({ id: "ticking", at: NOW - 1000, exp: DAY }),
      {
        kind: "sys",
        id: "s1",
        conversationId: "dm:bob",
        sysKind: "verified",
        text: "verified",
        at: NOW - 3 * DAY,
      },
    ];
    const ids = (range: "week" | "month" | "all") => {
      const since = rangeStart(range, NOW);
      if (since === null) throw new Error("range");
      const built = buildHistoryArchive(entries, since, NOW);
      if (built === null) throw new Error("no archive");
      const { bytes, count } = built;
      const out = parseHistoryArchive(bytes, "alice").entries.map((e) => e.id);
      expect(out).toHaveLength(count);
      return out;
    };
    expect(ids("week")).toEqual(["week", "s1", "today", "ticking"]);
    expect(ids("month")).toEqual(["week", "s1", "today", "ticking"]);
    expect(ids("all")).toEqual(["old", "week", "s1", "today", "ticking"]);
    expect(rangeStart("none", NOW)).toBeNull();
  });

  test("an outgoing message still in this device's outbox comes without a delivery state", () => {
    const { bytes } = must(
      buildHistoryArchive(
        [
          msg({ id: "pending", from: "alice", direction: "out", delivery: "sending" }),
          msg({ id: "read", from: "alice", direction: "out", delivery: "read" }),
        ],
        0,
        NOW,
      ),
    );
    const got = parseHistoryArchive(bytes, "alice").entries as HistoryMessage[];
    expect(got.map((e) => [e.id, e.delivery])).toEqual([
      ["pending", undefined],
      ["read", "read"],
    ]);
  });

  test("when it does not all fit, the newest entries win and the document stays within the bound", () => {
    const entries = Array.from({ length: 50 }, (_, i) =>
      msg({ id: `m${i}`, at: NOW - (50 - i) * 1000, text: "x".repeat(200) }),
    );
    const bound = 2000;
    const { bytes, count } = must(buildHistoryArchive(entries, 0, NOW, bound));
    expect(bytes.length).toBeLessThanOrEqual(bound);
    expect(count).toBeGreaterThan(3);
    expect(count).toBeLessThan(50);
    const got = parseHistoryArchive(bytes, "alice").entries.map((e) => e.id);
    expect(got).toEqual(entries.slice(50 - count).map((e) => e.id));
    // One more entry would not have fitted.
    const next = must(buildHistoryArchive(entries.slice(50 - count - 1), 0, NOW, 1e9));
    expect(next.bytes.length).toBeGreaterThan(bound);
  });

  test("nothing in the period: no archive (the link goes ahead without one)", () => {
    expect(buildHistoryArchive([msg({ at: NOW - 90 * DAY })], NOW - 7 * DAY, NOW)).toBeNull();
    expect(buildHistoryArchive([msg({ exp: DAY, at: NOW - 2 * DAY })], 0, NOW)).toBeNull();
  });
});

describe("reading the archive on the new device", () => {
  test("a document that is not an archive is refused whole", () => {
    for (const text of [
      "",
      "not json",
      "[]",
      '{"v":2,"entries":[]}',
      '{"v":1}',
      '{"v":1,"entries":[],"extra":1}',
      `{"v":1,"entries":[${Array.from({ length: MAX_ARCHIVE_ENTRIES + 1 }, () => "0").join(",")}]}`,
    ]) {
      expect(errorCode(() => parseHistoryArchive(utf8(text), "alice"))).toBe("malformed");
    }
    expect(errorCode(() => parseHistoryArchive(new Uint8Array([0xff, 0xfe]), "alice"))).toBe(
      "malformed",
    );
  });

  test("entries that fail the history schema, or put words in someone else's mouth, are counted and left out", () => {
    const good = msg({ id: "ok" });
    const doc = {
      v: 1,
      entries: [
        good,
        { ...good, id: "" },
        { ...good, id: "bad-conv", conversationId: "dm:Bob!" },
        { ...good, id: "extra", html: "<b>x</b>" },
        // Our outgoing message must be ours; an incoming one must not claim to be.
        msg({ id: "forged-out", from: "bob", direction: "out" }),
        msg({ id: "forged-in", from: "alice", direction: "in" }),
        msg({ id: "mine", from: "alice", direction: "out" }),
      ],
    };
    const { entries, rejected } = parseHistoryArchive(utf8(JSON.stringify(doc)), "alice");
    expect(entries.map((e) => e.id)).toEqual(["ok", "mine"]);
    expect(rejected).toBe(5);
  });

  test("what the other device built reads back the same", () => {
    const entries: HistoryEntry[] = [
      msg({
        id: "a",
        reply: { id: "z", from: "alice" },
        reactions: [{ from: "alice", emoji: "👍" }],
      }),
      msg({
        id: "b",
        from: "alice",
        direction: "out",
        delivery: "delivered",
        edits: [{ text: "helo", at: NOW - DAY }],
        editedAt: NOW - DAY + 5,
      }),
    ];
    const { bytes } = must(buildHistoryArchive(entries, 0, NOW));
    expect(JSON.parse(fromUtf8(bytes)).v).toBe(1);
    expect(parseHistoryArchive(bytes, "alice")).toEqual({ entries, rejected: 0 });
  });
});
