/**
 * Groups on users' routes (docs/ARCHITECTURE.md "Groups on users' routes"): a member's object
 * forwards its user's group frames to the group's home, `idFromName(hub + "/gh/" + group)`, which
 * runs the hub's group steps; what the home sends a member (states, commits, group messages) goes
 * to the member's object, which stores it in its own mailbox and delivers it from there.
 */
import { evictDurableObject, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import {
  BASE,
  body,
  CORE,
  commitFrame,
  freshHub,
  type Keys,
  newKeys,
  ORIGIN,
  TestClient,
  wrapFor,
} from "./support/client";
import { countTable, relaySql, stubFor, until } from "./support/relay-store";

const routed = { routed: true };
const userObject = (hub: string, user: string) => `${hub}/u/${user}`;
const home = (hub: string, group: string) => `${hub}/gh/${group}`;

/** alice founds `group` and brings bob in (epoch 2), both on their users' routes (or the hub's). */
async function team(hub: string, group = "team", opts = routed, keys?: { alice: Keys; bob: Keys }) {
  const { c: alice } = await TestClient.connect(hub, "alice", keys?.alice, opts);
  const { c: bob } = await TestClient.connect(hub, "bob", keys?.bob, opts);
  alice.send({ v: 1, t: "join", id: "ja", group });
  await alice.next("accepted", (f) => f.id === "ja");
  alice.send(commitFrame("ca", group, 0, ["alice"]));
  await alice.next("accepted", (f) => f.id === "ca");
  await alice.next("deliver", (f) => f.item.kind === "commit");
  bob.send({ v: 1, t: "join", id: "jb", group });
  await bob.next("accepted", (f) => f.id === "jb");
  await alice.next("group", (f) => f.state.pendingJoins.some((m) => m.username === "bob"));
  alice.send(commitFrame("cb", group, 1, ["alice", "bob"]));
  await alice.next("accepted", (f) => f.id === "cb");
  const wrap = await bob.next("deliver", (f) => f.item.kind === "commit");
  bob.send({ v: 1, t: "ack", mids: [wrap.mid] });
  await bob.next("group", (f) => f.state.epoch === 2);
  return { alice, bob, wrap };
}

describe("groups on users' routes: a home per group, mailboxes in members' objects", () => {
  it("a commit and a group message reach the member from its own object; the home keeps none once taken", async () => {
    const hub = freshHub("gh");
    const { alice, bob, wrap } = await team(hub);
    expect(wrap.item).toEqual({
      kind: "commit",
      group: "team",
      epoch: 2,
      core: CORE,
      wrap: wrapFor("bob"),
    });
    expect(wrap.from).toBe("alice");
    alice.send({ v: 1, t: "group_send", id: "m1", group: "team", epoch: 2, body: body(7) });
    await alice.next("accepted", (f) => f.id === "m1");
    const d = await bob.next("deliver", (f) => f.item.kind === "group");
    expect(d.item).toEqual({ kind: "group", group: "team", epoch: 2, body: body(7) });
    expect(d.from).toBe("alice");
    expect(d.fromKey).toBe(alice.keys?.identityKey);
    // The message becomes bob's object's row (sent to bob before it is stored, and not
    // acknowledged within writeBehindMs, §7.3 "Write-behind"); the home's copy goes once bob's
    // object holds it.
    await until(
      async () => (await countTable(userObject(hub, "bob"), "group_log")) === 1,
      "stored in bob's object",
    );
    await until(
      async () => (await countTable(home(hub, "team"), "group_log")) === 0,
      "home's copy",
    );
    expect(await countTable(userObject(hub, "alice"), "group_log")).toBe(0);
    // The hub's own object is not involved.
    expect(await countTable(hub, "users")).toBe(0);
    expect(await countTable(home(hub, "team"), "users")).toBe(2);
    bob.send({ v: 1, t: "ack", mids: [d.mid] });
    await until(
      async () => (await countTable(userObject(hub, "bob"), "group_log")) === 0,
      "bob's ack",
    );
    // A connection's welcome lists the group as its object last heard of it.
    bob.close();
    const again = await TestClient.connect(hub, "bob", bob.keys ?? undefined, routed);
    expect(again.welcome.memberOf).toEqual(["team"]);
    expect(again.welcome.groups.map((g) => [g.group, g.epoch])).toEqual([["team", 2]]);
    again.c.close();
    alice.close();
  });

  it("a message to an offline member waits in its object, across that object's and the home's eviction", async () => {
    const hub = freshHub("gh");
    const { alice, bob } = await team(hub);
    const keys = bob.keys;
    bob.close();
    alice.send({ v: 1, t: "group_send", id: "m", group: "team", epoch: 2, body: body(3) });
    await alice.next("accepted", (f) => f.id === "m");
    await until(
      async () => (await countTable(userObject(hub, "bob"), "group_log")) === 1,
      "stored in bob's object",
    );
    await evictDurableObject(stubFor(userObject(hub, "bob")));
    await evictDurableObject(stubFor(home(hub, "team")));
    const { c } = await TestClient.connect(hub, "bob", keys ?? undefined, routed);
    const d = await c.next("deliver", (f) => f.item.kind === "group");
    expect(d.item).toMatchObject({ group: "team", body: body(3) });
    c.close();
    alice.close();
  });

  it("members see each other online through their group; a stranger sees neither", async () => {
    const hub = freshHub("gh");
    const { alice, bob } = await team(hub);
    const seen = await alice.next("presence_delta", (f) =>
      f.online.some((u) => u.username === "bob"),
    );
    expect(seen.online.find((u) => u.username === "bob")?.identityKey).toBe(bob.keys?.identityKey);
    const { c: eve, welcome } = await TestClient.connect(hub, "eve", undefined, routed);
    expect(welcome.memberOf ?? []).toEqual([]);
    const snapshot = await eve.next("presence");
    expect(snapshot.users.map((u) => u.username)).toEqual(["eve"]);
    // bob leaves: alice's object is told, and bob's going offline reaches her no more.
    bob.send({ v: 1, t: "leave", id: "l", group: "team" });
    await bob.next("accepted", (f) => f.id === "l");
    alice.send(commitFrame("c3", "team", 2, ["alice"]));
    await alice.next("accepted", (f) => f.id === "c3");
    await alice.next("presence_delta", (f) => f.offline.includes("bob"));
    for (const c of [alice, bob, eve]) c.close();
  });

  it("a member's object bounds its user's groups (maxGroupsPerUser), whatever the homes say", async () => {
    const hub = freshHub("gh");
    const { c } = await TestClient.connect(hub, "carol", undefined, routed);
    for (let i = 0; i < LIMITS.maxGroupsPerUser; i++) {
      c.send({ v: 1, t: "join", id: `j${i}`, group: `g${i}` });
      await c.next("accepted", (f) => f.id === `j${i}`);
    }
    c.send({ v: 1, t: "join", id: "over", group: "one-more" });
    expect((await c.error("over")).code).toBe("limit_reached");
    // The refused join never reached a home.
    expect(await countTable(home(hub, "one-more"), "users")).toBe(0);
    // A group the user is in already is no new group.
    c.send({ v: 1, t: "join", id: "again", group: "g0" });
    await c.next("accepted", (f) => f.id === "again");
    c.close();
  });

  it("a group of the hub's route moves to its home with its first member who moves; one still there is told wrong_route and finds it on its own route", async () => {
    const hub = freshHub("gm");
    const keys = { alice: await newKeys(), bob: await newKeys() };
    const { alice: a0, bob: b0 } = await team(hub, "team", { routed: false }, keys);
    a0.close();
    const { c: alice, welcome } = await TestClient.connect(hub, "alice", keys.alice, routed);
    expect(welcome.groups.map((g) => [g.group, g.epoch])).toEqual([["team", 2]]);
    expect(await countTable(hub, "moved_groups")).toBe(1);
    expect(await countTable(home(hub, "team"), "group_members")).toBe(2);
    alice.send({ v: 1, t: "group_send", id: "m1", group: "team", epoch: 2, body: body(1) });
    await alice.next("accepted", (f) => f.id === "m1");
    // bob is still on the hub's route: the group is not served there any more.
    b0.send({ v: 1, t: "group_send", id: "m2", group: "team", epoch: 2, body: body(2) });
    const refused = await b0.next("error", (f) => f.id === "m2");
    expect(refused.code).toBe("wrong_route");
    b0.close();
    const { c: bob, welcome: bw } = await TestClient.connect(hub, "bob", keys.bob, routed);
    expect(bw.groups.map((g) => g.group)).toEqual(["team"]);
    const d = await bob.next("deliver", (f) => f.item.kind === "group");
    expect(d.item).toEqual({ kind: "group", group: "team", epoch: 2, body: body(1) });
    expect(d.from).toBe("alice");
    bob.send({ v: 1, t: "group_send", id: "m3", group: "team", epoch: 2, body: body(3) });
    await bob.next("accepted", (f) => f.id === "m3");
    const back = await alice.next("deliver", (f) => f.item.kind === "group");
    expect(back.item).toEqual({ kind: "group", group: "team", epoch: 2, body: body(3) });
    alice.close();
    bob.close();
  });

  it("no request reaches a home: hub and user names cannot spell its key", async () => {
    const hub = freshHub("gh");
    const { alice, bob } = await team(hub);
    for (const path of [
      `/ws?hub=${hub}/gh/team`,
      `/ws?hub=${hub}&user=../gh/team`,
      `/ws?hub=${hub}&user=gh/team`,
    ]) {
      const res = await SELF.fetch(`${BASE}${path}`, {
        headers: { Upgrade: "websocket", Origin: ORIGIN },
      });
      expect(res.status).toBe(400);
      await res.arrayBuffer();
    }
    // The home still holds the group as its members left it.
    const members = await runInDurableObject(stubFor(home(hub, "team")), (_i, st) =>
      relaySql(st).exec("SELECT username FROM group_members ORDER BY username").toArray(),
    );
    expect(members.map((r) => r.username)).toEqual(["alice", "bob"]);
    alice.close();
    bob.close();
  });
});
