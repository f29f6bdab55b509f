/**
 * Stories: an attachment reference (PROTOCOL.md §8.6.1) travels end to end inside 1:1 and group
 * content, queued like a text while no session exists, and receipted; a member removed from a
 * group never receives the reference (blob id and key) of a file sent after it left, so it can
 * neither find the blob nor decrypt it. (The relay's side — tickets, R2 — is covered in workerd,
 * test/workers/relay-blobs.test.ts, and end to end in test/e2e/attachments.test.ts.)
 */
import { expect, it } from "vitest";
import type { ChatMessage } from "../../shared/core/client-api";
import type { FileRef } from "../../shared/core/content";
import { randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { connect, errors, newUser, online, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;

function ref(name: string): FileRef {
  return {
    blob: toB64u(randomBytes(32)),
    key: toB64u(randomBytes(32)),
    digest: toB64u(randomBytes(32)),
    size: 12_345,
    type: "image/jpeg",
    name,
    thumb: toB64u(randomBytes(600)),
    width: 640,
    height: 480,
  };
}

function received(u: TestUser, conv: string): ChatMessage[] {
  return u.events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .filter((m) => m.conversationId === conv && m.direction === "in");
}

it("1:1: a file reference arrives intact, also when queued before the session, and is receipted", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(alice, bob);
  const dm = await alice.client.startChat("bob");
  const file = ref("holiday.jpg");
  const id = await alice.client.sendFile(dm, file, "the beach");
  await relay.settle();
  const got = received(bob, "dm:alice");
  expect(got.map((m) => ({ text: m.text, file: m.file }))).toEqual([{ text: "the beach", file }]);
  expect(got[0]?.id).toBe(id);
  const deliveries = alice.events.filter(
    (e) => e.type === "delivery" && e.messageId === id && e.state === "delivered",
  );
  expect(deliveries.length).toBe(1);
  for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
});

it("group: one encryption for all members; a member who left never sees a later file's key", async () => {
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
  const before = ref("before.pdf");
  await alice.client.sendFile(G, before);
  await relay.settle();
  expect(received(carol, G).map((m) => m.file)).toEqual([before]);
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob"]);
  const after = ref("after.pdf");
  const groupSends = () => relay.log.filter((x) => x.frame.t === "accepted").length;
  const sendsBefore = groupSends();
  await alice.client.sendFile(G, after);
  await relay.settle();
  // Encrypted once: one group_send accepted for the whole group.
  expect(groupSends() - sendsBefore).toBe(1);
  expect(received(bob, G).map((m) => m.file)).toEqual([before, after]);
  expect(received(carol, G).map((m) => m.file)).toEqual([before]);
  // Nothing carol was sent after leaving holds the blob id or the key, in any form.
  const toCarol = JSON.stringify(relay.log.filter((x) => x.to === "carol"));
  expect(toCarol.includes(after.blob)).toBe(false);
  expect(toCarol.includes(after.key)).toBe(false);
  for (const u of [alice, bob, carol]) expect(errors(u)).toEqual([]);
});

it("a file obeys the conversation's disappearing timer and can reply, like a text", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(alice, bob);
  const dm = await alice.client.startChat("bob");
  const first = await alice.client.sendText(dm, "which photo?");
  await relay.settle();
  const file = ref("this-one.jpg");
  const id = await alice.client.sendFile(dm, file, "", {
    exp: 30_000,
    reply: { id: first, from: "alice" },
  });
  await relay.settle();
  const got = received(bob, "dm:alice").find((m) => m.id === id);
  expect(got?.file).toEqual(file);
  expect(got?.exp).toBe(30_000);
  expect(got?.reply).toEqual({ id: first, from: "alice" });
  const mine = alice.events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .find((m) => m.id === id && m.direction === "out");
  expect(mine?.exp).toBe(30_000);
  for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
});
