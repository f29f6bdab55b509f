/**
 * Story (found by the soak under load, relay killed and restarted): a message written while the
 * socket is open but before the relay's `welcome` must not be lost. The relay refuses every frame
 * but `auth` before authentication (PROTOCOL.md §4.3) with `not_authenticated`; the engine used
 * to send the outbox frame at once, took that refusal as final, deleted the outbox entry and
 * marked the message failed. Now `send`/`group_send` wait for `welcome` (the outbox is resent
 * then, §10.1), and `not_authenticated` keeps an outbox entry like the other transient refusals.
 */
import { expect, it } from "vitest";
import { connect, disconnect, errors, messages, newUser, say } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

it("a message written before welcome is sent after it, once, and delivered", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(alice, bob);
  await say(alice, "dm:bob", "hi");
  await say(bob, "dm:alice", "hey");
  await disconnect(alice);

  // alice's socket opens, but the relay's hello never reaches her: she cannot authenticate and
  // the relay's connection stays unauthenticated.
  relay.intercept = (to, f) => (to === null && f.t === "hello" ? null : f);
  alice.conn = relay.connect(alice.client);
  await relay.settle();
  const before = relay.clientLog.length;
  await say(alice, "dm:bob", "written while connecting");
  expect(
    relay.clientLog.slice(before).filter((x) => x.frame.t === "send"),
    "no send frame before welcome",
  ).toEqual([]);
  expect(messages(bob, "dm:alice")).toEqual(["hi"]);

  // The next connection authenticates: the outbox goes out after welcome, exactly once.
  relay.intercept = null;
  await disconnect(alice);
  await connect(alice);
  expect(messages(bob, "dm:alice")).toEqual(["hi", "written while connecting"]);
  // Each outbox frame went out once (the message and, possibly, a receipt): no repeats.
  const ids = relay.clientLog
    .slice(before)
    .flatMap((x) => (x.frame.t === "send" ? [x.frame.id] : []));
  expect(ids.length).toBeGreaterThan(0);
  expect(new Set(ids).size).toBe(ids.length);
  expect(errors(alice)).toEqual([]);
  expect(errors(bob)).toEqual([]);
});

it("a not_authenticated refusal of an outbox frame keeps it for the next connection", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(alice, bob);
  await say(alice, "dm:bob", "one");
  // The relay (restarted, say) refuses alice's next send unseen, as if she were not authenticated.
  const conn = alice.conn;
  if (!conn) throw new Error("alice is online");
  const orig = conn.fromClient.bind(conn);
  let refuse = true;
  conn.fromClient = (f) => {
    if (f.t === "send" && refuse) {
      refuse = false;
      relay.push(conn, {
        v: 1,
        t: "error",
        id: f.id,
        code: "not_authenticated",
        message: "Authenticate first.",
      });
      return;
    }
    orig(f);
  };
  await say(alice, "dm:bob", "two");
  expect(messages(bob, "dm:alice")).toEqual(["one"]);
  await disconnect(alice);
  await connect(alice);
  // The entry stayed in the outbox: resent on the next connection, delivered once.
  expect(messages(bob, "dm:alice")).toEqual(["one", "two"]);
  expect(errors(alice).map((e) => e.code)).toEqual(["relay_error"]);
});
