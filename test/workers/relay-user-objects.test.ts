/**
 * User objects (docs/ARCHITECTURE.md "User objects"): a connection that opens its user's route
 * (`/ws?hub=h&user=name`) reaches that user's own object, which authenticates only that name and
 * keeps only that user's mailbox. A `send` to another user is one call to the recipient's object,
 * where the recipient's half runs (`Hub.enqueue`), keyed for retries by the sender's device and
 * frame id (PROTOCOL.md §7.3 "Retries"); bundles, contacts and receipts cross the same way.
 */
import {
  evictDurableObject,
  runDurableObjectAlarm,
  runInDurableObject,
  SELF,
} from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createLinkOffer } from "../../shared/core/linking";
import { LIMITS } from "../../shared/protocol";
import { peersOf, type Relay } from "../../worker/relay";
import type { DirectEnqueue } from "../../worker/relay/hub";
import {
  BASE,
  body,
  delivered,
  freshHub,
  newKeys,
  ORIGIN,
  oneTimePrekeys,
  TestClient,
} from "./support/client";
import { countInDirectory, countTable, relaySql, stubFor, until } from "./support/relay-store";

const routed = { routed: true };
/** The object of `user` of `hub` (worker/relay.ts peersOf). */
const userObject = (hub: string, user: string) => `${hub}/u/${user}`;

