/** 1:1 routing and the offline mailbox (PROTOCOL.md §7.3): order, ack, receipts, TTL, bounds. */
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import { freshHub, newKeys, TestClient } from "./support/client";
import { relaySql } from "./support/relay-store";

function stubFor(hub: string) {
  return env.RELAY.get(env.RELAY.idFromName(hub));
}

const body = (i: number) => `AAA${String.fromCharCode(65 + (i % 26))}`;

describe("relay mailbox", () => {
  it("routes to an online recipient stamped with the authenticated sender", async () => {
    const hub = freshHub();
    const alice = await newKeys();
    const a = await TestClient.connect(hub, "alice", alice);
    const b = await TestClient.connect(hub, "bob");
    a.c.send({ v: 1, t: "send", id: "m1", to: "bob", body: "SGk" });
    const acc = await a.c.next("accepted", (f) => f.id === "m1");
    const d = await b.c.next("deliver");
    expect(d).toMatchObject({ mid: acc.mid, from: "alice", fromKey: alice.identityKey });
    expect(d.item).toEqual({ kind: "direct", body: "SGk" });
    a.c.close();
    b.c.close();
  });

  it("unknown recipients get unknown_user", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    c.send({ v: 1, t: "send", id: "u", to: "ghost", body: "AAAA" });
    expect((await c.error("u")).code).toBe("unknown_user");
    c.close();
  });

  it("stores for an offline recipient and delivers in order on reconnect", async () => {
    const hub = freshHub();
    const bobKeys = await newKeys();
    const b0 = await TestClient.connect(hub, "bob", bobKeys);
    b0.c.close();
    await b0.c.waitClosed();
    const a = await TestClient.connect(hub, "alice");
    const mids: string[] = [];
    for (let i = 0; i < 10; i++) {
      a.c.send({ v: 1, t: "send", id: `m${i}`, to: "bob", body: body(i) });
      mids.push((await a.c.next("accepted", (f) => f.id === `m${i}`)).mid ?? "");
    }
    const b = await TestClient.connect(hub, "bob", bobKeys);
    const got = [];
    for (let i = 0; i < 10; i++) got.push(await b.c.next("deliver"));
    expect(got.map((d) => d.mid)).toEqual(mids);
    expect(got.map((d) => (d.item.kind === "direct" ? d.item.body : ""))).toEqual(
      Array.from({ length: 10 }, (_, i) => body(i)),
    );
    a.c.close();
    b.c.close();
  });

  it("keeps items until acknowledged (at-least-once); an ack sends the sender nothing", async () => {
    const hub = freshHub();
    const bobKeys = await newKeys();
    const a = await TestClient.connect(hub, "alice");
    const b1 = await TestClient.connect(hub, "bob", bobKeys);
    a.c.send({ v: 1, t: "send", id: "x", to: "bob", body: "AAAA" });
    const { mid } = await a.c.next("accepted");
    expect((await b1.c.next("deliver")).mid).toBe(mid);
    // No ack: a new connection gets it again, same mid (the client dedupes on it).
    b1.c.close();
    await b1.c.waitClosed();
    const b2 = await TestClient.connect(hub, "bob", bobKeys);
    expect((await b2.c.next("deliver")).mid).toBe(mid);
    b2.c.send({ v: 1, t: "ack", mids: [mid ?? ""] });
    await b2.c.sync(); // the ack is taken before the socket closes
    b2.c.close();
    await b2.c.waitClosed();
    // Acknowledged: gone for good.
    const b3 = await TestClient.connect(hub, "bob", bobKeys);
    await b3.c.next("presence");
    await b3.c.sync();
    await b3.c.none("deliver", 200);
    // Delivery is confirmed end to end (PROTOCOL.md §7.3, §8.6): the relay tells the sender nothing.
    await a.c.none("receipt", 100);
    a.c.close();
    b3.c.close();
  });

  it("ignores acks for mids that belong to someone else", async () => {
    const hub = freshHub();
    const a = await TestClient.connect(hub, "alice");
    const bobKeys = await newKeys();
    const b = await TestClient.connect(hub, "bob", bobKeys);
    const m = await TestClient.connect(hub, "mallory");
    a.c.send({ v: 1, t: "send", id: "x", to: "bob", body: "AAAA" });
    const { mid } = await a.c.next("accepted");
    await b.c.next("deliver");
    m.c.send({ v: 1, t: "ack", mids: [mid ?? ""] });
    await m.c.sync();
    b.c.close();
    await b.c.waitClosed();
    const b2 = await TestClient.connect(hub, "bob", bobKeys);
    expect((await b2.c.next("deliver")).mid).toBe(mid);
    for (const c of [a.c, m.c, b2.c]) c.close();
  });

  it("keeps at most deliverWindow deliveries unacknowledged, more follow acks", async () => {
    const hub = freshHub();
    const bobKeys = await newKeys();
    const a = await TestClient.connect(hub, "alice");
    const b0 = await TestClient.connect(hub, "bob", bobKeys);
    await b0.c.accept("alice"); // more than a message request's share (§7.3.1)
    b0.c.close();
    await b0.c.waitClosed();
    const total = LIMITS.deliverWindow + 6;
    for (let i = 0; i < total; i++) {
      a.c.send({ v: 1, t: "send", id: `m${i}`, to: "bob", body: body(i) });
      if (i % 40 === 39) await a.c.next("accepted", (f) => f.id === `m${i}`);
    }
    await a.c.next("accepted", (f) => f.id === `m${total - 1}`);
    const b = await TestClient.connect(hub, "bob", bobKeys);
    await b.c.next("presence");
    await b.c.sync();
    const first = b.c.queue.filter((f) => f.t === "deliver");
    expect(first.length).toBe(LIMITS.deliverWindow);
    b.c.queue.length = 0;
    b.c.send({ v: 1, t: "ack", mids: first.map((f) => (f.t === "deliver" ? f.mid : "")) });
    await b.c.sync();
    const rest = b.c.queue.filter((f) => f.t === "deliver");
    expect(rest.length).toBe(6);
    // Strictly increasing mids across the two windows.
    const all = [...first, ...rest].map((f) => (f.t === "deliver" ? Number(f.mid) : 0));
    expect([...all].sort((x, y) => x - y)).toEqual(all);
    a.c.close();
    b.c.close();
  });

  it("refuses a send to a full mailbox with mailbox_full", async () => {
    const hub = freshHub();
    const a = await TestClient.connect(hub, "alice");
    const b0 = await TestClient.connect(hub, "bob");
    await b0.c.accept("alice"); // a contact: refused for room, not as a message request
    b0.c.close();
    await b0.c.waitClosed();
    const stub = stubFor(hub);
    // Fill the mailbox directly; sending 2000 frames would only test the rate limiter.
    await runInDurableObject(stub, (_i, state) => {
      const sql = relaySql(state);
      const pid = sql.exec("INSERT INTO payloads (data) VALUES ('AAAA') RETURNING id").one().id;
      for (let i = 0; i < LIMITS.maxMailboxPerRecipient; i++) {
        sql.exec(
          "INSERT INTO mailbox (recipient, sender, sender_key, ts, expires_at, kind, payload) VALUES ('bob', 'x', 'k', 0, ?, 'direct', ?)",
          Date.now() + 60_000,
          pid,
        );
      }
      sql.exec(
        "INSERT INTO mailbox_counts (recipient, n) VALUES ('bob', ?)",
        LIMITS.maxMailboxPerRecipient,
      );
    });
    a.c.send({ v: 1, t: "send", id: "full", to: "bob", body: "AAAA" });
    expect((await a.c.error("full")).code).toBe("mailbox_full");
    a.c.close();
  });

  it("expires items after the TTL: never delivered, purged by the alarm", async () => {
    const hub = freshHub();
    const bobKeys = await newKeys();
    const b0 = await TestClient.connect(hub, "bob", bobKeys);
    b0.c.close();
    await b0.c.waitClosed();
    const a = await TestClient.connect(hub, "alice");
    a.c.send({ v: 1, t: "send", id: "old", to: "bob", body: "AAAA" });
    await a.c.next("accepted");
    a.c.send({ v: 1, t: "send", id: "new", to: "bob", body: "BBBB" });
    const fresh = await a.c.next("accepted", (f) => f.id === "new");
    const stub = stubFor(hub);
    // Age the first item past its TTL (the relay stamps expires_at = ts + mailboxTtlMs).
    await runInDurableObject(stub, (_i, state) => {
      relaySql(state).exec("UPDATE mailbox SET expires_at = 1 WHERE mid < ?", Number(fresh.mid));
    });
    const b = await TestClient.connect(hub, "bob", bobKeys);
    const d = await b.c.next("deliver");
    expect(d.mid).toBe(fresh.mid);
    await b.c.none("deliver", 200);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const left = await runInDurableObject(stub, (_i, state) =>
      relaySql(state).exec("SELECT mid FROM mailbox ORDER BY mid").toArray(),
    );
    expect(left.map((r) => String(r.mid))).toEqual([fresh.mid]);
    const payloads = await runInDurableObject(stub, (_i, state) =>
      relaySql(state).exec("SELECT COUNT(*) AS n FROM payloads").one(),
    );
    expect(payloads.n).toBe(1);
    // The per-recipient counter followed the purge; after the ack it is gone — written by the
    // relay's next flush, within FLUSH_DELAY_MS (delivery.ts), as acknowledged rows are deleted.
    const count = () =>
      runInDurableObject(stub, (_i, state) =>
        relaySql(state).exec("SELECT recipient, n FROM mailbox_counts").toArray(),
      );
    expect(await count()).toEqual([{ recipient: "bob", n: 1 }]);
    b.c.send({ v: 1, t: "ack", mids: [d.mid] });
    await b.c.sync();
    for (let i = 0; (await count()).length > 0; i++) {
      if (i === 60) throw new Error("the acknowledged row was never deleted");
      await new Promise((r) => setTimeout(r, 50));
    }
    a.c.close();
    b.c.close();
  });
});
