/**
 * The hub's objects (docs/ARCHITECTURE.md "The hub's objects"): the key directory and each group
 * are their own Durable Objects, reachable only from the hub's object. No route of the Worker
 * reaches them; what the directory hands out is always for the identity and device the hub has
 * bound to the name, and a group object acts only for the user the hub names.
 */
import { env, evictDurableObject, listDurableObjectIds, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import { emptyGroup } from "../../worker/relay/groups";
import { prekeyOwner } from "../../worker/relay/key-directory";
import { BASE, freshHub, newKeys, ORIGIN, oneTimePrekeys, TestClient } from "./support/client";

const directoryIds = async () =>
  new Set((await listDurableObjectIds(env.DIRECTORY)).map((id) => id.toString()));

describe("the Directory object", () => {
  it("no route of the Worker reaches it: only an authentication on the hub's object does", async () => {
    const hub = freshHub();
    const dirId = env.DIRECTORY.idFromName(`${hub}/dir`).toString();
    const before = await directoryIds();
    expect(before.has(dirId)).toBe(false);
    const ws = { Upgrade: "websocket", Origin: ORIGIN };
    const probes: Array<[string, RequestInit]> = [
      [`/dir`, {}],
      [`/directory`, {}],
      [`/${hub}/dir`, {}],
      [`/u/${hub}`, { method: "POST", body: "{}" }],
      [`/g/${hub}`, { method: "POST", body: "{}" }],
      // Hub names cannot carry the object suffix: the Worker refuses them before any object.
      [`/ws?hub=${hub}/dir`, { headers: ws }],
      [`/ws?hub=${encodeURIComponent(`${hub}/dir`)}`, { headers: ws }],
      // A blob ticket naming the directory's id: ids are bound to their namespace, so the blob
      // route cannot turn it into a stub of any object but a blob ledger.
      [
        `/blob/${"a".repeat(43)}`,
        {
          method: "PUT",
          body: "x",
          headers: {
            "Content-Length": "1",
            Authorization: `Ticket ${dirId}.${"A".repeat(43)}`,
          },
        },
      ],
    ];
    for (const [path, init] of probes) {
      const res = await SELF.fetch(`${BASE}${path}`, init);
      expect(res.status, path).not.toBe(101);
      expect(res.status, path).not.toBe(500);
      await res.body?.cancel();
    }
    expect(await directoryIds()).toEqual(before);
    // The probe can see the object once the hub's object has called it.
    const { c } = await TestClient.connect(hub, "alice");
    c.close();
    expect(await directoryIds()).toEqual(new Set([...before, dirId]));
  });

  it("hands a user's keys out only for the identity and device the hub bound: a call for another owner gets none of them", async () => {
    const dir = env.DIRECTORY.get(env.DIRECTORY.idFromName(`${freshHub()}/dir`));
    const alice = prekeyOwner((await newKeys()).identityKey, "d1");
    const mallory = prekeyOwner((await newKeys()).identityKey, "d1");
    const keys = oneTimePrekeys(1, 3);
    const spk = { id: 1, key: "k", sig: "s" };
    expect(await dir.bind("alice", alice, spk, null)).toBe(0);
    expect(await dir.upload("alice", alice, keys, [], null)).toEqual({ ok: true });
    expect(await dir.remaining("alice", alice)).toBe(3);
    // Asked for another owner (the name rebound, or a hub bug): none of alice's keys, signed
    // prekey included, and they are dropped, so they cannot come back with the other identity
    // key later either.
    expect(await dir.remaining("alice", mallory)).toBe(0);
    const taken = await dir.take("alice", mallory, "requester", Date.now());
    expect(taken.signedPrekey).toBeNull();
    expect(taken.oneTimePrekey).toBeNull();
    expect(taken.remaining).toBe(0);
    const again = await dir.take("alice", alice, "requester", Date.now());
    expect(again.signedPrekey).toBeNull();
    expect(again.oneTimePrekey).toBeNull();
    // Another user's entry is untouched by any of it.
    expect(await dir.upload("bob", alice, oneTimePrekeys(1, 2), [], spk)).toEqual({ ok: true });
    const bob = await dir.take("bob", alice, "r", Date.now());
    expect(bob.signedPrekey).toEqual(spk);
    expect(bob.oneTimePrekey?.key).toBeDefined();
  });

  it("a device that claims the identity gets a welcome counting none of the old device's one-time prekeys", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const { c: first } = await TestClient.connect(hub, "bob", keys);
    first.send({ v: 1, t: "upload_prekeys", id: "u1", oneTimePrekeys: oneTimePrekeys(1, 5) });
    await first.next("accepted", (f) => f.id === "u1");
    const second = await TestClient.open(hub);
    second.send(
      await second.authFrame("bob", keys, {
        device: toB64u(new Uint8Array(16).fill(9)),
        claim: true,
      }),
    );
    const welcome = await second.next("welcome");
    expect(welcome.oneTimePrekeysRemaining).toBe(0);
    const { c: alice } = await TestClient.connect(hub, "alice");
    alice.send({ v: 1, t: "fetch_bundle", id: "f", username: "bob" });
    expect((await alice.next("bundle", (f) => f.id === "f")).oneTimePrekey).toBeNull();
    for (const c of [first, second, alice]) c.close();
  });
});

