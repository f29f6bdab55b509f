/**
 * Relay errors reach the UI typed (PROTOCOL.md §6, §11.1): an `error` event for a relay refusal
 * carries the relay's code as `relayCode` (never only inside the text), routed through the
 * in-flight registry to what it answers — a bundle request, a message, a join — with that
 * conversation, and with the right consequence (a final refusal fails the message and drops its
 * outbox entry; a transient one keeps it for the next connection).
 */
import { expect, it } from "vitest";
import { generateIdentityKeyPair } from "../../shared/crypto";
import type { ServerFrame } from "../../shared/protocol";
import { ERRORS } from "../../shared/protocol";
import {
  connect,
  disconnect,
  errors,
  messages,
  newUser,
  online,
  say,
  type TestUser,
  timers,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

function deliveries(u: TestUser, messageId: string): string[] {
  return u.events.flatMap((e) =>
    e.type === "delivery" && e.messageId === messageId ? [e.state] : [],
  );
}

/** Answer the next client frame of type `t` with `code` instead of `accepted`. */
function refuseNext(relay: NodeRelay, to: string, code: keyof typeof ERRORS) {
  let done = false;
  relay.intercept = (who, f): ServerFrame | null => {
    if (done || who !== to || f.t !== "accepted") return f;
    done = true;
    return { v: 1, t: "error", id: f.id, code, message: ERRORS[code] };
  };
}

it("name_taken at auth: relayCode, no conversation", async () => {
  const relay = new NodeRelay();
  await online(relay, "alice");
  const impostor = await newUser(relay, "alice", { identity: await generateIdentityKeyPair() });
  await connect(impostor);
  expect(errors(impostor)).toContainEqual({
    type: "error",
    code: "relay_error",
    relayCode: "name_taken",
    message: `name_taken: ${ERRORS.name_taken}`,
  });
});

it("unknown_user answering a bundle request: relayCode on that conversation, which stops waiting", async () => {
  const relay = new NodeRelay();
  const [alice] = (await online(relay, "alice")) as [TestUser];
  await alice.client.startChat("nobody");
  await relay.settle();
  expect(errors(alice)).toEqual([
    expect.objectContaining({
      code: "relay_error",
      relayCode: "unknown_user",
      conversationId: "dm:nobody",
    }),
  ]);
  expect(((await alice.store.get("dm/nobody")) as { pending: unknown }).pending).toBeNull();
});

it("a final refusal of a message fails it and drops its outbox entry; a transient one keeps it", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  // bob away, so no end-to-end receipt follows what the (rewritten) relay answer says.
  await disconnect(bob);
  refuseNext(relay, "alice", "mailbox_full");
  const m1 = await alice.client.sendText("dm:bob", "refused");
  await relay.settle();
  expect(deliveries(alice, m1)).toEqual(["failed"]);
  expect(errors(alice).at(-1)).toMatchObject({
    code: "relay_error",
    relayCode: "mailbox_full",
    conversationId: "dm:bob",
  });
  expect(await alice.store.list("outbox/")).toEqual([]);

  refuseNext(relay, "alice", "rate_limited");
  const m2 = await alice.client.sendText("dm:bob", "later");
  await relay.settle();
  expect(errors(alice).at(-1)).toMatchObject({ relayCode: "rate_limited" });
  expect(deliveries(alice, m2)).toEqual([]);
  expect(await alice.store.list("outbox/")).toHaveLength(1);
});

it("a refused join: relayCode on the group, which is no longer shown joining", async () => {
  const relay = new NodeRelay();
  const [alice] = (await online(relay, "alice")) as [TestUser];
  refuseNext(relay, "alice", "group_full");
  await alice.client.joinGroup("broadcast");
  await relay.settle();
  expect(errors(alice)).toContainEqual(
    expect.objectContaining({ relayCode: "group_full", conversationId: "group:broadcast" }),
  );
  expect(alice.client.conversations().find((c) => c.id === "group:broadcast")).toMatchObject({
    joining: false,
  });
  expect(await alice.store.list("flight/")).toEqual([]);
});

it("a commit refused for want of room is not rebuilt at once: it waits for a doubling retry timer", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.joinGroup("broadcast");
  await relay.settle();
  timers.fire();
  await relay.settle();
  // The relay answers the next two commits `mailbox_full` without taking them (a full mailbox).
  let refusals = 0;
  const refuseCommits = () => {
    for (const u of [alice, bob]) {
      const conn = u.conn;
      if (conn === null) throw new Error(`${u.name} offline`);
      const forward = conn.fromClient.bind(conn);
      conn.fromClient = (f) => {
        if (f.t !== "commit" || refusals >= 2) return forward(f);
        refusals++;
        relay.push(conn, {
          v: 1,
          t: "error",
          id: f.id,
          code: "mailbox_full",
          message: ERRORS.mailbox_full,
        });
      };
    }
  };
  refuseCommits();
  const reported = () =>
    [...errors(alice), ...errors(bob)].filter((e) => e.relayCode === "mailbox_full");
  const waits = () => timers.pending.filter((t) => !t.cancelled).map((t) => t.ms);
  await bob.client.joinGroup("broadcast");
  await relay.settle();
  expect(refusals).toBe(1);
  expect(reported()).toHaveLength(1);
  expect(waits()).toContain(5_000);
  // More inputs (a message, a reconnect) do not rebuild it before the timer.
  await say(alice, "group:broadcast", "while held");
  await disconnect(alice, bob);
  await connect(alice, bob);
  refuseCommits();
  await relay.settle();
  expect(refusals).toBe(1);
  timers.fire();
  await relay.settle();
  // The second refusal doubles the wait and is not reported again.
  expect(refusals).toBe(2);
  expect(waits()).toContain(10_000);
  expect(reported()).toHaveLength(1);
  timers.fire();
  await relay.settle();
  expect(relay.group("broadcast")?.members).toEqual(["alice", "bob"]);
  await say(alice, "group:broadcast", "room again");
  expect(messages(bob, "group:broadcast")).toContain("room again");
});
