/**
 * Groups' homes on users' routes (docs/ARCHITECTURE.md "Groups on users' routes"), with real
 * engines in the Node harness: the failure cases of the home's links to its members' objects.
 * The group stories themselves run on users' routes too (vitest project `node-routed`).
 */
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import { LEAF_NONCE_BYTES, LIMITS, PROTOCOL_VERSION } from "../../shared/protocol";
import { RELINK_MS } from "../../worker/relay/group-home";
import {
  connect,
  disconnect,
  errors,
  messages,
  newUser,
  online,
  say,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;
const routedRelay = () => new NodeRelay("main", "https://parley.test", null, "contacts", true);

async function inGroup(...names: string[]): Promise<{ relay: NodeRelay; users: TestUser[] }> {
  const relay = routedRelay();
  const users = (await online(relay, ...names)) as TestUser[];
  for (const u of users) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  return { relay, users };
}

/** The group messages the relay handed to `name`'s connections, by body. */
const groupBodies = (relay: NodeRelay, name: string) =>
  relay.log.flatMap((x) =>
    x.to === name && x.frame.t === "deliver" && x.frame.item.kind === "group"
      ? [x.frame.item.body]
      : [],
  );

/** Group messages the home still holds (acknowledged ones go at its next flush: run it). */
const homeCopies = (relay: NodeRelay) => {
  relay.homeObject("broadcast").life.hub.deliveries.flush();
  return relay.dumpTables()["home/broadcast/group_log"]?.length ?? 0;
};

/** Store `n` direct items from `sender` in bob's object, behind its back; their mids. */
function fillBobs(relay: NodeRelay, sender: string, senderKey: string, n: number): number[] {
  const { store } = relay.userObject("bob").life;
  const payload = store.putPayload("AAAA");
  return Array.from({ length: n }, () =>
    store.putItem({
      senderDevice: null,
      recipient: "bob",
      sender,
      senderKey,
      ts: relay.clock,
      expiresAt: relay.clock + LIMITS.mailboxTtlMs,
      kind: "direct",
      group: null,
      epoch: null,
      payload,
      wrap: null,
    }),
  );
}

describe("a group's home and its members' objects", () => {
  it("a batch whose answer was lost is sent again after the relink delay and stored once", async () => {
    const { relay, users } = await inGroup("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await say(alice, G, "one");
    let lose = 1;
    relay.loseCall = (m) => m === "fromHome" && lose-- > 0;
    await say(alice, G, "two");
    expect(lose).toBe(0);
    // bob's object stored and delivered "two"; the home, without the answer, still holds it.
    expect(messages(bob, G)).toEqual(["one", "two"]);
    expect(homeCopies(relay)).toBe(1);
    await relay.advance(RELINK_MS);
    // The home sent it again; bob's object knew the mid and only acknowledged it.
    expect(homeCopies(relay)).toBe(0);
    const bodies = groupBodies(relay, "bob");
    expect(bodies).toHaveLength(2);
    await say(alice, G, "three");
    expect(messages(bob, G)).toEqual(["one", "two", "three"]);
    expect(errors(bob)).toEqual([]);
    expect(relay.failures).toEqual([]);
  });

  it("a home that restarts before the answer sends again from storage, at its alarm", async () => {
    const { relay, users } = await inGroup("alice", "bob", "carol");
    const [alice, bob, carol] = users as [TestUser, TestUser, TestUser];
    let lose = 2;
    relay.loseCall = (m) => m === "fromHome" && lose-- > 0;
    await say(alice, G, "before the restart");
    // Every object loses its memory (links, in-flight batches); storage and alarms stay.
    await relay.hibernate();
    expect(homeCopies(relay)).toBe(1);
    await relay.advance(RELINK_MS);
    expect(homeCopies(relay)).toBe(0);
    for (const u of [bob, carol]) {
      expect(messages(u, G)).toEqual(["before the restart"]);
      expect(groupBodies(relay, u.name)).toHaveLength(1);
    }
    await say(bob, G, "after");
    expect(messages(alice, G)).toEqual(["after"]);
    expect(relay.failures).toEqual([]);
  });

  it("a home's links are no connections: the idle bound does not close them", async () => {
    const { relay, users } = await inGroup("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await say(alice, G, "one");
    // Time passes in silence past the idle bound: the home's alarm runs, with its links open.
    const home = relay.homeObject("broadcast");
    home.life.hub.alarm();
    relay.clock += (LIMITS.presenceTimeoutSec + 1) * 1000;
    home.life.hub.alarm();
    await say(alice, G, "two");
    expect(messages(bob, G)).toEqual(["one", "two"]);
    expect(homeCopies(relay)).toBe(0);
  });

  it("a home takes only its own group's frames, and a device removal only of the caller's identity", async () => {
    const { relay } = await inGroup("alice", "bob");
    const home = relay.homeObject("broadcast").life.hub;
    const m = { username: "alice", identityKey: relay.user("alice")?.identityKey ?? "" };
    const codes = async (hub: string, group: string, frame: object) =>
      (await home.fromMember(hub, group, m, JSON.stringify(frame))).map(
        (t) => (JSON.parse(t) as { code?: string }).code,
      );
    // Not a group frame, another group's, another hub's: a relay bug, answered as one.
    const send = { v: 1, t: "send", id: "1", to: "bob", body: "AAAA" };
    expect(await codes("main", "broadcast", send)).toEqual(["internal"]);
    const other = { v: 1, t: "leave", id: "2", group: "other" };
    expect(await codes("main", "broadcast", other)).toEqual(["internal"]);
    const leave = { v: 1, t: "leave", id: "3", group: "broadcast" };
    expect(await codes("elsewhere", "broadcast", leave)).toEqual(["internal"]);
    // A removal naming another user's member, or the caller itself, changes nothing.
    await home.deviceRemoved("main", "broadcast", m, "bob");
    await home.deviceRemoved("main", "broadcast", m, "alice");
    await relay.settle();
    expect(relay.group("broadcast")).toMatchObject({
      members: ["alice", "bob"],
      pendingLeaves: [],
    });
  });

  it("a member of the recipient's group is no stranger: past the message-request share, still stored", async () => {
    const { relay, users } = await inGroup("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await disconnect(bob);
    // alice never wrote to bob and bob never accepted her: only their group relates them.
    await alice.client.startChat("bob");
    await relay.settle();
    const n = LIMITS.maxRequestItemsPerSender + 5;
    for (let i = 0; i < n; i++) await alice.client.sendText("dm:bob", `m${i}`);
    await relay.settle();
    expect(relay.stored("bob")).toBe(n);
    expect(errors(alice)).toEqual([]);
    await connect(bob);
    expect(messages(bob, "dm:alice")).toHaveLength(n);
  });

  it("a member's object with no room is asked again after RELINK_MS, then twice as long each time, and at once when its device reads", async () => {
    const { relay, users } = await inGroup("alice", "bob");
    const [, bob] = users as [TestUser, TestUser];
    await disconnect(bob);
    const { store } = relay.userObject("bob").life;
    // Junk from alice (bob's engine reads and drops it): his mailbox at the hard bound.
    fillBobs(
      relay,
      "alice",
      relay.user("alice")?.identityKey ?? "",
      LIMITS.maxMailboxHardPerRecipient,
    );
    const through = store.memberGroup("bob", "broadcast")?.through ?? 0;
    let asked = 0;
    relay.loseCall = (method) => {
      if (method === "fromHome") asked++;
      return false;
    };
    // carol joins: a commit for bob, which his object has no room for.
    const [carol] = (await online(relay, "carol")) as [TestUser];
    await carol.client.joinGroup("broadcast");
    await relay.settle();
    const first = asked;
    expect(first).toBeGreaterThan(0);
    const askedAfter = async (ms: number) => {
      const before = asked;
      await relay.advance(ms);
      await relay.settle();
      return asked - before;
    };
    // bob's object is asked again after RELINK_MS, then 2, 4, 8 times that, counting from each ask
    // (the home's other members' calls do not reopen his link).
    for (const wait of [1, 2, 4, 8]) {
      expect(await askedAfter(wait * RELINK_MS - 100)).toBe(0);
      expect(await askedAfter(100)).toBeGreaterThan(0);
    }
    expect(store.memberGroup("bob", "broadcast")?.through).toBe(through);
    // bob reads his mail: his object tells the home, which sends the commit now.
    await connect(bob);
    await relay.settle();
    expect(store.memberGroup("bob", "broadcast")?.through).toBeGreaterThan(through);
    relay.loseCall = null;
  });

  it("a name reclaimed on its own route leaves its groups at their homes first, and changes hands once no roster lists it (§4.3)", async () => {
    const { relay, users } = await inGroup("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    const oldKey = relay.user("bob")?.identityKey;
    await disconnect(bob);
    // bob's identity is idle past the reclaim period, with nothing undelivered.
    relay.clock += LIMITS.usernameIdleReclaimMs + 1000;
    const newBob = await newUser(relay, "bob");
    await connect(newBob);
    // The first claim has the home take the old bob out; while alice's roster still lists him,
    // the name does not change hands.
    expect(errors(newBob).map((e) => e.message)).toEqual([expect.stringContaining("name_taken")]);
    expect(relay.user("bob")?.identityKey).toBe(oldKey);
    await relay.settle();
    // alice committed the removal: the group is hers alone, and the name is free.
    expect(relay.homeObject("broadcast").life.store.getGroup("broadcast")?.members).toEqual([
      "alice",
    ]);
    await disconnect(newBob);
    await connect(newBob);
    expect(relay.user("bob")?.identityKey).not.toBe(oldKey);
    expect(relay.online("bob")).toBeDefined();
    const welcome = relay.log.filter((x) => x.to === "bob" && x.frame.t === "welcome").at(-1);
    expect(welcome?.frame.t === "welcome" && welcome.frame.groups).toEqual([]);
    // alice and the new bob meet as strangers: the group does not carry the name to the new key.
    await say(alice, G, "after bob left");
    expect(messages(newBob, G)).toEqual([]);
    expect(errors(alice)).toEqual([]);
  });

  it("the fan-out charge comes from the identity's one bucket in its own object, whichever home a group has (§7.2)", async () => {
    const relay = routedRelay();
    const [alice] = (await online(relay, "alice")) as [TestUser];
    // alice's object holds the states of two groups of maxGroupSize, as their homes sent them.
    const { store } = relay.userObject("alice").life;
    for (const g of ["big1", "big2"]) {
      const members = Array.from({ length: LIMITS.maxGroupSize }, (_, i) => ({
        username: i === 0 ? "alice" : `m${i}`,
      }));
      const state = { group: g, epoch: 1, members, pendingJoins: [], pendingLeaves: [] };
      store.setMemberGroup("alice", g, JSON.stringify(state), 0);
    }
    const perSend = 1 + Math.floor((LIMITS.maxGroupSize - 1) / LIMITS.fanoutRecipientsPerToken);
    const n = 30;
    expect(n).toBeLessThan(LIMITS.identityBurst);
    expect(n * perSend).toBeGreaterThan(LIMITS.identityBurst);
    const conn = alice.conn;
    if (conn === null) throw new Error("alice is offline");
    for (let i = 0; i < n; i++)
      conn.fromClient({
        v: PROTOCOL_VERSION,
        t: "group_send",
        id: `g${i}`,
        group: i % 2 === 0 ? "big1" : "big2",
        epoch: 1,
        body: "AAAA",
      });
    await relay.settle().catch(() => undefined);
    const refused = relay.log.filter(
      (x) => x.to === "alice" && x.frame.t === "error" && x.frame.code === "rate_limited",
    );
    // The burst (less what connecting took) pays for at most identityBurst / perSend of them,
    // across both groups together; each home's own bucket alone would have let all through.
    const passed = n - refused.length;
    expect(passed).toBeGreaterThan(0);
    expect(passed).toBeLessThanOrEqual(Math.floor(LIMITS.identityBurst / perSend));
    relay.failures.length = 0;
  });

  it("a first join is charged its fan-out from the home's answer: joining big groups one after another drains the identity's one bucket (§7.2)", async () => {
    const relay = routedRelay();
    const [alice] = (await online(relay, "alice")) as [TestUser];
    // Each home answers a join with the group's state: maxGroupSize - 1 members and alice
    // joining (the home's own charge comes from a bucket of its own there).
    const leaf = {
      id: 1,
      key: toB64u(new Uint8Array(32).fill(9)),
      epoch: 0,
      nonce: toB64u(new Uint8Array(LEAF_NONCE_BYTES)),
      sig: toB64u(new Uint8Array(64)),
    };
    const aliceKey = toB64u(alice.identity.publicKey);
    const members = Array.from({ length: LIMITS.maxGroupSize - 1 }, (_, i) => {
      const key = new Uint8Array(32).fill(7);
      key.set([i & 255, i >> 8]);
      return { username: `m${i}`, identityKey: toB64u(key), leaf };
    });
    relay.homeAnswer = (group, text) => {
      const f = JSON.parse(text) as { id: string };
      const state = {
        group,
        epoch: 1,
        members,
        pendingJoins: [{ username: "alice", identityKey: aliceKey, leaf }],
        pendingLeaves: [],
        interim: toB64u(new Uint8Array(32)),
      };
      return [
        JSON.stringify({ v: PROTOCOL_VERSION, t: "accepted", id: f.id }),
        JSON.stringify({ v: PROTOCOL_VERSION, t: "group", state }),
      ];
    };
    const groups = 24;
    const perJoin = Math.floor(LIMITS.maxGroupSize / LIMITS.fanoutRecipientsPerToken);
    expect(groups * perJoin).toBeGreaterThan(LIMITS.identityBurst);
    const conn = alice.conn;
    if (conn === null) throw new Error("alice is offline");
    for (let k = 0; k < groups; k++)
      conn.fromClient({
        v: PROTOCOL_VERSION,
        t: "join",
        id: `j${k}`,
        group: `big${k}`,
        leaves: [leaf],
      });
    await relay.settle().catch(() => undefined);
    const refused = relay.log.filter(
      (x) => x.to === "alice" && x.frame.t === "error" && x.frame.code === "rate_limited",
    );
    // The burst pays for the joins until it is in debt by one: each home's own bucket alone
    // would have let every one through.
    const passed = groups - refused.length;
    expect(passed).toBeGreaterThan(0);
    expect(passed).toBeLessThanOrEqual(Math.ceil(LIMITS.identityBurst / perJoin) + 1);
    relay.failures.length = 0;
  });

  it("a member's object takes a commit only with room (hard bound), and nothing after it overtakes it", async () => {
    const { relay } = await inGroup("alice", "bob");
    const bob = relay.userObject("bob");
    const { store } = bob.life;
    const mids = fillBobs(relay, "mallory", "k", LIMITS.maxMailboxHardPerRecipient);
    const through = store.memberGroup("bob", "broadcast")?.through ?? 0;
    const fromKey = relay.user("alice")?.identityKey;
    const deliver = (mid: number, item: Record<string, unknown>) =>
      JSON.stringify({
        v: PROTOCOL_VERSION,
        t: "deliver",
        mid: String(mid),
        from: "alice",
        fromKey,
        ts: relay.clock,
        item,
      });
    const commit = deliver(through + 1, {
      kind: "commit",
      group: "broadcast",
      epoch: 9,
      core: "Q09SRQ",
      wrap: "d3JhcA",
    });
    const message = deliver(through + 2, {
      kind: "group",
      group: "broadcast",
      epoch: 9,
      body: "Ym9keQ",
    });
    const full = bob.life.hub.fromHome("main", "broadcast", "bob", [commit, message]);
    expect(full).toEqual({ done: [], later: true, held: [] });
    expect(store.memberGroup("bob", "broadcast")?.through).toBe(through);
    // With room again (bob read his mail), the same batch is taken, in order.
    store.ackLater(
      "bob",
      mids.slice(0, 10).map((mid) => ({ mid, sender: "mallory", kind: "direct" as const })),
    );
    const taken = bob.life.hub.fromHome("main", "broadcast", "bob", [commit, message]);
    expect(taken).toEqual({
      done: [String(through + 1), String(through + 2)],
      later: false,
      held: [],
    });
    expect(store.memberGroup("bob", "broadcast")?.through).toBe(through + 2);
  });
});
