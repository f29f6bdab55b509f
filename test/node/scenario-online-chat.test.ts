/** Story: alice and bob are both online; alice opens a chat; they talk both ways. */
import { expect, it } from "vitest";
import { errors, lines, messages, online, say, status } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

it("online handshake, secure status, chat both ways, delivery receipts", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = await online(relay, "alice", "bob");
  if (!alice || !bob) throw new Error("setup");
  await alice.client.startChat("bob");
  await relay.settle();
  expect(status(alice, "dm:bob")).toBe("secure");
  expect(status(bob, "dm:alice")).toBe("secure");
  // The handshake went through hs_init / hs_resp / hs_confirm bodies, never plaintext.
  await say(alice, "dm:bob", "hello bob");
  await say(bob, "dm:alice", "hi alice");
  await say(alice, "dm:bob", "how are you?");
  await say(bob, "dm:alice", "fine");
  expect(messages(bob, "dm:alice")).toEqual(["hello bob", "how are you?"]);
  expect(messages(alice, "dm:bob")).toEqual(["hi alice", "fine"]);
  const delivered = alice.events.filter((e) => e.type === "delivery" && e.state === "delivered");
  expect(delivered.length).toBe(2);
  expect(lines(bob, "dm:alice").some((l) => l.kind === "session_started")).toBe(true);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
  expect(relay.failures).toEqual([]);
  const bodies = relay.log.flatMap((x) =>
    x.frame.t === "deliver" ? [JSON.stringify(x.frame)] : [],
  );
  for (const b of bodies) expect(b).not.toMatch(/hello bob|hi alice|how are you|fine/);
  expect(await alice.client.safetyNumber("bob")).toBe(await bob.client.safetyNumber("alice"));
});
