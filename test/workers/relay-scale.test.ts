/**
 * Measurements behind docs/ARCHITECTURE.md ("numbers that decide when to shard"), run in workerd:
 * a group message to a full group (maxGroupSize members, all offline: every copy is a mailbox
 * insert) and the welcome of a member of that group. The assertions are loose ceilings; the
 * printed timings are the point.
 */
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import { freshHub, newKeys, TestClient } from "./support/client";
import { countTable, groupCopies, relaySql } from "./support/relay-store";

const KEY = "A".repeat(43);
const SIG = "A".repeat(86);
const LEAVES = JSON.stringify({
  l: [{ id: 1, key: KEY, epoch: 0, nonce: "A".repeat(22), sig: SIG }],
  u: false,
});

describe("relay scale", () => {
  it(`fans a group message out to ${LIMITS.maxGroupSize} offline members`, async () => {
    const hub = freshHub();
    const aliceKeys = await newKeys();
    const first = await TestClient.connect(hub, "alice", aliceKeys);
    first.c.close();
    await first.c.waitClosed();
    const stub = env.RELAY.get(env.RELAY.idFromName(hub));
    // Seed users and a committed roster directly: 1000 auth handshakes would measure Ed25519.
    await runInDurableObject(stub, (_i, state) => {
      const sql = relaySql(state);
      sql.exec("INSERT INTO groups (name, epoch, created_at) VALUES ('big', 5, 0)");
      sql.exec(
        "INSERT INTO group_members (grp, username, committed, joining, leaving) VALUES ('big', 'alice', 1, 0, 0)",
      );
      for (let i = 1; i < LIMITS.maxGroupSize; i++) {
        const name = `member-${i}`;
        sql.exec(
          "INSERT INTO users (username, identity_key, created_at, seen_at) VALUES (?, ?, 0, 0)",
          name,
          `${String(i).padStart(5, "0")}${KEY.slice(5)}`,
        );
        sql.exec(
          "INSERT INTO group_members (grp, username, committed, joining, leaving) VALUES ('big', ?, 1, 0, 0)",
          name,
        );
        // Each member's published leaf key (PROTOCOL.md §9.3): the group state lists it.
        sql.exec(
          "INSERT INTO group_leaves (grp, username, queue) VALUES ('big', ?, ?)",
          name,
          LEAVES,
        );
      }
      sql.exec(
        "INSERT INTO group_leaves (grp, username, queue) VALUES ('big', 'alice', ?)",
        LEAVES,
      );
    });
    const { c, welcome } = await TestClient.connect(hub, "alice", aliceKeys);
    const big = welcome.groups.find((g) => g.group === "big");
    expect(big?.members.length).toBe(LIMITS.maxGroupSize);
    const body = "A".repeat(4096);
    const t0 = Date.now();
    c.send({ v: 1, t: "group_send", id: "g1", group: "big", epoch: 5, body });
    await c.next("accepted", (f) => f.id === "g1", 20_000);
    const fanoutMs = Date.now() - t0;
    // Stored once (PROTOCOL.md §7.3): one log row and one roster snapshot, no mailbox rows,
    // and a copy held for every other member.
    expect(await countTable(hub, "group_log")).toBe(1);
    expect(await countTable(hub, "group_rosters")).toBe(1);
    expect(await countTable(hub, "mailbox")).toBe(0);
    expect(await groupCopies(hub)).toBe(LIMITS.maxGroupSize - 1);
    console.log(`fanout to ${LIMITS.maxGroupSize - 1} offline members: ${fanoutMs} ms`);
    expect(fanoutMs).toBeLessThan(10_000);
    // The next message under the same roster reuses its snapshot: one row, counters in memory.
    const t1 = Date.now();
    c.send({ v: 1, t: "group_send", id: "g2", group: "big", epoch: 5, body });
    await c.next("accepted", (f) => f.id === "g2", 20_000);
    console.log(`next message to the same ${LIMITS.maxGroupSize - 1}: ${Date.now() - t1} ms`);
    expect(await countTable(hub, "group_log")).toBe(2);
    expect(await countTable(hub, "group_rosters")).toBe(1);
    expect(await groupCopies(hub)).toBe(2 * (LIMITS.maxGroupSize - 1));
    c.close();
  });

  it("fanout costs identity tokens: a big group is rate limited sooner than a direct chat", async () => {
    const hub = freshHub();
    const aliceKeys = await newKeys();
    const first = await TestClient.connect(hub, "alice", aliceKeys);
    first.c.close();
    await first.c.waitClosed();
    const stub = env.RELAY.get(env.RELAY.idFromName(hub));
    await runInDurableObject(stub, (_i, state) => {
      const sql = relaySql(state);
      sql.exec("INSERT INTO groups (name, epoch, created_at) VALUES ('big', 1, 0)");
      sql.exec(
        "INSERT INTO group_members (grp, username, committed, joining, leaving) VALUES ('big', 'alice', 1, 0, 0)",
      );
      for (let i = 1; i < LIMITS.maxGroupSize; i++) {
        sql.exec(
          "INSERT INTO group_members (grp, username, committed, joining, leaving) VALUES ('big', ?, 1, 0, 0)",
          `member-${i}`,
        );
      }
    });
    const { c } = await TestClient.connect(hub, "alice", aliceKeys);
    const perSend = 1 + Math.floor((LIMITS.maxGroupSize - 1) / LIMITS.fanoutRecipientsPerToken);
    // Under the connection burst in frames, but several identity bursts' worth of tokens (each
    // accepted fanout also takes tens of ms, during which the bucket refills a little).
    const n = 60;
    expect(n).toBeLessThan(LIMITS.connBurst);
    expect(n * perSend).toBeGreaterThan(3 * LIMITS.identityBurst);
    for (let i = 0; i < n; i++) {
      c.send({ v: 1, t: "group_send", id: `g${i}`, group: "big", epoch: 1, body: "AAAA" });
    }
    // Once fanout charges empty the identity bucket, plain admission refuses too (without id):
    // every frame is answered either way.
    const refused = () => c.queue.filter((f) => f.t === "error" && f.code === "rate_limited");
    const accepted = () => c.queue.filter((f) => f.t === "accepted");
    const deadline = Date.now() + 20_000;
    while (accepted().length + refused().length < n && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(accepted().length + refused().length).toBe(n);
    expect(refused().length).toBeGreaterThan(0);
    // The same number of direct sends would all have passed: the limit is the fanout charge.
    expect(n).toBeLessThan(LIMITS.identityBurst);
    c.close();
  });
});
