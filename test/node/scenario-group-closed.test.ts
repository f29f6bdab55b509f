/**
 * Stories of closed groups (PROTOCOL.md §9.7) against the real relay: invite by a member's signed
 * add and by an invite link, admin removal, and what a relay-registered stranger or a hostile
 * relay cannot do — add a member without an invitation, remove one without its leave or an
 * admin's removal, or substitute the group's signed state. Every member refuses and shows it.
 */
import { expect, it } from "vitest";
import type { ChatMessage } from "../../shared/core/client-api";
import type { Invite } from "../../shared/core/content";
import {
  buildCommit,
  makeLeaves,
  type OwnLeaf,
  parseGroupRecord,
  type RosterEntry,
} from "../../shared/core/group";
import { signAdd, signGroupInfo, signRemoval } from "../../shared/core/group-access";
import { ed25519Sign, sha256 } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import type { ServerFrame } from "../../shared/protocol";
import { errors, lines, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const C = "group:club" as const;
const epochOf = (u: TestUser) => u.client.conversations().find((c) => c.id === C)?.epoch;
const accessOf = (u: TestUser) => u.client.conversations().find((c) => c.id === C)?.access;
const refusedLines = (u: TestUser) =>
  lines(u, C)
    .filter((l) => l.kind === "refused")
    .map((l) => l.text);

function inviteFor(u: TestUser, from: string): Invite {
  const m = u.events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .find((x) => x.conversationId === `dm:${from}` && x.invite !== undefined);
  if (m?.invite === undefined) throw new Error(`${u.name} got no invitation from ${from}`);
  return m.invite;
}

/** alice invites carol from a 1:1 chat and carol accepts (§9.7.3). */
async function inviteCarol(alice: TestUser, carol: TestUser): Promise<void> {
  await alice.client.startChat("carol");
  await alice.relay.settle();
  await alice.client.inviteToGroup("club", "carol");
  await alice.relay.settle();
  await carol.client.acceptInvite(inviteFor(carol, "alice"));
  await alice.relay.settle();
}

/** alice creates the invite-only "club", invites bob (1:1 invitation), bob accepts. */
async function club(relay: NodeRelay, ...names: string[]) {
  const users = (await online(relay, "alice", "bob", ...names)) as TestUser[];
  const [alice, bob] = users as [TestUser, TestUser];
  await alice.client.createGroup("club", { title: "The Club", policy: "invite" });
  await relay.settle();
  await alice.client.startChat("bob");
  await relay.settle();
  await alice.client.inviteToGroup("club", "bob");
  await relay.settle();
  await bob.client.acceptInvite(inviteFor(bob, "alice"));
  await relay.settle();
  return users;
}

/**
 * A commit as `by` would build it, for a hostile relay to deliver to `to` (§9.2): chained from
 * `by`'s keys of the parent epoch when it holds them (a member), else built as a joiner on `to`'s
 * transcript.
 */
async function forgedCommit(
  by: TestUser,
  to: TestUser,
  roster: RosterEntry[],
  opts: {
    added: string[];
    removed: string[];
    access?: Parameters<typeof buildCommit>[0]["access"];
  },
): Promise<ServerFrame> {
  const rec = parseGroupRecord(await to.store.get("group/club"));
  const parentEpoch = rec.current?.epoch ?? 0;
  const mine = await by.store.get("group/club");
  const cur = mine === undefined ? null : parseGroupRecord(mine).current;
  const prev =
    cur !== null && cur.epoch === parentEpoch && cur.init !== null
      ? { init: fromB64u(cur.init), interim: fromB64u(cur.interim) }
      : null;
  const built = await buildCommit({
    hub: "main",
    group: "club",
    parentEpoch,
    prev,
    parentInterim: fromB64u(rec.current?.interim ?? ""),
    committer: by.name,
    committerIk: by.identity.publicKey,
    sign: (m) => ed25519Sign(by.identity.privateKey, m),
    roster,
    added: opts.added,
    removed: opts.removed,
    access: opts.access,
    random: (n) => crypto.getRandomValues(new Uint8Array(n)),
    kems,
  });
  const wrap = built.wraps.find((w) => w.to === to.name);
  if (!wrap) throw new Error("no wrap");
  return {
    v: 1,
    t: "deliver",
    mid: "900001",
    from: by.name,
    fromKey: toB64u(by.identity.publicKey),
    ts: 1,
    item: {
      kind: "commit",
      group: "club",
      epoch: parentEpoch + 1,
      core: toB64u(built.core),
      wrap: toB64u(wrap.wrap),
    },
  };
}

/** `u` as a `group` push lists it (a hostile relay forging state builds these). */
async function stateMember(relay: NodeRelay, u: TestUser) {
  const e = await entryOf(relay, u);
  return {
    username: e.name,
    identityKey: e.ik,
    leaf: { id: e.leafId, key: e.leafKey, epoch: e.leafEpoch, nonce: e.leafNonce, sig: e.leafSig },
  };
}

/**
 * `u`'s roster entry with the leaf key the relay lists for it in the club (§9.3), or — for a
 * user the relay holds none for (a stranger) — one `u` signs now.
 */
async function entryOf(relay: NodeRelay, u: TestUser): Promise<RosterEntry> {
  const l: Omit<OwnLeaf, "priv"> =
    relay.leafOf("club", u.name) ??
    ((
      await makeLeaves({
        hub: "main",
        group: "club",
        epoch: 0,
        count: 1,
        random: (n) => crypto.getRandomValues(new Uint8Array(n)),
        sign: (m) => ed25519Sign(u.identity.privateKey, m),
      })
    )[0] as OwnLeaf);
  if (l.kem !== undefined) kems.set(u.name, l.kem);
  return {
    name: u.name,
    ik: toB64u(u.identity.publicKey),
    leafId: l.id,
    leafKey: l.key,
    leafEpoch: l.epoch,
    leafNonce: l.nonce,
    leafSig: l.sig,
    ...(l.kem === undefined ? {} : { leafKem: toB64u(sha256(fromB64u(l.kem))) }),
  };
}

/** The ML-KEM halves of the hybrid leaf keys entryOf last listed, by name (§9.2.3). */
const kems = new Map<string, string>();

/** The club's roster as a committer would build it now: the relay's leaf key for each member. */
function rosterOf(relay: NodeRelay, users: TestUser[]): Promise<RosterEntry[]> {
  return Promise.all(users.map((u) => entryOf(relay, u)));
}

it("invite by a member's signed add: the invitee joins, reads and is read", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await club(relay)) as [TestUser, TestUser];
  expect(relay.group("club")?.members).toEqual(["alice", "bob"]);
  expect(epochOf(bob)).toBe(epochOf(alice));
  expect(accessOf(bob)).toMatchObject({
    title: "The Club",
    policy: "invite",
    admins: ["alice"],
    isAdmin: false,
  });
  expect(accessOf(alice)).toMatchObject({ isAdmin: true });
  await say(bob, C, "hi club");
  expect(messages(alice, C)).toEqual(["hi club"]);
  for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
});

