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

const KEY = "A".repeat(43);
const SIG = "A".repeat(86);

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
      const sql = state.storage.sql;
      sql.exec("INSERT INTO groups (name, epoch, created_at) VALUES ('big', 5, 0)");
      sql.exec(
        "INSERT INTO group_members (grp, username, committed, joining, leaving) VALUES ('big', 'alice', 1, 0, 0)",
      );
      for (let i = 1; i < LIMITS.maxGroupSize; i++) {
        const name = `member-${i}`;
        sql.exec(
          "INSERT INTO users (username, identity_key, spk_id, spk_key, spk_sig, created_at, seen_at) VALUES (?, ?, 1, ?, ?, 0, 0)",
          name,
          `${String(i).padStart(5, "0")}${KEY.slice(5)}`,
          KEY,
          SIG,
        );
        sql.exec(
          "INSERT INTO group_members (grp, username, committed, joining, leaving) VALUES ('big', ?, 1, 0, 0)",
          name,
        );
      }
    });
    const { c, welcome } = await TestClient.connect(hub, "alice", aliceKeys);
    const big = welcome.groups.find((g) => g.group === "big");
    expect(big?.members.length).toBe(LIMITS.maxGroupSize);
    const body = "A".repeat(4096);
    const t0 = Date.now();
    c.send({ v: 1, t: "group_send", id: "g1", group: "big", epoch: 5, body });
    await c.next("accepted", (f) => f.id === "g1", 20_000);
    const fanoutMs = Date.now() - t0;
    const rows = await runInDurableObject(stub, (_i, state) => ({
      items: state.storage.sql.exec("SELECT COUNT(*) AS n FROM mailbox").one().n,
      payloads: state.storage.sql.exec("SELECT COUNT(*) AS n FROM payloads").one().n,
    }));
    // One row per other member, one shared payload.
    expect(rows).toEqual({ items: LIMITS.maxGroupSize - 1, payloads: 1 });
    console.log(`fanout to ${LIMITS.maxGroupSize - 1} offline members: ${fanoutMs} ms`);
    expect(fanoutMs).toBeLessThan(10_000);
    c.close();
  });
});
