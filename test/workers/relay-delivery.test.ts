/**
 * The relay's delivery path (PROTOCOL.md §6.1, §7.3 "Group messages"; worker/relay/delivery.ts):
 * group messages are stored once with a roster snapshot and each member's progress is a
 * cursor; caught-up connections get new items straight from memory, backlogged ones from
 * storage. These tests pin what that must never change: mid order on every connection,
 * at-least-once across reconnects, restarts and hibernation, exactly the right recipients, the
 * window, and the mailbox bounds and per-sender quotas counting group copies.
 */
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { type FrameOf, LIMITS, type ServerFrame } from "../../shared/protocol";
import {
  body,
  commitFrame,
  delivered,
  freshHub,
  groupOf,
  type Member,
  newKeys,
  TestClient,
} from "./support/client";
import { countTable, groupCopies, relaySql, stubFor, until } from "./support/relay-store";

type Deliver = FrameOf<ServerFrame, "deliver">;

async function groupSend(c: TestClient, id: string, epoch: number, i: number): Promise<string> {
  c.send({ v: 1, t: "group_send", id, group: "g", epoch, body: body(i) });
  await c.next("accepted", (f) => f.id === id);
  return id;
}

const cursorOf = (hub: string, user: string) =>
  runInDurableObject(stubFor(hub), (_i, state) =>
    Number(
      relaySql(state).exec("SELECT through FROM group_acks WHERE username = ?", user).toArray()[0]
        ?.through ?? 0,
    ),
  );

const increasing = (ds: Deliver[]) =>
  ds.every((d, i) => i === 0 || Number(ds[i - 1]?.mid) < Number(d.mid));

describe("group delivery: stored once, delivered in mid order", () => {
  it("online members get the frame at once, an offline one the same frame later, interleaved with direct items in mid order", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob", "carol"]);
    const [alice, bob, carol] = m as [Member, Member, Member];
    bob.c.close();
    await bob.c.waitClosed();
    // Interleave: direct, group, direct, group (alice), group (carol).
    alice.c.send({ v: 1, t: "send", id: "d1", to: "bob", body: body(100) });
    await alice.c.next("accepted", (f) => f.id === "d1");
    await groupSend(alice.c, "g1", epoch, 1);
    alice.c.send({ v: 1, t: "send", id: "d2", to: "bob", body: body(101) });
    await alice.c.next("accepted", (f) => f.id === "d2");
    await groupSend(alice.c, "g2", epoch, 2);
    await groupSend(carol.c, "g3", epoch, 3);
    // Stored once each: three log rows, two mailbox rows, two copies waiting for bob.
    expect(await countTable(hub, "group_log")).toBe(3);
    expect(await groupCopies(hub, "recipient = 'bob'")).toBe(3);

    const onCarol = await delivered(carol.c);
    expect(onCarol.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(1), body(2)]);
    const onAlice = await delivered(alice.c);
    expect(onAlice.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(3)]);

    const back = await TestClient.connect(hub, "bob", bob.keys);
    const onBob = await delivered(back.c);
    expect(
      onBob.map((d) => (d.item.kind === "group" ? `g:${d.item.body}` : `${d.item.kind}`)),
    ).toEqual(["direct", `g:${body(1)}`, "direct", `g:${body(2)}`, `g:${body(3)}`]);
    expect(increasing(onBob)).toBe(true);
    // The frame read back from storage equals the one sent from memory, byte for byte.
    const fromStorage = onBob.filter((d) => d.item.kind === "group").slice(0, 2);
    expect(fromStorage).toEqual(onCarol);
    for (const d of onBob) expect(d.item.kind === "group" ? d.item.epoch : epoch).toBe(epoch);
    for (const x of [alice.c, carol.c, back.c]) x.close();
  });

  it("keeps at most deliverWindow group deliveries unacknowledged, online and from storage", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob", "carol"]);
    const [alice, bob, carol] = m as [Member, Member, Member];
    carol.c.close();
    await carol.c.waitClosed();
    const total = LIMITS.deliverWindow + 6;
    for (let i = 0; i < total; i++) {
      alice.c.send({ v: 1, t: "group_send", id: `s${i}`, group: "g", epoch, body: body(i) });
      if (i % 40 === 39) await alice.c.next("accepted", (f) => f.id === `s${i}`);
    }
    await alice.c.next("accepted", (f) => f.id === `s${total - 1}`);
    // bob is online and caught up: the window fills, the rest waits in memory.
    const carolBack = await TestClient.connect(hub, "carol", carol.keys);
    for (const x of [bob.c, carolBack.c]) {
      const first = await delivered(x);
      expect(first.length).toBe(LIMITS.deliverWindow);
      x.send({ v: 1, t: "ack", mids: first.map((f) => f.mid) });
      const rest = await delivered(x);
      expect(rest.length).toBe(6);
      const all = [...first, ...rest];
      expect(increasing(all)).toBe(true);
      expect(all.map((d) => d.item.kind === "group" && d.item.body)).toEqual(
        Array.from({ length: total }, (_, i) => body(i)),
      );
      x.send({ v: 1, t: "ack", mids: rest.map((f) => f.mid) });
      await x.sync();
    }
    // Every copy acknowledged: the messages are deleted (by the flush that follows).
    await until(async () => (await countTable(hub, "group_log")) === 0, "log collected");
    for (const x of [alice.c, bob.c, carolBack.c]) x.close();
  });
});

