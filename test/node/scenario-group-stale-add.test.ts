/**
 * Join freshness through the real relay (PROTOCOL.md §9.4): a hostile relay replays the commit
 * that once added bob, after bob left, and again while he is joining anew. Both are refused —
 * he is not pulled back into a stale epoch — and the real add that follows works.
 */
import { expect, it } from "vitest";
import { connect, disconnect, errors, messages, online, say } from "../support/clients";
import { addByInvite, delivered, inviteFor, recordOf, summaryOf } from "../support/group-story";
import { NodeRelay } from "../support/node-relay";

const G = "club";
const C = "group:club" as const;

it("an old commit that added bob is refused after he left, and while he joins again", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = await online(relay, "alice", "bob", "carol");
  if (!alice || !bob || !carol) throw new Error("setup");
  await alice.client.createGroup(G, { title: "Club", policy: "invite" });
  await relay.settle();
  await addByInvite(relay, G, alice, bob);
  await addByInvite(relay, G, alice, carol);
  // The commit that added bob, as the relay delivered it to him (a hostile relay keeps it).
  const adding = delivered(relay).find(
    (d) => d.to === "bob" && d.item.kind === "commit" && d.item.epoch === 2,
  );
  if (adding === undefined || adding.item.kind !== "commit") throw new Error("bob was added");
  const replay = (mid: string) => {
    if (!bob.conn) throw new Error("bob is online");
    relay.push(bob.conn, {
      v: 1,
      t: "deliver",
      mid,
      from: adding.from,
      fromKey: adding.fromKey,
      ts: relay.now(),
      item: adding.item,
    });
  };

  // bob leaves; the group moves on without him.
  await bob.client.leaveGroup(G);
  await relay.settle();
  expect((await recordOf(bob, G)).status).toBe("left");
  const gone = errors(bob).length;
  // The relay replays the old adding commit: refused, bob stays out, with no keys.
  replay("900001");
  await relay.settle();
  const out = await recordOf(bob, G);
  expect(out.status).toBe("left");
  expect(out.current).toBeNull();
  expect(
    errors(bob)
      .slice(gone)
      .map((e) => e.code),
  ).toEqual(["not_member"]);

  // bob is invited again and accepts while no member is online to add him: he is joining, with
  // leaf keys made for this join. The old commit (sealed to a key of his first join) is refused.
  await alice.client.startChat("bob");
  await relay.settle();
  await alice.client.inviteToGroup(G, "bob");
  await relay.settle();
  await disconnect(alice, carol);
  await bob.client.acceptInvite(inviteFor(bob, "alice"));
  await relay.settle();
  expect((await recordOf(bob, G)).status).toBe("joining");
  const joining = errors(bob).length;
  replay("900002");
  await relay.settle();
  expect((await recordOf(bob, G)).status).toBe("joining");
  expect(
    errors(bob)
      .slice(joining)
      .map((e) => e.code),
  ).toEqual(["no_prekey"]);

  // A member comes back and adds him for real: he reads and is read in the new epoch.
  await connect(alice, carol);
  await relay.settle();
  const rec = await recordOf(bob, G);
  expect(rec.status).toBe("member");
  expect(rec.current?.epoch).toBe(relay.group(G)?.epoch);
  expect(summaryOf(bob, C)?.epoch).toBeGreaterThan(3);
  await say(alice, C, "welcome back");
  expect(messages(bob, C)).toEqual(["welcome back"]);
});
