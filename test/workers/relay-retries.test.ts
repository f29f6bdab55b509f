/**
 * Retries (PROTOCOL.md §7.3 "Retries"): a client that lost its `accepted` sends the same frame
 * again with the same id. The relay answers it as the first time and stores it once — across a
 * restart too — so the recipient gets one copy and the sender's quotas count one item. A retry
 * is the same frame from the same device: the same id with another recipient or body is new.
 */
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import type { FrameOf, ServerFrame } from "../../shared/protocol";
import {
  body,
  commitFrame,
  delivered,
  freshHub,
  type Keys,
  newKeys,
  TestClient,
} from "./support/client";
import { countTable, relaySql, stubFor, until } from "./support/relay-store";

type Answer = FrameOf<ServerFrame, "accepted"> | FrameOf<ServerFrame, "error">;

/** The `accepted` or `error` that answers frame `id` (removed from the queue). */
async function answerTo(c: TestClient, id: string): Promise<Answer> {
  for (let round = 0; round < 20; round++) {
    const i = c.queue.findIndex((f) => (f.t === "accepted" || f.t === "error") && f.id === id);
    if (i >= 0) return c.queue.splice(i, 1)[0] as Answer;
    await c.sync();
  }
  throw new Error(`no answer to ${id}`);
}

async function sendTo(c: TestClient, id: string, to: string, i: number): Promise<Answer> {
  c.send({ v: 1, t: "send", id, to, body: body(i) });
  return answerTo(c, id);
}

/** Move every remembered send past its retry window, in storage (memory goes with an eviction). */
function expireAll(hub: string): Promise<void> {
  return runInDurableObject(stubFor(hub), (_i, state) => {
    const sql = relaySql(state);
    for (const r of sql.exec("SELECT sender, entries FROM send_recent").toArray()) {
      const entries = (JSON.parse(String(r.entries)) as Array<[string, { expiresAt: number }]>).map(
        ([id, e]) => [id, { ...e, expiresAt: 1 }],
      );
      sql.exec(
        "UPDATE send_recent SET entries = ?, expires_at = 1 WHERE sender = ?",
        JSON.stringify(entries),
        r.sender,
      );
    }
  });
}

