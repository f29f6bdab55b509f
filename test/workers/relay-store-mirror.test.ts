/**
 * The counters the relay's Store mirrors in memory (worker/relay/store.ts: stored rows per
 * recipient, per-sender shares and totals; PROTOCOL.md §7.3) against the reference, a recount in
 * SQL (`countMailboxes`, `senderHoldings`), after every step of random sequences of the writes
 * that change them: direct items and commits stored, acknowledged, expired; group messages
 * stored and deleted; direct items held in memory before they are stored (write-behind) count as
 * stored rows, whether they are then stored or released. And the read caches (directory rows,
 * contact decisions, a member's groups and rosters) against a fresh Store's reads after random
 * sequences of the writes that change them.
 */
import { runInDurableObject } from "cloudflare:test";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { emptyGroup } from "../../worker/relay/groups";
import { Store } from "../../worker/relay/store";
import { freshHub } from "./support/client";
import { relaySql, stubFor } from "./support/relay-store";

/** A direct item from `sender` to `recipient` sent at `now`, expiring 10 ms later. */
const item = (recipient: string, now: number, sender = "ann") => ({
  recipient,
  sender,
  senderKey: "k",
  ts: now,
  expiresAt: now + 10,
  kind: "direct" as const,
  group: null,
  epoch: null,
  payload: 0,
  wrap: null,
});

const USERS = ["ann", "ben", "cat", "dan"] as const;
const user = fc.constantFrom(...USERS);

const op = fc.oneof(
  fc.record({
    t: fc.constant("put" as const),
    from: user,
    to: user,
    kind: fc.constantFrom("direct" as const, "commit" as const),
    expired: fc.boolean(),
  }),
  fc.record({ t: fc.constant("ack" as const), who: user, pick: fc.nat() }),
  fc.record({ t: fc.constant("later" as const), who: user, pick: fc.nat() }),
  fc.record({ t: fc.constant("flush" as const) }),
  fc.record({ t: fc.constant("group" as const), from: user, expired: fc.boolean() }),
  fc.record({ t: fc.constant("delgroup" as const), pick: fc.nat() }),
  // Write-behind (PROTOCOL.md §7.3): a direct item held in memory, then stored or released.
  fc.record({ t: fc.constant("hold" as const), from: user, to: user }),
  fc.record({ t: fc.constant("settle" as const), pick: fc.nat() }),
  fc.record({ t: fc.constant("release" as const), pick: fc.nat() }),
  fc.record({ t: fc.constant("purge" as const) }),
);

