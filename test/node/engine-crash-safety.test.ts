/**
 * Crash safety of the runner (PROTOCOL.md §10.1–§10.2, SECURITY.md §7.1): for every verb that
 * sends something, the engine is killed at every effect boundary of the step that sends it —
 * right after its batch committed, and between each two of its effects (a frame sent, an event
 * emitted). A new engine then starts on the same store, as after a crash or a closed tab.
 * Nothing is lost (every message arrives, once; every join, leave and commit takes effect), and
 * no message key is used for two different ciphertexts (no nonce reuse): whatever left before
 * the crash leaves again with the same bytes.
 */
import { describe, expect, it } from "vitest";
import type { Effect } from "../../shared/core/engine/effects";
import { decodeEnvelope } from "../../shared/core/envelope";
import type { ClientFrame } from "../../shared/protocol";
import {
  connect,
  disconnect,
  messages,
  online,
  restart,
  say,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

class Crash extends Error {}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/**
 * Every message key used by `relay`'s clients, with the ciphertexts sent under it: 1:1 by
 * (session, ratchet header), group by (group, epoch, sender, counter). Exactly one each.
 */
function nonceUses(relay: NodeRelay): Map<string, Set<string>> {
  const uses = new Map<string, Set<string>>();
  const add = (k: string, body: string) => {
    const s = uses.get(k) ?? new Set<string>();
    s.add(body);
    uses.set(k, s);
  };
  for (const { from, frame } of relay.clientLog) {
    if (frame.t === "send") {
      const env = decodeEnvelope(Buffer.from(frame.body, "base64url"));
      if (env.type === "message" || env.type === "prekey")
        add(`dm|${from}|${hex(env.sid)}|${hex(env.header)}`, frame.body);
    } else if (frame.t === "group_send") {
      const n = Buffer.from(frame.body, "base64url").readUInt32BE(2);
      add(`group|${frame.group}|${frame.epoch}|${from}|${n}`, frame.body);
    }
  }
  return uses;
}

function expectNoNonceReuse(relay: NodeRelay) {
  const reused = [...nonceUses(relay)].filter(([, bodies]) => bodies.size > 1);
  expect(reused).toEqual([]);
}

/**
 * Kill `u`'s engine before effect `k` of the first step whose effects `pick` selects (after
 * its batch committed). Returns a probe: whether the crash happened, and how many effects
 * that step had.
 */
function crashAt(u: TestUser, pick: (all: readonly Effect[]) => boolean, k: number) {
  const probe = { crashed: false, effects: 0 };
  const engine = u.client;
  engine.beforeEffect = (_e, i, all) => {
    if (probe.crashed || !pick(all)) return;
    probe.effects = all.length;
    if (i === k) {
      probe.crashed = true;
      engine.beforeEffect = null;
      throw new Crash("killed");
    }
  };
  return probe;
}

const sends =
  (t: ClientFrame["t"]) =>
  (all: readonly Effect[]): boolean =>
    all.some((e) => e.t === "send" && e.frame.t === t);

/** The crashed engine is gone; a new one starts on the same store and connects. */
async function recover(relay: NodeRelay, u: TestUser) {
  await relay.settle().catch(() => undefined);
  await restart(u);
  await connect(u);
  await relay.settle();
}

async function pair() {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "before");
  await say(bob, "dm:alice", "before too");
  return { relay, alice, bob };
}

async function trio() {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  return { relay, alice, bob, carol };
}

const G = "group:broadcast" as const;

/** Run `story(k)` for k = 0, 1, … until k is past the last effect of the step it kills. */
async function everyBoundary(story: (k: number) => Promise<{ crashed: boolean; effects: number }>) {
  let runs = 0;
  for (let k = 0; ; k++) {
    const p = await story(k);
    runs++;
    if (!p.crashed) break;
    if (k > 50) throw new Error("too many effects");
  }
  // At least one crash right after the commit and one run past the last effect.
  expect(runs).toBeGreaterThanOrEqual(2);
}

