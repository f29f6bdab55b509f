/**
 * Message requests through the real relay (PROTOCOL.md §7.3.1, §8.11): a stranger's messages
 * take only a small share of a mailbox, the sender is told when that share is full (the message
 * shows as failed, with the relay's typed reason), the recipient sees a message request it can
 * accept (the sender then gets the ordinary share) or block (the relay refuses the sender).
 */
import { expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
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

const summary = (u: TestUser, peer: string) =>
  u.client.conversations().find((c) => c.id === `dm:${peer}`);

/** The delivery state each of `u`'s outgoing messages in `dm:peer` reached last, in order. */
function deliveries(u: TestUser, peer: string): string[] {
  const last = new Map<string, string>();
  for (const e of u.events) {
    if (e.type === "message" && e.message.conversationId === `dm:${peer}`) {
      if (e.message.direction === "out") last.set(e.message.id, e.message.delivery ?? "sending");
    } else if (e.type === "delivery" && e.conversationId === `dm:${peer}`) {
      last.set(e.messageId, e.state);
    }
  }
  return [...last.values()];
}

it("a stranger gets a small share, is told when it is full; accepting lifts it", async () => {
  const relay = new NodeRelay();
  const bob = await newUser(relay, "bob");
  await connect(bob);
  await disconnect(bob);
  const [alice] = (await online(relay, "alice")) as [TestUser];
  const per = LIMITS.maxRequestItemsPerSender;
  await alice.client.startChat("bob");
  await relay.settle();
  for (let i = 0; i <= per; i++) await say(alice, "dm:bob", `hello ${i}`);
  // The first `per` are stored for bob; the next is refused, typed, and shown as failed: not
  // lost silently, not retried forever.
  const states = deliveries(alice, "bob");
  expect(states.slice(0, per).every((s) => s === "sent")).toBe(true);
  expect(states[per]).toBe("failed");
  expect(errors(alice).map((e) => [e.relayCode, e.conversationId])).toEqual([
    ["request_limit", "dm:bob"],
  ]);
  // bob comes online: the messages are there, as a message request.
  await connect(bob);
  expect(messages(bob, "dm:alice")).toHaveLength(per);
  expect(summary(bob, "alice")?.contact).toBe("request");
  await bob.client.acceptContact("alice");
  await relay.settle();
  expect(summary(bob, "alice")?.contact).toBeUndefined();
  // A contact now: more than a request's share reaches bob while he is away.
  await disconnect(bob);
  for (let i = 0; i < per + 5; i++) await say(alice, "dm:bob", `again ${i}`);
  expect(errors(alice)).toHaveLength(1);
  await connect(bob);
  expect(messages(bob, "dm:alice")).toHaveLength(2 * per + 5);
  expect(errors(bob)).toEqual([]);
});

it("writing back accepts; block makes the relay refuse the sender; unblocking takes it again", async () => {
  const relay = new NodeRelay();
  const [bob, carol, mallory] = (await online(relay, "bob", "carol", "mallory")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  await carol.client.startChat("bob");
  await relay.settle();
  await say(carol, "dm:bob", "hi bob");
  expect(summary(bob, "carol")?.contact).toBe("request");
  await say(bob, "dm:carol", "hi carol"); // a reply is an acceptance
  expect(summary(bob, "carol")?.contact).toBeUndefined();
  expect(relay.clientLog.some((x) => x.from === "bob" && x.frame.t === "contact")).toBe(true);

  await mallory.client.startChat("bob");
  await relay.settle();
  await say(mallory, "dm:bob", "buy now");
  expect(summary(bob, "mallory")?.contact).toBe("request");
  // Read states are not sent to a request (they would tell mallory bob is reading).
  await bob.client.blockContact("mallory");
  await relay.settle();
  expect(summary(bob, "mallory")?.contact).toBe("blocked");
  await say(mallory, "dm:bob", "buy now!!");
  expect(messages(bob, "dm:mallory")).toEqual(["buy now"]);
  expect(errors(mallory).map((e) => e.relayCode)).toEqual(["request_limit"]);
  expect(deliveries(mallory, "bob").at(-1)).toBe("failed");
  // carol, a contact, is not affected.
  await say(carol, "dm:bob", "still here");
  expect(messages(bob, "dm:carol")).toEqual(["hi bob", "still here"]);
  // Unblocking is accepting.
  await bob.client.acceptContact("mallory");
  await relay.settle();
  await say(mallory, "dm:bob", "sorry");
  expect(messages(bob, "dm:mallory")).toEqual(["buy now", "sorry"]);
});