describe("group delivery: acknowledgements and at-least-once", () => {
  it("an acknowledged message is not sent again; an unacknowledged one is, same mid; out-of-order acks", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob"]);
    const [alice, bob] = m as [Member, Member];
    for (let i = 1; i <= 4; i++) await groupSend(alice.c, `g${i}`, epoch, i);
    const got = await delivered(bob.c);
    expect(got.length).toBe(4);
    const [d1, d2, d3, d4] = got as [Deliver, Deliver, Deliver, Deliver];
    // d1 in order, d3 ahead of the unacknowledged d2: the cursor stops below d2.
    bob.c.send({ v: 1, t: "ack", mids: [d1.mid, d3.mid] });
    await bob.c.sync();
    await until(async () => (await cursorOf(hub, "bob")) === Number(d1.mid), "cursor at d1");
    // d1 was bob's only copy to hold: collected; d2..d4 stay.
    await until(async () => (await countTable(hub, "group_log")) === 3, "d1 collected");
    bob.c.close();
    await bob.c.waitClosed();
    // A new connection: everything above the cursor again (d3 too: acknowledged out of order
    // on a connection that is gone, it may come again; clients dedupe), with the same mids.
    const back = await TestClient.connect(hub, "bob", bob.keys);
    const again = await delivered(back.c);
    expect(again.map((d) => d.mid)).toEqual([d2.mid, d3.mid, d4.mid]);
    expect(again).toEqual([d2, d3, d4]);
    back.c.send({ v: 1, t: "ack", mids: again.map((d) => d.mid) });
    await back.c.sync();
    await until(async () => (await countTable(hub, "group_log")) === 0, "all collected");
    await until(async () => (await cursorOf(hub, "bob")) === Number(d4.mid), "cursor at d4");
    alice.c.close();
    back.c.close();
  });

  it("survives a restart: unacknowledged messages come again, acknowledged ones do not", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob", "carol"]);
    const [alice, bob, carol] = m as [Member, Member, Member];
    for (let i = 1; i <= 3; i++) await groupSend(alice.c, `g${i}`, epoch, i);
    const onBob = await delivered(bob.c);
    bob.c.send({ v: 1, t: "ack", mids: [onBob[0]?.mid ?? ""] });
    await bob.c.sync();
    await until(async () => (await cursorOf(hub, "bob")) === Number(onBob[0]?.mid), "flushed");
    // The process goes away: memory and every socket with it.
    await evictDurableObject(stubFor(hub), { webSockets: "close" });
    await bob.c.waitClosed();
    const bob2 = await TestClient.connect(hub, "bob", bob.keys);
    const carol2 = await TestClient.connect(hub, "carol", carol.keys);
    expect((await delivered(bob2.c)).map((d) => d.mid)).toEqual(onBob.slice(1).map((d) => d.mid));
    // carol never acknowledged anything: all three.
    expect((await delivered(carol2.c)).map((d) => d.item.kind === "group" && d.item.body)).toEqual([
      body(1),
      body(2),
      body(3),
    ]);
    for (const x of [alice.c, bob2.c, carol2.c]) x.close();
  });

  it("after hibernation a connection keeps its window: nothing sent twice, acked-ahead items stay acknowledged", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob"]);
    const [alice, bob] = m as [Member, Member];
    for (let i = 1; i <= 3; i++) await groupSend(alice.c, `g${i}`, epoch, i);
    const [d1, d2, d3] = (await delivered(bob.c)) as [Deliver, Deliver, Deliver];
    bob.c.send({ v: 1, t: "ack", mids: [d2.mid] });
    await bob.c.sync();
    // The attachment records d2 as acknowledged ahead (written by the flush timer).
    await until(
      () =>
        runInDurableObject(stubFor(hub), (_i, state) =>
          state.getWebSockets().some((ws) => {
            const att = ws.deserializeAttachment() as { username?: string; ahead?: number[] };
            return att.username === "bob" && (att.ahead ?? []).includes(Number(d2.mid));
          }),
        ),
      "attachment written",
    );
    await evictDurableObject(stubFor(hub)); // hibernate: sockets stay, memory goes
    await groupSend(alice.c, "g4", epoch, 4);
    const after = await delivered(bob.c);
    expect(after.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(4)]);
    // The restored window holds d1, d3, d4: acknowledging them moves the cursor past d4 (d2
    // was acknowledged before the object slept and is not waited for).
    bob.c.send({ v: 1, t: "ack", mids: [d1.mid, d3.mid, after[0]?.mid ?? ""] });
    await bob.c.sync();
    await until(async () => (await cursorOf(hub, "bob")) === Number(after[0]?.mid), "cursor");
    await until(async () => (await countTable(hub, "group_log")) === 0, "collected");
    alice.c.close();
    bob.c.close();
  });
});