describe("user objects: each user's route reaches its own object", () => {
  it("a send crosses to the recipient's object, which stores, delivers and sends the receipt back", async () => {
    const hub = freshHub("uo");
    const { c: bob } = await TestClient.connect(hub, "bob", undefined, routed);
    const { c: alice } = await TestClient.connect(hub, "alice", undefined, routed);
    alice.send({ v: 1, t: "send", id: "1", to: "bob", body: body(1) });
    const ok = await alice.next("accepted", (f) => f.id === "1");
    const [d] = await delivered(bob);
    expect(d?.from).toBe("alice");
    expect(d?.fromKey).toBe(alice.keys?.identityKey);
    expect(d?.item).toEqual({ kind: "direct", body: body(1) });
    expect(d?.mid).toBe(ok.mid);
    // The row is the recipient's object's; the sender's holds none, and the hub's is not used.
    expect(await countTable(userObject(hub, "bob"), "mailbox")).toBe(1);
    expect(await countTable(userObject(hub, "alice"), "mailbox")).toBe(0);
    expect(await countTable(hub, "users")).toBe(0);
    expect(await countTable(userObject(hub, "bob"), "users")).toBe(1);
    // The names are bound hub-wide by the one directory object.
    expect(await countInDirectory(hub, "SELECT COUNT(*) AS n FROM bindings")).toBe(2);
    bob.send({ v: 1, t: "ack", mids: [d?.mid ?? ""] });
    await until(async () => (await countTable(userObject(hub, "bob"), "mailbox")) === 0, "acked");
    // Delivery is confirmed end to end (PROTOCOL.md §7.3): the relay tells the sender nothing.
    await alice.none("receipt", 100);
  });

  it("a message to an offline user waits in that user's object for its next connection", async () => {
    const hub = freshHub("uo");
    const bobKeys = await newKeys();
    (await TestClient.connect(hub, "bob", bobKeys, routed)).c.close();
    const { c: alice } = await TestClient.connect(hub, "alice", undefined, routed);
    for (const i of [1, 2, 3])
      alice.send({ v: 1, t: "send", id: `${i}`, to: "bob", body: body(i) });
    await alice.next("accepted", (f) => f.id === "3");
    // The recipient's object is evicted meanwhile: the rows are in its storage.
    await evictDurableObject(stubFor(userObject(hub, "bob")));
    const { c: bob } = await TestClient.connect(hub, "bob", bobKeys, routed);
    const got = await delivered(bob);
    expect(got.map((f) => (f.item.kind === "direct" ? f.item.body : null))).toEqual([
      body(1),
      body(2),
      body(3),
    ]);
    // Unknown names are refused by the object that would hold them.
    alice.send({ v: 1, t: "send", id: "4", to: "carol", body: body(4) });
    expect((await alice.error("4")).code).toBe("unknown_user");
  });

  it("a send made again after its answer was lost is stored once, across the recipient's restart", async () => {
    const hub = freshHub("uo");
    const aliceKeys = await newKeys();
    const bobKeys = await newKeys();
    (await TestClient.connect(hub, "bob", bobKeys, routed)).c.close();
    const first = (await TestClient.connect(hub, "alice", aliceKeys, routed)).c;
    first.send({ v: 1, t: "send", id: "7", to: "bob", body: body(7) });
    const answer = await first.next("accepted", (f) => f.id === "7");
    // The retry key is written by the recipient object's flush, within 200 ms.
    await until(
      async () => (await countTable(userObject(hub, "bob"), "send_recent")) === 1,
      "send remembered",
    );
    await evictDurableObject(stubFor(userObject(hub, "bob")));
    // The client never saw the answer (its connection went with it) and sends the frame again.
    first.close();
    const again = (await TestClient.connect(hub, "alice", aliceKeys, routed)).c;
    again.send({ v: 1, t: "send", id: "7", to: "bob", body: body(7) });
    expect(await again.next("accepted", (f) => f.id === "7")).toEqual(answer);
    // The same id with another body is a new message (§7.3 "Retries").
    again.send({ v: 1, t: "send", id: "7", to: "bob", body: body(8) });
    const other = await again.next("accepted", (f) => f.id === "7");
    expect(other.mid).not.toBe(answer.mid);
    const { c: bob } = await TestClient.connect(hub, "bob", bobKeys, routed);
    expect((await delivered(bob)).map((f) => f.mid)).toEqual([answer.mid, other.mid]);
  });

  it("the recipient's object resets between two sends: the sender's object calls it on a new stub, and the send is accepted", async () => {
    const hub = freshHub("uo");
    const aliceKeys = await newKeys();
    const bobKeys = await newKeys();
    (await TestClient.connect(hub, "bob", bobKeys, routed)).c.close();
    const alice = (await TestClient.connect(hub, "alice", aliceKeys, routed)).c;
    alice.send({ v: 1, t: "send", id: "1", to: "bob", body: body(1) });
    const one = await alice.next("accepted", (f) => f.id === "1");
    // An abrupt reset (ctx.abort): every stub made before it is broken for good.
    await runInDurableObject(stubFor(userObject(hub, "bob")), (_i, state) => {
      state.abort("test: reset");
    }).catch(() => undefined);
    alice.send({ v: 1, t: "send", id: "2", to: "bob", body: body(2) });
    const two = await alice.next("accepted", (f) => f.id === "2");
    expect(alice.queue.filter((f) => f.t === "error")).toEqual([]);
    const { c: bob } = await TestClient.connect(hub, "bob", bobKeys, routed);
    expect((await delivered(bob)).map((f) => f.mid)).toEqual([one.mid, two.mid]);
  });

  it("bundles and contacts of another user come from that user's object", async () => {
    const hub = freshHub("uo");
    const bobKeys = await newKeys();
    const { c: bob } = await TestClient.connect(hub, "bob", bobKeys, routed);
    bob.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: oneTimePrekeys(1, 1) });
    await bob.next("accepted", (f) => f.id === "u");
    const { c: alice } = await TestClient.connect(hub, "alice", undefined, routed);
    alice.send({ v: 1, t: "fetch_bundle", id: "b", username: "bob" });
    const bundle = await alice.next("bundle", (f) => f.id === "b");
    expect(bundle.identityKey).toBe(bobKeys.identityKey);
    expect(bundle.oneTimePrekey?.id).toBe(1);
    alice.send({ v: 1, t: "fetch_bundle", id: "c", username: "carol" });
    expect((await alice.error("c")).code).toBe("unknown_user");
    alice.send({ v: 1, t: "contact", id: "k", user: "bob", state: "accepted" });
    await alice.next("accepted", (f) => f.id === "k");
    alice.send({ v: 1, t: "contact", id: "l", user: "carol", state: "accepted" });
    expect((await alice.error("l")).code).toBe("unknown_user");
    alice.send({ v: 1, t: "contact", id: "m", user: "alice", state: "accepted" });
    expect((await alice.error("m")).code).toBe("unknown_user");
  });
});

const names = (users: ReadonlyArray<{ username: string }>) => users.map((u) => u.username);

