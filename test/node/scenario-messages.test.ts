/**
 * Story: everyday messaging through the real relay (PROTOCOL.md §8.6.1). alice and bob reply,
 * react, edit, delete, set a disappearing timer, type and read in a 1:1 chat; in a group, a
 * member's forged edit or delete of another member's message is refused on receipt because the
 * author is the authenticated sender. Each user's events are folded into the PWA's model
 * (pwa/src/state/model.ts) exactly as the app does, so what is asserted is what the user sees.
 */
import { describe, expect, it } from "vitest";
import {
  applyContent,
  applyDelivery,
  type ChatState,
  type ContentOutcome,
  expireAll,
  initialChatState,
  messageEntry,
  timerOf,
  typingNow,
  upsertEntry,
} from "../../pwa/src/state/model";
import type { HistoryMessage } from "../../pwa/src/storage/schemas";
import type { ConversationId, ParleyEvent } from "../../shared/core/client-api";
import { DELETE_WINDOW_MS } from "../../shared/core/message-content";
import { errors, online, say, type TestUser } from "../support/clients";
import { asNewerClient } from "../support/newer-client";
import { NodeRelay } from "../support/node-relay";

/** The user's view: every event so far folded in as the app does; refusals collected. */
function view(u: TestUser, opts = { readReceipts: true }) {
  const s: ChatState = initialChatState();
  const refused: ContentOutcome["refused"][] = [];
  for (const ev of u.events) fold(s, ev, u.name, opts, refused);
  return { s, refused };
}

function fold(
  s: ChatState,
  ev: ParleyEvent,
  me: string,
  opts: { readReceipts: boolean },
  refused: ContentOutcome["refused"][],
) {
  if (ev.type === "message") upsertEntry(s, messageEntry(ev.message), { countUnread: false });
  else if (ev.type === "delivery") applyDelivery(s, ev.conversationId, ev.messageId, ev.state);
  else if (ev.type === "content") {
    const r = applyContent(s, ev, { me, readReceipts: opts.readReceipts });
    if (r.refused) refused.push(r.refused);
  }
}

function msgs(s: ChatState, id: ConversationId): HistoryMessage[] {
  return (s.convs[id]?.entries ?? []).filter((e): e is HistoryMessage => e.kind === "msg");
}

async function pair() {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  return { relay, alice, bob };
}

const A = "dm:alice" as const;
const B = "dm:bob" as const;