describe("relay store: in-memory counters equal a recount in SQL", () => {
  it("after every write, for every sender and recipient", async () => {
    const hub = freshHub("mirror");
    // Wake the hub's object once so its schema exists; the test then drives its own Store.
    await runInDurableObject(stubFor(hub), () => {});
    let round = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
        round++;
        await runInDurableObject(stubFor(hub), (_i, state) => {
          const sql = relaySql(state);
          for (const t of [
            "mailbox",
            "mailbox_counts",
            "payloads",
            "group_log",
            "group_rosters",
            "roster_members",
          ]) {
            sql.exec(`DELETE FROM ${t}`);
          }
          const store = new Store(sql);
          store.migrate([], 1);
          const now = 1_000_000;
          const g = { ...emptyGroup(`g${round}`), epoch: 1, members: [...USERS] };
          const roster = store.rosterOf(g, [...USERS]);
          const mids: Array<{ mid: number; to: string; from: string; kind: "direct" | "commit" }> =
            [];
          const logged: number[] = [];
          // Held items (Store.holdItem): the reference counts them by hand, as rows to come.
          const held: Array<{ mid: number; to: string; from: string }> = [];
          const check = () => {
            // Counts discount rows waiting for the flush; the reference recount below deletes
            // them first (senderHoldings flushes), so both must agree either way.
            const before = new Map(USERS.map((to) => [to, store.countMailbox(to)]));
            for (const sender of USERS) {
              const fast = store.fanoutHoldings(sender, USERS);
              const ref = store.senderHoldings(sender, USERS);
              const heldBy = held.filter((h) => h.from === sender);
              expect(fast.holdings.messages).toBe(ref.messages + heldBy.length);
              for (const to of USERS) {
                expect(fast.holdings.perRecipient.get(to) ?? 0).toBe(
                  (ref.perRecipient.get(to) ?? 0) + heldBy.filter((h) => h.to === to).length,
                );
              }
              const counts = store.countMailboxes(USERS);
              for (const to of USERS) {
                const n = (counts.get(to) ?? 0) + held.filter((h) => h.to === to).length;
                expect(fast.stored.get(to) ?? 0).toBe(n);
                expect(store.countMailbox(to)).toBe(n);
                expect(before.get(to)).toBe(n);
              }
            }
          };
          check();
          for (const o of ops) {
            if (o.t === "put") {
              const payload = store.putPayload("QUJD");
              const ts = o.expired ? 1 : now;
              const mid = store.putItem({
                recipient: o.to,
                sender: o.from,
                senderKey: "k",
                ts,
                expiresAt: ts + 10,
                kind: o.kind,
                group: o.kind === "commit" ? g.name : null,
                epoch: o.kind === "commit" ? 2 : null,
                payload,
                wrap: o.kind === "commit" ? "d3JhcA" : null,
              });
              mids.push({ mid, to: o.to, from: o.from, kind: o.kind });
            } else if (o.t === "ack") {
              const mine = mids.filter((m) => m.to === o.who);
              const m = mine[o.pick % Math.max(1, mine.length)];
              store.ack(o.who, m === undefined ? [123456789] : [m.mid]);
            } else if (o.t === "later") {
              // Acknowledged on the connection it was sent on: deleted by the next flush.
              const mine = mids.filter((m) => m.to === o.who);
              const m = mine[o.pick % Math.max(1, mine.length)];
              if (m !== undefined) {
                store.ackLater(o.who, [{ mid: m.mid, sender: m.from, kind: m.kind }]);
                // Waiting for the flush, it is not delivered again and not counted.
                expect(store.itemsAfter(o.who, 0, now, 1000).some((r) => r.mid === m.mid)).toBe(
                  false,
                );
              }
            } else if (o.t === "flush") {
              store.flushAcked();
            } else if (o.t === "group") {
              const ts = o.expired ? 1 : now;
              logged.push(
                store.putGroupMessage({
                  group: g.name,
                  epoch: 1,
                  roster,
                  sender: o.from,
                  senderKey: "k",
                  ts,
                  expiresAt: ts + 10,
                  data: "QUJD",
                  skipped: [],
                }),
              );
            } else if (o.t === "hold") {
              const mid = store.holdItem(item(o.to, now, o.from), "QUJD");
              expect(store.isHeld(mid)).toBe(true);
              // Not stored: never read back for delivery while held.
              expect(store.itemsAfter(o.to, 0, now, 1000).some((r) => r.mid === mid)).toBe(false);
              held.push({ mid, to: o.to, from: o.from });
            } else if (o.t === "settle" || o.t === "release") {
              const [h] = held.splice(o.pick % Math.max(1, held.length), 1);
              if (h !== undefined) {
                if (o.t === "settle") {
                  expect(store.settleHeld(h.mid)).toBe(true);
                  // Stored under the mid it was sent with, and delivered from storage from now.
                  expect(store.itemsAfter(h.to, h.mid - 1, now, 1)[0]?.mid).toBe(h.mid);
                  mids.push({ mid: h.mid, to: h.to, from: h.from, kind: "direct" });
                } else expect(store.releaseHeld(h.mid)).toBe(true);
                expect(store.isHeld(h.mid)).toBe(false);
                expect(store.settleHeld(h.mid)).toBe(false);
                expect(store.releaseHeld(h.mid)).toBe(false);
              }
            } else if (o.t === "delgroup") {
              const m = logged.splice(o.pick % Math.max(1, logged.length), 1);
              store.deleteGroupMessages(m);
            } else {
              store.purgeExpired(now);
              store.purgeExpiredGroupLog(now);
            }
            check();
          }
        });
      }),
      { numRuns: 80 },
    );
  });
});

describe("relay store: mids of held items", () => {
  it("a held item's mid is never handed out again after a restart, though it was never stored", async () => {
    const hub = freshHub("lease");
    await runInDurableObject(stubFor(hub), (_i, state) => {
      const store = new Store(state.storage.sql);
      store.migrate([], 1);
      const held = [store.holdItem(item("ben", 1), "QUJD"), store.holdItem(item("ben", 1), "QUJD")];
      // The object dies: a Store started on the same storage (its memory gone).
      const after = new Store(state.storage.sql);
      after.migrate([], 1);
      expect(after.isHeld(held[1] as number)).toBe(false);
      expect(after.nextMid()).toBeGreaterThan(Math.max(...held));
      expect(after.countMailbox("ben")).toBe(0);
    });
  });

  it("a held item's send is remembered for retries in memory, and in storage only once settled", async () => {
    const hub = freshHub("lease");
    await runInDurableObject(stubFor(hub), (_i, state) => {
      const store = new Store(state.storage.sql);
      store.migrate([], 1);
      const sent = { target: "d:ben", digest: "4.x" };
      const mid = store.holdItem(item("ben", 1), "QUJD");
      store.recordSend("k.dev", "7", { ...sent, mid }, 10_000);
      expect(store.acceptedSend("k.dev", "7", sent, 2)?.mid).toBe(mid);
      store.flushSends();
      // Lost with the object while held: a restarted store judges the retry new, since the
      // item it names may be gone with it (PROTOCOL.md §7.3 "Write-behind").
      const restarted = () => {
        const s = new Store(state.storage.sql);
        s.migrate([], 1);
        return s.acceptedSend("k.dev", "7", sent, 2);
      };
      expect(restarted()).toBeNull();
      // Settled (stored, or acknowledged and released): written with the next flush.
      store.settleHeld(mid);
      store.sendSettled("k.dev", "7", mid);
      store.flushSends();
      expect(restarted()?.mid).toBe(mid);
    });
  });
});

