/** Group rosters, commit sequencing and fanout through the relay (PROTOCOL.md §7.5). */
import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ERRORS, LIMITS } from "../../shared/protocol";
import {
  CORE,
  commitFrame,
  freshHub,
  newKeys,
  signedPrekey,
  TestClient,
  wrapFor,
} from "./support/client";
import { relaySql } from "./support/relay-store";

/** join + self-commit: the first member of a group brings it to epoch 1. */
async function found(c: TestClient, group: string) {
  c.send({ v: 1, t: "join", id: `j-${group}`, group });
  await c.next("accepted", (f) => f.id === `j-${group}`);
  c.send(commitFrame(`c-${group}`, group, 0, [c.username]));
  await c.next("accepted", (f) => f.id === `c-${group}`);
  await c.next("deliver", (f) => f.item.kind === "commit");
}

describe("relay groups", () => {
  it("every hub has a broadcast group at epoch 0", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    c.send({ v: 1, t: "join", id: "j", group: "broadcast" });
    await c.next("accepted", (f) => f.id === "j");
    const g = await c.next("group");
    expect(g.state).toMatchObject({ group: "broadcast", epoch: 0, members: [], pendingLeaves: [] });
    expect(g.state.pendingJoins.map((m) => m.username)).toEqual(["alice"]);
    c.close();
  });

  it("a commit adds pending joins; each new member gets only its own wrap", async () => {
    const hub = freshHub();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob")).c;
    await found(a, "team");
    b.send({ v: 1, t: "join", id: "jb", group: "team" });
    await b.next("accepted", (f) => f.id === "jb");
    const seen = await a.next("group", (f) =>
      f.state.pendingJoins.some((m) => m.username === "bob"),
    );
    expect(seen.state.pendingJoins[0]?.username).toBe("bob");
    // The member list must name the roster after the pending join.
    a.send(commitFrame("bad", "team", 1, ["alice"]));
    expect((await a.error("bad")).code).toBe("roster_mismatch");
    a.send(commitFrame("ok", "team", 1, ["alice", "bob"]));
    await a.next("accepted", (f) => f.id === "ok");
    const d = await b.next("deliver", (f) => f.item.kind === "commit");
    expect(d.item).toEqual({
      kind: "commit",
      group: "team",
      epoch: 2,
      core: CORE,
      wrap: wrapFor("bob"),
    });
    expect(d.from).toBe("alice");
    const st = await b.next("group", (f) => f.state.epoch === 2);
    expect(st.state.members.map((m) => m.username)).toEqual(["alice", "bob"]);
    a.close();
    b.close();
  });

  it("two concurrent committers: exactly one wins, the other gets stale_epoch", async () => {
    const hub = freshHub();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob")).c;
    await found(a, "g");
    b.send({ v: 1, t: "join", id: "jb", group: "g" });
    await b.next("accepted");
    b.send(commitFrame("cb", "g", 1, ["alice", "bob"]));
    await b.next("accepted", (f) => f.id === "cb");
    // Now both race an update commit from epoch 2.
    a.send(commitFrame("ra", "g", 2, ["alice", "bob"]));
    b.send(commitFrame("rb", "g", 2, ["alice", "bob"]));
    const outcome = (c: TestClient, id: string) =>
      Promise.race([
        c.next("accepted", (f) => f.id === id).then(() => "ok"),
        c.error(id).then((e) => e.code),
      ]);
    const outcomes = await Promise.all([outcome(a, "ra"), outcome(b, "rb")]);
    expect([...outcomes].sort()).toEqual(["ok", "stale_epoch"]);
    a.close();
    b.close();
  });

  it("group messages fan out only to current members, with the epoch", async () => {
    const hub = freshHub();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob")).c;
    const o = (await TestClient.connect(hub, "outsider")).c;
    await found(a, "g");
    b.send({ v: 1, t: "join", id: "jb", group: "g" });
    await b.next("accepted");
    // A pending joiner is not a member yet: it cannot post and receives nothing.
    a.send({ v: 1, t: "group_send", id: "m0", group: "g", epoch: 1, body: "AAAA" });
    await a.next("accepted", (f) => f.id === "m0");
    b.send({ v: 1, t: "group_send", id: "x", group: "g", epoch: 1, body: "AAAA" });
    expect((await b.error("x")).code).toBe("not_member");
    a.send(commitFrame("c", "g", 1, ["alice", "bob"]));
    await a.next("accepted", (f) => f.id === "c");
    a.send({ v: 1, t: "group_send", id: "m1", group: "g", epoch: 2, body: "SGVsbG8" });
    await a.next("accepted", (f) => f.id === "m1");
    const d = await b.next("deliver", (f) => f.item.kind === "group");
    expect(d.item).toEqual({ kind: "group", group: "g", epoch: 2, body: "SGVsbG8" });
    expect(
      b.queue.some((f) => f.t === "deliver" && f.item.kind === "group" && f.item.epoch === 1),
    ).toBe(false);
    // Non-members are refused and receive nothing.
    o.send({ v: 1, t: "group_send", id: "o", group: "g", epoch: 2, body: "AAAA" });
    expect((await o.error("o")).code).toBe("not_member");
    await o.none("deliver", 100);
    // The sender gets no copy of its own message.
    await a.none("deliver", 100, (f) => f.item.kind === "group");
    for (const c of [a, b, o]) c.close();
  });

  it("a stale epoch is refused for group messages", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    await found(c, "g");
    c.send({ v: 1, t: "group_send", id: "s", group: "g", epoch: 0, body: "AAAA" });
    expect((await c.error("s")).code).toBe("stale_epoch");
    c.close();
  });

  it("leave removes from fanout at once, blocks sends until a member commits the removal", async () => {
    const hub = freshHub();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob")).c;
    await found(a, "g");
    b.send({ v: 1, t: "join", id: "jb", group: "g" });
    await b.next("accepted");
    a.send(commitFrame("c", "g", 1, ["alice", "bob"]));
    await a.next("accepted", (f) => f.id === "c");
    b.send({ v: 1, t: "leave", id: "l", group: "g" });
    await b.next("accepted", (f) => f.id === "l");
    expect((await b.next("left")).group).toBe("g");
    const st = await a.next("group", (f) => f.state.pendingLeaves.length === 1);
    expect(st.state.pendingLeaves).toEqual(["bob"]);
    a.send({ v: 1, t: "group_send", id: "blocked", group: "g", epoch: 2, body: "AAAA" });
    expect((await a.error("blocked")).code).toBe("removal_pending");
    // The leaver may not commit; the remaining member must, without the leaver.
    b.send(commitFrame("bc", "g", 2, ["alice"]));
    expect((await b.error("bc")).code).toBe("not_member");
    a.send(commitFrame("keep", "g", 2, ["alice", "bob"]));
    expect((await a.error("keep")).code).toBe("roster_mismatch");
    a.send(commitFrame("rm", "g", 2, ["alice"]));
    await a.next("accepted", (f) => f.id === "rm");
    a.send({ v: 1, t: "group_send", id: "after", group: "g", epoch: 3, body: "AAAA" });
    await a.next("accepted", (f) => f.id === "after");
    await b.none("deliver", 150, (f) => f.item.kind === "group");
    a.close();
    b.close();
  });

  it("remove: only a removal the sender signed as an admin of the held state (not_admin otherwise)", async () => {
    const hub = freshHub();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob")).c;
    await found(a, "g");
    b.send({ v: 1, t: "join", id: "jb", group: "g" });
    await b.next("accepted");
    a.send(commitFrame("c", "g", 1, ["alice", "bob"]));
    await a.next("accepted", (f) => f.id === "c");
    // A group without a signed state has no admins: nobody may take another member out, and
    // garbage in place of an authorization is refused the same way (no internal detail).
    for (const auth of ["AAAA", btoa("x".repeat(120)).replace(/=+$/, "")]) {
      b.send({ v: 1, t: "remove", id: `rm-${auth.length}`, group: "g", user: "alice", auth });
      const e = await b.error(`rm-${auth.length}`);
      expect(e.code).toBe("not_admin");
      expect(e.message).toBe(ERRORS.not_admin);
    }
    // Nothing changed: no pending leave, no `left`, sends go on.
    a.send({ v: 1, t: "group_send", id: "on", group: "g", epoch: 2, body: "AAAA" });
    await a.next("accepted", (f) => f.id === "on");
    await a.none("left", 150);
    await b.next("deliver", (f) => f.item.kind === "group");
    a.close();
    b.close();
  });

  it("offline members stay members and get commits and messages through the mailbox", async () => {
    const hub = freshHub();
    const bobKeys = await newKeys();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob", bobKeys)).c;
    await found(a, "g");
    b.send({ v: 1, t: "join", id: "jb", group: "g" });
    await b.next("accepted");
    b.close();
    await b.waitClosed();
    // The pending join survived bob's disconnect.
    a.send(commitFrame("c", "g", 1, ["alice", "bob"]));
    await a.next("accepted", (f) => f.id === "c");
    a.send({ v: 1, t: "group_send", id: "m", group: "g", epoch: 2, body: "AAAA" });
    await a.next("accepted", (f) => f.id === "m");
    const back = await TestClient.connect(hub, "bob", bobKeys);
    expect(back.welcome.groups.find((g) => g.group === "g")?.epoch).toBe(2);
    const d1 = await back.c.next("deliver");
    const d2 = await back.c.next("deliver");
    expect([d1.item.kind, d2.item.kind]).toEqual(["commit", "group"]);
    a.close();
    back.c.close();
  });

  it("wraps must match the new roster (bad_frame), committer may omit its own", async () => {
    const hub = freshHub();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob")).c;
    await found(a, "g");
    b.send({ v: 1, t: "join", id: "jb", group: "g" });
    await b.next("accepted");
    const missing = {
      ...commitFrame("m", "g", 1, ["alice", "bob"]),
      wraps: [{ to: "alice", wrap: "AAAA" }],
    };
    a.send(missing);
    expect((await a.error("m")).code).toBe("bad_frame");
    const stranger = { ...commitFrame("s", "g", 1, ["alice", "bob"]) };
    stranger.wraps = [...stranger.wraps, { to: "zed", wrap: "AAAA" }];
    a.send(stranger);
    expect((await a.error("s")).code).toBe("bad_frame");
    const own = {
      ...commitFrame("o", "g", 1, ["alice", "bob"]),
      wraps: [{ to: "bob", wrap: "AAAA" }],
    };
    a.send(own);
    await a.next("accepted", (f) => f.id === "o");
    a.close();
    b.close();
  });

  it("limits: groups per user", async () => {
    const hub = freshHub();
    // The groups exist already: one identity may create only maxGroupsCreatedPerIdentity
    // (relay-quotas.test.ts), and this test is about joining.
    await runInDurableObject(env.RELAY.get(env.RELAY.idFromName(hub)), (_i, state) => {
      for (let i = 0; i < LIMITS.maxGroupsPerUser; i++) {
        relaySql(state).exec(
          "INSERT INTO groups (name, epoch, created_at) VALUES (?, 0, 0)",
          `g${i}`,
        );
      }
    });
    const { c } = await TestClient.connect(hub, "alice");
    for (let i = 0; i < LIMITS.maxGroupsPerUser; i++) {
      c.send({ v: 1, t: "join", id: `j${i}`, group: `g${i}` });
      if (i % 30 === 29) await c.next("accepted", (f) => f.id === `j${i}`);
    }
    await c.next("accepted", (f) => f.id === `j${LIMITS.maxGroupsPerUser - 1}`);
    c.send({ v: 1, t: "join", id: "over", group: "one-more" });
    expect((await c.error("over")).code).toBe("limit_reached");
    c.close();
  });

  it("leave of a group one is not in gets not_member", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    c.send({ v: 1, t: "leave", id: "l", group: "nowhere" });
    expect((await c.error("l")).code).toBe("not_member");
    c.close();
  });

  it("roster and epoch survive eviction (restart) of the object", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const a = (await TestClient.connect(hub, "alice", keys)).c;
    await found(a, "g");
    a.close();
    await a.waitClosed();
    await evictDurableObject(env.RELAY.get(env.RELAY.idFromName(hub)), { webSockets: "close" });
    const back = await TestClient.connect(hub, "alice", keys);
    const g = back.welcome.groups.find((x) => x.group === "g");
    expect(g?.epoch).toBe(1);
    expect(g?.members.map((m) => m.username)).toEqual(["alice"]);
    back.c.close();
  });
});