describe("1:1", () => {
  it("a newer client's content type shows as an unsupported message; the chat goes on", async () => {
    const { relay, alice, bob } = await pair();
    const m1 = await say(alice, B, "before the poll");
    await asNewerClient(() =>
      alice.client.sendAction(B, { t: "react", target: { id: m1, from: "alice" }, emoji: "🧪" }),
    );
    await relay.settle();
    await say(alice, B, "after the poll");
    const { s, refused } = view(bob);
    const shown = msgs(s, A).map((m) => [m.text, m.unsupported]);
    expect(shown).toEqual([
      ["before the poll", undefined],
      ["", "poll"],
      ["after the poll", undefined],
    ]);
    expect(refused).toEqual([]);
    expect(errors(bob)).toEqual([]);
  });

  it("reply, react, edit with history, delete for everyone", async () => {
    const { relay, alice, bob } = await pair();
    const m1 = await say(alice, B, "lunch at noon?");
    const reply = await bob.client.sendText(A, "yes!", { reply: { id: m1, from: "alice" } });
    await relay.settle();
    await alice.client.sendAction(B, {
      t: "react",
      target: { id: reply, from: "bob" },
      emoji: "👍",
    });
    await alice.client.sendAction(B, { t: "edit", target: m1, text: "lunch at one?" });
    await relay.settle();

    for (const [u, conv] of [
      [alice, B],
      [bob, A],
    ] as const) {
      const { s, refused } = view(u);
      const [first, second] = msgs(s, conv);
      expect(first).toMatchObject({
        id: m1,
        text: "lunch at one?",
        edits: [{ text: "lunch at noon?" }],
      });
      expect(second).toMatchObject({
        id: reply,
        reply: { id: m1, from: "alice" },
        reactions: [{ from: "alice", emoji: "👍" }],
      });
      expect(refused).toEqual([]);
    }

    await bob.client.sendAction(A, { t: "delete", target: reply });
    await relay.settle();
    for (const [u, conv] of [
      [alice, B],
      [bob, A],
    ] as const) {
      const second = msgs(view(u).s, conv)[1];
      expect(second).toMatchObject({ id: reply, text: "", deleted: true });
      expect(second && "reactions" in second).toBe(false);
    }
    expect(errors(alice)).toEqual([]);
    expect(errors(bob)).toEqual([]);
  });

  it("an edit or delete names the sender's own message only; a late delete is refused", async () => {
    const { relay, alice, bob } = await pair();
    const m1 = await say(alice, B, "mine");
    // bob names alice's message id: it is looked up as bob's own message, which does not exist
    // as his, and alice's stays as she wrote it.
    await bob.client.sendAction(A, { t: "edit", target: m1, text: "forged" });
    await bob.client.sendAction(A, { t: "delete", target: m1 });
    await relay.settle();
    const a = view(alice);
    expect(msgs(a.s, B)[0]).toMatchObject({ id: m1, text: "mine" });
    expect(a.refused).toEqual(["not_author", "not_author"]);

    // A delete for everyone reaching bob more than the window after the message arrived.
    const m2 = await say(alice, B, "old news");
    relay.clock += DELETE_WINDOW_MS + 1;
    await alice.client.sendAction(B, { t: "delete", target: m2 });
    await relay.settle();
    const b = view(bob);
    expect(msgs(b.s, A).find((m) => m.id === m2)).toMatchObject({ text: "old news" });
    // bob's own view refuses his two forgeries too (his copies name no message of his).
    expect(b.refused).toEqual(["not_author", "not_author", "too_late"]);
  });

  it("disappearing timer: a system line on both sides, and messages expire everywhere", async () => {
    const { relay, alice, bob } = await pair();
    await say(alice, B, "before the timer");
    await alice.client.sendAction(B, { t: "timer", ms: 60_000 });
    await relay.settle();
    const timerAlice = view(alice).s.convs[B];
    const timerBob = view(bob).s.convs[A];
    expect(timerAlice && timerOf(timerAlice)).toBe(60_000);
    expect(timerBob && timerOf(timerBob)).toBe(60_000);
    expect(timerBob?.entries.find((e) => e.kind === "sys")).toMatchObject({
      sysKind: "timer",
      text: "alice set messages to disappear after 1 minute",
    });
    // Each side stamps what it sends with the conversation's timer (the PWA does it from timerOf).
    await bob.client.sendText(A, "secret", { exp: 60_000 });
    await relay.settle();
    const sent = relay.now();
    for (const [u, conv] of [
      [alice, B],
      [bob, A],
    ] as const) {
      const { s } = view(u);
      expect(msgs(s, conv).map((m) => m.text)).toEqual(["before the timer", "secret"]);
      expect(expireAll(s, sent + 59_999)).toEqual([]);
      const gone = expireAll(s, sent + 60_000);
      expect(gone.map((e) => e.kind === "msg" && e.text)).toEqual(["secret"]);
      expect(msgs(s, conv).map((m) => m.text)).toEqual(["before the timer"]);
    }
    // Turned off by the other side.
    await bob.client.sendAction(A, { t: "timer", ms: 0 });
    await relay.settle();
    const off = view(alice).s.convs[B];
    expect(off && timerOf(off)).toBe(0);
  });

  it("the resend copy of an unacknowledged disappearing text keeps its timer (§8.10 drops it once past)", async () => {
    const { relay, alice, bob } = await pair();
    await say(alice, B, "hello");
    // bob is away: alice's text stays unreceipted in her resend store (§8.10).
    relay.disconnect(bob.conn as NonNullable<typeof bob.conn>);
    bob.conn = null;
    await alice.client.sendText(B, "gone soon", { exp: 5_000 });
    await relay.settle();
    const kept = await alice.store.list("sent/bob/");
    expect(kept.some((r) => (r.value as { text: string }).text === "gone soon")).toBe(true);
    expect(
      kept.find((r) => (r.value as { text: string }).text === "gone soon")?.value,
    ).toMatchObject({ exp: 5_000 });
  });

  it("typing and read receipts: sent over a session, shown only when on", async () => {
    const { relay, alice, bob } = await pair();
    const m1 = await say(alice, B, "are you there?");
    // alice wrote first: bob accepts her request, or typing and read states stay with him (§8.11).
    await bob.client.acceptContact("alice");
    expect(await bob.client.sendAction(A, { t: "typing", on: true })).toBe("");
    await relay.settle();
    const at = relay.now();
    const conv = view(alice).s.convs[B];
    expect(conv && typingNow(conv, at)).toEqual(["bob"]);
    await bob.client.sendAction(A, { t: "typing", on: false });
    await bob.client.sendAction(A, { t: "read", ids: [m1] });
    await relay.settle();
    const on = view(alice, { readReceipts: true }).s;
    expect(on.convs[B] && typingNow(on.convs[B], at)).toEqual([]);
    expect(msgs(on, B)[0]?.delivery).toBe("read");
    const off = view(alice, { readReceipts: false }).s;
    expect(msgs(off, B)[0]?.delivery).toBe("delivered");
  });

  it("typing and read are dropped, not queued, without a session; others wait in the queue", async () => {
    const relay = new NodeRelay();
    const [alice] = (await online(relay, "alice")) as [TestUser];
    const frames = relay.log.length;
    expect(await alice.client.sendAction("dm:nobody", { t: "typing", on: true })).toBe("");
    expect(await alice.client.sendAction("dm:nobody", { t: "read", ids: ["x"] })).toBe("");
    expect(alice.events.filter((e) => e.type === "content")).toEqual([]);
    const id = await alice.client.sendAction("dm:nobody", { t: "timer", ms: 3_600_000 });
    expect(id).toMatch(/^[A-Za-z0-9_-]{16}$/);
    expect(alice.events.filter((e) => e.type === "content")).toHaveLength(1);
    expect(relay.log.length).toBeGreaterThanOrEqual(frames);
  });

  it("refuses to send what a receiver would refuse", async () => {
    const { relay, alice } = await pair();
    await expect(alice.client.sendAction(B, { t: "timer", ms: 10 })).rejects.toMatchObject({
      code: "malformed",
    });
    await expect(
      alice.client.sendAction(B, {
        t: "react",
        target: { id: "x", from: "bob" },
        emoji: "🙂".repeat(20),
      }),
    ).rejects.toMatchObject({ code: "malformed" });
    // A group has no read receipts: a read goes only to our own other devices (§4.9), of which
    // alice has none, so nothing is sent; a malformed one is still refused.
    const mark = relay.clientLog.length;
    await expect(
      alice.client.sendAction("group:broadcast", { t: "read", ids: ["x"] }),
    ).resolves.toBe("");
    expect(relay.clientLog.slice(mark)).toEqual([]);
    await expect(
      alice.client.sendAction("group:broadcast", { t: "read", ids: [] }),
    ).rejects.toMatchObject({ code: "malformed" });
  });
});

