/**
 * What the PWA says, as pure functions: engine system lines and error codes in plain words with
 * the technical text kept as details (ui/wording.ts), name rules with a suggested spelling
 * (state/names.ts), the status pill for groups not joined and unknown users, the sidebar's people
 * rows with the key-change mark, the tab title, links in messages (ui/linkify.ts) and the
 * safety-number scan verdict (ui/safety-scan.ts).
 */
import { describe, expect, test } from "vitest";
import {
  applySummary,
  convIdOf,
  emptyConv,
  initialChatState,
  peopleRows,
  sendBlockedReason,
  unreadTotal,
} from "../../pwa/src/state/model";
import { MAX_NAME, NAME_RULE, nameProblem, suggestName } from "../../pwa/src/state/names";
import type { HistoryEntry, HistorySystem } from "../../pwa/src/storage/schemas";
import { chatStatusLabel } from "../../pwa/src/ui/format";
import { linkify, safeHref } from "../../pwa/src/ui/linkify";
import { safetyQrText, scanVerdict } from "../../pwa/src/ui/safety-scan";
import {
  connectionNotice,
  describeError,
  describeLinkError,
  describeLog,
  describeSystem,
  describeThrown,
  guessDeviceName,
  isUnknownUser,
  LINK_ERROR_TEXT,
  tabTitle,
} from "../../pwa/src/ui/wording";
import { CoreError } from "../../shared/core/errors";
import { LinkError, type LinkErrorCode } from "../../shared/core/linking";
import { ERROR_CODES, ERRORS, NAME_RE } from "../../shared/protocol";

function sys(
  sysKind: HistorySystem["sysKind"],
  text: string,
  extra: Partial<HistorySystem> = {},
): HistorySystem {
  return {
    kind: "sys",
    id: `sys-${Math.random().toString(36).slice(2)}`,
    conversationId: "group:club",
    sysKind,
    text,
    at: 1000,
    ...extra,
  };
}

/** Words an engineer would use: none may reach a plain line. */
const JARGON = /epoch|unknown_session|outbox|session established|\(online\)|\(prekey\)|_/i;

describe("system lines in plain words", () => {
  test("each engine line kind reads plainly; the engine's text becomes the details", () => {
    const cases: Array<[HistorySystem, string]> = [
      [sys("joined", "bob joined", { username: "bob" }), "bob joined"],
      [sys("joined", "alice joined", { username: "alice" }), "You joined"],
      [sys("left", "carol left", { username: "carol" }), "carol left"],
      [sys("left", "You left club", { username: "alice" }), "You left"],
      [
        sys("epoch", "New group key (epoch 7) from bob", { username: "bob", epoch: 7 }),
        "bob renewed the group's encryption key",
      ],
      [
        sys("session_started", "Secure session with bob established (online)", {
          conversationId: "dm:bob",
          username: "bob",
        }),
        "Messages with bob are end-to-end encrypted",
      ],
      [
        sys(
          "not_post_quantum",
          "This session with bob is not post-quantum: bob's app publishes no post-quantum keys",
          { conversationId: "dm:bob", username: "bob" },
        ),
        "This chat with bob is not protected against future quantum computers: bob's app is out of date",
      ],
      [
        sys("decrypt_failed", "A message from bob could not be read (unknown_session)", {
          conversationId: "dm:bob",
          username: "bob",
        }),
        "A message from bob could not be decrypted — Parley is repairing the session",
      ],
      [
        sys(
          "repairing",
          "A message from bob could not be read (unknown_session); making a new secure session and asking bob to send it again",
          { conversationId: "dm:bob", username: "bob" },
        ),
        "A message from bob could not be decrypted on this device — Parley is setting up a new secure session and asking bob to send it again",
      ],
      [
        sys(
          "resending",
          "alice could not read 2 messages (a new or restored device); sending again",
          { conversationId: "dm:alice", username: "alice", count: 2 },
        ),
        "alice could not read 2 messages (a new or restored device) — sending them again",
      ],
      [
        sys("decrypt_failed", "A message from bob could not be read (too_far)", {
          username: "bob",
        }),
        "A message from bob could not be decrypted",
      ],
      [
        sys("missing", "3 messages from bob did not arrive", { username: "bob" }),
        "3 messages from bob never arrived",
      ],
      [
        sys("missing", "1 message from bob did not arrive", { username: "bob" }),
        "A message from bob never arrived",
      ],
      [
        sys("key_changed", "gina's safety number changed; sending is blocked until you accept", {
          username: "gina",
        }),
        "gina's safety number changed. Compare it with them before you continue.",
      ],
      [
        sys("device_added", "bob linked a new device: phone", { username: "bob" }),
        "bob linked a new device: phone",
      ],
      [
        sys("device_removed", "bob removed a device: phone", { username: "bob" }),
        "bob removed a device: phone",
      ],
      [
        sys(
          "device_list_refused",
          "The relay showed a device list for bob that is not signed by their identity key: ignored",
          { username: "bob" },
        ),
        "Parley ignored a list of bob's devices that bob did not sign",
      ],
      [
        sys("key_accepted", "You accepted bob's new key", { username: "bob" }),
        "You accepted bob's new safety number",
      ],
      [
        sys("session_ended", "You ended the secure session. The next message starts a new one.", {
          conversationId: "dm:bob",
          username: "bob",
        }),
        "You ended the secure session with bob. The next message starts a new one.",
      ],
    ];
    for (const [line, plain] of cases) {
      const w = describeSystem(line, "alice");
      expect(w.text).toBe(plain);
      expect(w.text).not.toMatch(JARGON);
      // Nothing is lost: whatever the engine said more is one click away. (The PWA writes the
      // session_ended line itself: nothing technical behind it.)
      if (w.text !== line.text && line.sysKind !== "session_ended") {
        expect(w.details).toBe(line.text);
      } else expect(w.details).toBeNull();
    }
  });

  test("a join's or leave's key line folds into it; a key renewal alone stays a line", () => {
    const joined = sys("joined", "bob joined", { username: "bob", at: 1000 });
    const key = sys("epoch", "New group key (epoch 2) from alice", {
      username: "alice",
      epoch: 2,
      at: 1200,
    });
    const msg: HistoryEntry = {
      kind: "msg",
      id: "m1",
      conversationId: "group:club",
      from: "bob",
      direction: "in",
      text: "hi",
      sentAt: 2000,
      at: 2000,
    };
    const renewal = sys("epoch", "New group key (epoch 3) from bob", {
      username: "bob",
      epoch: 3,
      at: 90_000,
    });
    const out = describeLog([joined, key, msg, renewal], "alice");
    expect(out.get(key.id)).toBeNull();
    expect(out.get(joined.id)).toEqual({
      text: "bob joined",
      details: "New group key (epoch 2) from alice",
    });
    expect(out.get(renewal.id)?.text).toBe("bob renewed the group's encryption key");
    expect(out.get(renewal.id)?.details).toBe("New group key (epoch 3) from bob");
  });
});

