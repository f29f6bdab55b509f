/**
 * A group moves from the hub's route to its home on users' routes with its members (PROTOCOL.md
 * §4.1, docs/ARCHITECTURE.md "Moving a group"), with real engines in the Node harness: an app
 * that updates keeps its groups, and a member who moves later finds there, in order, what the
 * hub's object held for it and then what the home kept for it.
 */
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import {
  connect,
  disconnect,
  errors,
  messages,
  newUser,
  online,
  say,
  type TestUser,
} from "../support/clients";
import { addByInvite } from "../support/group-story";
import { link, newPhone, setupAliceAndBob, through } from "../support/linked-device";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;

/** `names` in group "broadcast" on the hub's route. */
async function hubGroup(...names: string[]): Promise<{ relay: NodeRelay; users: TestUser[] }> {
  const relay = new NodeRelay("main", "https://parley.test", null, "contacts", false);
  const users = (await online(relay, ...names)) as TestUser[];
  for (const u of users) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  return { relay, users };
}

/** Reconnect `u` (after the app update: on its user's route). */
async function move(u: TestUser): Promise<void> {
  await disconnect(u);
  await connect(u);
}

describe("a group moves from the hub's route with its members", () => {
  it("with its first member who moves; the others follow later and lose nothing, in order", async () => {
    const { relay, users } = await hubGroup("alice", "bob", "carol");
    const [alice, bob, carol] = users as [TestUser, TestUser, TestUser];
    await say(alice, G, "before 1");
    await say(bob, G, "before 2");
    await disconnect(carol);
    await say(alice, G, "while carol is away");
    const hub = relay.hubObject.life.store;
    const epoch = hub.getGroup("broadcast")?.epoch;
    // The app updates: connections made from now on take their users' routes.
    relay.routed = true;
    await move(alice);
    expect(hub.groupMoved("broadcast")).toBe(true);
    const home = relay.homeObject("broadcast").life.store;
    expect(home.getGroup("broadcast")?.members).toEqual(["alice", "bob", "carol"]);
    expect(home.getGroup("broadcast")?.epoch).toBe(epoch);
    await say(alice, G, "from alice's route");
    // bob is still connected on the hub's route: the group is not served there any more.
    await say(bob, G, "lost on the hub's route");
    expect(errors(bob).map((e) => e.message)).toEqual([expect.stringContaining("wrong_route")]);
    expect(messages(alice, G)).toEqual(["before 2"]);
    // bob's app updates too: it finds the group, and what alice said meanwhile.
    await move(bob);
    expect(messages(bob, G)).toEqual(["before 1", "while carol is away", "from alice's route"]);
    await say(bob, G, "bob moved");
    expect(messages(alice, G)).toEqual(["before 2", "bob moved"]);
    // carol was offline throughout: the hub's items first, then the home's.
    await connect(carol);
    expect(messages(carol, G)).toEqual([
      "before 1",
      "before 2",
      "while carol is away",
      "from alice's route",
      "bob moved",
    ]);
    // A commit on users' routes: dave joins at the home, and everyone reads everyone.
    const dave = await newUser(relay, "dave");
    await connect(dave);
    await dave.client.joinGroup("broadcast");
    await relay.settle();
    expect(relay.homeObject("broadcast").life.store.getGroup("broadcast")?.members).toContain(
      "dave",
    );
    await say(dave, G, "hello from dave");
    await say(carol, G, "carol here");
    expect(messages(alice, G).slice(-2)).toEqual(["hello from dave", "carol here"]);
    expect(messages(bob, G).slice(-2)).toEqual(["hello from dave", "carol here"]);
    expect(messages(dave, G)).toEqual(["carol here"]);
    expect(errors(alice)).toEqual([]);
    expect(errors(carol)).toEqual([]);
    expect(errors(dave)).toEqual([]);
  });

  it("a lost answer of the hub's object or of the home fails that authentication only; the next takes the group over once", async () => {
    const { relay, users } = await hubGroup("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    await say(bob, G, "before");
    relay.routed = true;
    // The hub's object hands alice over, and the answer is lost: she is refused `internal`.
    let lose = 1;
    relay.loseCall = (m) => m === "handOver" && lose-- > 0;
    await move(alice).catch(() => undefined);
    expect(relay.failures).toEqual(["relay answered `internal`"]);
    relay.failures.length = 0;
    // Her items were gathered with that call: from then on the hub's route takes nothing more
    // for her groups, which would reach her nowhere.
    await say(bob, G, "too late for the hub's route");
    expect(errors(bob).map((e) => e.message)).toEqual([expect.stringContaining("wrong_route")]);
    // The hub's object hands the group out, and the answer is lost.
    lose = 1;
    relay.loseCall = (m) => m === "groupExport" && lose-- > 0;
    await move(alice).catch(() => undefined);
    expect(relay.failures).toEqual(["relay answered `internal`"]);
    relay.failures.length = 0;
    // The same for the home's answer to alice's object.
    lose = 1;
    relay.loseCall = (m) => m === "adopt" && lose-- > 0;
    await move(alice).catch(() => undefined);
    expect(relay.failures).toEqual(["relay answered `internal`"]);
    relay.failures.length = 0;
    expect(errors(alice)).toHaveLength(3);
    relay.loseCall = null;
    await move(alice);
    expect(errors(alice)).toHaveLength(3);
    expect(
      relay.userObject("alice").life.store.toAdopt("alice", toB64u(alice.identity.publicKey)),
    ).toEqual([]);
    await move(bob);
    await say(alice, G, "after");
    await say(bob, G, "after too");
    expect(messages(alice, G)).toEqual(["before", "after too"]);
    expect(messages(bob, G)).toEqual(["after"]);
  });

  it("while a step of the group is in flight at the hub's object, its hand-over and export wait (busy)", async () => {
    const { relay, users } = await hubGroup("alice", "bob");
    const [alice] = users as [TestUser, TestUser];
    const hub = relay.hubObject.life.hub;
    const key = toB64u(alice.identity.publicKey);
    const seen: unknown[] = [];
    // dave's join is at the group object, its answer not back yet: ask the hub's object then.
    relay.groupObject("broadcast").loseAnswer = () => {
      seen.push(hub.handOver("alice", key, relay.clock), hub.groupExport("broadcast", relay.clock));
      return false;
    };
    const dave = await newUser(relay, "dave");
    await connect(dave);
    await dave.client.joinGroup("broadcast");
    await relay.settle();
    relay.groupObject("broadcast").loseAnswer = null;
    // The join, and the commit a member's engine made of it: each call found the other busy.
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(new Set(seen)).toEqual(new Set(["busy"]));
    expect(relay.hubObject.life.store.groupMoved("broadcast")).toBe(false);
    // Once the steps are done, alice moves with the group as they left it.
    const held = relay.hubObject.life.store.getGroup("broadcast");
    expect(held?.members).toContain("dave");
    relay.routed = true;
    await move(alice);
    expect(relay.homeObject("broadcast").life.store.getGroup("broadcast")).toEqual(held);
    expect(errors(alice)).toEqual([]);
  });

  it("a commit waiting for an offline member on the hub's route reaches it before the home's messages", async () => {
    const { relay, users } = await hubGroup("alice", "bob", "carol");
    const [alice, bob, carol] = users as [TestUser, TestUser, TestUser];
    await disconnect(carol);
    // dave joins on the hub's route while carol is away: the commit waits in her mailbox there.
    const dave = await newUser(relay, "dave");
    await connect(dave);
    await dave.client.joinGroup("broadcast");
    await relay.settle();
    await say(alice, G, "welcome dave");
    const epoch = relay.hubObject.life.store.getGroup("broadcast")?.epoch ?? 0;
    expect(epoch).toBeGreaterThan(0);
    relay.routed = true;
    await move(alice);
    await say(alice, G, "from the home");
    await move(bob);
    await move(dave);
    await connect(carol);
    expect(messages(carol, G)).toEqual(["welcome dave", "from the home"]);
    expect(messages(dave, G)).toEqual(["welcome dave", "from the home"]);
    await say(carol, G, "hi dave");
    expect(messages(dave, G).at(-1)).toBe("hi dave");
    expect(relay.homeObject("broadcast").life.store.getGroup("broadcast")?.epoch).toBe(epoch);
    for (const u of [alice, bob, carol, dave]) expect(errors(u)).toEqual([]);
  });

  it("a closed group moves with its policy and admins: its admin invites on users' routes", async () => {
    const relay = new NodeRelay("main", "https://parley.test", null, "contacts", false);
    const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
    await alice.client.createGroup("club", { title: "The Club", policy: "invite" });
    await relay.settle();
    await addByInvite(relay, "club", alice, bob);
    await say(alice, "group:club", "members only");
    relay.routed = true;
    await move(alice);
    await move(bob);
    const carol = await newUser(relay, "carol");
    await connect(carol);
    // Without an invitation the home refuses carol, as the hub's object did (§9.7.3).
    await carol.client.joinGroup("club");
    await relay.settle();
    expect(errors(carol).map((e) => e.message)).toEqual([
      expect.stringContaining("invite_required"),
    ]);
    await addByInvite(relay, "club", alice, carol);
    await say(bob, "group:club", "welcome carol");
    expect(messages(carol, "group:club")).toEqual(["welcome carol"]);
    expect(messages(bob, "group:club")).toEqual(["members only"]);
    const conv = carol.client.conversations().find((c) => c.id === "group:club");
    expect(conv?.access?.title).toBe("The Club");
    expect(errors(alice)).toEqual([]);
    expect(errors(bob)).toEqual([]);
  });

  it("another identity's claim on a member's route moves nothing, and a home takes in only the binding the hub's object handed it", async () => {
    const { relay, users } = await hubGroup("alice", "bob");
    const [alice, bob] = users as [TestUser, TestUser];
    relay.routed = true;
    const mallory = await newUser(relay, "alice");
    await connect(mallory);
    expect(errors(mallory).map((e) => e.message)).toEqual([expect.stringContaining("name_taken")]);
    expect(relay.hubObject.life.store.groupMoved("broadcast")).toBe(false);
    await move(alice);
    const home = relay.homeObject("broadcast");
    const asMallory = { username: "bob", identityKey: toB64u(mallory.identity.publicKey) };
    expect(await home.call((l) => l.hub.adopt("main", "broadcast", asMallory))).toBeNull();
    expect(home.life.store.getUser("bob")?.identityKey).toBe(toB64u(bob.identity.publicKey));
    await move(bob);
    await say(alice, G, "still ours");
    expect(messages(bob, G)).toEqual(["still ours"]);
  });

  it("a device its identity removes on the hub's route after its group moved is taken out at the home", async () => {
    const { relay, alice, bob, seed } = await setupAliceAndBob(false);
    await alice.client.createGroup("club", { title: "The Club", policy: "invite" });
    await relay.settle();
    await addByInvite(relay, "club", alice, bob);
    const phone = await newPhone(relay);
    await link(relay, alice, seed, phone);
    for (let i = 0; i < 12; i++) await relay.settle();
    const phoneId = (await alice.client.ownDevices()).devices.find((d) => d.name === "phone")?.id;
    if (phoneId === undefined) throw new Error("no phone on the list");
    const addr = `alice.${phoneId}`;
    expect(relay.hubObject.life.store.getGroup("club")?.members).toContain(addr);
    // bob's app updates: the club moves with him. alice is still on the hub's route.
    relay.routed = true;
    await move(bob);
    await through(relay, alice.client.removeDevice(phoneId));
    for (let i = 0; i < 8; i++) await relay.settle().catch(() => undefined);
    relay.failures.length = 0;
    // The home puts the phone's leave up, as the hub's object would have (§4.7).
    const home = relay.homeObject("club").life.store.getGroup("club");
    expect(home?.pendingLeaves.includes(addr) || !home?.members.includes(addr)).toBe(true);
  });

  it("a group name is one group's on both routes: a group begun on users' routes is refused on the hub's", async () => {
    const relay = new NodeRelay("main", "https://parley.test", null, "contacts", true);
    const [alice] = (await online(relay, "alice")) as [TestUser];
    await alice.client.joinGroup("fresh");
    await relay.settle();
    expect(relay.hubObject.life.store.groupMoved("fresh")).toBe(true);
    relay.routed = false;
    const eve = await newUser(relay, "eve");
    await connect(eve);
    await eve.client.joinGroup("fresh");
    await relay.settle();
    expect(errors(eve).map((e) => e.message)).toEqual([expect.stringContaining("wrong_route")]);
    expect(relay.hubObject.life.store.getGroup("fresh")).toBeNull();
    expect(relay.homeObject("fresh").life.store.getGroup("fresh")?.members).toEqual(["alice"]);
  });
});
