/**
 * Story: alice, bob and carol join the broadcast group; every message reaches every member;
 * carol leaves; a remaining member commits the next epoch; the messages after that reach alice
 * and bob only, and the real ciphertext of those messages is undecryptable with carol's keys.
 */
import { expect, it } from "vitest";
import { decryptGroup, type GroupRecord, parseGroupRecord } from "../../shared/core/group";
import type { FrameOf, ServerFrame } from "../../shared/protocol";
import { errors, lines, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;

it("join, fan-out to all, leave, next epoch unreadable for the departed member", async () => {
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
  const epochOf = (u: TestUser) => u.client.conversations().find((c) => c.id === G)?.epoch;
  expect([epochOf(alice), epochOf(bob), epochOf(carol)]).toEqual([3, 3, 3]);
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob", "carol"]);
  await say(alice, G, "hello all");
  await say(bob, G, "hi from bob");
  await say(carol, G, "carol here");
  expect(messages(bob, G)).toEqual(["hello all", "carol here"]);
  expect(messages(carol, G)).toEqual(["hello all", "hi from bob"]);
  expect(messages(alice, G)).toEqual(["hi from bob", "carol here"]);
  expect(
    lines(alice, G)
      .filter((l) => l.kind === "joined")
      .map((l) => l.username),
  ).toEqual(["alice", "bob", "carol"]);

  // one history: every member shows the same epoch authenticator (PROTOCOL.md §9.3)
  const auth = (u: typeof alice) => u.client.conversations().find((c) => c.id === G)?.authenticator;
  expect(auth(alice)).toMatch(/^\d{5}( \d{5}){4}$/);
  expect(auth(bob)).toBe(auth(alice));
  expect(auth(carol)).toBe(auth(alice));

  // carol keeps a copy of her epoch-3 keys, as a departing member could
  const carolKeys = parseGroupRecord(await carol.store.get("group/broadcast"));
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  // alice (lowest online name) committed epoch 4 without carol
  expect(relay.group("broadcast")).toMatchObject({
    epoch: 4,
    members: ["alice", "bob"],
    pendingLeaves: [],
  });
  expect(epochOf(alice)).toBe(4);
  expect(epochOf(bob)).toBe(4);
  expect(lines(bob, G).some((l) => l.kind === "left" && l.username === "carol")).toBe(true);

  const sent: FrameOf<ServerFrame, "deliver">[] = [];
  relay.intercept = (to, f) => {
    if (to === "bob" && f.t === "deliver" && f.item.kind === "group") sent.push(f);
    return f;
  };
  await say(alice, G, "secret after carol left");
  expect(messages(bob, G).at(-1)).toBe("secret after carol left");
  expect(messages(carol, G)).not.toContain("secret after carol left");
  expect(
    relay.log.filter(
      (x) => x.to === "carol" && x.frame.t === "deliver" && x.frame.item.kind === "group",
    ).length,
  ).toBe(2);
  // the real ciphertext bob received, tried with carol's old keys under every framing: fails
  const f = sent[0];
  if (f?.item.kind !== "group") throw new Error("no group delivery");
  expect(f.item.epoch).toBe(4);
  const body = Buffer.from(f.item.body, "base64url");
  await expect(
    decryptGroup({ record: carolKeys, hub: "main", sender: "alice", epoch: 4, body }),
  ).rejects.toMatchObject({ code: "stale_epoch" });
  // carol's best guess: her last epoch's sender chains (the epoch secret itself is never
  // stored, §9.5), relabelled as epoch 4 with its (public) transcript hash and rewound to n = 0
  const old = carolKeys.current;
  if (!old) throw new Error("carol had keys");
  expect(old).not.toHaveProperty("secret");
  const bobEpoch = parseGroupRecord(await bob.store.get("group/broadcast")).current;
  expect(bobEpoch?.epoch).toBe(4);
  const relabelled: GroupRecord = {
    ...carolKeys,
    current: {
      ...old,
      epoch: 4,
      transcript: bobEpoch?.transcript ?? "",
      receivers: old.receivers.map((r) => ({ ...r, n: 0, skipped: [] })),
    },
  };
  await expect(
    decryptGroup({ record: relabelled, hub: "main", sender: "alice", epoch: 4, body }),
  ).rejects.toMatchObject({ code: "decrypt_failed" });
  // and carol's engine holds no keys at all any more
  expect(parseGroupRecord(await carol.store.get("group/broadcast"))).toMatchObject({
    status: "left",
    current: null,
  });
  for (const u of [alice, bob, carol]) expect(errors(u)).toEqual([]);
});