describe("group delivery: exactly the roster", () => {
  it("outsiders and pending joiners never receive; a member who left gets what was sent before, nothing after", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob"]);
    const [alice, bob] = m as [Member, Member];
    const outsider = (await TestClient.connect(hub, "olga")).c;
    const joinerKeys = await newKeys();
    const joiner = (await TestClient.connect(hub, "jo", joinerKeys)).c;
    joiner.send({ v: 1, t: "join", id: "j", group: "g" });
    await joiner.next("accepted", (f) => f.id === "j");
    // bob goes offline and misses m0; then leaves (from a new connection) before m1.
    bob.c.close();
    await bob.c.waitClosed();
    await groupSend(alice.c, "m0", epoch, 0);
    const bob2 = await TestClient.connect(hub, "bob", bob.keys);
    const before = await delivered(bob2.c);
    expect(before.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(0)]);
    bob2.c.close();
    await bob2.c.waitClosed();
    const bob3 = await TestClient.connect(hub, "bob", bob.keys);
    bob3.c.send({ v: 1, t: "leave", id: "l", group: "g" });
    await bob3.c.next("left");
    // Sending is refused until the removal is committed; the commit admits the joiner too.
    alice.c.send({ v: 1, t: "group_send", id: "x", group: "g", epoch, body: body(9) });
    expect((await alice.c.error("x")).code).toBe("removal_pending");
    alice.c.send(commitFrame("c2", "g", epoch, ["alice", "jo"]));
    await alice.c.next("accepted", (f) => f.id === "c2");
    await groupSend(alice.c, "m1", epoch + 1, 1);
    const onJo = (await delivered(joiner)).filter((d) => d.item.kind === "group");
    expect(onJo.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(1)]);
    // bob: m0 again (never acknowledged), never m1; the outsider: nothing, ever.
    const onBob = (await delivered(bob3.c)).filter((d) => d.item.kind === "group");
    expect(onBob.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(0)]);
    expect((await delivered(outsider)).length).toBe(0);
    bob3.c.close();
    await bob3.c.waitClosed();
    const bob4 = await TestClient.connect(hub, "bob", bob.keys);
    const later = (await delivered(bob4.c)).filter((d) => d.item.kind === "group");
    expect(later.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(0)]);
    expect(await groupCopies(hub, "recipient = 'bob' AND mid > ?", String(onJo[0]?.mid))).toBe(0);
    expect(await groupCopies(hub, "recipient = 'olga'")).toBe(0);
    for (const x of [alice.c, joiner, outsider, bob4.c]) x.close();
  });
});

