/**
 * Story: one over-long paste must not poison the profile (§8.6, §10.1). A text the wire cannot
 * carry is refused before anything is encrypted or stored (the caller keeps it), and an outbox
 * entry that no longer parses is set aside and reported — never blocking the entries behind it,
 * on this connection or any later one.
 */
import { expect, it } from "vitest";
import { MAX_TEXT_CHARS } from "../../shared/core/content";
import { KEYS } from "../../shared/core/store";
import {
  connect,
  disconnect,
  errors,
  messages,
  online,
  restart,
  say,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

async function chatting() {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "first");
  return { relay, alice, bob };
}

function deliveries(u: TestUser, messageId: string): string[] {
  return u.events.flatMap((e) =>
    e.type === "delivery" && e.messageId === messageId ? [e.state] : [],
  );
}

it("a 100 KB paste is refused before encryption; messages queued offline afterwards all go out", async () => {
  const { alice, bob } = await chatting();
  const before = alice.store.dump();
  const paste = "x".repeat(100_000);
  await expect(alice.client.sendText("dm:bob", paste)).rejects.toMatchObject({ code: "too_long" });
  // Nothing was encrypted, queued or stored, and no outgoing message was announced.
  expect(alice.store.dump()).toBe(before);
  expect(messages(alice, "dm:bob", "out")).toEqual(["first"]);

  await disconnect(alice);
  await alice.client.sendText("dm:bob", "queued while offline 1");
  await alice.client.sendText("dm:bob", "queued while offline 2");
  await connect(alice);
  expect(messages(bob, "dm:alice")).toEqual([
    "first",
    "queued while offline 1",
    "queued while offline 2",
  ]);
  expect(await alice.store.list("outbox/")).toEqual([]);
});

it("exactly at the limit is sent; one character more is refused; control characters count as encoded", async () => {
  const { alice, bob } = await chatting();
  await say(alice, "dm:bob", "y".repeat(MAX_TEXT_CHARS));
  expect(messages(bob, "dm:alice").at(-1)?.length).toBe(MAX_TEXT_CHARS);
  await expect(
    alice.client.sendText("dm:bob", "y".repeat(MAX_TEXT_CHARS + 1)),
  ).rejects.toMatchObject({
    code: "too_long",
  });
  // 16,000 control characters are within the character limit but JSON-escape to 96 KB: the
  // body would be over the wire's limit, so they are refused up front too.
  await expect(
    alice.client.sendText("dm:bob", "\u0001".repeat(MAX_TEXT_CHARS)),
  ).rejects.toMatchObject({
    code: "too_long",
  });
  await expect(
    alice.client.sendText("group:broadcast", "z".repeat(MAX_TEXT_CHARS + 1)),
  ).rejects.toMatchObject({
    code: "too_long",
  });
});

it("an outbox entry that no longer parses is set aside and reported; the entries behind it go out", async () => {
  const { alice, bob } = await chatting();
  await disconnect(alice);
  const m1 = await alice.client.sendText("dm:bob", "before the bad entry");
  // An entry no client of this version writes (a body over the wire's limit, as older code
  // wrote for an over-long paste), placed between two good ones.
  const entries = await alice.store.list("outbox/");
  const good = entries[0]?.value as { frame: Record<string, unknown> };
  await alice.store.batch([
    {
      op: "put",
      key: KEYS.outbox(9_000),
      value: {
        frame: { ...good.frame, id: "o9000", body: "A".repeat(200_000) },
        conversationId: "dm:bob",
        messageId: "poisoned",
      },
    },
  ]);
  // Restart the engine on the same store (a reload), then queue one more message.
  await restart(alice);
  const m2 = await alice.client.sendText("dm:bob", "after the bad entry");
  expect(m2).not.toBe(m1);
  await connect(alice);
  expect(messages(bob, "dm:alice")).toEqual([
    "first",
    "before the bad entry",
    "after the bad entry",
  ]);
  expect(deliveries(alice, "poisoned")).toEqual(["failed"]);
  expect(errors(alice).map((e) => e.code)).toEqual(["outbox_entry_invalid"]);
  expect(await alice.store.list("outbox/")).toEqual([]);
  // The next connection starts clean: nothing reported again.
  await disconnect(alice);
  await connect(alice);
  expect(errors(alice).map((e) => e.code)).toEqual(["outbox_entry_invalid"]);
});
