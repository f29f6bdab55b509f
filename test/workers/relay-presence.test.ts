/**
 * Presence only for people you know (PROTOCOL.md §6.3): who may see whom online, the opt-in to
 * "everyone on this hub", the hub default, and that a stranger learns nothing.
 */
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { commitFrame, freshHub, TestClient } from "./support/client";

const stubFor = (hub: string) => env.RELAY.get(env.RELAY.idFromName(hub));

const names = (users: ReadonlyArray<{ username: string }>) => users.map((u) => u.username);

/** Every delta held back by the interval has gone out, and every frame before now arrived. */
async function settle(hub: string, ...cs: TestClient[]): Promise<void> {
  await runDurableObjectAlarm(stubFor(hub));
  for (const c of cs) await c.sync();
}

const deltas = (c: TestClient) => c.queue.filter((f) => f.t === "presence_delta");

/** join + self-commit, then bring `others` in with one commit: all active members at epoch 2. */
async function groupOf(group: string, founder: TestClient, ...others: TestClient[]) {
  const commit = (id: string, parentEpoch: number, members: string[]) =>
    commitFrame(id, group, parentEpoch, members);
  founder.send({ v: 1, t: "join", id: "j0", group });
  await founder.next("accepted", (f) => f.id === "j0");
  founder.send(commit("c0", 0, [founder.username]));
  await founder.next("accepted", (f) => f.id === "c0");
  for (const o of others) {
    o.send({ v: 1, t: "join", id: `j-${o.username}`, group });
    await o.next("accepted", (f) => f.id === `j-${o.username}`);
  }
  founder.send(commit("c1", 1, [founder.username, ...others.map((o) => o.username)].sort()));
  await founder.next("accepted", (f) => f.id === "c1");
}