describe("group delivery: bounds and quotas count group copies (§7.3)", () => {
  /** Store `n` direct items from `sender` for `to` as if sent (see relay-quotas.test.ts). */
  async function prefill(hub: string, sender: string, to: string, n: number) {
    await runInDurableObject(stubFor(hub), (_i, state) => {
      const sql = relaySql(state);
      const pid = sql.exec("INSERT INTO payloads (data) VALUES ('AAAA') RETURNING id").one().id;
      for (let i = 0; i < n; i++) {
        sql.exec(
          "INSERT INTO mailbox (recipient, sender, sender_key, ts, expires_at, kind, payload) VALUES (?, ?, ?, ?, ?, 'direct', ?)",
          to,
          sender,
          "k",
          Date.now(),
          Date.now() + 600_000,
          pid,
        );
      }
      sql.exec(
        "INSERT INTO mailbox_counts (recipient, n) VALUES (?, ?) ON CONFLICT (recipient) DO UPDATE SET n = n + excluded.n",
        to,
        n,
      );
    });
    // As after a wake-up: the object reads its counters from storage again.
    await evictDurableObject(stubFor(hub));
  }

  it("a member whose mailbox reaches the bound through group copies is skipped, and direct sends to it are refused", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob", "carol"]);
    const [alice, bob, carol] = m as [Member, Member, Member];
    bob.c.close();
    await bob.c.waitClosed();
    await prefill(hub, "zed", "bob", LIMITS.maxMailboxPerRecipient - 2);
    for (let i = 1; i <= 3; i++) await groupSend(alice.c, `g${i}`, epoch, i);
    // Two copies fit, the third is skipped for bob only.
    expect(await groupCopies(hub, "recipient = 'bob'")).toBe(2);
    expect(await groupCopies(hub, "recipient = 'carol'")).toBe(3);
    alice.c.send({ v: 1, t: "send", id: "d", to: "bob", body: body(7) });
    expect((await alice.c.error("d")).code).toBe("mailbox_full");
    // A commit still fits under the hard bound.
    expect((await delivered(carol.c)).length).toBe(3);
    alice.c.close();
    carol.c.close();
  });

  it("group copies count toward the sender's share of a mailbox", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob", "carol"]);
    const [alice, bob, carol] = m as [Member, Member, Member];
    bob.c.close();
    await bob.c.waitClosed();
    await prefill(hub, "alice", "bob", LIMITS.maxMailboxPerSenderPerRecipient - 1);
    await groupSend(alice.c, "g1", epoch, 1);
    await groupSend(alice.c, "g2", epoch, 2);
    expect(await groupCopies(hub, "recipient = 'bob' AND sender = 'alice'")).toBe(1);
    expect(await groupCopies(hub, "recipient = 'carol' AND sender = 'alice'")).toBe(2);
    // Another sender is not affected by alice's share.
    await groupSend(carol.c, "g3", epoch, 3);
    expect(await groupCopies(hub, "recipient = 'bob' AND sender = 'carol'")).toBe(1);
    alice.c.close();
    carol.c.close();
  });

  it("expired group messages are never delivered, purged by the alarm with their roster snapshot", async () => {
    const hub = freshHub("d");
    const { m, epoch } = await groupOf(hub, ["alice", "bob"]);
    const [alice, bob] = m as [Member, Member];
    bob.c.close();
    await bob.c.waitClosed();
    await groupSend(alice.c, "old", epoch, 1);
    await groupSend(alice.c, "new", epoch, 2);
    await runInDurableObject(stubFor(hub), (_i, state) => {
      relaySql(state).exec("UPDATE group_log SET expires_at = 1 WHERE data = ?", body(1));
    });
    const back = await TestClient.connect(hub, "bob", bob.keys);
    const got = await delivered(back.c);
    expect(got.map((d) => d.item.kind === "group" && d.item.body)).toEqual([body(2)]);
    expect(await runDurableObjectAlarm(stubFor(hub))).toBe(true);
    expect(await countTable(hub, "group_log")).toBe(1);
    back.c.send({ v: 1, t: "ack", mids: got.map((d) => d.mid) });
    await back.c.sync();
    await until(async () => (await countTable(hub, "group_log")) === 0, "collected");
    await runDurableObjectAlarm(stubFor(hub));
    expect(await countTable(hub, "group_rosters")).toBe(0);
    expect(await countTable(hub, "roster_members")).toBe(0);
    alice.c.close();
    back.c.close();
  });
});