describe("user objects: a call the runtime failed (worker/relay.ts peersOf)", () => {
  /** A namespace whose stubs fail each call in `fails` order first, as workerd's do. */
  function namespace(fails: unknown[]) {
    const made: string[] = [];
    const calls: string[] = [];
    const ns = {
      idFromName: (name: string) => name,
      get: (id: string) => {
        made.push(id);
        const answer = (method: string, value: unknown) => {
          calls.push(method);
          const e = fails.shift();
          return e === undefined ? Promise.resolve(value) : Promise.reject(e);
        };
        return {
          enqueue: () => answer("enqueue", { ok: true, mid: 7, stored: true }),
          known: () => answer("known", true),
          groupFrame: () => answer("groupFrame", ["x"]),
        };
      },
    };
    return { peers: peersOf(ns as unknown as DurableObjectNamespace<Relay>), made, calls };
  }
  const reset = () => Object.assign(new Error("reset"), { durableObjectReset: true });
  const e: DirectEnqueue = {
    ...{ from: "alice", fromKey: "k", fromDevice: null, key: "k d", id: "1", to: "bob" },
    ...{ body: "b", now: 0 },
  };

  it("an idempotent call the object's reset failed is made once more, on a new stub", async () => {
    const { peers, made, calls } = namespace([reset()]);
    expect(await peers.enqueue("h", e)).toEqual({ ok: true, mid: 7, stored: true });
    expect(made).toEqual(["h/u/bob", "h/u/bob"]);
    expect(calls).toEqual(["enqueue", "enqueue"]);
    // The new stub is kept: the next call makes none.
    expect(await peers.known("h", "bob")).toBe(true);
    expect(made.length).toBe(2);
  });

  it("once only; never an error the object threw, an overloaded object, or a call that may not run twice", async () => {
    const twice = namespace([reset(), reset()]);
    await expect(twice.peers.enqueue("h", e)).rejects.toThrow("reset");
    expect(twice.calls).toEqual(["enqueue", "enqueue"]);
    for (const err of [
      Object.assign(new Error("thrown"), { remote: true, retryable: true }),
      Object.assign(new Error("busy"), { overloaded: true, retryable: true }),
      new Error("plain"),
    ]) {
      const { peers, calls } = namespace([err]);
      await expect(peers.enqueue("h", e)).rejects.toBe(err);
      expect(calls).toEqual(["enqueue"]);
    }
    const home = namespace([reset()]);
    const member = { username: "alice", identityKey: "k", device: null };
    await expect(home.peers.toHome("h", "team", member as never, "{}")).rejects.toThrow("reset");
    expect(home.calls).toEqual(["groupFrame"]);
  });
});

describe("user objects: presence crosses objects, for people you know only (§6.3)", () => {
  it("writing to someone lets them see you, in their object; going offline follows; a stranger sees nobody", async () => {
    const hub = freshHub("uo");
    const bobKeys = await newKeys();
    const { c: bob } = await TestClient.connect(hub, "bob", bobKeys, routed);
    expect(names((await bob.next("presence")).users)).toEqual(["bob"]);
    const { c: alice } = await TestClient.connect(hub, "alice", undefined, routed);
    expect(names((await alice.next("presence")).users)).toEqual(["alice"]);
    alice.send({ v: 1, t: "send", id: "1", to: "bob", body: body(1) });
    await alice.next("accepted", (f) => f.id === "1");
    // alice's object announced her to bob's, which tells bob's connection.
    const on = await bob.next("presence_delta", (f) => f.online.length > 0);
    expect(on.online).toEqual([{ username: "alice", identityKey: alice.keys?.identityKey }]);
    // bob's view is in his object: a connection made later starts with alice in it.
    bob.close();
    await bob.waitClosed();
    const { c: bob2 } = await TestClient.connect(hub, "bob", bobKeys, routed);
    expect(names((await bob2.next("presence")).users)).toEqual(["alice", "bob"]);
    // bob never wrote to alice: she does not see him. A stranger sees neither.
    const { c: eve } = await TestClient.connect(hub, "eve", undefined, routed);
    expect(names((await eve.next("presence")).users)).toEqual(["eve"]);
    alice.close();
    await alice.waitClosed();
    const off = await bob2.next("presence_delta", (f) => f.offline.length > 0);
    expect(off.offline).toEqual(["alice"]);
    await alice.none("presence_delta", 50);
    await eve.none("presence_delta", 300);
    expect(await countTable(userObject(hub, "bob"), "peer_presence")).toBe(0);
  });

  it("a user's object that lost its connections without a close announces the user offline at its alarm", async () => {
    const hub = freshHub("uo");
    const { c: bob } = await TestClient.connect(hub, "bob", undefined, routed);
    const { c: alice } = await TestClient.connect(hub, "alice", undefined, routed);
    alice.send({ v: 1, t: "send", id: "1", to: "bob", body: body(1) });
    await bob.next("presence_delta", (f) => f.online.length > 0);
    // As after a crash: alice's object knows it announced her, and holds no connection of hers.
    const aliceObject = stubFor(userObject(hub, "alice"));
    await runInDurableObject(aliceObject, (_i, state) => {
      expect(relaySql(state).exec("SELECT hub FROM presence_announced").toArray()).toEqual([
        { hub },
      ]);
      for (const ws of state.getWebSockets()) ws.serializeAttachment(null);
    });
    await evictDurableObject(aliceObject);
    await runDurableObjectAlarm(aliceObject);
    const off = await bob.next("presence_delta", (f) => f.offline.length > 0);
    expect(off.offline).toEqual(["alice"]);
    expect(await countTable(userObject(hub, "alice"), "presence_announced")).toBe(0);
  });
});