const userOp = fc.oneof(
  fc.record({ t: fc.constant("insert" as const), who: user, key: fc.nat(3) }),
  fc.record({ t: fc.constant("seen" as const), who: user, at: fc.nat(1000) }),
  fc.record({ t: fc.constant("reclaim" as const), who: user, key: fc.nat(3) }),
  fc.record({
    t: fc.constant("contact" as const),
    owner: user,
    peer: user,
    state: fc.constantFrom("accepted" as const, "blocked" as const, null),
  }),
  fc.record({ t: fc.constant("forget" as const), who: user }),
  fc.record({ t: fc.constant("device" as const), who: user, n: fc.nat(3) }),
  fc.record({ t: fc.constant("list" as const), who: user, n: fc.integer({ min: 1, max: 4 }) }),
);

/** A device list of the wire shape (PROTOCOL §4.6; the store checks the shape, not the signature). */
const deviceList = (version: number) => ({
  identityKey: "A".repeat(43),
  version,
  devices: [{ id: "B".repeat(22), key: "C".repeat(43), name: "laptop", addedAt: version }],
  removed: [],
  sig: "D".repeat(86),
});

/**
 * Random sequences of `op`s applied to a Store whose `tables` start empty, each followed by
 * `check(store, fresh)`, where `fresh` is a Store made then: its caches are empty, so every
 * answer it gives comes from storage.
 */
async function cacheProperty<O>(
  name: string,
  tables: readonly string[],
  op: fc.Arbitrary<O>,
  apply: (store: Store, o: O) => void,
  check: (store: Store, fresh: Store) => void,
): Promise<void> {
  const hub = freshHub(name);
  await runInDurableObject(stubFor(hub), () => {});
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
      await runInDurableObject(stubFor(hub), (_i, state) => {
        const sql = relaySql(state);
        for (const t of tables) sql.exec(`DELETE FROM ${t}`);
        const store = new Store(sql);
        store.migrate([], 1);
        check(store, new Store(sql));
        for (const o of ops) {
          apply(store, o);
          check(store, new Store(sql));
        }
      });
    }),
    { numRuns: 80 },
  );
}

describe("relay store: cached directory rows, contact decisions and devices equal storage", () => {
  it("after every write, for every name and pair", async () => {
    await cacheProperty(
      "cache",
      ["users", "contacts", "device_lists", "user_devices"],
      userOp,
      (store, o) => {
        if (o.t === "insert") {
          if (store.getUser(o.who) === null) store.insertUser(o.who, `${o.who}-${o.key}`, 5);
        } else if (o.t === "seen") {
          store.sawUser(o.who, o.at);
        } else if (o.t === "reclaim") {
          store.reclaimUser(o.who, `${o.who}-${o.key}`, 7);
        } else if (o.t === "contact") {
          store.setContactState(o.owner, o.peer, o.state, 8, 100);
        } else if (o.t === "device") {
          store.setDevice(o.who, `dev${o.n}`);
        } else if (o.t === "list") {
          store.setDeviceList(o.who, deviceList(o.n));
        } else {
          store.deleteContacts(o.who);
        }
      },
      (store, fresh) => {
        for (const a of USERS) {
          expect(store.getUser(a)).toEqual(fresh.getUser(a));
          for (const b of USERS) expect(store.contactState(a, b)).toBe(fresh.contactState(a, b));
          expect(store.getDevice(a)).toBe(fresh.getDevice(a));
          expect(store.getDeviceList(a)).toEqual(fresh.getDeviceList(a));
        }
      },
    );
  });
});

