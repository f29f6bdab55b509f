/**
 * Story: the relay drops traffic — the worst it may do — and the clients notice (PROTOCOL.md §6,
 * §8.6, §8.8, §9.5; SECURITY.md L3). A dropped 1:1 message with a forged relay receipt is never
 * shown as delivered and the recipient sees a `missing` line once a later message reveals the
 * gap; a dropped group message shows `missing` for its sender; honest delivery and reordering
 * inside the grace period produce no `missing` line at all.
 */
import { expect, it } from "vitest";
import type { DeliveryState } from "../../shared/core/client-api";
import type { ServerFrame } from "../../shared/protocol";
import {
  connect,
  disconnect,
  errors,
  lines,
  messages,
  online,
  say,
  type TestUser,
  timers,
} from "../support/clients";
import { NodeRelay as Relay } from "../support/node-relay";

const G = "group:broadcast" as const;

function states(u: TestUser, messageId: string): DeliveryState[] {
  return u.events.flatMap((e) =>
    e.type === "delivery" && e.messageId === messageId ? [e.state] : [],
  );
}

const missing = (u: TestUser, id: `dm:${string}` | `group:${string}`) =>
  lines(u, id).filter((l) => l.kind === "missing");

/** Fire every pending timer (the grace period runs out) and let the engines finish. */
async function graceElapses(relay: Relay): Promise<void> {
  timers.fire();
  await relay.settle();
}

async function chatting(): Promise<{ relay: Relay; alice: TestUser; bob: TestUser }> {
  const relay = new Relay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  return { relay, alice, bob };
}

/** Drop (or hold) the next deliver of `kind` to `to`; returns what was taken. */
function takeNext(relay: Relay, to: string, kind: "direct" | "group"): { taken: ServerFrame[] } {
  const box = { taken: [] as ServerFrame[] };
  relay.intercept = (who, frame) => {
    if (who === to && frame.t === "deliver" && frame.item.kind === kind && box.taken.length === 0) {
      box.taken.push(frame);
      return null;
    }
    return frame;
  };
  return box;
}

