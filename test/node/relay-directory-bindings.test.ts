/**
 * The Directory object as the single writer of a hub's name ↔ identity bindings (PROTOCOL.md
 * §4.3; worker/relay/key-directory.ts `claim`; docs/ARCHITECTURE.md "The hub's objects"): its
 * rules on their own, over its own SQLite, and through the real relay in Node when an answer is
 * lost or the hub's copy of the bindings is behind the directory.
 */
import { describe, expect, it } from "vitest";
import { LIMITS, type ServerFrame } from "../../shared/protocol";
import { type Claim, KeyDirectory, prekeyOwner } from "../../worker/relay/key-directory";
import { connect, disconnect, newUser, online } from "../support/clients";
import { NodeRelay } from "../support/node-relay";
import { NodeSql } from "../support/node-sql";

const NOW = 1_700_000_000_000;
const DAY = 24 * 60 * 60 * 1000;
const spk = (id: number) => ({ id, key: `k${id}`, sig: `s${id}` });
const claim = (username: string, identityKey: string, more: Partial<Claim> = {}): Claim => ({
  username,
  identityKey,
  device: "dev1",
  signedPrekey: spk(1),
  pq: null,
  reclaimable: false,
  full: false,
  buckets: [],
  now: NOW,
  ...more,
});

describe("the directory's claim (§4.3)", () => {
  it("refuses another identity's name unless its holder abandoned it, and a second name for an identity", () => {
    const dir = new KeyDirectory(new NodeSql());
    expect(dir.claim(claim("alice", "K1"))).toEqual({ ok: true, registered: true, remaining: 0 });
    expect(dir.claim(claim("alice", "K2"))).toEqual({ ok: false, code: "name_taken" });
    expect(dir.claim(claim("alice2", "K1"))).toEqual({ ok: false, code: "identity_bound" });
    expect(dir.store.identityOf("alice")).toBe("K1");
    // The caller judged alice's holder gone (§4.3 reclaim): the name changes hands.
    expect(dir.claim(claim("alice", "K2", { reclaimable: true }))).toMatchObject({
      ok: true,
      registered: true,
    });
    expect(dir.store.identityOf("alice")).toBe("K2");
    expect(dir.store.nameOf("K1")).toBeNull();
    // K1 is free to take another name now.
    expect(dir.claim(claim("alice2", "K1"))).toMatchObject({ ok: true, registered: true });
  });

  it("a claim made again is judged as the first and is not a second registration", () => {
    const dir = new KeyDirectory(new NodeSql());
    const buckets = [{ key: "198.51.100.7", max: 2 }];
    expect(dir.claim(claim("a", "K1", { buckets }))).toMatchObject({ ok: true, registered: true });
    // The same identity again (a lost answer, a reconnect, a rotated signed prekey).
    expect(
      dir.claim(claim("a", "K1", { buckets, signedPrekey: spk(2), now: NOW + 1 })),
    ).toMatchObject({ ok: true, registered: false });
    expect(dir.store.getSignedPrekey("a")).toEqual(spk(2));
    expect(dir.store.registrationsSince("198.51.100.7", 0)).toBe(1);
    expect(dir.claim(claim("b", "K2", { buckets }))).toMatchObject({ ok: true });
    expect(dir.claim(claim("c", "K3", { buckets }))).toEqual({
      ok: false,
      code: "registration_limited",
    });
    // A refused claim binds nothing; a day later the bucket has room again.
    expect(dir.store.identityOf("c")).toBeNull();
    expect(dir.claim(claim("c", "K3", { buckets, now: NOW + DAY + 1 }))).toMatchObject({
      ok: true,
    });
  });

  it("the hub's users are bounded, and a known name still gets in when it is full", () => {
    const dir = new KeyDirectory(new NodeSql());
    for (let i = 0; i < LIMITS.maxUsersPerHub - 1; i++) dir.store.setBinding(`u${i}`, `K${i}`, NOW);
    expect(dir.claim(claim("last", "L"))).toMatchObject({ ok: true });
    expect(dir.claim(claim("one-more", "M"))).toEqual({ ok: false, code: "limit_reached" });
    expect(dir.claim(claim("u7", "K7"))).toMatchObject({ ok: true, registered: false });
    // The caller's online bound (§4.3 step 6) comes after the name's and the identity's checks.
    expect(dir.claim(claim("u7", "K7", { full: true }))).toEqual({
      ok: false,
      code: "limit_reached",
    });
    expect(dir.claim(claim("u7", "K8", { full: true }))).toEqual({ ok: false, code: "name_taken" });
    expect(dir.claim(claim("new-name", "K7", { full: true }))).toEqual({
      ok: false,
      code: "identity_bound",
    });
  });

  it("a reclaim drops the old identity's entries: its signed prekey, keys and linked devices'", () => {
    const dir = new KeyDirectory(new NodeSql());
    dir.claim(claim("bob", "K1"));
    const phone = "bob.AAAAAAAAAAAAAAAAAAAAAA";
    dir.bind(phone, prekeyOwner("K1", "AAAAAAAAAAAAAAAAAAAAAA"), spk(5), null);
    dir.upload("bob", prekeyOwner("K1", "dev1"), [{ id: 1, key: "otk" }], []);
    dir.claim(claim("bob", "K2", { reclaimable: true, signedPrekey: spk(9) }));
    expect(dir.store.getSignedPrekey(phone)).toBeNull();
    const taken = dir.take("bob", prekeyOwner("K2", "dev1"), "requester", NOW);
    expect(taken.signedPrekey).toEqual(spk(9));
    expect(taken.oneTimePrekey).toBeNull();
    // Another name's device entries are untouched ("bobby." sorts inside "bob." .. "bob/").
    dir.claim(claim("bobby", "K3"));
    dir.bind("bobby.x", prekeyOwner("K3", "x"), spk(3), null);
    dir.claim(claim("bob", "K4", { reclaimable: true }));
    expect(dir.store.getSignedPrekey("bobby.x")).toEqual(spk(3));
  });

  it("a seed takes only what the directory does not hold: what it holds is newer", () => {
    const dir = new KeyDirectory(new NodeSql());
    dir.claim(claim("alice", "K1", { signedPrekey: spk(7) }));
    dir.seed([
      { entry: "alice", identityKey: "OLD", signedPrekey: spk(1), boundAt: 0 },
      { entry: "bob", identityKey: "K2", signedPrekey: spk(2), boundAt: 0 },
      // An identity the directory has bound to another name keeps that name.
      { entry: "carol", identityKey: "K1", signedPrekey: spk(3), boundAt: 0 },
      { entry: "bob.dev", identityKey: null, signedPrekey: spk(4), boundAt: 0 },
    ]);
    expect(dir.store.identityOf("alice")).toBe("K1");
    expect(dir.store.getSignedPrekey("alice")).toEqual(spk(7));
    expect(dir.store.identityOf("bob")).toBe("K2");
    expect(dir.store.identityOf("carol")).toBeNull();
    expect(dir.store.getSignedPrekey("bob.dev")).toEqual(spk(4));
    expect(dir.claim(claim("bob", "K9"))).toEqual({ ok: false, code: "name_taken" });
  });
});