describe("errors in plain words", () => {
  test("every relay error code has its own sentence, never the raw code", () => {
    for (const code of ERROR_CODES) {
      const w = describeError("relay_error", `${code}: ${ERRORS[code]}`);
      expect(w.text, code).not.toBe("The relay refused a request.");
      expect(w.text, code).not.toContain(code);
      expect(w.details).toBe(`relay_error: ${code}: ${ERRORS[code]}`);
    }
  });

  test("engine codes are worded; unknown codes fall back with the details kept", () => {
    const w = describeError("unknown_session", "no session with this sender");
    expect(w.text).toMatch(/repairing/);
    expect(w.text).not.toContain("unknown_session");
    expect(w.details).toBe("unknown_session: no session with this sender");
    // A stripped post-quantum prekey (PROTOCOL.md §8.3.5) says what happened and that no weaker
    // chat was made.
    expect(describeError("downgrade", "bob's post-quantum prekey is missing").text).toMatch(
      /post-quantum keys.*no weaker chat/,
    );
    const future = describeError("text_too_long", "over 16000");
    expect(future.text).toBe("Something went wrong.");
    expect(future.details).toBe("text_too_long: over 16000");
    expect(describeError("relay_error", "relay announced a different hub").text).toBe(
      "The relay refused a request.",
    );
  });

  test("thrown typed errors are worded by code; other throws keep their text as details", () => {
    expect(describeThrown(new CoreError("key_changed", "bob's key changed")).text).toMatch(
      /safety number changed/i,
    );
    const other = describeThrown(new TypeError("boom"));
    expect(other).toEqual({ text: "Something went wrong.", details: "TypeError: boom" });
  });

  test("an unknown user is recognised from the refused bundle fetch", () => {
    expect(isUnknownUser("relay_error", `unknown_user: ${ERRORS.unknown_user}`)).toBe(true);
    expect(isUnknownUser("relay_error", `rate_limited: ${ERRORS.rate_limited}`)).toBe(false);
    expect(isUnknownUser("malformed", "unknown_user: x")).toBe(false);
  });
});

