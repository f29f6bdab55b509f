/**
 * Ending a chat keeps the replay memory (PROTOCOL.md §8.2.3): a relay that replays bob's old
 * hs_init from alice after bob ended the chat gets no answer — before, the record (and with it
 * the list of answered inits) was deleted, and the old init was answered as a new handshake.
 */
import { expect, it } from "vitest";
import type { ServerFrame } from "../../shared/protocol";
import { online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

it("a replayed hs_init after endChat is not answered", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "hello");
  // the first direct item bob received: alice's online handshake init
  const init = relay.log.find(
    (x) => x.to === "bob" && x.frame.t === "deliver" && x.frame.item.kind === "direct",
  )?.frame as Extract<ServerFrame, { t: "deliver" }> | undefined;
  if (init === undefined) throw new Error("bob received alice's init");
  await bob.client.endChat("alice");
  await relay.settle();
  const mark = relay.clientLog.length;
  const conn = relay.online("bob");
  if (conn === undefined) throw new Error("bob is online");
  relay.push(conn, { ...init, mid: String(Number(init.mid) + 1000) });
  await relay.settle();
  const answered = relay.clientLog
    .slice(mark)
    .filter((x) => x.from === "bob" && x.frame.t === "send");
  expect(answered).toEqual([]);
});