describe("relay groups housekeeping", () => {
  it("an abandoned group is deleted and its name can start over", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    await found(c, "tmp");
    c.send({ v: 1, t: "leave", id: "l", group: "tmp" });
    await c.next("left");
    c.send({ v: 1, t: "join", id: "j2", group: "tmp" });
    await c.next("accepted", (f) => f.id === "j2");
    const st = await c.next("group", (f) => f.state.group === "tmp");
    expect(st.state.epoch).toBe(0);
    expect(st.state.members).toEqual([]);
    c.close();
  });

  it("the broadcast group is never deleted", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    await found(c, "broadcast");
    c.send({ v: 1, t: "leave", id: "l", group: "broadcast" });
    await c.next("left");
    c.send({ v: 1, t: "join", id: "j2", group: "broadcast" });
    const st = await c.next(
      "group",
      (f) => f.state.pendingJoins.length === 1 && f.state.epoch === 1,
    );
    expect(st.state.pendingLeaves).toEqual(["alice"]);
    c.close();
  });

  it("frames of one connection are handled in order even across a signature check", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    const spk = await signedPrekey(c.keys ?? (await newKeys()), 2);
    // The upload awaits a signature check; the fetch right behind it must still see its result.
    c.send({ v: 1, t: "upload_prekeys", id: "first", signedPrekey: spk, oneTimePrekeys: [] });
    c.send({ v: 1, t: "fetch_bundle", id: "second", username: "alice" });
    await c.sync();
    const ids = c.queue.flatMap((f) => (f.t === "accepted" || f.t === "bundle" ? [f.id] : []));
    expect(ids).toEqual(["first", "second"]);
    expect((await c.next("bundle")).signedPrekey).toEqual(spk);
    c.close();
  });
});