describe("name rules", () => {
  test("valid names have no problem; invalid ones say exactly what is wrong", () => {
    for (const ok of ["alice", "a", "bob-2", "x_y", "9lives", "a".repeat(MAX_NAME)]) {
      expect(nameProblem(ok), ok).toBeNull();
    }
    expect(nameProblem("Alice Smith")).toBe("No spaces, only lower-case letters.");
    expect(nameProblem("bob@home")).toBe("“@” not allowed.");
    expect(nameProblem("a.b,c!d?")).toBe("“.” “,” “!” and others not allowed.");
    expect(nameProblem("-bob")).toBe("Start with a letter or digit.");
    expect(nameProblem("a".repeat(40))).toBe("At most 32 characters (this is 40).");
    expect(nameProblem("")).toBe("Type a name.");
    expect(NAME_RULE).toBe(
      "Use 1–32 lower-case letters, digits, “-” or “_”, starting with a letter or digit.",
    );
    // The message never is the browser's generic one.
    expect(nameProblem("Alice")).not.toMatch(/requested format/);
  });

  test("the suggestion is always valid and close to what was typed", () => {
    const cases: Array<[string, string | null]> = [
      ["Alice Smith", "alice-smith"],
      ["Dave", "dave"],
      ["José Müller", "jose-muller"],
      ["  --bob__  ", "bob__"],
      ["mary.jane", "mary-jane"],
      ["a".repeat(40), "a".repeat(32)],
      ["Ünïcödé   Naïve", "unicode-naive"],
      ["@@@", null],
      ["日本", null],
    ];
    for (const [raw, want] of cases) {
      const got = suggestName(raw);
      expect(got, raw).toBe(want);
      if (got !== null) {
        expect(NAME_RE.test(got)).toBe(true);
        expect(got.length).toBeLessThanOrEqual(MAX_NAME);
      }
    }
  });
});

describe("status pill and sidebar", () => {
  test("a group not joined is neutral 'Not joined' while online, not a red 'Offline'", () => {
    const g = { ...emptyConv("group:club"), status: "offline" as const };
    expect(chatStatusLabel({ kind: "online" }, g.status, 0, g)).toEqual({
      label: "Not joined",
      tone: "muted",
    });
    expect(chatStatusLabel({ kind: "online" }, g.status, 0, { ...g, joining: true }).label).toBe(
      "Joining",
    );
    expect(chatStatusLabel({ kind: "online" }, "secure", 0, { ...g, epoch: 2 }).label).toBe(
      "Secure",
    );
    expect(
      chatStatusLabel({ kind: "online" }, "offline", 0, { ...g, epoch: 2, leaving: true }).label,
    ).toBe("Leaving");
    // Really offline is still said first.
    expect(chatStatusLabel({ kind: "waiting", retryAt: 0 }, g.status, 0, g).label).toBe("Offline");
    expect(chatStatusLabel({ kind: "replaced" }, "secure", 0).label).toBe("Signed in elsewhere");
  });

  test("a name the relay does not know blocks sending and says so", () => {
    const c = { ...emptyConv("dm:nobody"), status: "connecting" as const, missingUser: true };
    expect(chatStatusLabel({ kind: "online" }, c.status, 0, c)).toEqual({
      label: "No such user",
      tone: "bad",
    });
    expect(sendBlockedReason(c)).toMatch(/no one called “nobody”/);
  });

  test("people rows: online first, never me, with the key-change mark", () => {
    const s = initialChatState();
    s.me = { username: "alice", fingerprint: "", identityKey: "" };
    const contact = (username: string) => ({
      username,
      identityKey: "k",
      fingerprint: "f",
      verified: false,
    });
    s.presence = [contact("alice"), contact("zed"), contact("bob")];
    applySummary(s, {
      id: "dm:gina",
      kind: "direct",
      name: "gina",
      keyChanged: true,
      members: [],
    });
    applySummary(s, {
      id: "dm:bob",
      kind: "direct",
      name: "bob",
      keyChanged: false,
      session: "ready",
      members: [{ username: "bob", identityKey: "k", fingerprint: "f", verified: true }],
    });
    const rows = peopleRows(s);
    expect(rows.map((r) => [r.name, r.online, r.keyChanged, r.verified])).toEqual([
      ["bob", true, false, true],
      ["zed", true, false, false],
      ["gina", false, true, false],
    ]);
  });

  test("the tab title carries the unread count", () => {
    const s = initialChatState();
    expect(tabTitle(unreadTotal(s))).toBe("Parley");
    s.convs[convIdOf("direct", "bob")] = { ...emptyConv("dm:bob"), unread: 2 };
    s.convs[convIdOf("group", "club")] = { ...emptyConv("group:club"), unread: 1 };
    expect(tabTitle(unreadTotal(s))).toBe("(3) Parley");
    expect(tabTitle(5000)).toBe("(999+) Parley");
  });

  test("the connection notice counts down, and offers 'Use here' when replaced", () => {
    expect(connectionNotice({ kind: "waiting", retryAt: 20_000 }, 5_100)).toEqual({
      text: "Reconnecting in 15 s…",
      action: "retry",
      seconds: 15,
    });
    expect(connectionNotice({ kind: "waiting", retryAt: 20_000 }, 21_000)?.text).toBe(
      "Reconnecting…",
    );
    expect(connectionNotice({ kind: "replaced" }, 0)?.action).toBe("use_here");
    expect(connectionNotice({ kind: "online" }, 0)).toBeNull();
    expect(connectionNotice({ kind: "connecting" }, 0)).toBeNull();
  });
});

