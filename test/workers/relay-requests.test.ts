/**
 * Per-user abuse bounds that outlive the object (PROTOCOL.md §7.2, §7.3.1, §7.4): message
 * requests (the small mailbox share of senders a user has no conversation with, `contact`
 * accept and block), and the one-time prekey quota and identity buckets kept in storage, so an
 * eviction or restart gives nothing back.
 */
import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import { freshHub, newKeys, oneTimePrekeys, TestClient } from "./support/client";
import { countInDirectory, directoryFor, relaySql } from "./support/relay-store";

const stubFor = (hub: string) => env.RELAY.get(env.RELAY.idFromName(hub));

/** Register `name` and leave its socket open. */
async function user(hub: string, name: string): Promise<TestClient> {
  return (await TestClient.connect(hub, name)).c;
}

/** Send one direct item; the answer's kind (`accepted` or the error code). */
async function send(c: TestClient, to: string, id: string): Promise<string> {
  c.send({ v: 1, t: "send", id, to, body: "AAAA" });
  const f = await c.next("accepted", (x) => x.id === id, 3000).catch(async () => c.error(id));
  return f.t === "accepted" ? "accepted" : f.code;
}

/** Wait until `c` has `n` answers (pongs and errors) queued, or is closed. */
async function answered(c: TestClient, n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  const got = () => c.queue.filter((f) => f.t === "pong" || f.t === "error").length;
  while (got() < n && c.closed === null) {
    if (Date.now() > deadline) throw new Error(`only ${got()} of ${n} answers`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function count(hub: string, sql: string, ...args: string[]): Promise<number> {
  return runInDurableObject(stubFor(hub), (_i, state) =>
    Number(
      relaySql(state)
        .exec(sql, ...args)
        .one().n,
    ),
  );
}

describe("message requests (§7.3.1)", () => {
  it("strangers together get only the request share; bob's contacts still get through", async () => {
    const hub = freshHub("req");
    const alice = await user(hub, "alice"); // bob accepts her
    const carol = await user(hub, "carol"); // bob writes to her: not a decision about her
    const bob = await user(hub, "bob");
    await bob.accept("alice");
    expect(await send(bob, "carol", "b1")).toBe("accepted");
    bob.close();
    await bob.waitClosed();
    const perSender = LIMITS.maxRequestItemsPerSender;
    const sybils = LIMITS.maxRequestItemsPerRecipient / perSender;
    const clients: TestClient[] = [];
    for (let i = 0; i < sybils; i++) {
      const s = await user(hub, `sybil${i}`);
      clients.push(s);
      for (let k = 0; k < perSender; k++)
        expect(await send(s, "bob", `s${i}-${k}`)).toBe("accepted");
    }
    // One stranger's share is full: its next item is refused, typed, to it alone.
    expect(await send(clients[0] as TestClient, "bob", "over")).toBe("request_limit");
    // All strangers' share is full: a new stranger is refused from its first item.
    const late = await user(hub, "late");
    expect(await send(late, "bob", "first")).toBe("request_limit");
    expect(late.closed).toBeNull();
    // bob's contacts are not strangers: the mailbox still has room for them.
    expect(await send(alice, "bob", "a1")).toBe("accepted");
    // Only bob's explicit decision counts: his writing to carol (or his client's automatic
    // answers to her, such as receipts) does not make her a contact (§7.3.1).
    expect(await send(carol, "bob", "c1")).toBe("request_limit");
    expect(await count(hub, "SELECT COUNT(*) AS n FROM mailbox WHERE recipient = 'bob'")).toBe(
      LIMITS.maxRequestItemsPerRecipient + 1,
    );
    for (const c of [alice, carol, late, ...clients]) c.close();
  });

  it("a shared group makes a conversation; acknowledged requests free the share", async () => {
    const hub = freshHub("req");
    const dora = await user(hub, "dora");
    const bob = await user(hub, "bob");
    // Both active members of broadcast (a committed roster): not strangers.
    for (const c of [dora, bob]) {
      c.send({ v: 1, t: "join", id: "j", group: "broadcast" });
      await c.next("accepted", (f) => f.id === "j");
    }
    const g = await dora.next("group", (f) => f.state.pendingJoins.length === 2);
    dora.send({
      v: 1,
      t: "commit",
      id: "c",
      group: "broadcast",
      parentEpoch: g.state.epoch,
      members: ["bob", "dora"],
      core: "Q09SRQ",
      wraps: [
        { to: "bob", wrap: "d3JhcA" },
        { to: "dora", wrap: "d3JhcA" },
      ],
    });
    await dora.next("accepted", (f) => f.id === "c");
    const m = await user(hub, "mallory");
    const per = LIMITS.maxRequestItemsPerSender;
    for (let k = 0; k < per; k++) {
      expect(await send(dora, "bob", `d${k}`)).toBe("accepted");
      expect(await send(m, "bob", `m${k}`)).toBe("accepted");
    }
    expect(await send(dora, "bob", "d-more")).toBe("accepted");
    expect(await send(m, "bob", "m-more")).toBe("request_limit");
    // bob reads (acknowledges) mallory's items: her request no longer holds mailbox space.
    const mids: string[] = [];
    for (;;) {
      const d = await bob.next("deliver", () => true, 1000).catch(() => null);
      if (d === null) break;
      mids.push(d.mid);
      if (mids.length % LIMITS.deliverWindow === 0)
        bob.send({ v: 1, t: "ack", mids: mids.slice(-LIMITS.deliverWindow) });
    }
    const rest = mids.length % LIMITS.deliverWindow;
    if (rest > 0) bob.send({ v: 1, t: "ack", mids: mids.slice(-rest) });
    await bob.sync();
    expect(await send(m, "bob", "m-after")).toBe("accepted");
    for (const c of [dora, bob, m]) c.close();
  });

  it("block refuses a sender whatever its share; accept lifts the request bound; none forgets", async () => {
    const hub = freshHub("req");
    const m = await user(hub, "mallory");
    const eve = await user(hub, "eve");
    const bob = await user(hub, "bob");
    bob.send({ v: 1, t: "contact", id: "blk", user: "mallory", state: "blocked" });
    await bob.next("accepted", (f) => f.id === "blk");
    // The blocked sender learns only what a full request share would tell it.
    expect(await send(m, "bob", "m1")).toBe("request_limit");
    expect(await send(eve, "bob", "e1")).toBe("accepted");
    // bob writes to mallory: a block still holds (it is the explicit decision).
    expect(await send(bob, "mallory", "b1")).toBe("accepted");
    expect(await send(m, "bob", "m2")).toBe("request_limit");
    bob.send({ v: 1, t: "contact", id: "none", user: "mallory", state: "none" });
    await bob.next("accepted", (f) => f.id === "none");
    expect(await send(m, "bob", "m3")).toBe("accepted");
    // eve fills her request share; accepting her makes her a contact with the ordinary share.
    for (let k = 1; k < LIMITS.maxRequestItemsPerSender; k++) {
      expect(await send(eve, "bob", `e${k + 1}`)).toBe("accepted");
    }
    expect(await send(eve, "bob", "e-over")).toBe("request_limit");
    await bob.accept("eve");
    expect(await send(eve, "bob", "e-contact")).toBe("accepted");
    for (const c of [m, eve, bob]) c.close();
  });

  it("contact refuses unknown users, oneself, and new entries past maxContactsPerUser", async () => {
    const hub = freshHub("req");
    const bob = await user(hub, "bob");
    const x = await user(hub, "x");
    const y = await user(hub, "y");
    bob.send({ v: 1, t: "contact", id: "u", user: "nobody", state: "accepted" });
    expect((await bob.error("u")).code).toBe("unknown_user");
    bob.send({ v: 1, t: "contact", id: "self", user: "bob", state: "blocked" });
    expect((await bob.error("self")).code).toBe("unknown_user");
    bob.send({ v: 1, t: "contact", id: "bad", user: "x", state: "friend" });
    expect((await bob.error("bad")).code).toBe("bad_frame");
    await bob.accept("x");
    await runInDurableObject(stubFor(hub), (_i, state) => {
      for (let i = 1; i < LIMITS.maxContactsPerUser; i++) {
        relaySql(state).exec(
          "INSERT INTO contacts (owner, peer, state, at) VALUES ('bob', ?, 'accepted', 0)",
          `p${i}`,
        );
      }
    });
    bob.send({ v: 1, t: "contact", id: "full", user: "y", state: "blocked" });
    expect((await bob.error("full")).code).toBe("limit_reached");
    // Changing an existing entry still works at the bound.
    bob.send({ v: 1, t: "contact", id: "chg", user: "x", state: "blocked" });
    await bob.next("accepted", (f) => f.id === "chg");
    expect(await send(x, "bob", "x1")).toBe("request_limit");
    for (const c of [bob, x, y]) c.close();
  });
});

describe("abuse bounds survive the object (SECURITY.md L4, L16)", () => {
  it("the one-time prekey quota per requester is kept across an eviction", async () => {
    const hub = freshHub("opk");
    const bob = await user(hub, "bob");
    bob.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: oneTimePrekeys(1, 50) });
    await bob.next("accepted", (f) => f.id === "u");
    const eve = await user(hub, "eve");
    const fetch = async (id: string) => {
      eve.send({ v: 1, t: "fetch_bundle", id, username: "bob" });
      return (await eve.next("bundle", (f) => f.id === id)).oneTimePrekey;
    };
    for (let i = 0; i < LIMITS.oneTimePrekeyBurstPerRequester; i++) {
      expect(await fetch(`a${i}`)).not.toBeNull();
    }
    expect(await fetch("over")).toBeNull();
    // Both objects lose their memory, storage kept: the hub's and its key directory's, which
    // holds the quota (key-directory.ts).
    await evictDurableObject(stubFor(hub));
    await evictDurableObject(directoryFor(hub));
    // The objects forgot nothing: still none for eve (the refill is one per 10 minutes).
    expect(await fetch("after")).toBeNull();
    const carol = await user(hub, "carol");
    carol.send({ v: 1, t: "fetch_bundle", id: "c", username: "bob" });
    expect((await carol.next("bundle", (f) => f.id === "c")).oneTimePrekey).not.toBeNull();
    for (const c of [bob, eve, carol]) c.close();
  });

  it("a bundle with no one-time prekey left costs the requester nothing and stores nothing", async () => {
    const hub = freshHub("opk");
    const bob = await user(hub, "bob");
    const eve = await user(hub, "eve");
    for (let i = 0; i < 10; i++) {
      eve.send({ v: 1, t: "fetch_bundle", id: `f${i}`, username: "bob" });
      expect((await eve.next("bundle", (f) => f.id === `f${i}`)).oneTimePrekey).toBeNull();
    }
    expect(await countInDirectory(hub, "SELECT COUNT(*) AS n FROM opk_quota")).toBe(0);
    // bob uploads: eve still has her whole share.
    bob.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: oneTimePrekeys(1, 10) });
    await bob.next("accepted", (f) => f.id === "u");
    for (let i = 0; i < LIMITS.oneTimePrekeyBurstPerRequester; i++) {
      eve.send({ v: 1, t: "fetch_bundle", id: `g${i}`, username: "bob" });
      expect((await eve.next("bundle", (f) => f.id === `g${i}`)).oneTimePrekey).not.toBeNull();
    }
    for (const c of [bob, eve]) c.close();
  });

  it("an identity's spent frame bucket is written to storage, and read back after an eviction", async () => {
    const hub = freshHub("rate");
    const keys = await newKeys();
    const a = (await TestClient.connect(hub, "alice", keys)).c;
    // Not the exact ping text, which the runtime answers without charging (§7.2).
    const ping = { t: "ping", v: 1 } as const;
    expect(await count(hub, "SELECT COUNT(*) AS n FROM rate_buckets")).toBe(0);
    // A burst of frames takes the bucket a quarter of its size below full: it is written.
    for (let i = 0; i < LIMITS.connBurst - 1; i++) a.send(ping);
    await answered(a, LIMITS.connBurst - 1);
    const stored = await runInDurableObject(stubFor(hub), (_i, state) =>
      relaySql(state)
        .exec("SELECT key, tokens FROM rate_buckets WHERE kind = 'identity'")
        .toArray(),
    );
    expect(stored.map((r) => r.key)).toEqual([keys.identityKey]);
    expect(Number(stored[0]?.tokens)).toBeLessThan(LIMITS.identityBurst);
    // An empty bucket whose refill starts a minute from now (so this test's own pace cannot
    // refill it), then the object is evicted: the woken object reads it back and refuses.
    await runInDurableObject(stubFor(hub), (_i, state) => {
      relaySql(state).exec(
        "UPDATE rate_buckets SET tokens = 0, at = ?, full_at = ? WHERE key = ?",
        Date.now() + 60_000,
        Date.now() + 120_000,
        keys.identityKey,
      );
    });
    await evictDurableObject(stubFor(hub));
    a.queue.length = 0;
    a.send(ping);
    expect((await a.error()).code).toBe("rate_limited");
    a.close();
  });
});
