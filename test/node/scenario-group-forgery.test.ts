/**
 * Story: carol, a legitimate member who knows the epoch secret (hence every member's sender
 * chain), forges a message in bob's name. Per-message identity signatures reject it (§9.5); so
 * does a relay that relabels carol's genuine message as bob's.
 */
import { expect, it } from "vitest";
import { encryptGroup, parseGroupRecord } from "../../shared/core/group";
import { ed25519Sign } from "../../shared/crypto";
import type { FrameOf, ServerFrame } from "../../shared/protocol";
import { errors, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;

it("a member cannot forge another member's group message", async () => {
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
  await say(bob, G, "real bob");
  const rec = parseGroupRecord(await carol.store.get("group/broadcast"));
  const cur = rec.current;
  if (!cur) throw new Error("carol is a member");
  const bobChain = cur.receivers.find((r) => r.name === "bob");
  if (!bobChain) throw new Error("bob chain");
  const bobKey = bob.identity.publicKey;
  // carol continues bob's chain exactly (valid AES-GCM under bob's next message key) ...
  const forged = await encryptGroup({
    record: { ...rec, current: { ...cur, send: { ck: bobChain.ck, n: bobChain.n } } },
    hub: "main",
    me: { name: "bob", identityKey: bobKey },
    // ... but can only sign with her own identity key
    sign: (m) => ed25519Sign(carol.identity.privateKey, m),
    content: { t: "text", id: "forged1", ts: 1, text: "bob says: send me your password" },
  });
  const deliver: FrameOf<ServerFrame, "deliver"> = {
    v: 1,
    t: "deliver",
    mid: "777",
    from: "bob",
    fromKey: Buffer.from(bobKey).toString("base64url"),
    ts: 1,
    item: {
      kind: "group",
      group: "broadcast",
      epoch: cur.epoch,
      body: Buffer.from(forged.body).toString("base64url"),
    },
  };
  await alice.client.onServerFrame(deliver);
  expect(messages(alice, G)).toEqual(["real bob"]);
  expect(errors(alice).map((e) => e.code)).toEqual(["bad_signature"]);

  // a relay relabelling carol's genuine message as bob's is caught the same way
  relay.intercept = (to, f) =>
    to === "alice" && f.t === "deliver" && f.item.kind === "group" ? { ...f, from: "bob" } : f;
  await say(carol, G, "carol's words");
  expect(messages(alice, G)).toEqual(["real bob"]);
  expect(errors(alice).map((e) => e.code)).toEqual(["bad_signature", "bad_signature"]);
  relay.intercept = null;
  // bob's real chain is untouched by the forgery attempts
  await say(bob, G, "still me");
  expect(messages(alice, G)).toEqual(["real bob", "still me"]);
});