it("invite link: the secret stays with the people; a join signed with it gets in", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await club(relay, "carol")) as [TestUser, TestUser, TestUser];
  const secret = await alice.client.createInviteLink("club");
  await relay.settle();
  expect(accessOf(bob)?.links).toBe(1);
  await carol.client.joinWithLink("club", secret);
  await relay.settle();
  expect(relay.group("club")?.members).toEqual(["alice", "bob", "carol"]);
  // the relay never saw the secret: nothing it carried holds it
  expect(JSON.stringify(relay.log.map((x) => x.frame))).not.toContain(secret);
  await say(carol, C, "carol here");
  expect(messages(alice, C)).toEqual(["carol here"]);
  expect(messages(bob, C)).toEqual(["carol here"]);
  // revoked: the same link no longer lets anyone in
  await alice.client.revokeInviteLinks("club");
  await relay.settle();
  expect(accessOf(bob)?.links).toBe(0);
  for (const u of [alice, bob, carol]) expect(errors(u)).toEqual([]);
});

it("a relay-registered stranger is refused: by the relay without an invitation, by the committer with a bogus one", async () => {
  const relay = new NodeRelay();
  const [alice, bob, mallory] = (await club(relay, "mallory")) as [TestUser, TestUser, TestUser];
  const before = relay.group("club")?.epoch;
  await mallory.client.joinGroup("club");
  await relay.settle();
  expect(errors(mallory).map((e) => e.relayCode)).toContain("invite_required");
  // an "invitation" mallory signed herself: passed on by the relay, refused by the committer
  const bogus = await signAdd({
    hub: "main",
    group: "club",
    inviter: "mallory",
    inviterIk: mallory.identity.publicKey,
    invitee: "mallory",
    inviteeIk: mallory.identity.publicKey,
    expiry: Date.now() + 60_000,
    sign: (m) => ed25519Sign(mallory.identity.privateKey, m),
  });
  await mallory.client.acceptInvite({ group: "club", title: "", auth: toB64u(bogus), expiry: 0 });
  await relay.settle();
  const g = relay.group("club");
  expect(g?.members).toEqual(["alice", "bob"]);
  expect(g?.pendingJoins).toEqual([]);
  expect(g?.epoch).toBe((before ?? 0) + 1);
  expect(refusedLines(alice).some((t) => t.startsWith("Not adding mallory"))).toBe(true);
  await say(alice, C, "members only");
  expect(messages(bob, C)).toEqual(["members only"]);
  expect(messages(mallory, C)).toEqual([]);
});