describe('user objects: "everyone on this hub" is the hub\'s lobby (§6.3)', () => {
  it("users who both chose everyone see each other; one who did not sees nobody; leaving the choice forgets", async () => {
    const hub = freshHub("uo");
    const everyone = async (c: TestClient, id: string, presence: "everyone" | "contacts") => {
      c.send({ v: 1, t: "settings", id, presence });
      await c.next("accepted", (f) => f.id === id);
    };
    const { c: alice } = await TestClient.connect(hub, "alice", undefined, routed);
    await everyone(alice, "s1", "everyone");
    const { c: bob } = await TestClient.connect(hub, "bob", undefined, routed);
    await everyone(bob, "s2", "everyone");
    // bob's object entered the lobby and was told alice is there; alice's was told of bob.
    const seenByBob = await bob.next("presence_delta", (f) =>
      f.online.some((u) => u.username === "alice"),
    );
    expect(seenByBob.online).toEqual([{ username: "alice", identityKey: alice.keys?.identityKey }]);
    await alice.next("presence_delta", (f) => f.online.some((u) => u.username === "bob"));
    expect(await countTable(`${hub}/everyone`, "lobby")).toBe(2);
    // eve kept "people I talk to": she is in no lobby, and sees neither.
    const { c: eve } = await TestClient.connect(hub, "eve", undefined, routed);
    expect(names((await eve.next("presence")).users)).toEqual(["eve"]);
    await eve.none("presence_delta", 300);
    // bob goes back to "people I talk to": alice sees him go, and his view forgets her.
    await everyone(bob, "s3", "contacts");
    await alice.next("presence_delta", (f) => f.offline.includes("bob"));
    await bob.next("presence_delta", (f) => f.offline.includes("alice"));
    expect(await countTable(userObject(hub, "bob"), "lobby_seen")).toBe(0);
    expect(await countTable(`${hub}/everyone`, "lobby")).toBe(1);
    // alice's going offline leaves the lobby too.
    alice.close();
    await alice.waitClosed();
    await until(async () => (await countTable(`${hub}/everyone`, "lobby")) === 0, "lobby empty");
    bob.close();
    eve.close();
  });
});

describe("user objects: the sender's total is kept in the sender's object (§7.3)", () => {
  it("counts what other objects said they hold; refuses at maxMailboxPerSender; a receipt or the mailbox lifetime releases", async () => {
    const hub = freshHub("uo");
    const bobKeys = await newKeys();
    (await TestClient.connect(hub, "bob", bobKeys, routed)).c.close();
    const malloryKeys = await newKeys();
    let m = (await TestClient.connect(hub, "mallory", malloryKeys, routed)).c;
    const mallory = stubFor(userObject(hub, "mallory"));
    // Other users' objects said they hold the whole total of mallory's items.
    const per = LIMITS.maxMailboxPerSenderPerRecipient;
    const now = Date.now();
    await runInDurableObject(mallory, (_i, state) => {
      for (let i = 0; i < LIMITS.maxMailboxPerSender / per; i++)
        relaySql(state).exec(
          "INSERT INTO held_elsewhere (sender, address, n, at) VALUES ('mallory', ?, ?, ?)",
          `v${i}`,
          per,
          now,
        );
    });
    m.send({ v: 1, t: "send", id: "1", to: "bob", body: body(1) });
    expect((await m.error("1")).code).toBe("mailbox_full");
    expect(await countTable(userObject(hub, "bob"), "mailbox")).toBe(0);
    // A report older than the mailbox lifetime counts nothing: its items have expired. (The
    // figures are cached in memory: the object starts again to read the edited row.)
    await runInDurableObject(mallory, (_i, state) => {
      relaySql(state).exec(
        "UPDATE held_elsewhere SET at = ? WHERE address = 'v0'",
        now - LIMITS.mailboxTtlMs - 1,
      );
    });
    m.close();
    await m.waitClosed();
    await evictDurableObject(mallory);
    m = (await TestClient.connect(hub, "mallory", malloryKeys, routed)).c;
    m.send({ v: 1, t: "send", id: "2", to: "bob", body: body(2) });
    await m.next("accepted", (f) => f.id === "2");
    const heldAtBob = () =>
      runInDurableObject(mallory, (_i, state) =>
        relaySql(state)
          .exec("SELECT n FROM held_elsewhere WHERE address = 'bob'")
          .toArray()
          .map((r) => Number(r.n)),
      );
    // Written by the object's flush, within 200 ms.
    await until(async () => (await heldAtBob()).join() === "1", "figure written");
    // bob acknowledges it: his object tells mallory's it holds none of hers now.
    const { c: bob } = await TestClient.connect(hub, "bob", bobKeys, routed);
    const [d] = await delivered(bob);
    bob.send({ v: 1, t: "ack", mids: [d?.mid ?? ""] });
    await until(async () => (await heldAtBob()).length === 0, "figure released");
  });
});