describe("links in messages", () => {
  const links = (text: string) =>
    linkify(text)
      .filter((r) => r.kind === "link")
      .map((r) => (r.kind === "link" ? [r.text, r.href] : []));

  test("http(s) URLs become links; trailing punctuation and unbalanced brackets stay text", () => {
    expect(linkify("see https://example.org/a?b=1#c.")).toEqual([
      { kind: "text", text: "see " },
      { kind: "link", text: "https://example.org/a?b=1#c", href: "https://example.org/a?b=1#c" },
      { kind: "text", text: "." },
    ]);
    expect(links("(docs at http://x.org/y)")).toEqual([["http://x.org/y", "http://x.org/y"]]);
    expect(links("https://en.wikipedia.org/wiki/Foo_(bar), ok")).toEqual([
      ["https://en.wikipedia.org/wiki/Foo_(bar)", "https://en.wikipedia.org/wiki/Foo_(bar)"],
    ]);
    expect(links("two: https://a.org and HTTPS://B.ORG/x!")).toEqual([
      ["https://a.org", "https://a.org/"],
      ["HTTPS://B.ORG/x", "https://b.org/x"],
    ]);
  });

  test("nothing but http(s) with a host is ever a link; text round-trips", () => {
    for (const t of [
      "javascript:alert(1)",
      "data:text/html,<b>x</b>",
      "ftp://example.org/file",
      "https://",
      'https://"onmouseover=alert(1)',
      "<a href=x>https</a>",
      "vbscript:msgbox",
    ]) {
      for (const r of linkify(t)) {
        if (r.kind === "link") expect(r.href).toMatch(/^https?:\/\/[^/"<>]+/);
      }
      expect(
        linkify(t)
          .map((r) => r.text)
          .join(""),
      ).toBe(t);
    }
    expect(links("javascript:alert(1) data:text/html,x")).toEqual([]);
    expect(safeHref("javascript:alert(1)")).toBeNull();
    expect(safeHref("https://ok.example/")).toBe("https://ok.example/");
  });
});

describe("safety-number scan", () => {
  const ours = "1".repeat(60);
  test("a scanned code is a match, a mismatch, or not a Parley code", () => {
    expect(scanVerdict(safetyQrText(ours), ours)).toBe("match");
    expect(scanVerdict(` ${safetyQrText(ours)}\n`, ours)).toBe("match");
    expect(scanVerdict(safetyQrText("2".repeat(60)), ours)).toBe("mismatch");
    expect(scanVerdict("https://example.org", ours)).toBe("not_parley");
    expect(scanVerdict(safetyQrText("1".repeat(59)), ours)).toBe("not_parley");
    expect(scanVerdict(`parley-safety-number:v2:${ours}`, ours)).toBe("not_parley");
  });
});

describe("linked devices in plain words", () => {
  test("a device name from the user agent", () => {
    expect(
      guessDeviceName(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
      ),
    ).toBe("Chrome on Android");
    expect(
      guessDeviceName(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
      ),
    ).toBe("Safari on iOS");
    expect(
      guessDeviceName("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ).toBe("Firefox on Linux");
    expect(
      guessDeviceName(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36 Edg/126.0",
      ),
    ).toBe("Edge on Windows");
    expect(guessDeviceName("curl/8")).toBe("Browser");
  });

  test("every link refusal the engine can raise has its own words", () => {
    // A Record over the type: a new code without an entry here is a type error.
    const all: Record<LinkErrorCode, true> = {
      bad_code: true,
      code_mismatch: true,
      malformed: true,
      not_listed: true,
      unknown_link: true,
      unknown_device: true,
      already_linked: true,
      too_many_devices: true,
    };
    for (const c of Object.keys(all) as LinkErrorCode[]) {
      const w = describeLinkError(new LinkError(c, "engine text"));
      expect(w.text).toBe(LINK_ERROR_TEXT[c]);
      expect(w.text).not.toContain("_");
    }
    // Anything else falls back to the generic wording with details.
    expect(describeLinkError(new Error("boom")).details).toContain("boom");
  });
});