const errorsTo = (relay: NodeRelay, name: string | null) =>
  relay.log.flatMap((x) =>
    x.to === name && x.frame.t === "error" ? [x.frame as Extract<ServerFrame, { t: "error" }>] : [],
  );

describe("a name on its user's route (§4.1)", () => {
  it("its object's claim stores no keys, and from then on only its object may reclaim it", () => {
    const dir = new KeyDirectory(new NodeSql());
    expect(dir.claim(claim("alice", "K1", { routed: true }))).toEqual({
      ok: true,
      registered: true,
      remaining: 0,
    });
    expect(dir.store.getSignedPrekey("alice")).toBeNull();
    // The hub's object judged alice's holder gone: it holds neither her mail nor her connections.
    expect(dir.claim(claim("alice", "K2", { reclaimable: true }))).toEqual({
      ok: false,
      code: "name_taken",
    });
    expect(dir.store.identityOf("alice")).toBe("K1");
    // Her own object judged so: the name changes hands, and stays that object's.
    expect(dir.claim(claim("alice", "K2", { reclaimable: true, routed: true }))).toMatchObject({
      ok: true,
      registered: true,
    });
    expect(dir.store.identityOf("alice")).toBe("K2");
    expect(dir.claim(claim("alice", "K3", { reclaimable: true }))).toEqual({
      ok: false,
      code: "name_taken",
    });
    // A name of the hub's route is still the hub's object's to judge.
    expect(dir.claim(claim("bob", "K4"))).toMatchObject({ ok: true });
    expect(dir.claim(claim("bob", "K5", { reclaimable: true }))).toMatchObject({ ok: true });
  });

  it("a claim whose answer is lost: refused `internal`, and the next auth claims again before its object judges alone", async () => {
    const relay = new NodeRelay("main", "https://parley.test", null, "everyone", true);
    const carol = await newUser(relay, "carol");
    relay.directory.loseAnswers = 1;
    carol.conn = relay.connect(carol.client);
    await relay.settle().catch(() => undefined);
    expect(relay.online("carol")).toBeUndefined();
    expect(relay.directory.keys.store.isRouted("carol")).toBe(true);
    relay.failures.length = 0;
    const calls = relay.directory.calls;
    await disconnect(carol);
    await connect(carol);
    expect(relay.online("carol")).toBeDefined();
    expect(relay.directory.calls).toBe(calls + 1);
    expect(relay.signedPrekey("carol")).not.toBeNull();
    await disconnect(carol);
    await connect(carol);
    expect(relay.directory.calls).toBe(calls + 1);
    // An object whose copy came before it claimed the name as its own (an earlier version kept
    // no mark) claims once more, and the directory marks the name its object's.
    relay.userObject("carol").state.storage.sql.exec("DELETE FROM claimed");
    relay.directory.sql.exec("DELETE FROM routed_names");
    await disconnect(carol);
    await connect(carol);
    expect(relay.directory.calls).toBe(calls + 2);
    expect(relay.directory.keys.store.isRouted("carol")).toBe(true);
  });
});

