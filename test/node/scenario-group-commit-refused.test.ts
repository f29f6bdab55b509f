/**
 * Story: the relay refuses our commit as `bad_frame` (or `too_large`). That is not a
 * lost race — rebuilding on the same state gives the same frame — so the engine must not
 * re-commit at once in a tight sign-and-seal loop (§9.2.4). A later epoch (someone else's
 * commit) lets it commit again.
 */
import { expect, it } from "vitest";
import { type ClientFrame, errorFrame, LIMITS } from "../../shared/protocol";
import { errors, messages, online, say, type TestUser, timers } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

for (const code of ["bad_frame", "too_large"] as const) {
  it(`a commit refused as ${code} is not rebuilt on the same epoch`, async () => {
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
    const conn = alice.conn;
    if (!conn) throw new Error("alice is online");
    const orig = conn.fromClient.bind(conn);
    let refused = 0;
    conn.fromClient = (f: ClientFrame) => {
      // refuse alice's commits (at most 20 times, so a looping engine ends the test)
      if (f.t === "commit" && refused < 20) {
        refused++;
        relay.push(conn, errorFrame(code, f.id));
        return;
      }
      orig(f);
    };
    // carol leaves: alice (lowest online name) must commit the removal
    await carol.client.leaveGroup("broadcast");
    await relay.settle();
    await alice.client.whenIdle();
    expect(refused).toBe(1);
    expect(errors(alice).some((e) => e.code === "relay_error" && e.message.startsWith(code))).toBe(
      true,
    );
    // bob's fallback turn commits the removal instead; the group moves on
    conn.fromClient = orig;
    timers.fire();
    await relay.settle();
    expect(relay.group("broadcast")?.pendingLeaves).toEqual([]);
    await say(bob, "group:broadcast", "moving on");
    await say(alice, "group:broadcast", "me too");
    expect(messages(alice, "group:broadcast")).toEqual(["moving on"]);
    expect(messages(bob, "group:broadcast")).toEqual(["me too"]);
    expect(refused).toBe(1);
  });
}

it("a commit over the frame limits is never sent (the relay's too_large would carry no id)", async () => {
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
  const commits = () =>
    relay.clientLog.filter((x) => x.from === "alice" && x.frame.t === "commit").length;
  const before = commits();
  // Shrink the limit for this engine only while alice decides (LIMITS is read at call time).
  const limits = LIMITS as { maxCommitCoreChars: number };
  const real = limits.maxCommitCoreChars;
  limits.maxCommitCoreChars = 100;
  try {
    await carol.client.leaveGroup("broadcast");
    await relay.settle();
    await alice.client.whenIdle();
  } finally {
    limits.maxCommitCoreChars = real;
  }
  expect(commits()).toBe(before);
  const tooLarge = errors(alice).filter((e) => e.message.startsWith("too_large"));
  expect(tooLarge).toHaveLength(1);
  // bob's fallback turn commits the removal; alice follows the new epoch
  timers.fire();
  await relay.settle();
  expect(relay.group("broadcast")?.pendingLeaves).toEqual([]);
  await say(alice, "group:broadcast", "after");
  expect(messages(bob, "group:broadcast")).toEqual(["after"]);
});
