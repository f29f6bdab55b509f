/**
 * Story: mallory, any registered user, joins `broadcast` and — as a pending joiner
 * allowed to commit — sends a forged commit instead of her honest one: alice named as the
 * committer, or alice's identity key replaced by one mallory holds. Members must refuse the
 * commit outright (§9.4 steps 2 and 5): no epoch switch to mallory's key, no "key changed" flag
 * on the global contact, and alice's 1:1 messages keep arriving.
 */
import { expect, it } from "vitest";
import {
  buildCommit,
  leafKemsOf,
  nextRoster,
  parseGroupRecord,
  type RosterEntry,
} from "../../shared/core/group";
import { leafTranscript } from "../../shared/core/group-schedule";
import { ed25519Sign, generateIdentityKeyPair, type IdentityKeyPair } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import type { ClientFrame } from "../../shared/protocol";
import { MEMBERSHIP_PUSHES } from "../../worker/relay/group-push";
import { errors, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "group:broadcast" as const;

async function setup() {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "hi bob");
  const [mallory] = (await online(relay, "mallory")) as [TestUser];
  return { relay, alice, bob, carol, mallory, fake: await generateIdentityKeyPair() };
}

/** alice's roster entry re-signed under `fake` (her real leaf key, a key mallory holds). */
async function substitute(
  hub: string,
  roster: RosterEntry[],
  fake: IdentityKeyPair,
): Promise<RosterEntry[]> {
  return Promise.all(
    roster.map(async (m) =>
      m.name !== "alice"
        ? m
        : {
            ...m,
            ik: toB64u(fake.publicKey),
            leafSig: toB64u(
              await ed25519Sign(
                fake.privateKey,
                leafTranscript(
                  hub,
                  "broadcast",
                  m.leafEpoch,
                  m.leafId,
                  fromB64u(m.leafKey),
                  fromB64u(m.leafNonce),
                  m.leafKem === undefined ? undefined : fromB64u(m.leafKem),
                ),
              ),
            ),
          },
    ),
  );
}

/** Replace mallory's next outgoing commit with `forge(...)`'s; resolves once it was sent. */
function forgeCommits(
  relay: NodeRelay,
  mallory: TestUser,
  forge: (roster: RosterEntry[]) => Promise<{
    roster: RosterEntry[];
    committer: string;
    key: IdentityKeyPair;
  }>,
): () => Promise<void> {
  const conn = mallory.conn;
  if (!conn) throw new Error("mallory is online");
  const orig = conn.fromClient.bind(conn);
  let done: Promise<void> = Promise.resolve();
  let forged = false;
  conn.fromClient = (f: ClientFrame) => {
    // One forged commit is the attack; mallory's engine, whose record no longer matches what it
    // sent, then re-joins (§9.4) and commits honestly.
    if (f.t !== "commit" || forged) return orig(f);
    forged = true;
    done = (async () => {
      // The group state mallory's engine built its commit on: the last one the relay sent her.
      const st = relay.log
        .filter(
          (x) => x.to === "mallory" && x.frame.t === "group" && x.frame.state.group === "broadcast",
        )
        .at(-1)?.frame;
      if (st?.t !== "group") throw new Error("mallory has the group state");
      const { roster, added, removed } = nextRoster(st.state);
      const forged = await forge(roster);
      const built = await buildCommit({
        hub: relay.hub,
        group: "broadcast",
        parentEpoch: st.state.epoch,
        prev: null,
        parentInterim: fromB64u(st.state.interim),
        committer: forged.committer,
        committerIk: forged.key.publicKey,
        sign: (m) => ed25519Sign(forged.key.privateKey, m),
        roster: forged.roster,
        added,
        removed,
        random: (n) => crypto.getRandomValues(new Uint8Array(n)),
        kems: leafKemsOf(st.state),
      });
      orig({
        ...f,
        members: forged.roster.map((m) => m.name),
        core: toB64u(built.core),
        wraps: built.wraps.map((w) => ({ to: w.to, leaf: w.leaf, wrap: toB64u(w.wrap) })),
        interim: toB64u(built.interim),
      });
    })();
  };
  return () => done;
}

async function epochOf(u: TestUser): Promise<number | undefined> {
  return parseGroupRecord(await u.store.get("group/broadcast")).current?.epoch;
}

async function rosterKey(u: TestUser, name: string): Promise<string | undefined> {
  const rec = parseGroupRecord(await u.store.get("group/broadcast"));
  return rec.current?.roster.find((m) => m.name === name)?.ik;
}

async function expectRefused(
  { relay, alice, bob, carol }: Awaited<ReturnType<typeof setup>>,
  fake: IdentityKeyPair,
  epochBefore: number,
  code: string,
) {
  const fakeKey = toB64u(fake.publicKey);
  const aliceKey = toB64u(alice.identity.publicKey);
  for (const u of [bob, carol]) {
    // the forged commit is the first thing refused, for the expected reason
    expect(errors(u)[0]?.code).toBe(code);
    // never applied: no member switched to an epoch whose roster carries mallory's key for alice
    expect(await rosterKey(u, "alice")).not.toBe(fakeKey);
    // and the global contact is not poisoned: alice's pin is intact, nothing to "accept"
    expect(u.client.contact("alice")?.identityKey).toBe(aliceKey);
  }
  const stored = (await bob.store.get("contact/alice")) as { changedKey: string | null };
  expect(stored.changedKey).toBeNull();
  expect(
    lines(bob).some((l) => /from alice/.test(l) && l.includes(`epoch ${epochBefore + 1}`)),
  ).toBe(false);
  // honest 1:1 traffic from alice still arrives at bob
  await say(alice, "dm:bob", "after the attack");
  expect(messages(bob, "dm:alice")).toEqual(["hi bob", "after the attack"]);
  await relay.settle();
}