const memberOp = fc.oneof(
  fc.record({
    t: fc.constant("member" as const),
    who: user,
    group: fc.constantFrom("g1", "g2"),
    state: fc.constantFrom(null, "s1", "s2"),
    through: fc.nat(9),
  }),
  fc.record({ t: fc.constant("roster" as const), who: user, group: fc.constantFrom("g1", "g2") }),
  fc.record({ t: fc.constant("gc" as const) }),
  fc.record({
    t: fc.constant("note" as const),
    who: user,
    group: fc.constantFrom("g1", "g2"),
    through: fc.nat(12),
  }),
  fc.record({ t: fc.constant("flush" as const) }),
);

describe("relay store: a member's cached groups and rosters equal storage (users' routes)", () => {
  it("after every write, for every member and group", async () => {
    await cacheProperty(
      "members",
      ["member_groups", "group_log", "group_rosters", "roster_members"],
      memberOp,
      (store, o) => {
        if (o.t === "member") store.setMemberGroup(o.who, o.group, o.state, o.through);
        else if (o.t === "roster") store.memberRosterOf(o.group, o.who);
        else if (o.t === "note") store.notePosition(o.who, o.group, o.through);
        else if (o.t === "flush") store.flushPositions();
        else store.gcRosters();
      },
      // The one-member rosters a member's object files messages under are found by content.
      (store, fresh) => {
        for (const a of USERS) {
          expect(store.memberGroupStates(a)).toEqual(fresh.memberGroupStates(a));
          for (const g of ["g1", "g2"]) {
            expect(store.memberGroup(a, g)).toEqual(fresh.memberGroup(a, g));
            expect(store.memberRosterOf(g, a)).toBe(fresh.memberRosterOf(g, a));
          }
        }
      },
    );
  });
});

describe("relay store: acknowledged rows waiting for the flush (PROTOCOL §7.3)", () => {
  it("are not counted or delivered while the object runs, and come back after a crash before the flush", async () => {
    const hub = freshHub("acked");
    await runInDurableObject(stubFor(hub), () => {});
    await runInDurableObject(stubFor(hub), (_i, state) => {
      const sql = relaySql(state);
      const store = new Store(sql);
      store.migrate([], 1);
      const now = 1_000_000;
      const mid = store.putItem({ ...item("bob", now), payload: store.putPayload("QUJD") });
      store.ackLater("bob", [{ mid, sender: "ann", kind: "direct" }]);
      expect(store.countMailbox("bob")).toBe(0);
      expect(store.itemsAfter("bob", 0, now, 10)).toEqual([]);
      // The object dies before its flush: the waiting set was memory only, the row is stored,
      // so the restarted object counts it and delivers it again (clients dedupe by mid).
      const restarted = new Store(sql);
      restarted.migrate([], 1);
      expect(restarted.countMailbox("bob")).toBe(1);
      expect(restarted.itemsAfter("bob", 0, now, 10).map((r) => r.mid)).toEqual([mid]);
      // Had it flushed, the row would be gone for good.
      store.flushAcked();
      expect(new Store(sql).countMailbox("bob")).toBe(0);
      expect(new Store(sql).itemsAfter("bob", 0, now, 10)).toEqual([]);
    });
  });
});

describe("relay store: mids are handed out from memory, never twice (PROTOCOL §7.3)", () => {
  // Each way a mailbox row can go; the highest mid goes with it, then the object restarts.
  const paths: Record<string, (s: Store, mid: number, now: number) => void> = {
    ack: (s, mid) => void s.ack("bob", [mid]),
    "ack, then the flush": (s, mid) => {
      s.ackLater("bob", [{ mid, sender: "ann", kind: "direct" }]);
      s.flushAcked();
    },
    expiry: (s, _mid, now) => void s.purgeExpired(now + 11),
  };
  for (const [name, drop] of Object.entries(paths)) {
    it(`after the row with the highest mid goes (${name}) and a restart, the next mid is higher`, async () => {
      const hub = freshHub("mids");
      await runInDurableObject(stubFor(hub), () => {});
      await runInDurableObject(stubFor(hub), (_i, state) => {
        const sql = relaySql(state);
        const store = new Store(sql);
        store.migrate([], 1);
        const now = 1_000_000;
        const low = store.putItem({ ...item("carol", now + 100), payload: store.putPayload("QQ") });
        const high = store.putItem({ ...item("bob", now), payload: store.putPayload("QQ") });
        expect(high).toBeGreaterThan(low);
        drop(store, high, now);
        expect(
          sql
            .exec("SELECT mid FROM mailbox")
            .toArray()
            .map((r) => r.mid),
        ).toEqual([low]);
        const restarted = new Store(sql);
        restarted.migrate([], 1);
        const next = restarted.putItem({
          ...item("bob", now),
          payload: restarted.putPayload("QQ"),
        });
        // A client that saw `high` would drop a new message under the same mid as a duplicate.
        expect(next).toBeGreaterThan(high);
      });
    });
  }
});