it("a dropped 1:1 message with a forged relay receipt: never delivered, the recipient shows it missing", async () => {
  const { relay, alice, bob } = await chatting();
  const box = takeNext(relay, "bob", "direct");
  const lost = await say(alice, "dm:bob", "swallowed");
  const dropped = box.taken[0];
  if (dropped?.t !== "deliver") throw new Error("the relay did not drop it");
  // The lying relay claims bob acknowledged it.
  const aliceConn = relay.online("alice");
  if (!aliceConn) throw new Error("alice offline");
  relay.push(aliceConn, { v: 1, t: "receipt", mid: dropped.mid, by: "bob" });
  await relay.settle();
  expect(states(alice, lost)).toEqual(["sent"]);
  relay.intercept = null;

  const next = await say(alice, "dm:bob", "after the gap");
  expect(messages(bob, "dm:alice")).toEqual(["after the gap"]);
  // Bob's end-to-end receipt marks the second message delivered, never the dropped one.
  expect(states(alice, next)).toContain("delivered");
  expect(states(alice, lost)).not.toContain("delivered");
  // Within the grace period the gap may still fill: nothing yet.
  expect(missing(bob, "dm:alice")).toEqual([]);
  await graceElapses(relay);
  expect(missing(bob, "dm:alice").map((l) => [l.text, l.username])).toEqual([
    ["1 message from alice did not arrive", "alice"],
  ]);
  // Reported once, however often the timers run or messages flow.
  await say(alice, "dm:bob", "and more");
  await graceElapses(relay);
  expect(missing(bob, "dm:alice")).toHaveLength(1);
  expect(missing(alice, "dm:bob")).toEqual([]);
  expect(states(alice, lost)).not.toContain("delivered");
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("honest delivery: every message delivered by an end-to-end receipt, no missing lines", async () => {
  const { relay, alice, bob } = await chatting();
  const ids = [
    await say(alice, "dm:bob", "one"),
    await say(bob, "dm:alice", "two"),
    await say(alice, "dm:bob", "three"),
    await say(alice, "dm:bob", "four"),
    await say(bob, "dm:alice", "five"),
  ];
  await graceElapses(relay);
  for (const [i, id] of ids.entries()) {
    const sender = i === 1 || i === 4 ? bob : alice;
    expect(states(sender, id)).toEqual(["sent", "delivered"]);
  }
  // Receipts are never receipted, and carry no text: nothing but the five texts was shown.
  expect(messages(bob, "dm:alice")).toEqual(["one", "three", "four"]);
  expect(messages(alice, "dm:bob")).toEqual(["two", "five"]);
  expect(missing(alice, "dm:bob")).toEqual([]);
  expect(missing(bob, "dm:alice")).toEqual([]);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("out-of-order delivery within the grace period: no false missing line", async () => {
  const { relay, alice, bob } = await chatting();
  const box = takeNext(relay, "bob", "direct");
  const first = await say(alice, "dm:bob", "first");
  relay.intercept = null;
  const second = await say(alice, "dm:bob", "second");
  const held = box.taken[0];
  const bobConn = relay.online("bob");
  if (!held || !bobConn) throw new Error("setup");
  relay.push(bobConn, held); // the relay delivers it late, but before the grace runs out
  await relay.settle();
  expect(messages(bob, "dm:alice")).toEqual(["second", "first"]);
  await graceElapses(relay);
  expect(missing(bob, "dm:alice")).toEqual([]);
  expect(states(alice, first)).toContain("delivered");
  expect(states(alice, second)).toContain("delivered");
  expect(errors(bob)).toEqual([]);
});

it("a dropped group message: the recipient shows it missing for that sender, others see nothing", async () => {
  const relay = new Relay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  const box = takeNext(relay, "bob", "group");
  await say(alice, G, "lost for bob");
  expect(box.taken).toHaveLength(1);
  relay.intercept = null;
  await say(alice, G, "second from alice");
  await say(carol, G, "carol speaks");
  expect(messages(bob, G)).toEqual(["second from alice", "carol speaks"]);
  expect(missing(bob, G)).toEqual([]);
  await graceElapses(relay);
  expect(missing(bob, G).map((l) => [l.text, l.username])).toEqual([
    ["1 message from alice did not arrive", "alice"],
  ]);
  expect(missing(carol, G)).toEqual([]);
  expect(missing(alice, G)).toEqual([]);
  // Group messages are not receipted end to end: a relay receipt never makes them "delivered".
  expect(alice.events.some((e) => e.type === "delivery" && e.state === "delivered")).toBe(false);
});

it("a group gap whose epoch is dropped by later commits is reported at once, without waiting", async () => {
  const relay = new Relay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  takeNext(relay, "bob", "group");
  await say(carol, G, "lost for bob");
  relay.intercept = null;
  await say(carol, G, "reveals the gap");
  expect(missing(bob, G)).toEqual([]);
  // Two new epochs: the one holding carol's skipped key is forgotten, the gap can never fill.
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  await carol.client.joinGroup("broadcast");
  await relay.settle();
  expect(missing(bob, G).map((l) => l.text)).toEqual(["1 message from carol did not arrive"]);
  await graceElapses(relay);
  expect(missing(bob, G)).toHaveLength(1);
  expect(missing(alice, G)).toEqual([]);
});

it("a joiner commits once per join: no second commit refused as stale_epoch (SECURITY.md L13)", async () => {
  const relay = new Relay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  for (const u of [alice, bob, carol]) {
    const commits = relay.clientLog.filter((x) => x.from === u.name && x.frame.t === "commit");
    expect(commits).toHaveLength(1);
  }
  const refused = relay.log.filter((x) => x.frame.t === "error");
  expect(refused).toEqual([]);
  expect(relay.group("broadcast")?.epoch).toBe(3);
});

it("a joiner's message right after its own commit is accepted, before the relay's state for that epoch, is sent and read; a state ahead of it still waits (PROTOCOL §9.2.1)", async () => {
  const relay = new Relay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.joinGroup("broadcast");
  await relay.settle();
  // The relay's state for bob's epoch is late (on users' routes it comes by the home's link,
  // after the commit's `accepted`).
  const late: ServerFrame[] = [];
  relay.intercept = (who, frame) => {
    if (who === "bob" && frame.t === "group" && frame.state.epoch === 2) {
      late.push(frame);
      return null;
    }
    return frame;
  };
  await bob.client.joinGroup("broadcast");
  await relay.settle();
  expect(late.length).toBeGreaterThan(0);
  expect(bob.client.conversations().find((c) => c.id === G)?.epoch).toBe(2);
  await say(bob, G, "right after my commit");
  expect(messages(alice, G)).toEqual(["right after my commit"]);
  expect(relay.log.filter((x) => x.frame.t === "error")).toEqual([]);
  relay.intercept = null;
  // A state ahead of bob is a commit he has not processed: nothing is sent under the old epoch.
  const commits: ServerFrame[] = [];
  relay.intercept = (who, frame) => {
    if (who === "bob" && frame.t === "deliver" && frame.item.kind === "commit") {
      commits.push(frame);
      return null;
    }
    return frame;
  };
  await alice.client.leaveGroup("broadcast");
  await relay.settle();
  await alice.client.joinGroup("broadcast");
  await relay.settle();
  expect(commits.length).toBeGreaterThan(0);
  await expect(bob.client.sendText(G, "too early")).rejects.toMatchObject({ code: "stale_epoch" });
  relay.intercept = null;
});

it("offline when the grace runs out: decided after the next connection's mailbox drain", async () => {
  const { relay, alice, bob } = await chatting();
  // Two messages withheld from bob's live connection; the relay keeps both in its mailbox but
  // really loses the first one before bob reconnects.
  const held: ServerFrame[] = [];
  relay.intercept = (who, frame) => {
    if (who === "bob" && frame.t === "deliver" && frame.item.kind === "direct" && held.length < 2) {
      held.push(frame);
      return null;
    }
    return frame;
  };
  await say(alice, "dm:bob", "lost for good");
  await say(alice, "dm:bob", "held back");
  relay.intercept = null;
  await say(alice, "dm:bob", "reveals both gaps");
  expect(messages(bob, "dm:alice")).toEqual(["reveals both gaps"]);
  await disconnect(bob);
  await graceElapses(relay); // bob is offline: nothing is decided yet
  expect(missing(bob, "dm:alice")).toEqual([]);
  const lostMid = held[0]?.t === "deliver" ? held[0].mid : "";
  expect(relay.lose("bob", lostMid)).toBe(true);
  await connect(bob); // the drain brings "held back"; "lost for good" never comes
  expect(messages(bob, "dm:alice")).toEqual(["reveals both gaps", "held back"]);
  expect(missing(bob, "dm:alice")).toEqual([]);
  await graceElapses(relay);
  expect(missing(bob, "dm:alice").map((l) => l.text)).toEqual([
    "1 message from alice did not arrive",
  ]);
});
