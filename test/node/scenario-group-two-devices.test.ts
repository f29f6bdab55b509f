/**
 * Two devices of one identity never share a group sending chain (PROTOCOL.md §9.2.2, §9.3, §9.4;
 * SECURITY.md "Groups: no two devices on one sending chain"), through the real relay:
 * - bob's store is backed up and restored on a second device while the first lives on. The
 *   first commits an update; the relay hands that self-authored commit to the second device,
 *   which refuses it (not the commit it persisted) instead of entering the first device's
 *   epoch and chain; it re-joins with its own leaf keys. No two group messages under bob's name
 *   ever use one (epoch, counter): the same chain there would mean the same message key.
 * - a hostile relay lists another device's leaf key (validly signed by bob's identity) as bob's
 *   own entry: bob refuses to commit on that roster and says so.
 */
import { expect, it } from "vitest";
import { makeLeaves, type OwnLeaf, publicLeaf } from "../../shared/core/group";
import { MemoryStore } from "../../shared/core/store";
import { ed25519Sign, randomBytes } from "../../shared/crypto";
import { fromB64u } from "../../shared/encoding";
import type { ClientFrame, GroupState } from "../../shared/protocol";
import { connect, disconnect, errors, newUser, say, type TestUser } from "../support/clients";
import { addByInvite, recordOf } from "../support/group-story";
import { NodeRelay } from "../support/node-relay";

const G = "club";
const C = "group:club" as const;

/** (epoch, counter) of every group message the relay took from `name` (§9.5 header). */
function sentUnder(relay: NodeRelay, name: string): string[] {
  return relay.clientLog
    .filter((e) => e.from === name && e.frame.t === "group_send")
    .map((e) => {
      const f = e.frame as Extract<ClientFrame, { t: "group_send" }>;
      const n = new DataView(fromB64u(f.body).buffer).getUint32(2);
      return `${f.epoch}:${n}`;
    });
}

async function trySay(u: TestUser, text: string): Promise<boolean> {
  try {
    await say(u, C, text);
    return true;
  } catch {
    return false;
  }
}

it("a restored copy of bob's device refuses the first device's own commit and never shares its chain", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob", { tuning: { groupUpdateAfterMessages: 2 } });
  const carol = await newUser(relay, "carol");
  await connect(alice, bob, carol);
  await alice.client.createGroup(G, { title: "Club", policy: "invite" });
  await relay.settle();
  await addByInvite(relay, G, alice, bob);
  await addByInvite(relay, G, alice, carol);
  const E = relay.group(G)?.epoch as number;
  // A backup of bob's whole device at epoch E, later restored on a second device.
  const backup = bob.store.dump();
  // bob's update; the relay keeps its self-delivery in the mailbox (bob applies it on `accepted`).
  relay.intercept = (to, f) =>
    to === "bob" && f.t === "deliver" && f.item.kind === "commit" ? null : f;
  await say(bob, C, "b1");
  await say(bob, C, "b2");
  expect(relay.group(G)?.epoch).toBe(E + 1);
  expect((await recordOf(bob, G)).current?.epoch).toBe(E + 1);
  relay.intercept = null;
  await disconnect(bob);

  // The second device: the restored copy, online as bob. The mailbox hands it bob's own commit.
  const bob2 = await newUser(relay, "bob", {
    identity: bob.identity,
    store: MemoryStore.load(backup),
  });
  await connect(bob2);
  await relay.settle();
  expect(errors(bob2).map((e) => e.code)).toContain("identity_mismatch");
  // It did not enter the first device's epoch; it re-joined, and alice added it with its own key.
  const rec2 = await recordOf(bob2, G);
  expect(rec2.status).toBe("member");
  expect(rec2.current?.epoch).toBeGreaterThan(E + 1);
  expect(await trySay(bob2, "from the second device")).toBe(true);
  await disconnect(bob2);

  // The first device comes back and tries to write in the epoch it holds.
  await connect(bob);
  await relay.settle();
  await trySay(bob, "from the first device");
  const sent = sentUnder(relay, "bob");
  expect(sent.length).toBeGreaterThanOrEqual(3);
  expect(new Set(sent).size).toBe(sent.length);
});

it("a relay listing another device's leaf key as bob's own entry: bob refuses to commit and says so", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob", { tuning: { groupUpdateAfterMessages: 1 } });
  await connect(alice, bob);
  await alice.client.createGroup(G, { title: "Club", policy: "invite" });
  await relay.settle();
  await addByInvite(relay, G, alice, bob);
  const E = relay.group(G)?.epoch as number;
  // Leaf keys of another device holding bob's identity: validly signed by bob's identity key.
  const other = (await makeLeaves({
    hub: relay.hub,
    group: G,
    epoch: E,
    count: 1,
    random: randomBytes,
    sign: (m) => ed25519Sign(bob.identity.privateKey, m),
  })) as [OwnLeaf];
  const swap = (s: GroupState): GroupState => ({
    ...s,
    members: s.members.map((m) =>
      m.username === "bob"
        ? {
            ...m,
            leaf: publicLeaf(other[0]),
          }
        : m,
    ),
  });
  relay.intercept = (to, f) => {
    if (to !== "bob") return f;
    if (f.t === "group") return { ...f, state: swap(f.state) };
    if (f.t === "welcome") return { ...f, groups: f.groups.map(swap) };
    return f;
  };
  await disconnect(bob);
  await connect(bob);
  await relay.settle();
  const commitsBefore = relay.clientLog.filter((e) => e.from === "bob" && e.frame.t === "commit");
  // bob's message makes his update due (§9.6): on this roster he must not commit.
  await say(bob, C, "update due");
  const commits = relay.clientLog.filter((e) => e.from === "bob" && e.frame.t === "commit");
  expect(commits.length).toBe(commitsBefore.length);
  expect(errors(bob).map((e) => e.code)).toContain("identity_mismatch");
  expect(relay.group(G)?.epoch).toBe(E);
});
