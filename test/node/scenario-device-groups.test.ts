/**
 * Groups whose members are devices (PROTOCOL.md §4.7, §9.1, §9.7.2), through the product's relay
 * in the Node harness: alice links her phone for real (§4.8) and the phone joins her invite-only
 * group as its own member, with its own leaf key and so its own sending chain (§9.3), without an
 * invitation (it is a device of a member). Removing the phone takes it out of the group: the
 * relay puts its leave up, the laptop hands the members the phone's signed leave, a member
 * commits, and the phone's whole store opens nothing sent afterwards. A hostile relay that lets
 * the removed phone back in with a commit of its own is refused by every member holding alice's
 * device list.
 */
import { describe, expect, it } from "vitest";
import type { ChatMessage } from "../../shared/core/client-api";
import {
  buildCommit,
  decryptGroup,
  makeLeaves,
  type OwnLeaf,
  parseGroupRecord,
  type RosterEntry,
} from "../../shared/core/group";
import { KEYS } from "../../shared/core/store";
import { ed25519KeyPairFromSeed, ed25519Sign } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import type { ClientFrame, Leaf, ServerFrame } from "../../shared/protocol";
import { errors, lines, messages, online, type TestUser } from "../support/clients";
import { entryOf } from "../support/group-fixture";
import { inviteFor } from "../support/group-story";
import { link, newPhone, type Phone, setupAliceAndBob, through } from "../support/linked-device";
import type { NodeRelay } from "../support/node-relay";

const G = "club";
const C = "group:club" as const;

async function settled(relay: NodeRelay, rounds = 8): Promise<void> {
  for (let i = 0; i < rounds; i++) await relay.settle();
}

const phoneTexts = (phone: Phone, direction: "in" | "out") =>
  phone.events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .filter((m) => m.conversationId === C && m.direction === direction)
    .map((m) => m.text);

const epochOf = (u: { client: { conversations(): { id: string; epoch?: number }[] } | null }) =>
  u.client?.conversations().find((c) => c.id === C)?.epoch;

/** alice's invite-only club with bob in it, then alice links her phone. */
async function clubWithPhone() {
  const { relay, alice, bob, seed } = await setupAliceAndBob();
  await alice.client.createGroup(G, { title: "The Club", policy: "invite" });
  await settled(relay);
  await alice.client.inviteToGroup(G, "bob");
  await settled(relay);
  await bob.client.acceptInvite(inviteFor(bob, "alice"));
  await settled(relay);
  expect(relay.group(G)?.members).toEqual(["alice", "bob"]);
  const phone = await newPhone(relay);
  await link(relay, alice, seed, phone);
  await settled(relay, 12);
  if (phone.client === null) throw new Error("the phone did not link");
  const phoneId = (await alice.client.ownDevices()).devices.find((d) => d.name === "phone")?.id;
  if (phoneId === undefined) throw new Error("no phone on the list");
  return { relay, alice, bob, phone, phoneId, seed, addr: `alice.${phoneId}` };
}

async function rosterOf(u: { store: { get(k: string): Promise<unknown> } }) {
  return parseGroupRecord(await u.store.get(KEYS.group(G))).current?.roster ?? [];
}