describe("the hub follows the directory", () => {
  it("a claim whose answer is lost: the client is refused `internal`, and its next auth gets in on the binding the directory made", async () => {
    const relay = new NodeRelay();
    const carol = await newUser(relay, "carol");
    relay.directory.loseAnswers = 1;
    carol.conn = relay.connect(carol.client);
    await relay.settle().catch(() => undefined);
    expect(relay.online("carol")).toBeUndefined();
    expect(relay.user("carol")).toBeNull();
    expect(relay.directory.keys.store.identityOf("carol")).not.toBeNull();
    relay.failures.length = 0;
    await disconnect(carol);
    await connect(carol);
    expect(relay.online("carol")).toBeDefined();
    expect(relay.user("carol")?.identityKey).toBe(relay.directory.keys.store.identityOf("carol"));
    expect(relay.signedPrekey("carol")).not.toBeNull();
  });

  it("a name the directory bound elsewhere is refused, whatever the hub's copy says", async () => {
    const relay = new NodeRelay();
    // The directory holds "dave" for another identity, and that identity's name "erin", neither
    // of which the hub's copy knows (a hub whose write was lost, or another caller).
    relay.directory.keys.claim(claim("dave", "someone-else"));
    const dave = await newUser(relay, "dave");
    dave.conn = relay.connect(dave.client);
    await relay.settle().catch(() => undefined);
    expect(errorsTo(relay, null).map((e) => e.code)).toContain("name_taken");
    expect(relay.online("dave")).toBeUndefined();
    expect(relay.user("dave")).toBeNull();
    // And one identity gets one name: the directory's binding of it counts, not the copy's.
    const [frank] = await online(relay, "frank");
    const key = relay.user("frank")?.identityKey ?? "";
    relay.directory.keys.store.deleteBinding("frank");
    relay.directory.keys.store.setBinding("frank-elsewhere", key, NOW);
    await disconnect(frank as never);
    await connect(frank as never);
    expect(errorsTo(relay, null).map((e) => e.code)).toContain("identity_bound");
    expect(relay.online("frank")).toBeUndefined();
  });
});
