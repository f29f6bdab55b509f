/**
 * A relay forks a group (PROTOCOL.md §9.3, SECURITY.md L24), through the real relay: of two
 * update commits made for the same epoch, it takes alice's and shows it to {alice, bob}, and
 * shows carol's (which it never really took, answering her `accepted`) to {carol, dave}. The
 * halves then hold different epoch authenticators and cannot read each other's messages; when a
 * later commit of one half reaches the other ("merging" them back), it is refused as a fork and
 * shown, never applied.
 */
import { expect, it } from "vitest";
import type { ClientFrame } from "../../shared/protocol";
import { connect, errors, lines, messages, newUser, say, type TestUser } from "../support/clients";
import { addByInvite, recordOf, summaryOf } from "../support/group-story";
import { NodeRelay } from "../support/node-relay";

const G = "club";
const C = "group:club" as const;
const auth = (u: TestUser) => summaryOf(u, C)?.authenticator;

it("a forked group: the halves cannot read each other, show different authenticators, and refuse the merge", async () => {
  const relay = new NodeRelay();
  // alice commits an update after 2 messages of hers in an epoch, carol after 1 (§9.6).
  const alice = await newUser(relay, "alice", { tuning: { groupUpdateAfterMessages: 2 } });
  const bob = await newUser(relay, "bob");
  const carol = await newUser(relay, "carol", { tuning: { groupUpdateAfterMessages: 1 } });
  const dave = await newUser(relay, "dave");
  await connect(alice, bob, carol, dave);
  await alice.client.createGroup(G, { title: "Club", policy: "invite" });
  await relay.settle();
  for (const u of [bob, carol, dave]) await addByInvite(relay, G, alice, u);
  const E = relay.group(G)?.epoch as number;
  for (const u of [alice, bob, carol, dave]) expect((await recordOf(u, G)).current?.epoch).toBe(E);
  expect(new Set([alice, bob, carol, dave].map(auth)).size).toBe(1);

  // The relay keeps carol's update to itself, tells her it was accepted, and hands it to dave.
  const conn = carol.conn;
  if (!conn || !dave.conn) throw new Error("online");
  const orig = conn.fromClient.bind(conn);
  let forked: Extract<ClientFrame, { t: "commit" }> | null = null;
  conn.fromClient = (f: ClientFrame) => {
    if (f.t !== "commit" || forked !== null) return orig(f);
    forked = f;
    relay.push(conn, { v: 1, t: "accepted", id: f.id });
  };
  await say(carol, C, "before the fork");
  const fork = forked as Extract<ClientFrame, { t: "commit" }> | null;
  if (fork === null) throw new Error("carol committed her update");
  const daveWrap = fork.wraps.find((w) => w.to === "dave");
  if (daveWrap === undefined) throw new Error("dave is in carol's commit");
  relay.push(dave.conn, {
    v: 1,
    t: "deliver",
    mid: "900001",
    from: "carol",
    fromKey: carol.client.identityKey,
    ts: relay.now(),
    item: { kind: "commit", group: G, epoch: E + 1, core: fork.core, wrap: daveWrap.wrap },
  });
  await relay.settle();
  // The real commit of epoch E+1 (alice's) is not shown to carol and dave.
  relay.intercept = (to, f) =>
    f.t === "deliver" &&
    f.item.kind === "commit" &&
    f.item.epoch === E + 1 &&
    (to === "carol" || to === "dave")
      ? null
      : f;
  await say(alice, C, "a1");
  await say(alice, C, "a2");
  expect(relay.group(G)?.epoch).toBe(E + 1);
  for (const u of [alice, bob, carol, dave])
    expect((await recordOf(u, G)).current?.epoch).toBe(E + 1);

  // Same epoch number, two histories: the authenticators tell the halves apart.
  expect(auth(alice)).toBe(auth(bob));
  expect(auth(carol)).toBe(auth(dave));
  expect(auth(alice)).not.toBe(auth(carol));

  // Neither half reads the other's messages of the forked epoch.
  await say(bob, C, "bob in epoch E+1");
  await say(dave, C, "dave in epoch E+1");
  expect(messages(alice, C)).toContain("bob in epoch E+1");
  expect(messages(carol, C)).toContain("dave in epoch E+1");
  for (const u of [carol, dave]) expect(messages(u, C)).not.toContain("bob in epoch E+1");
  for (const u of [alice, bob]) expect(messages(u, C)).not.toContain("dave in epoch E+1");

  // The relay "merges" them: alice's next update reaches everyone. carol and dave refuse it as
  // a fork and say so; they never enter alice's history.
  relay.intercept = null;
  const before = new Map([carol, dave].map((u) => [u, errors(u).length]));
  await say(alice, C, "a3");
  await say(alice, C, "a4");
  expect(relay.group(G)?.epoch).toBe(E + 2);
  expect((await recordOf(bob, G)).current?.epoch).toBe(E + 2);
  for (const u of [carol, dave]) {
    expect(
      errors(u)
        .slice(before.get(u))
        .map((e) => e.code),
    ).toContain("fork");
    expect(lines(u, C).some((l) => l.text.includes("history diverged"))).toBe(true);
    const rec = await recordOf(u, G);
    expect(rec.current?.authenticator).not.toBe((await recordOf(bob, G)).current?.authenticator);
  }
  for (const u of [carol, dave]) expect(messages(u, C)).not.toContain("a3");
});