function lines(u: TestUser): string[] {
  return u.events.flatMap((e) =>
    e.type === "system" && e.line.conversationId === G ? [e.line.text] : [],
  );
}

/** Honest group traffic continues once the group healed (refusers re-join, §9.4). */
async function expectGroupHeals(s: Awaited<ReturnType<typeof setup>>) {
  const { relay, alice, bob, carol } = s;
  await relay.settle();
  const e = await epochOf(bob);
  expect(e).toBe(await epochOf(carol));
  expect(e).toBe(await epochOf(alice));
  await say(carol, G, "carol still talks");
  expect(messages(bob, G)).toContain("carol still talks");
  expect(messages(alice, G)).toContain("carol still talks");
}

it("spoofed committer: a joiner's commit naming alice (with mallory's key for her) is refused", async () => {
  const s = await setup();
  const { relay, bob, mallory, fake } = s;
  const before = (await epochOf(bob)) ?? -1;
  const sent = forgeCommits(relay, mallory, async (roster) => ({
    roster: await substitute(relay.hub, roster, fake),
    committer: "alice",
    key: fake,
  }));
  await mallory.client.joinGroup("broadcast");
  await relay.settle();
  await sent();
  await relay.settle();
  await expectRefused(s, fake, before, "not_member");
  await expectGroupHeals(s);
});

it("spoofed committer through a colluding relay (deliver.from rewritten) is refused by the roster-key check", async () => {
  const s = await setup();
  const { relay, bob, mallory, fake } = s;
  const before = (await epochOf(bob)) ?? -1;
  // the relay also claims the commit came from alice with mallory's key
  relay.intercept = (_to, f) =>
    f.t === "deliver" && f.item.kind === "commit" && f.from === "mallory"
      ? { ...f, from: "alice", fromKey: toB64u(fake.publicKey) }
      : f;
  const sent = forgeCommits(relay, mallory, async (roster) => ({
    roster: await substitute(relay.hub, roster, fake),
    committer: "alice",
    key: fake,
  }));
  await mallory.client.joinGroup("broadcast");
  await relay.settle();
  await sent();
  await relay.settle();
  relay.intercept = null;
  await expectRefused(s, fake, before, "roster_mismatch");
});

it("surviving member key substitution by an honest-looking committer is refused", async () => {
  const s = await setup();
  const { relay, bob, mallory, fake } = s;
  const before = (await epochOf(bob)) ?? -1;
  // mallory commits as herself (deliver.from matches), but swaps alice's roster key
  const sent = forgeCommits(relay, mallory, async (roster) => ({
    roster: await substitute(relay.hub, roster, fake),
    committer: "mallory",
    key: mallory.identity,
  }));
  await mallory.client.joinGroup("broadcast");
  await relay.settle();
  await sent();
  await relay.settle();
  await expectRefused(s, fake, before, "roster_mismatch");
  await expectGroupHeals(s);
});

it("an honest joiner's commit is still applied by every member", async () => {
  const s = await setup();
  const { relay, alice, bob, carol, mallory } = s;
  const before = (await epochOf(bob)) ?? -1;
  await mallory.client.joinGroup("broadcast");
  await relay.settle();
  for (const u of [alice, bob, carol, mallory]) expect(await epochOf(u)).toBe(before + 1);
  expect(errors(bob)).toEqual([]);
  await say(mallory, G, "hello all");
  expect(messages(alice, G)).toEqual(["hello all"]);
  expect(messages(bob, G)).toEqual(["hello all"]);
});

it("a member's commit adding dave with another key for alice is refused by dave, the joiner", async () => {
  const s = await setup();
  const { relay, alice, bob, mallory, fake } = s;
  await mallory.client.joinGroup("broadcast");
  await relay.settle();
  const [dave] = (await online(relay, "dave")) as [TestUser];
  // dave's own commit never reaches the relay: mallory's forged one adds him instead
  const daveConn = dave.conn;
  if (!daveConn) throw new Error("dave is online");
  const daveSend = daveConn.fromClient.bind(daveConn);
  daveConn.fromClient = (f: ClientFrame) => (f.t === "commit" ? undefined : daveSend(f));
  await dave.client.joinGroup("broadcast");
  await relay.settle();
  // The members hear of dave's join within the group's membership push bound (§7.5).
  await relay.advance(1000 / MEMBERSHIP_PUSHES.ratePerSec);
  const sent = forgeCommits(relay, mallory, async (roster) => ({
    roster: await substitute(relay.hub, roster, fake),
    committer: "mallory",
    key: mallory.identity,
  }));
  const g = relay.group("broadcast");
  mallory.conn?.fromClient({
    v: 1,
    t: "commit",
    id: "forged",
    group: "broadcast",
    parentEpoch: g?.epoch ?? 0,
    members: [],
    core: "",
    wraps: [],
    interim: "",
  });
  await sent();
  await relay.settle();
  expect(relay.group("broadcast")?.members).toContain("dave");
  // dave has no old roster to compare with; the keys he took from the relay's group state (and
  // pinned) when preparing his own commit expose the swap, and nothing is re-pinned
  expect(errors(dave)[0]?.code).toBe("key_changed");
  expect(dave.client.contact("alice")?.identityKey).not.toBe(toB64u(fake.publicKey));
  // the members refuse it as a key substitution
  expect(errors(bob)[0]?.code).toBe("roster_mismatch");
  expect(await rosterKey(alice, "alice")).toBe(toB64u(alice.identity.publicKey));
});