describe("a crash at every effect boundary loses nothing and reuses no nonce", () => {
  it("sendText, 1:1", async () => {
    await everyBoundary(async (k) => {
      const { relay, alice, bob } = await pair();
      const probe = crashAt(alice, sends("send"), k);
      await alice.client.sendText("dm:bob", "through a crash").catch((e) => {
        if (!(e instanceof Crash)) throw e;
      });
      await recover(relay, alice);
      expect(messages(bob, "dm:alice")).toEqual(["before", "through a crash"]);
      await say(alice, "dm:bob", "after");
      expect(messages(bob, "dm:alice")).toEqual(["before", "through a crash", "after"]);
      expect(await alice.store.list("outbox/")).toEqual([]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });

  it("sendAction (an edit, §8.6.1), 1:1 and group", async () => {
    const edits = (u: TestUser) =>
      u.events.flatMap((e) =>
        e.type === "content" && e.direction === "in" && e.content.t === "edit"
          ? [e.content.text]
          : [],
      );
    await everyBoundary(async (k) => {
      const { relay, alice, bob } = await pair();
      const mid = await say(alice, "dm:bob", "typo");
      const probe = crashAt(alice, sends("send"), k);
      await alice.client
        .sendAction("dm:bob", { t: "edit", target: mid, text: "fixed" })
        .catch((e) => {
          if (!(e instanceof Crash)) throw e;
        });
      await recover(relay, alice);
      expect(edits(bob)).toEqual(["fixed"]);
      expect(await alice.store.list("outbox/")).toEqual([]);
      expectNoNonceReuse(relay);
      return probe;
    });
    await everyBoundary(async (k) => {
      const { relay, alice, bob, carol } = await trio();
      const mid = await say(alice, G, "typo");
      const probe = crashAt(alice, sends("group_send"), k);
      await alice.client.sendAction(G, { t: "edit", target: mid, text: "fixed" }).catch((e) => {
        if (!(e instanceof Crash)) throw e;
      });
      await recover(relay, alice);
      expect(edits(bob)).toEqual(["fixed"]);
      expect(edits(carol)).toEqual(["fixed"]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });

  it("sendText, first message of an asynchronous start (prekey message after the bundle)", async () => {
    await everyBoundary(async (k) => {
      const relay = new NodeRelay();
      const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
      await disconnect(bob);
      const probe = crashAt(alice, sends("send"), k);
      await alice.client.sendText("dm:bob", "first, async").catch((e) => {
        if (!(e instanceof Crash)) throw e;
      });
      await recover(relay, alice);
      await connect(bob);
      await relay.settle();
      expect(messages(bob, "dm:alice")).toEqual(["first, async"]);
      await say(bob, "dm:alice", "got it");
      expect(messages(alice, "dm:bob")).toEqual(["got it"]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });

  it("end-to-end receipts", async () => {
    await everyBoundary(async (k) => {
      const { relay, alice, bob } = await pair();
      const probe = crashAt(bob, sends("send"), k);
      const id = await alice.client.sendText("dm:bob", "receipt me");
      await recover(relay, bob);
      const states = alice.events.flatMap((e) =>
        e.type === "delivery" && e.messageId === id ? [e.state] : [],
      );
      expect(states).toContain("delivered");
      expect(messages(bob, "dm:alice")).toEqual(["before", "receipt me"]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });

  it("sendText, group", async () => {
    await everyBoundary(async (k) => {
      const { relay, alice, bob, carol } = await trio();
      const probe = crashAt(alice, sends("group_send"), k);
      await alice.client.sendText(G, "to all, through a crash").catch((e) => {
        if (!(e instanceof Crash)) throw e;
      });
      await recover(relay, alice);
      expect(messages(bob, G)).toEqual(["to all, through a crash"]);
      expect(messages(carol, G)).toEqual(["to all, through a crash"]);
      await say(alice, G, "after");
      expect(messages(bob, G)).toEqual(["to all, through a crash", "after"]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });

  it("joinGroup", async () => {
    await everyBoundary(async (k) => {
      const relay = new NodeRelay();
      const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
      await alice.client.joinGroup("broadcast");
      await relay.settle();
      const probe = crashAt(bob, sends("join"), k);
      await bob.client.joinGroup("broadcast").catch((e) => {
        if (!(e instanceof Crash)) throw e;
      });
      await recover(relay, bob);
      expect(relay.group("broadcast")?.members).toEqual(["alice", "bob"]);
      await say(alice, G, "hi bob");
      expect(messages(bob, G)).toEqual(["hi bob"]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });

  it("leaveGroup", async () => {
    await everyBoundary(async (k) => {
      const { relay, alice, bob, carol } = await trio();
      const probe = crashAt(carol, sends("leave"), k);
      await carol.client.leaveGroup("broadcast").catch((e) => {
        if (!(e instanceof Crash)) throw e;
      });
      await recover(relay, carol);
      expect(relay.group("broadcast")).toMatchObject({
        members: ["alice", "bob"],
        pendingLeaves: [],
      });
      expect(await carol.store.get("group/broadcast")).toMatchObject({
        status: "left",
        current: null,
      });
      await say(alice, G, "without carol");
      expect(messages(bob, G)).toEqual(["without carol"]);
      expect(messages(carol, G)).toEqual([]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });

  it("a commit (the removal of a member who left)", async () => {
    await everyBoundary(async (k) => {
      const { relay, alice, bob, carol } = await trio();
      const probe = crashAt(alice, sends("commit"), k);
      await carol.client.leaveGroup("broadcast");
      await recover(relay, alice);
      expect(relay.group("broadcast")).toMatchObject({
        members: ["alice", "bob"],
        pendingLeaves: [],
      });
      await say(alice, G, "re-keyed");
      await say(bob, G, "me too");
      expect(messages(bob, G)).toEqual(["re-keyed"]);
      expect(messages(alice, G)).toEqual(["me too"]);
      expectNoNonceReuse(relay);
      return probe;
    });
  });
});
