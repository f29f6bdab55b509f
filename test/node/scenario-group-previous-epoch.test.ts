/**
 * Story (§9.5): the previous epoch stays receive-only after a commit, for messages
 * sent just before it. A member removed by that commit (colluding with the relay) must not keep
 * injecting messages under its name into that epoch; a remaining member still can be read there.
 */
import { expect, it } from "vitest";
import type { FrameOf, ServerFrame } from "../../shared/protocol";
import { errors, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;

it("after carol's removal, her held-back previous-epoch message is refused; bob's is read", async () => {
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
  // the relay withholds from alice one message of carol's and one of bob's (same epoch)
  const held: FrameOf<ServerFrame, "deliver">[] = [];
  relay.intercept = (to, f) => {
    if (to === "alice" && f.t === "deliver" && f.item.kind === "group") {
      held.push(f);
      return null;
    }
    return f;
  };
  await say(carol, G, "carol before leaving");
  await say(bob, G, "bob just before the commit");
  relay.intercept = null;
  expect(held.map((f) => f.from)).toEqual(["carol", "bob"]);
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob"]);
  // ... and hands them over after the commit that removed carol
  for (const f of held) await alice.client.onServerFrame(f);
  await relay.settle();
  expect(messages(alice, G)).toEqual(["bob just before the commit"]);
  expect(errors(alice).map((e) => e.code)).toEqual(["not_member"]);
});