describe("user objects: a user's object acts for its user only", () => {
  it("refuses to authenticate another name on a user's route", async () => {
    const hub = freshHub("uo");
    const c = await TestClient.open(hub, ORIGIN, undefined, "alice");
    c.send(await c.authFrame("mallory", await newKeys()));
    expect((await c.error()).code).toBe("auth_failed");
    await c.waitClosed();
    // Nothing was bound: the name check comes before the directory.
    expect(await countInDirectory(hub, "SELECT COUNT(*) AS n FROM bindings")).toBe(0);
  });

  it("refuses a user route that is not a name", async () => {
    const hub = freshHub("uo");
    for (const user of ["", "Alice", "a/b", "bob.xxxxxxxxxxxxxxxxxxxxxx", "a".repeat(100)]) {
      const res = await SELF.fetch(`${BASE}/ws?hub=${hub}&user=${encodeURIComponent(user)}`, {
        headers: { Upgrade: "websocket", Origin: ORIGIN },
      });
      expect(res.status).toBe(400);
      expect(await res.text()).toBe("Bad user name");
    }
  });

  it("answers an offer with wrong_route, and serves the rest", async () => {
    const hub = freshHub("uo");
    const pending = await TestClient.open(hub, ORIGIN, undefined, "dave");
    const link = await createLinkOffer(hub, "phone");
    pending.send({
      v: 1,
      t: "link_offer",
      id: "o",
      rendezvous: link.code.rendezvous,
      offer: link.offer,
    });
    expect((await pending.error("o")).code).toBe("wrong_route");
    const { c: alice } = await TestClient.connect(hub, "alice", undefined, routed);
    // Group frames go to the group's home (relay-group-homes.test.ts), which judges them.
    alice.send({ v: 1, t: "group_send", id: "g", group: "broadcast", epoch: 0, body: body(1) });
    expect((await alice.error("g")).code).toBe("not_member");
    // A fetch reaches the rendezvous's object (relay-links.test.ts), where nobody waits.
    alice.send({ v: 1, t: "link_fetch", id: "f", rendezvous: link.code.rendezvous });
    expect((await alice.error("f")).code).toBe("unknown_link");
    alice.send({ v: 1, t: "settings", id: "s", presence: "contacts" });
    await alice.next("accepted", (f) => f.id === "s");
  });

  it("no HTTP request reaches a user's object except its WebSocket upgrade", async () => {
    const hub = freshHub("uo");
    (await TestClient.connect(hub, "bob", undefined, routed)).c.close();
    const forged = JSON.stringify({ from: "alice", to: "bob", id: "1", body: body(1) });
    for (const [path, init] of [
      [`/ws?hub=${hub}&user=bob`, { method: "GET" }],
      [`/ws?hub=${hub}&user=bob`, { method: "POST", body: forged }],
      [`/enqueue?hub=${hub}&user=bob`, { method: "POST", body: forged }],
    ] as const) {
      const res = await SELF.fetch(`${BASE}${path}`, { ...init, headers: { Origin: ORIGIN } });
      expect(res.status === 426 || res.status === 404).toBe(true);
      await res.arrayBuffer();
    }
    expect(await countTable(userObject(hub, "bob"), "mailbox")).toBe(0);
  });
});