it("a hostile relay including a stranger: every member refuses the commit and shows it", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol, mallory] = (await club(relay, "carol", "mallory")) as [
    TestUser,
    TestUser,
    TestUser,
    TestUser,
  ];
  await inviteCarol(alice, carol);
  const epoch = epochOf(alice) as number;
  const rec = parseGroupRecord(await alice.store.get("group/club"));
  const roster = await rosterOf(relay, [alice, bob, carol, mallory]);
  const info = fromB64u(rec.info ?? "");
  // mallory's own commit adding herself, with the group's real state and no invitation
  for (const to of [alice, bob, carol]) {
    const f = await forgedCommit(mallory, to, roster, {
      added: ["mallory"],
      removed: [],
      access: { info, adds: [], removals: [] },
    });
    if (to.conn) relay.push(to.conn, f);
  }
  await relay.settle();
  for (const u of [alice, bob, carol]) {
    expect(epochOf(u)).toBe(epoch);
    expect(errors(u).map((e) => e.code)).toContain("not_authorized");
    expect(refusedLines(u).some((t) => t.includes("mallory was added without an invitation"))).toBe(
      true,
    );
    expect(accessOf(u)?.refused).toContain("mallory");
  }
});

it("forged group state: a member's own state listing itself admin is refused by every member", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await club(relay, "carol")) as [TestUser, TestUser, TestUser];
  await inviteCarol(alice, carol);
  const epoch = epochOf(alice) as number;
  const roster = await rosterOf(relay, [alice, bob, carol]);
  // bob (a member, not an admin) signs a newer state that opens the group and makes him admin
  const forged = await signGroupInfo(
    "main",
    "club",
    {
      version: 2,
      title: "Bob's club",
      description: "",
      policy: "open",
      admins: [toB64u(bob.identity.publicKey)],
      links: [],
    },
    bob.identity.publicKey,
    (m) => ed25519Sign(bob.identity.privateKey, m),
  );
  for (const to of [alice, carol]) {
    const f = await forgedCommit(bob, to, roster, {
      added: [],
      removed: [],
      access: { info: fromB64u(forged.blob), adds: [], removals: [] },
    });
    if (to.conn) relay.push(to.conn, f);
  }
  await relay.settle();
  for (const u of [alice, carol]) {
    expect(epochOf(u)).toBe(epoch);
    expect(accessOf(u)).toMatchObject({ title: "The Club", policy: "invite", admins: ["alice"] });
    expect(refusedLines(u).some((t) => t.includes("not an admin"))).toBe(true);
  }
});

it("admin removal: the removed member is told who removed it; the others accept the commit", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await club(relay, "carol")) as [TestUser, TestUser, TestUser];
  await inviteCarol(alice, carol);
  // bob is not an admin: the engine refuses before anything leaves
  await expect(bob.client.removeMember("club", "carol")).rejects.toMatchObject({
    code: "not_authorized",
  });
  await alice.client.removeMember("club", "carol");
  await relay.settle();
  expect(relay.group("club")?.members).toEqual(["alice", "bob"]);
  expect(lines(carol, C).some((l) => l.text === "alice (an admin) removed you from club")).toBe(
    true,
  );
  expect(epochOf(bob)).toBe(epochOf(alice));
  await say(bob, C, "after carol");
  expect(messages(alice, C)).toEqual(["after carol"]);
  expect(messages(carol, C)).toEqual([]);
  for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
  // promotion: bob becomes an admin and may now remove
  await alice.client.promoteMember("club", "bob");
  await relay.settle();
  expect(accessOf(bob)).toMatchObject({ admins: ["alice", "bob"], isAdmin: true });
  // demotion: bob takes alice's rights; the last admin cannot step down
  await bob.client.demoteMember("club", "alice");
  await relay.settle();
  for (const u of [alice, bob]) expect(accessOf(u)).toMatchObject({ admins: ["bob"] });
  expect(accessOf(alice)).toMatchObject({ isAdmin: false });
  await expect(alice.client.promoteMember("club", "alice")).rejects.toMatchObject({
    code: "not_authorized",
  });
  await expect(bob.client.demoteMember("club", "bob")).rejects.toMatchObject({
    code: "not_authorized",
  });
  for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
});