describe("groups", () => {
  it("react and edit by the author apply; another member's edit or delete is refused", async () => {
    const relay = new NodeRelay();
    const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
      TestUser,
      TestUser,
      TestUser,
    ];
    for (const u of [alice, bob, carol]) {
      await u.client.joinGroup("broadcast");
      await relay.settle();
    }
    const G = "group:broadcast" as const;
    const m1 = await say(alice, G, "meeting at 3");
    await carol.client.sendAction(G, { t: "edit", target: m1, text: "meeting cancelled" });
    await carol.client.sendAction(G, { t: "delete", target: m1 });
    await bob.client.sendAction(G, { t: "react", target: { id: m1, from: "alice" }, emoji: "✅" });
    await alice.client.sendAction(G, { t: "edit", target: m1, text: "meeting at 4" });
    await bob.client.sendAction(G, { t: "typing", on: true });
    await relay.settle();
    for (const u of [alice, bob, carol]) {
      const { s, refused } = view(u);
      expect(msgs(s, G).find((m) => m.id === m1)).toMatchObject({
        from: "alice",
        text: "meeting at 4",
        reactions: [{ from: "bob", emoji: "✅" }],
      });
      // Everyone but carol (whose own copies are looked up as hers, which do not exist) refuses.
      expect(refused).toEqual(["not_author", "not_author"]);
    }
    const conv = view(carol).s.convs[G];
    expect(conv && typingNow(conv, relay.now())).toEqual(["bob"]);
  });
});