describe("presence (§6.3)", () => {
  it("a stranger who is not opted in learns nothing about who is online", async () => {
    const hub = freshHub();
    const alice = (await TestClient.connect(hub, "alice")).c;
    const bob = (await TestClient.connect(hub, "bob")).c;
    // alice and bob talk and share a group: each sees the other.
    alice.send({ v: 1, t: "send", id: "s1", to: "bob", body: "aGk" });
    await alice.next("accepted", (f) => f.id === "s1");
    bob.send({ v: 1, t: "send", id: "s2", to: "alice", body: "aGk" });
    await bob.next("accepted", (f) => f.id === "s2");
    await groupOf("team", alice, bob);
    const eve = await TestClient.connect(hub, "eve");
    // eve's view is herself only, although alice and bob are online.
    expect(names((await eve.c.next("presence")).users)).toEqual(["eve"]);
    // Others come and go; eve is told nothing, not even that something changed.
    const carol = (await TestClient.connect(hub, "carol")).c;
    carol.send({ v: 1, t: "send", id: "s3", to: "alice", body: "aGk" });
    await carol.next("accepted", (f) => f.id === "s3");
    bob.close();
    await bob.waitClosed();
    // alice's deltas are held back to one a second: wait until she has seen both changes.
    const seen: string[] = [];
    await alice.next(
      "presence_delta",
      (f) => {
        seen.push(...names(f.online));
        return f.offline.includes("bob");
      },
      5000,
    );
    if (!seen.includes("carol"))
      await alice.next("presence_delta", (f) => names(f.online).includes("carol"), 5000);
    await settle(hub, eve.c, alice, carol);
    // Any delta for eve would have been sent at once (she had none yet): there is none.
    expect(deltas(eve.c)).toEqual([]);
    // The directory still answers eve by name (§7.4): finding someone does not need presence.
    eve.c.send({ v: 1, t: "fetch_bundle", id: "f", username: "alice" });
    expect((await eve.c.next("bundle", (f) => f.id === "f")).username).toBe("alice");
    // And alice did not see eve (eve never wrote to her).
    for (const f of deltas(alice)) if (f.t === "presence_delta") seen.push(...names(f.online));
    expect(seen).not.toContain("eve");
    for (const c of [alice, carol, eve.c]) c.close();
  });

  it("writing to someone lets them see you, as deltas; going offline is a delta too", async () => {
    const hub = freshHub();
    const alice = (await TestClient.connect(hub, "alice")).c;
    expect(names((await alice.next("presence")).users)).toEqual(["alice"]);
    const bob = (await TestClient.connect(hub, "bob")).c;
    expect(names((await bob.next("presence")).users)).toEqual(["bob"]);
    bob.send({ v: 1, t: "send", id: "s", to: "alice", body: "aGk" });
    await bob.next("accepted", (f) => f.id === "s");
    const on = await alice.next("presence_delta");
    expect(on.online).toEqual([{ username: "bob", identityKey: bob.keys?.identityKey }]);
    expect(on.offline).toEqual([]);
    // One direction only: bob did not learn that alice is online by writing to her.
    await settle(hub, bob);
    expect(deltas(bob)).toEqual([]);
    // The next connection of bob sees alice only once she writes back; alice sees bob at once.
    bob.close();
    const off = await alice.next("presence_delta", () => true, 5000);
    expect(off).toMatchObject({ online: [], offline: ["bob"] });
    const again = (await TestClient.connect(hub, "bob", bob.keys ?? undefined)).c;
    expect(names((await again.next("presence")).users)).toEqual(["bob"]);
    await runDurableObjectAlarm(stubFor(hub));
    expect(names((await alice.next("presence_delta", () => true, 5000)).online)).toEqual(["bob"]);
    alice.close();
    again.close();
  });

  it("group members see each other; a member who leaves stops seeing and being seen", async () => {
    const hub = freshHub();
    const alice = (await TestClient.connect(hub, "alice")).c;
    const bob = (await TestClient.connect(hub, "bob")).c;
    await groupOf("team", alice, bob);
    await settle(hub, alice, bob);
    const seenBy = (c: TestClient) => {
      const online = new Set<string>();
      for (const f of c.queue) {
        if (f.t === "presence") for (const u of f.users) online.add(u.username);
        if (f.t !== "presence_delta") continue;
        for (const u of f.online) online.add(u.username);
        for (const n of f.offline) online.delete(n);
      }
      return [...online].sort();
    };
    expect(seenBy(alice)).toEqual(["alice", "bob"]);
    expect(seenBy(bob)).toEqual(["alice", "bob"]);
    bob.send({ v: 1, t: "leave", id: "l", group: "team" });
    await bob.next("left");
    await alice.next("presence_delta", (f) => f.offline.includes("bob"), 5000);
    await bob.next("presence_delta", (f) => f.offline.includes("alice"), 5000);
    alice.close();
    bob.close();
  });

  it("'everyone on this hub' is mutual: only users who chose it see each other", async () => {
    const hub = freshHub();
    const a = await TestClient.connect(hub, "alice");
    const b = await TestClient.connect(hub, "bob");
    const c = await TestClient.connect(hub, "carol");
    expect(a.welcome.presence).toBe("contacts");
    for (const x of [a.c, b.c]) {
      x.send({ v: 1, t: "settings", id: "p", presence: "everyone" });
      await x.next("accepted", (f) => f.id === "p");
    }
    expect(names((await a.c.next("presence_delta", () => true, 5000)).online)).toEqual(["bob"]);
    await settle(hub, a.c, b.c, c.c);
    // carol (default "people I talk to") neither sees them nor is seen.
    expect(deltas(c.c)).toEqual([]);
    const everyoneOnline = (x: TestClient) =>
      x.queue.flatMap((f) => (f.t === "presence_delta" ? names(f.online) : []));
    expect(everyoneOnline(a.c)).not.toContain("carol");
    expect(everyoneOnline(b.c)).toContain("alice");
    // The choice is kept by the relay: the next welcome reports it, the snapshot follows it.
    a.c.close();
    const back = await TestClient.connect(hub, "alice", a.c.keys ?? undefined);
    expect(back.welcome.presence).toBe("everyone");
    expect(names((await back.c.next("presence")).users)).toEqual(["alice", "bob"]);
    // Back to the default: bob is told alice is gone from his view.
    back.c.send({ v: 1, t: "settings", id: "q", presence: "contacts" });
    await back.c.next("accepted", (f) => f.id === "q");
    await runDurableObjectAlarm(stubFor(hub));
    await b.c.next("presence_delta", (f) => f.offline.includes("alice"), 5000);
    for (const x of [back.c, b.c, c.c]) x.close();
  });

  it("a hub can make 'everyone' its default (PRESENCE_EVERYONE_HUBS)", async () => {
    // vitest.config.ts lists this hub in PRESENCE_EVERYONE_HUBS.
    const hub = "presence-open";
    const a = await TestClient.connect(hub, "alice");
    expect(a.welcome.presence).toBe("everyone");
    const b = await TestClient.connect(hub, "bob");
    expect(names((await b.c.next("presence")).users)).toEqual(["alice", "bob"]);
    // A user of that hub can still choose to be seen only by people they talk to.
    b.c.send({ v: 1, t: "settings", id: "p", presence: "contacts" });
    await b.c.next("accepted", (f) => f.id === "p");
    await runDurableObjectAlarm(stubFor(hub));
    await a.c.next("presence_delta", (f) => f.offline.includes("bob"), 5000);
    a.c.close();
    b.c.close();
  });

  it("a settings frame with an unknown scope is bad_frame", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    c.send({ v: 1, t: "settings", id: "p", presence: "friends" });
    expect((await c.error("p")).code).toBe("bad_frame");
    c.close();
  });
});
