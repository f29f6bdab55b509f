/**
 * Story (§10.1): a genuine message is never acknowledged and then dropped.
 * - The relay merely *claims* a new key for alice in presence: bob's sending to alice is blocked
 *   (key_changed), but alice's messages on the session made with her pinned key keep arriving.
 * - Bob's storage fails while a message is processed: it is left un-acknowledged, the relay
 *   keeps it, and it is shown after the next connection.
 */
import { expect, it } from "vitest";
import { generateIdentityKeyPair } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import {
  connect,
  disconnect,
  errors,
  messages,
  online,
  say,
  status,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

async function chatting() {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "first");
  await say(bob, "dm:alice", "reply");
  return { relay, alice, bob };
}

it("a key change claimed in presence blocks sending but not alice's real messages", async () => {
  const { relay, alice, bob } = await chatting();
  const mallory = await generateIdentityKeyPair();
  relay.intercept = (to, f) =>
    to === "bob" && f.t === "presence"
      ? {
          ...f,
          users: f.users.map((u) =>
            u.username === "alice" ? { ...u, identityKey: toB64u(mallory.publicKey) } : u,
          ),
        }
      : f;
  await disconnect(bob);
  await connect(bob);
  expect(status(bob, "dm:alice")).toBe("key_changed");
  await expect(bob.client.sendText("dm:alice", "blocked")).rejects.toMatchObject({
    code: "key_changed",
  });
  // alice writes on the session bound to her pinned key: bob reads it and nothing is lost
  await say(alice, "dm:bob", "still me");
  expect(messages(bob, "dm:alice")).toEqual(["first", "still me"]);
  expect(errors(bob).map((e) => e.code)).not.toContain("key_changed");
  expect(relay.stored("bob")).toBe(0);
});

it("a message whose processing hits a storage failure is not acknowledged and comes back", async () => {
  const { relay, alice, bob } = await chatting();
  const real = bob.store.batch.bind(bob.store);
  let failing = true;
  bob.store.batch = async (ops) => {
    if (failing) throw new Error("QuotaExceededError: disk full");
    return real(ops);
  };
  await say(alice, "dm:bob", "during the outage");
  expect(messages(bob, "dm:alice")).toEqual(["first"]);
  expect(errors(bob).length).toBeGreaterThan(0);
  // the relay still holds it: it was never acknowledged
  expect(relay.stored("bob")).toBe(1);
  failing = false;
  await disconnect(bob);
  await connect(bob);
  expect(messages(bob, "dm:alice")).toEqual(["first", "during the outage"]);
  expect(relay.stored("bob")).toBe(0);
  // the session kept its place: the next message decrypts too
  await say(alice, "dm:bob", "after");
  expect(messages(bob, "dm:alice")).toEqual(["first", "during the outage", "after"]);
});
