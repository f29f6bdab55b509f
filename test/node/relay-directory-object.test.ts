/**
 * The hub's key directory as its own object (worker/relay/key-directory.ts; docs/ARCHITECTURE.md
 * "The hub's objects") through the real relay in Node: the Directory object restarts, becomes
 * unreachable, or holds keys of a name's earlier identity — and the hub's answers stay right.
 */
import { expect, it } from "vitest";
import { LIMITS, type ServerFrame } from "../../shared/protocol";
import { connect, disconnect, newUser, online, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

function conn(u: TestUser) {
  if (u.conn === null) throw new Error(`${u.name} is offline`);
  return u.conn;
}

let n = 0;
/** `from` fetches `username`'s bundle; the relay's answer (a bundle or an error). */
async function fetchBundle(relay: NodeRelay, from: TestUser, username: string) {
  const id = `f${++n}`;
  conn(from).fromClient({ v: 1, t: "fetch_bundle", id, username });
  await relay.settle().catch(() => undefined);
  const f = relay.log.find(
    (x) =>
      (x.frame.t === "bundle" || x.frame.t === "error") && "id" in x.frame && x.frame.id === id,
  )?.frame;
  if (f === undefined) throw new Error("no answer");
  return f;
}

const welcomesTo = (relay: NodeRelay, name: string) =>
  relay.log.flatMap((x) =>
    x.to === name && x.frame.t === "welcome"
      ? [x.frame as Extract<ServerFrame, { t: "welcome" }>]
      : [],
  );

/** Both routes: the hub's (keys in the directory object) and users' (keys in each user's object). */
const ROUTES = [
  ["the hub's route", false],
  ["users' routes", true],
] as const;
const relayOn = (routed: boolean) =>
  new NodeRelay("main", "https://parley.test", null, "everyone", routed);

it.each(ROUTES)(
  "%s: the key store restarting keeps every one-time prekey and each requester's quota",
  async (_, routed) => {
    const relay = relayOn(routed);
    const [bob, eve] = (await online(relay, "bob", "eve")) as [TestUser, TestUser];
    const stock = relay.oneTimePrekeys("bob");
    expect(stock).toBeGreaterThan(LIMITS.oneTimePrekeyBurstPerRequester);
    for (let i = 0; i < LIMITS.oneTimePrekeyBurstPerRequester; i++) {
      const b = await fetchBundle(relay, eve, "bob");
      expect(b.t === "bundle" && b.oneTimePrekey !== null).toBe(true);
    }
    relay.directory.restart();
    const after = await fetchBundle(relay, eve, "bob");
    expect(after.t === "bundle" && after.oneTimePrekey).toBeNull();
    expect(relay.oneTimePrekeys("bob")).toBe(stock - LIMITS.oneTimePrekeyBurstPerRequester);
    // Both objects restart: the hub's memory goes too; the quota still holds, bob still has keys.
    await relay.hibernate();
    relay.directory.restart();
    const again = await fetchBundle(relay, eve, "bob");
    expect(again.t === "bundle" && again.oneTimePrekey).toBeNull();
    expect(again.t === "bundle" && again.identityKey).toBe(relay.user("bob")?.identityKey);
    void bob;
  },
);

it("an unreachable directory: a bundle fetch is answered `internal` and the connection goes on; an auth fails with 4002 and the next one gets in", async () => {
  const relay = new NodeRelay();
  const [, eve] = (await online(relay, "bob", "eve")) as [TestUser, TestUser];
  relay.directory.fail = true;
  const failed = await fetchBundle(relay, eve, "bob");
  expect(failed).toMatchObject({ t: "error", code: "internal" });
  expect(relay.failures).toEqual(["relay answered `internal`"]);
  relay.failures.length = 0;
  // The socket is still open and authenticated: the next fetch, with the directory back, works.
  relay.directory.fail = false;
  const ok = await fetchBundle(relay, eve, "bob");
  expect(ok.t).toBe("bundle");

  // carol authenticates while the directory is unreachable: refused as any §4.3 failure, with
  // nothing half-done on a socket (no welcome, not online), and she gets in once it is back.
  relay.directory.fail = true;
  const carol = await newUser(relay, "carol");
  carol.conn = relay.connect(carol.client);
  await relay.settle().catch(() => undefined);
  expect(welcomesTo(relay, "carol")).toEqual([]);
  expect(relay.online("carol")).toBeUndefined();
  const refused = relay.log.filter((x) => x.frame.t === "error" && x.frame.code === "internal");
  expect(refused.length).toBe(2);
  relay.failures.length = 0;
  relay.directory.fail = false;
  await disconnect(carol);
  await connect(carol);
  expect(welcomesTo(relay, "carol")).toHaveLength(1);
  expect(relay.online("carol")).toBeDefined();
  await relay.settle();
});

it.each(ROUTES)(
  "%s: a name reclaimed by another identity never hands out the old identity's one-time prekeys",
  async (_, routed) => {
    const relay = relayOn(routed);
    const [bob, eve] = (await online(relay, "bob", "eve")) as [TestUser, TestUser];
    const oldKeys = new Set(
      relay.clientLog.flatMap((x) =>
        x.from === "bob" && x.frame.t === "upload_prekeys"
          ? x.frame.oneTimePrekeys.map((k) => k.key)
          : [],
      ),
    );
    expect(oldKeys.size).toBeGreaterThan(0);
    const oldIdentity = relay.user("bob")?.identityKey;
    await disconnect(bob);
    // bob's identity is idle past the reclaim period with nothing undelivered (§4.3).
    relay.clock += LIMITS.usernameIdleReclaimMs + 1000;
    const newBob = await newUser(relay, "bob");
    await connect(newBob);
    expect(relay.user("bob")?.identityKey).not.toBe(oldIdentity);
    // The welcome counted none of the old keys, so the new identity uploaded its own.
    expect(welcomesTo(relay, "bob").at(-1)?.oneTimePrekeysRemaining).toBe(0);
    for (let i = 0; i < LIMITS.oneTimePrekeyBurstPerRequester; i++) {
      const b = await fetchBundle(relay, eve, "bob");
      if (b.t !== "bundle") throw new Error("no bundle");
      expect(b.identityKey).toBe(relay.user("bob")?.identityKey);
      expect(b.oneTimePrekey).not.toBeNull();
      expect(oldKeys.has(b.oneTimePrekey?.key ?? "")).toBe(false);
    }
  },
);

it("users' routes: after a user's first authentication, its reconnects, its uploads and others' fetches of its bundle never reach the directory", async () => {
  const relay = relayOn(true);
  const [bob, eve] = (await online(relay, "bob", "eve")) as [TestUser, TestUser];
  // The directory bound the names and keeps no keys of theirs: bob's own object does.
  expect(relay.directory.keys.store.identityOf("bob")).toBe(relay.user("bob")?.identityKey);
  expect(relay.directory.keys.store.getSignedPrekey("bob")).toBeNull();
  expect(relay.directory.keys.store.countOneTimePrekeys("bob")).toBe(0);
  const stock = relay.oneTimePrekeys("bob");
  expect(stock).toBeGreaterThan(0);
  const calls = relay.directory.calls;
  // With the directory unreachable, nothing below notices.
  relay.directory.fail = true;
  await disconnect(bob);
  await connect(bob);
  expect(relay.online("bob")).toBeDefined();
  const b = await fetchBundle(relay, eve, "bob");
  expect(b.t === "bundle" && b.oneTimePrekey !== null).toBe(true);
  expect(relay.oneTimePrekeys("bob")).toBe(stock - 1);
  // bob's keys run out; at his next welcome he uploads new ones, into his own object.
  relay.takeOneTimePrekeys("bob");
  await disconnect(bob);
  await connect(bob);
  expect(welcomesTo(relay, "bob").at(-1)?.oneTimePrekeysRemaining).toBe(0);
  expect(relay.oneTimePrekeys("bob")).toBeGreaterThan(0);
  expect(relay.failures).toEqual([]);
  expect(relay.directory.calls).toBe(calls);
  // A name the directory has not bound is still its to judge: a newcomer waits for it.
  const carol = await newUser(relay, "carol");
  carol.conn = relay.connect(carol.client);
  await relay.settle().catch(() => undefined);
  expect(relay.online("carol")).toBeUndefined();
  relay.failures.length = 0;
  relay.directory.fail = false;
  await disconnect(carol);
  await connect(carol);
  expect(relay.online("carol")).toBeDefined();
});

it("each object counts its own events: bundle fetches and uploads reach the directory, not only the hub", async () => {
  const relay = new NodeRelay();
  const [, eve] = (await online(relay, "bob", "eve")) as [TestUser, TestUser];
  const before = relay.directory.calls;
  await fetchBundle(relay, eve, "bob");
  expect(relay.directory.calls).toBe(before + 1);
});