describe("retries of an accepted send (PROTOCOL.md §7.3)", () => {
  it("a direct send sent again after a restart is answered with the same mid and delivered once", async () => {
    const hub = freshHub("rt");
    const aliceKeys = await newKeys();
    const bobKeys = await newKeys();
    (await TestClient.connect(hub, "bob", bobKeys)).c.close();
    const alice = (await TestClient.connect(hub, "alice", aliceKeys)).c;
    const first = await sendTo(alice, "7", "bob", 1);
    expect(first.t).toBe("accepted");
    // Written by the flush, within 200 ms of the send.
    await until(async () => (await countTable(hub, "send_recent")) === 1, "send remembered");
    // The answer is lost with the process: the client sends the frame again on its next
    // connection, as its outbox does (§10.1).
    await evictDurableObject(stubFor(hub), { webSockets: "close" });
    await alice.waitClosed();
    const again = (await TestClient.connect(hub, "alice", aliceKeys)).c;
    const second = await sendTo(again, "7", "bob", 1);
    expect(second).toEqual(first);
    expect(await countTable(hub, "mailbox WHERE recipient = 'bob'")).toBe(1);
    // A new id is a new message.
    const third = await sendTo(again, "8", "bob", 2);
    expect(third.t === "accepted" && first.t === "accepted" && third.mid !== first.mid).toBe(true);
    const bob = (await TestClient.connect(hub, "bob", bobKeys)).c;
    expect((await delivered(bob)).map((d) => d.item.kind === "direct" && d.item.body)).toEqual([
      body(1),
      body(2),
    ]);
    // The same id with another body, or for another recipient, is a new frame (a client whose
    // numbering started again after a reload, §10.1): stored and delivered.
    (await TestClient.connect(hub, "carol")).c.close();
    const renumbered = await sendTo(again, "7", "bob", 3);
    const elsewhere = await sendTo(again, "7", "carol", 4);
    expect([renumbered.t, elsewhere.t]).toEqual(["accepted", "accepted"]);
    expect(
      renumbered.t === "accepted" && first.t === "accepted" && renumbered.mid !== first.mid,
    ).toBe(true);
    expect((await delivered(bob)).map((d) => d.item.kind === "direct" && d.item.body)).toEqual([
      body(3),
    ]);
    expect(await countTable(hub, "mailbox WHERE recipient = 'carol'")).toBe(1);
    // And the latest of them is what a retry now matches.
    expect(await sendTo(again, "7", "carol", 4)).toEqual(elsewhere);
    expect(await countTable(hub, "mailbox WHERE recipient = 'carol'")).toBe(1);
    again.close();
    bob.close();
  });

  it("ids are per device: another identity, or a device taking the identity over, is not a retry", async () => {
    const hub = freshHub("rt");
    const bobKeys = await newKeys();
    (await TestClient.connect(hub, "bob", bobKeys)).c.close();
    const aliceKeys = await newKeys();
    const alice = (await TestClient.connect(hub, "alice", aliceKeys)).c;
    const carol = (await TestClient.connect(hub, "carol")).c;
    const a1 = await sendTo(alice, "1", "bob", 1);
    const c1 = await sendTo(carol, "1", "bob", 2);
    expect(a1.t === "accepted" && c1.t === "accepted" && a1.mid !== c1.mid).toBe(true);
    // A restored identity on a new device (a claim, §4.3) numbers its frames from 1 again.
    const phone = await TestClient.open(hub);
    const device = toB64u(crypto.getRandomValues(new Uint8Array(16)));
    phone.send(await phone.authFrame("alice", aliceKeys, { device, claim: true }));
    await phone.next("welcome");
    const p1 = await sendTo(phone, "1", "bob", 3);
    expect(p1.t === "accepted" && a1.t === "accepted" && p1.mid !== a1.mid).toBe(true);
    const bob = (await TestClient.connect(hub, "bob", bobKeys)).c;
    expect((await delivered(bob)).map((d) => d.item.kind === "direct" && d.item.body)).toEqual([
      body(1),
      body(2),
      body(3),
    ]);
    for (const c of [phone, carol, bob]) c.close();
  });

  it("the latest 16 sends of a device are remembered, in memory and after a restart", async () => {
    const hub = freshHub("rt");
    (await TestClient.connect(hub, "bob")).c.close();
    const keys = await newKeys();
    const alice = (await TestClient.connect(hub, "alice", keys)).c;
    const firsts: Answer[] = [];
    for (let i = 1; i <= 18; i++) firsts.push(await sendTo(alice, String(i), "bob", i));
    const midOf = (a: Answer | undefined) => (a?.t === "accepted" ? a.mid : null);
    // The oldest two are forgotten: sent again, "2" is stored again (the client drops the second
    // copy as a replay) and becomes the latest; "4" is still a retry ("3" made way for "2").
    expect(midOf(await sendTo(alice, "2", "bob", 2))).not.toBe(midOf(firsts[1]));
    expect(midOf(await sendTo(alice, "4", "bob", 4))).toBe(midOf(firsts[3]));
    expect(await countTable(hub, "mailbox WHERE recipient = 'bob'")).toBe(19);
    // After a restart the latest 16 are read back from storage: "2" and 18 down to 4.
    const newest = "send_recent WHERE json_extract(entries, '$[#-1][0]') = '2'";
    await until(async () => (await countTable(hub, newest)) === 1, "the second 2 written");
    await evictDurableObject(stubFor(hub), { webSockets: "close" });
    await alice.waitClosed();
    const again = (await TestClient.connect(hub, "alice", keys)).c;
    expect(midOf(await sendTo(again, "18", "bob", 18))).toBe(midOf(firsts[17]));
    expect(midOf(await sendTo(again, "4", "bob", 4))).toBe(midOf(firsts[3]));
    expect(midOf(await sendTo(again, "3", "bob", 3))).not.toBe(midOf(firsts[2]));
    expect(await countTable(hub, "mailbox WHERE recipient = 'bob'")).toBe(20);
    again.close();
  });

  it("an id is remembered for the retry window only, then purged by the alarm", async () => {
    const hub = freshHub("rt");
    (await TestClient.connect(hub, "bob")).c.close();
    const alice = (await TestClient.connect(hub, "alice")).c;
    const first = await sendTo(alice, "5", "bob", 1);
    await until(async () => (await countTable(hub, "send_recent")) === 1, "send remembered");
    // The window has passed (and the object's memory went: it reads its storage again).
    await expireAll(hub);
    await evictDurableObject(stubFor(hub));
    const later = await sendTo(alice, "5", "bob", 1);
    expect(later.t === "accepted" && first.t === "accepted" && later.mid !== first.mid).toBe(true);
    expect(await countTable(hub, "mailbox WHERE recipient = 'bob'")).toBe(2);
    await until(
      async () => (await countTable(hub, "send_recent WHERE expires_at > 1")) === 1,
      "new",
    );
    await expireAll(hub);
    await runDurableObjectAlarm(stubFor(hub));
    expect(await countTable(hub, "send_recent")).toBe(0);
    alice.close();
  });

  it("a group send sent again is answered accepted and stored once, even after the group moved on", async () => {
    const hub = freshHub("rt");
    const keys: Keys[] = [await newKeys(), await newKeys()];
    const alice = (await TestClient.connect(hub, "alice", keys[0])).c;
    const bob = (await TestClient.connect(hub, "bob", keys[1])).c;
    alice.send({ v: 1, t: "join", id: "j", group: "g" });
    await alice.next("accepted", (f) => f.id === "j");
    alice.send(commitFrame("c0", "g", 0, ["alice"]));
    await alice.next("accepted", (f) => f.id === "c0");
    bob.send({ v: 1, t: "join", id: "j", group: "g" });
    await bob.next("accepted", (f) => f.id === "j");
    await alice.next("group", (f) => f.state.pendingJoins.length === 1);
    alice.send(commitFrame("c1", "g", 1, ["alice", "bob"]));
    await alice.next("accepted", (f) => f.id === "c1");
    for (const c of [alice, bob]) {
      c.send({ v: 1, t: "ack", mids: (await delivered(c)).map((d) => d.mid) });
      await c.sync();
    }
    const send = { v: 1, t: "group_send", id: "g1", group: "g", epoch: 2, body: body(1) };
    alice.send(send);
    await alice.next("accepted", (f) => f.id === "g1");
    alice.send(send);
    await alice.next("accepted", (f) => f.id === "g1");
    // The group moves on: a retry of the stored message still gets its `accepted`, not
    // `stale_epoch`, and nothing more is stored.
    alice.send(commitFrame("c2", "g", 2, ["alice", "bob"]));
    await alice.next("accepted", (f) => f.id === "c2");
    alice.send(send);
    const answer = await answerTo(alice, "g1");
    expect(answer.t).toBe("accepted");
    expect(await countTable(hub, "group_log")).toBe(1);
    const got = (await delivered(bob)).filter((d) => d.item.kind === "group");
    expect(got.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(1)]);
    alice.close();
    bob.close();
  });
});