const groupIds = async () =>
  new Set((await listDurableObjectIds(env.GROUP)).map((id) => id.toString()));

describe("the Group object", () => {
  it("no route of the Worker reaches it: only a join on the hub's object does", async () => {
    const hub = freshHub();
    const gid = env.GROUP.idFromName(`${hub}/g/team`).toString();
    const before = await groupIds();
    expect(before.has(gid)).toBe(false);
    const ws = { Upgrade: "websocket", Origin: ORIGIN };
    const probes: Array<[string, RequestInit]> = [
      [`/g/team`, {}],
      [`/${hub}/g/team`, {}],
      [`/g/${hub}/team`, { method: "POST", body: "{}" }],
      [`/group?hub=${hub}&group=team`, {}],
      // Hub names cannot carry the object suffix: the Worker refuses them before any object.
      [`/ws?hub=${hub}/g/team`, { headers: ws }],
      [`/ws?hub=${encodeURIComponent(`${hub}/g/team`)}`, { headers: ws }],
      // A blob ticket naming the group object's id: ids are bound to their namespace.
      [
        `/blob/${"a".repeat(43)}`,
        {
          method: "PUT",
          body: "x",
          headers: { "Content-Length": "1", Authorization: `Ticket ${gid}.${"A".repeat(43)}` },
        },
      ],
    ];
    for (const [path, init] of probes) {
      const res = await SELF.fetch(`${BASE}${path}`, init);
      expect(res.status, path).not.toBe(101);
      expect(res.status, path).not.toBe(500);
      await res.body?.cancel();
    }
    expect(await groupIds()).toEqual(before);
    const { c } = await TestClient.connect(hub, "alice");
    c.send({ v: 1, t: "join", id: "j", group: "team" });
    await c.next("accepted", (f) => f.id === "j");
    c.close();
    expect(await groupIds()).toEqual(new Set([...before, gid]));
  });

  it("holds the roster the hub's calls made, across its own eviction; a transition the hub never confirmed is undone", async () => {
    const hub = freshHub();
    const { c } = await TestClient.connect(hub, "alice");
    c.send({ v: 1, t: "join", id: "j", group: "team" });
    await c.next("accepted", (f) => f.id === "j");
    const stub = env.GROUP.get(env.GROUP.idFromName(`${hub}/g/team`));
    await evictDurableObject(stub);
    // The hub holds seq 1 (alice joining); an RPC naming it sees the same record.
    const same = await stub.apply(1, { t: "join", user: "alice", maxGroupSize: 10 });
    expect(same).toMatchObject({
      t: "ok",
      seq: 1,
      changed: false,
      group: { pendingJoins: ["alice"] },
    });
    // A transition the hub never writes (its next call still names 1) is undone.
    expect(await stub.apply(1, { t: "join", user: "mallory", maxGroupSize: 10 })).toMatchObject({
      t: "ok",
      seq: 2,
    });
    c.send({ v: 1, t: "join", id: "j2", group: "team" });
    await c.next("accepted", (f) => f.id === "j2");
    const bob = (await TestClient.connect(hub, "bob")).c;
    bob.send({ v: 1, t: "join", id: "jb", group: "team" });
    const g = await bob.next("group", (f) => f.state.group === "team");
    expect(g.state.pendingJoins.map((m) => m.username)).toEqual(["alice", "bob"]);
    const fresh = env.GROUP.get(env.GROUP.idFromName(`${freshHub()}/g/x`));
    expect(await fresh.apply(0, { t: "leave", user: "alice" })).toEqual({ t: "resync" });
    await fresh.seed(0, emptyGroup("x"));
    expect(await fresh.apply(0, { t: "leave", user: "alice" })).toMatchObject({
      t: "refused",
      code: "not_member",
    });
    for (const x of [c, bob]) x.close();
  });
});
