/**
 * Story: a hostile relay reorders, drops, replays and alters alice's messages to bob. Every
 * out-of-order message within the window decrypts once; replays are dropped silently (at-least-
 * once delivery) with no duplicate; altered messages fail with typed errors and leave the
 * session intact (the original still decrypts afterwards).
 */
import { expect, it } from "vitest";
import type { FrameOf, ServerFrame } from "../../shared/protocol";
import { errors, lines, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

type Deliver = FrameOf<ServerFrame, "deliver">;

async function setup() {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(bob, "dm:alice", "ready");
  const held: Deliver[] = [];
  let capture = true;
  relay.intercept = (to, f) => {
    if (capture && to === "bob" && f.t === "deliver") {
      held.push(f);
      return null;
    }
    return f;
  };
  const release = () => {
    capture = false;
  };
  return { relay, alice, bob, held, release };
}

async function feed(u: TestUser, f: Deliver) {
  await u.client.onServerFrame(f);
  await u.relay.settle();
}

it("out-of-order and lost messages", async () => {
  const { alice, bob, held, release } = await setup();
  for (let i = 0; i < 6; i++) await say(alice, "dm:bob", `m${i}`);
  release();
  expect(held.length).toBe(6);
  // m3 is lost; the rest arrive as 5, 0, 4, 2, 1
  for (const i of [5, 0, 4, 2, 1]) await feed(bob, held[i] as Deliver);
  expect(messages(bob, "dm:alice")).toEqual(["m5", "m0", "m4", "m2", "m1"]);
  expect(errors(bob)).toEqual([]);
  // the conversation continues both ways after the gap
  await say(bob, "dm:alice", "got most");
  await say(alice, "dm:bob", "after");
  expect(messages(alice, "dm:bob")).toEqual(["ready", "got most"]);
  expect(messages(bob, "dm:alice").at(-1)).toBe("after");
  // the lost one arriving late still decrypts exactly once (skipped key kept)
  await feed(bob, held[3] as Deliver);
  expect(messages(bob, "dm:alice").filter((m) => m === "m3")).toEqual(["m3"]);
});

it("replay: the same delivery (or the same body under a new mid) yields nothing new", async () => {
  const { alice, bob, held, release } = await setup();
  await say(alice, "dm:bob", "once");
  release();
  const f = held[0] as Deliver;
  await feed(bob, f);
  await feed(bob, f);
  await feed(bob, { ...f, mid: "99999" });
  expect(messages(bob, "dm:alice")).toEqual(["once"]);
  expect(errors(bob)).toEqual([]);
  // the replays were acknowledged (at-least-once bookkeeping) without surfacing to the user
  const acks = bob.relay.clientLog.filter((x) => x.from === "bob" && x.frame.t === "ack");
  expect(acks.some((a) => a.frame.t === "ack" && a.frame.mids.includes("99999"))).toBe(true);
});

it("tamper: bit flips in header, ciphertext and tag are rejected without state change", async () => {
  const { alice, bob, held, release } = await setup();
  await say(alice, "dm:bob", "intact");
  release();
  const f = held[0] as Deliver;
  if (f.item.kind !== "direct") throw new Error("direct expected");
  const body = Buffer.from(f.item.body, "base64url");
  // 0x05 envelope: [0]=version [1]=type [2..18)=sid [18..58)=header [58..)=ciphertext||tag
  // (A flipped session id is the next test's: it names a session bob does not hold.)
  const spots = {
    version: 0,
    headerDh: 20,
    // n's second-lowest byte: n + 256 must fail to decrypt. (Flipping the lowest bit could
    // turn n into the counter of alice's end-to-end receipt for "ready", a silent replay.)
    headerN: 56,
    ciphertext: 60,
    tag: body.length - 3,
  };
  let i = 0;
  for (const at of Object.values(spots)) {
    const t = Buffer.from(body);
    t[at] = (t[at] as number) ^ 0x01;
    await feed(bob, {
      ...f,
      mid: String(1000 + i++),
      item: { kind: "direct", body: t.toString("base64url") },
    });
  }
  const truncated = body.subarray(0, body.length - 1);
  await feed(bob, {
    ...f,
    mid: "2000",
    item: { kind: "direct", body: truncated.toString("base64url") },
  });
  const codes = errors(bob).map((e) => e.code);
  expect(codes.length).toBe(6);
  expect(new Set(codes)).toEqual(new Set(["malformed", "decrypt_failed"]));
  expect(lines(bob, "dm:alice").filter((l) => l.kind === "decrypt_failed").length).toBe(6);
  expect(lines(bob, "dm:alice").filter((l) => l.kind === "repairing")).toEqual([]);
  expect(messages(bob, "dm:alice")).toEqual([]);
  // state unchanged: the genuine message still decrypts, and the session goes on
  await feed(bob, f);
  expect(messages(bob, "dm:alice")).toEqual(["intact"]);
  await say(bob, "dm:alice", "ok");
  expect(messages(alice, "dm:bob")).toEqual(["ready", "ok"]);
});

it("a body naming a session bob does not hold starts one repair; the text arrives once, intact", async () => {
  const { alice, bob, held, release } = await setup();
  await say(alice, "dm:bob", "intact");
  release();
  const f = held[0] as Deliver;
  if (f.item.kind !== "direct") throw new Error("direct expected");
  // Indistinguishable from a message on a session bob lost (a restore): repaired (§8.10).
  for (const [i, at] of [5, 9, 13].entries()) {
    const t = Buffer.from(f.item.body, "base64url");
    t[at] = (t[at] as number) ^ 0x01;
    await feed(bob, {
      ...f,
      mid: String(3000 + i),
      item: { kind: "direct", body: t.toString("base64url") },
    });
  }
  // Three such bodies, one repair (REPAIR_INTERVAL_MS), and no error surfaced for them.
  expect(lines(bob, "dm:alice").filter((l) => l.kind === "repairing").length).toBe(1);
  expect(errors(bob)).toEqual([]);
  // alice sent the unreceipted text again on the new session; the original, late, is a replay.
  expect(
    lines(alice, "dm:bob")
      .filter((l) => l.kind === "resending")
      .map((l) => l.count),
  ).toEqual([1]);
  await feed(bob, f);
  expect([...new Set(messages(bob, "dm:alice"))]).toEqual(["intact"]);
  await say(bob, "dm:alice", "ok");
  await say(alice, "dm:bob", "and on");
  expect(messages(alice, "dm:bob")).toEqual(["ready", "ok"]);
  expect(messages(bob, "dm:alice").at(-1)).toBe("and on");
});