describe("groups with device members (§4.7, §9.1)", () => {
  it("alice's phone joins her club as its own member, with its own leaf key; each reads the other", async () => {
    const { relay, alice, bob, phone, addr } = await clubWithPhone();
    // Added by a member without an invitation: it is a device of one (§9.7.2).
    expect(relay.group(G)?.members).toEqual(["alice", addr, "bob"]);
    expect(epochOf(phone)).toBe(epochOf(bob));
    expect(epochOf(alice)).toBe(epochOf(bob));
    const roster = await rosterOf(bob);
    const laptopLeaf = roster.find((m) => m.name === "alice")?.leafKey;
    const phoneLeaf = roster.find((m) => m.name === addr)?.leafKey;
    // Each sending chain is keyed by the member's leaf key (§9.3): two devices, two chains.
    expect(phoneLeaf).toBeDefined();
    expect(phoneLeaf).not.toBe(laptopLeaf);
    expect(roster.find((m) => m.name === addr)?.ik).toBe(alice.client.identityKey);
    // The phone writes: bob reads it as alice's; the laptop shows it as its own, sent.
    await through(
      relay,
      (phone.client as NonNullable<Phone["client"]>).sendText(C, "from the phone"),
    );
    await settled(relay);
    expect(messages(bob, C)).toContain("from the phone");
    const fromPhone = bob.events.find(
      (e) => e.type === "message" && e.message.text === "from the phone",
    );
    expect(fromPhone?.type === "message" && fromPhone.message.from).toBe("alice");
    expect(messages(alice, C, "out")).toContain("from the phone");
    // bob writes: both of alice's devices read it.
    await through(relay, bob.client.sendText(C, "hello to both"));
    await settled(relay);
    expect(messages(alice, C)).toContain("hello to both");
    expect(phoneTexts(phone, "in")).toContain("hello to both");
    // The laptop writes: the phone shows it as its own, sent.
    await through(relay, alice.client.sendText(C, "from the laptop"));
    await settled(relay);
    expect(phoneTexts(phone, "out")).toContain("from the laptop");
    expect(messages(bob, C)).toContain("from the laptop");
    // bob sees one person on two devices, named as people are; the line names the device.
    const summary = bob.client.conversations().find((c) => c.id === C);
    expect(summary?.members.map((m) => [m.username, m.devices ?? 1])).toEqual([
      ["alice", 2],
      ["bob", 1],
    ]);
    expect(lines(bob, C).some((l) => l.text === "alice (phone) joined")).toBe(true);
    for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
    expect(phone.events.filter((e) => e.type === "error")).toEqual([]);
  });

  it("reading the club on the laptop marks it read on the phone; bob hears nothing of it", async () => {
    const { relay, alice, bob, phone } = await clubWithPhone();
    const id = await through(relay, bob.client.sendText(C, "read me"));
    await settled(relay);
    expect(phoneTexts(phone, "in")).toContain("read me");
    const mark = relay.clientLog.length;
    await through(relay, alice.client.sendAction(C, { t: "read", ids: [id] }));
    await settled(relay);
    // The phone is told, as its own read (a sync copy naming the group, §4.9).
    expect(
      phone.events.some(
        (e) =>
          e.type === "content" &&
          e.conversationId === C &&
          e.direction === "out" &&
          e.content.t === "read" &&
          e.content.ids.includes(id),
      ),
    ).toBe(true);
    // Only to the phone: no group message, nothing to bob.
    const sent = relay.clientLog.slice(mark).map((x) => x.frame);
    expect(sent.filter((f) => f.t === "group_send")).toEqual([]);
    expect(sent.filter((f) => f.t === "send").map((f) => f.t === "send" && f.to)).toEqual([
      "alice",
    ]);
    expect(bob.events.filter((e) => e.type === "content" && e.content.t === "read")).toEqual([]);
  });

  it("the relay takes a removed device out of its groups even when no signed leave comes", async () => {
    const { relay, alice, phoneId, addr } = await clubWithPhone();
    // alice's devices' own signed leaves for the phone never reach the relay.
    const conn = alice.conn;
    if (!conn) throw new Error("online");
    const orig = conn.fromClient.bind(conn);
    conn.fromClient = (f) => (f.t === "leave" ? undefined : orig(f));
    await through(relay, alice.client.removeDevice(phoneId));
    await settled(relay, 12);
    // Its leave is pending: in this closed group, members commit it only with the signed one.
    expect(relay.group(G)?.pendingLeaves).toEqual([addr]);
  });

  it("removing the phone takes it out of the club; its whole store opens nothing sent afterwards", async () => {
    const { relay, alice, bob, phone, phoneId, addr } = await clubWithPhone();
    const before = epochOf(bob) as number;
    await through(relay, alice.client.removeDevice(phoneId));
    await settled(relay, 12);
    // The relay's own leave had no authorization; the laptop's signed leave for the phone let a
    // member commit it (§9.7.4).
    expect(relay.group(G)?.members).toEqual(["alice", "bob"]);
    expect(relay.group(G)?.pendingLeaves).toEqual([]);
    expect(epochOf(bob)).toBeGreaterThan(before);
    expect(epochOf(alice)).toBe(epochOf(bob));
    // Named from the list bob holds, which no longer lists the phone.
    expect(lines(bob, C).some((l) => l.text === "alice (removed device) left")).toBe(true);
    const mark = relay.clientLog.length;
    await through(relay, bob.client.sendText(C, "after the removal"));
    await settled(relay);
    expect(messages(alice, C)).toContain("after the removal");
    expect(phoneTexts(phone, "in")).not.toContain("after the removal");
    // Everything the phone stored, against the ciphertext the relay carried: nothing opens.
    const sent = relay.clientLog
      .slice(mark)
      .map((x) => x.frame)
      .filter((f): f is Extract<ClientFrame, { t: "group_send" }> => f.t === "group_send");
    expect(sent).toHaveLength(1);
    const stolen = parseGroupRecord(await phone.store.get(KEYS.group(G)));
    for (const f of sent) {
      await expect(
        decryptGroup({
          record: stolen,
          hub: relay.hub,
          sender: "bob",
          epoch: f.epoch,
          body: fromB64u(f.body),
        }),
      ).rejects.toThrow();
    }
    for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
    // The laptop removed the phone itself: no "relay's removal" notice while its leave was on
    // the way.
    expect(lines(alice, C).filter((l) => l.kind === "refused")).toEqual([]);
    void addr;
  });

  it("alice leaves the club on her phone: the person leaves, both devices go, the laptop is told", async () => {
    const { relay, alice, bob, phone } = await clubWithPhone();
    await through(relay, (phone.client as NonNullable<Phone["client"]>).leaveGroup(G));
    await settled(relay, 12);
    // Two leaves at once: the second membership push waits for the group's push bound (§7.5).
    await relay.advance(2_000);
    await settled(relay);
    // Both of alice's members left with their signed leaves; bob committed them (§9.7.4).
    expect(relay.group(G)?.members).toEqual(["bob"]);
    expect(relay.group(G)?.pendingLeaves).toEqual([]);
    expect(epochOf(alice)).toBe(-1);
    expect(epochOf(phone)).toBe(-1);
    expect(lines(alice, C).map((l) => l.text)).toContain(
      "You left club on another of your devices",
    );
    expect(lines(bob, C).filter((l) => l.kind === "refused")).toEqual([]);
    await through(relay, bob.client.sendText(C, "alone now"));
    await settled(relay);
    expect(messages(alice, C)).not.toContain("alone now");
    for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
  });

  it("an admin removes alice: the person goes, both of her devices, each told who removed it", async () => {
    const { relay, alice, bob, phone } = await clubWithPhone();
    await through(relay, alice.client.promoteMember(G, "bob"));
    await settled(relay, 12);
    expect(bob.client.conversations().find((c) => c.id === C)?.access?.isAdmin).toBe(true);
    await through(relay, bob.client.removeMember(G, "alice"));
    await settled(relay, 12);
    await relay.advance(2_000);
    await settled(relay);
    expect(relay.group(G)?.members).toEqual(["bob"]);
    expect(relay.group(G)?.pendingLeaves).toEqual([]);
    for (const u of [alice, phone]) expect(epochOf(u)).toBe(-1);
    expect(lines(alice, C).some((l) => l.text === "bob (an admin) removed you from club")).toBe(
      true,
    );
    expect(
      phone.events.some(
        (e) => e.type === "system" && e.line.text === "bob (an admin) removed you from club",
      ),
    ).toBe(true);
    expect(lines(bob, C).filter((l) => l.kind === "refused")).toEqual([]);
  });

  it("the phone was off when alice left the club on her laptop: at its next connection it lets the club go", async () => {
    const { relay, alice, bob, phone } = await clubWithPhone();
    const p = phone.client as NonNullable<Phone["client"]>;
    relay.disconnect(phone.conn);
    await settled(relay);
    await through(relay, alice.client.leaveGroup(G));
    await settled(relay, 12);
    await relay.advance(2_000);
    await settled(relay);
    expect(relay.group(G)?.members).toEqual(["bob"]);
    // The phone's `left` went to no connection; its welcome no longer names the club (§6.2).
    phone.conn = relay.connect(p);
    await settled(relay, 12);
    expect(epochOf(phone)).toBe(-1);
    expect(
      phone.events.some((e) => e.type === "system" && e.line.text === "You are no longer in club"),
    ).toBe(true);
    expect(parseGroupRecord(await phone.store.get(KEYS.group(G))).current).toBeNull();
    for (const u of [alice, bob]) expect(errors(u)).toEqual([]);
  });

  it("alice loses her laptop and removes it from the phone: the phone keeps the club, as her current device", async () => {
    const { relay, alice, bob, phone, addr } = await clubWithPhone();
    const p = phone.client as NonNullable<Phone["client"]>;
    const laptopId = (await p.ownDevices()).devices.find((d) => d.name === "laptop")?.id;
    if (laptopId === undefined) throw new Error("no laptop on the list");
    await through(relay, p.removeDevice(laptopId));
    await settled(relay, 12);
    await relay.advance(2_000);
    await settled(relay);
    // The laptop was the member `alice` (the current device): the phone knew it from its
    // welcome and handed its signed leave, so bob committed the removal.
    expect(relay.group(G)?.members).toEqual([addr, "bob"]);
    expect(alice.conn?.closed).toBe(true);
    // The phone's next connection makes it alice's current device: its club moves to `alice`.
    if (phone.conn !== undefined) relay.disconnect(phone.conn);
    await settled(relay);
    phone.conn = relay.connect(p);
    await settled(relay, 12);
    await relay.advance(2_000);
    await settled(relay, 12);
    expect(relay.group(G)?.members).toEqual(["alice", "bob"]);
    expect(relay.group(G)?.pendingJoins).toEqual([]);
    expect(epochOf(phone)).toBe(epochOf(bob));
    await through(relay, p.sendText(C, "still here, on the phone"));
    await settled(relay);
    expect(messages(bob, C)).toContain("still here, on the phone");
    await through(relay, bob.client.sendText(C, "welcome back"));
    await settled(relay);
    expect(phoneTexts(phone, "in")).toContain("welcome back");
    expect(lines(bob, C).filter((l) => l.kind === "refused")).toEqual([]);
  });

  it("carol, in a group with alice but never in a chat with her, learns alice's list from the phone's join", async () => {
    const { relay, alice, seed } = await setupAliceAndBob();
    const [carol] = (await online(relay, "carol")) as [TestUser];
    for (const u of [alice, carol]) {
      await through(relay, u.client.joinGroup("open"));
      await settled(relay);
    }
    expect(relay.group("open")?.members).toEqual(["alice", "carol"]);
    const phone = await newPhone(relay);
    await link(relay, alice, seed, phone);
    await settled(relay, 12);
    await relay.advance(2_000);
    await settled(relay, 12);
    const phoneId = (await alice.client.ownDevices()).devices.find((d) => d.name === "phone")?.id;
    expect(relay.group("open")?.members).toEqual(["alice", `alice.${phoneId}`, "carol"]);
    // No live chat carried alice's list to carol (§4.9); checking the phone's join fetched it,
    // so her later checks know alice's devices (§9.1). Nothing is shown: carol has no chat
    // with alice for it to be shown in.
    const pinned = (await carol.store.get(KEYS.devices("alice"))) as
      | { list: { devices: { id: string }[] } }
      | undefined;
    expect(pinned?.list.devices.map((d) => d.id)).toContain(phoneId);
    expect(lines(carol, "dm:alice")).toEqual([]);
    expect(carol.client.conversations().some((c) => c.id === "dm:alice")).toBe(false);
    expect(errors(carol)).toEqual([]);
  });

  it("a hostile relay that lets the removed phone commit itself back in is refused by every member", async () => {
    const { relay, alice, bob, phone, phoneId, seed, addr } = await clubWithPhone();
    await through(relay, alice.client.removeDevice(phoneId));
    await settled(relay, 12);
    const epoch = epochOf(bob) as number;
    // The thief holds the phone and so alice's identity key: it signs fresh leaf keys for the
    // phone's address and a joiner commit adding it, on the members' own transcript (§9.2.2).
    const ik = await ed25519KeyPairFromSeed(seed);
    const [leaf] = (await makeLeaves({
      hub: relay.hub,
      group: G,
      epoch,
      count: 1,
      random: (n) => crypto.getRandomValues(new Uint8Array(n)),
      sign: (m) => ed25519Sign(ik.privateKey, m),
    })) as [OwnLeaf];
    const kems = new Map<string, string>();
    const entry = (name: string, l: Leaf): RosterEntry => {
      if (l.kem !== undefined) kems.set(name, l.kem);
      return entryOf(name, alice.client.identityKey, l);
    };
    const listed = (name: string) => {
      const l = relay.leafOf(G, name);
      if (l === null) throw new Error(`no leaf for ${name}`);
      return l;
    };
    const roster = [entry("alice", listed("alice")), entry(addr, leaf)];
    const bobLeaf = listed("bob");
    if (bobLeaf.kem !== undefined) kems.set("bob", bobLeaf.kem);
    roster.push({
      ...entry("bob", bobLeaf),
      ik: bob.client.identityKey,
    });
    const rec = parseGroupRecord(await bob.store.get(KEYS.group(G)));
    if (rec.current === null || rec.info === undefined) throw new Error("bob holds no epoch");
    const built = await buildCommit({
      hub: relay.hub,
      group: G,
      parentEpoch: epoch,
      prev: null,
      parentInterim: fromB64u(rec.current.interim),
      committer: addr,
      committerIk: ik.publicKey,
      sign: (m) => ed25519Sign(ik.privateKey, m),
      roster,
      added: [addr],
      removed: [],
      access: { info: fromB64u(rec.info), adds: [], removals: [] },
      random: (n) => crypto.getRandomValues(new Uint8Array(n)),
      kems,
    });
    for (const to of [bob, alice]) {
      const wrap = built.wraps.find((w) => w.to === to.name);
      if (wrap === undefined || to.conn === null) throw new Error("no wrap");
      const f: ServerFrame = {
        v: 1,
        t: "deliver",
        mid: "900001",
        from: addr,
        fromKey: alice.client.identityKey,
        ts: relay.now(),
        item: {
          kind: "commit",
          group: G,
          epoch: epoch + 1,
          core: toB64u(built.core),
          wrap: toB64u(wrap.wrap),
        },
      };
      relay.push(to.conn, f);
    }
    await settled(relay);
    // bob knows alice's list (it came end to end, §4.9) and refuses; so does her laptop.
    expect(epochOf(bob)).toBe(epoch);
    expect(epochOf(alice)).toBe(epoch);
    const refused = (u: TestUser) =>
      lines(u, C)
        .filter((l) => l.kind === "refused")
        .map((l) => l.text);
    expect(refused(bob)).toEqual([
      "Refused a change to club: alice (removed device) is not let back in: its owner removed it",
    ]);
    expect(refused(alice)).toEqual([
      "Refused a change to club: your removed device is not let back in: its owner removed it",
    ]);
    void phone;
  });
});