it("a removal signed by a demoted admin is refused by the committer", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await club(relay, "carol")) as [TestUser, TestUser, TestUser];
  await inviteCarol(alice, carol);
  await alice.client.promoteMember("club", "bob");
  await relay.settle();
  await alice.client.demoteMember("club", "bob");
  await relay.settle();
  expect(accessOf(bob)).toMatchObject({ admins: ["alice"], isAdmin: false });
  // bob's client still signs a removal as if he were an admin: every check refuses it
  const epoch = epochOf(alice) as number;
  const byBob = await signRemoval({
    hub: "main",
    group: "club",
    adminIk: bob.identity.publicKey,
    member: { name: "carol", ik: carol.identity.publicKey },
    epoch,
    sign: (m) => ed25519Sign(bob.identity.privateKey, m),
  });
  bob.conn?.fromClient({
    v: 1,
    t: "remove",
    id: "rm2",
    group: "club",
    user: "carol",
    auth: toB64u(byBob),
  });
  await relay.settle();
  expect(errors(bob).map((e) => e.relayCode)).toContain("not_admin");
  expect(relay.group("club")).toMatchObject({ epoch, pendingLeaves: [] });
  expect(relay.group("club")?.members).toContain("carol");
  await say(alice, C, "still here");
  expect(messages(carol, C)).toContain("still here");
});

it("non-admin removal is refused: by committers (relay listing it) and by members (commit carrying it)", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await club(relay, "carol")) as [TestUser, TestUser, TestUser];
  await inviteCarol(alice, carol);
  const epoch = epochOf(alice) as number;
  const rec = parseGroupRecord(await alice.store.get("group/club"));
  const carolIk = carol.identity.publicKey;
  const byBob = await signRemoval({
    hub: "main",
    group: "club",
    adminIk: bob.identity.publicKey,
    member: { name: "carol", ik: carolIk },
    epoch,
    sign: (m) => ed25519Sign(bob.identity.privateKey, m),
  });
  // bob's client sends a removal signed by himself: the relay checks it against the state it
  // holds and refuses it; the group goes on
  bob.conn?.fromClient({
    v: 1,
    t: "remove",
    id: "rm1",
    group: "club",
    user: "carol",
    auth: toB64u(byBob),
  });
  await relay.settle();
  expect(errors(bob).map((e) => e.relayCode)).toContain("not_admin");
  expect(relay.group("club")).toMatchObject({ epoch, pendingLeaves: [] });
  // a hostile relay lists it anyway: the committer does not commit it
  const state = relay.group("club");
  if (!state || !alice.conn) throw new Error("setup");
  relay.push(alice.conn, {
    v: 1,
    t: "group",
    state: {
      group: "club",
      epoch,
      members: [
        await stateMember(relay, alice),
        await stateMember(relay, bob),
        await stateMember(relay, carol),
      ],
      pendingJoins: [],
      pendingLeaves: ["carol"],
      interim: toB64u(new Uint8Array(32)),
      ...(rec.info === undefined ? {} : { info: rec.info }),
      leaveAuths: [{ username: "carol", auth: toB64u(byBob) }],
    },
  });
  await relay.settle();
  expect(relay.group("club")?.epoch).toBe(epoch);
  expect(refusedLines(alice).some((t) => t.includes("removal of carol"))).toBe(true);
  // a commit carrying that removal (a hostile relay letting bob commit it) is refused by alice
  const roster = await rosterOf(relay, [alice, bob]);
  const f = await forgedCommit(bob, alice, roster, {
    added: [],
    removed: ["carol"],
    access: {
      info: fromB64u(rec.info ?? ""),
      adds: [],
      removals: [{ name: "carol", auth: byBob }],
    },
  });
  if (alice.conn) relay.push(alice.conn, f);
  await relay.settle();
  expect(epochOf(alice)).toBe(epoch);
  expect(refusedLines(alice).some((t) => t.includes("not an admin"))).toBe(true);
});

it("relay-forged `left` and `group` state are detected and shown (L15)", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await club(relay)) as [TestUser, TestUser];
  // the relay lists bob as leaving, with no signed leave: alice does not commit it
  const state = relay.group("club");
  if (!state || !alice.conn || !bob.conn) throw new Error("setup");
  relay.push(alice.conn, {
    v: 1,
    t: "group",
    state: {
      group: "club",
      epoch: state.epoch,
      members: [await stateMember(relay, alice), await stateMember(relay, bob)],
      pendingJoins: [],
      pendingLeaves: ["bob"],
      interim: toB64u(new Uint8Array(32)),
    },
  });
  await relay.settle();
  expect(relay.group("club")?.epoch).toBe(state.epoch);
  expect(refusedLines(alice).some((t) => t.includes("removal of bob"))).toBe(true);
  // the relay tells bob he left, without an admin's removal: shown as the relay's word alone
  relay.push(bob.conn, { v: 1, t: "left", group: "club" });
  await relay.settle();
  expect(
    refusedLines(bob).some((t) => t.includes("you did not leave and no admin removed you")),
  ).toBe(true);
});
