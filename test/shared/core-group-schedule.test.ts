/**
 * The group key schedule's guarantees (PROTOCOL.md §9.3), on the pure transitions with real
 * commits and ciphertexts: forward secrecy and post-compromise security per epoch against a
 * thief holding everything stored (leaf keys sealed to, chains, init secret), a fork that the
 * two halves of a group cannot read across and refuse to merge, and join freshness.
 */
import { describe, expect, it } from "vitest";
import { b64 } from "../../shared/core/codec";
import {
  type BuiltCommit,
  buildCommit,
  decryptGroup,
  encryptGroup,
  type GroupRecord,
  parseGroupRecord,
  pendingFrom,
  type RosterEntry,
  receiveCommit,
} from "../../shared/core/group";
import { randomBytes } from "../../shared/crypto";
import { entryOf, type GM, groupMember, joiningRecord } from "../support/group-fixture";

const HUB = "main";
const G = "g";

interface Party {
  m: GM;
  rec: GroupRecord;
}

/** `by` commits on its record (an update, or the first commit adding everyone). */
async function commit(by: Party, everyone: Party[], added: string[] = []): Promise<BuiltCommit> {
  const cur = by.rec.current;
  const roster: RosterEntry[] = everyone.map((p) =>
    entryOf(p.m.name, p.m.ik, p.rec.leaves[0] as GM["leaves"][number]),
  );
  const built = await buildCommit({
    hub: HUB,
    group: G,
    parentEpoch: cur?.epoch ?? 0,
    prev:
      cur === null || cur.init === null
        ? null
        : { init: b64(cur.init, "i"), interim: b64(cur.interim, "i") },
    committer: by.m.name,
    committerIk: by.m.ik,
    sign: by.m.sign,
    roster,
    added,
    removed: [],
    random: randomBytes,
  });
  by.rec = {
    ...by.rec,
    pendingCommit: pendingFrom(built, {
      id: "c",
      parentEpoch: cur?.epoch ?? 0,
      roster,
      added,
      removed: [],
      at: 0,
    }),
  };
  return built;
}

function deliver(p: Party, from: Party, built: BuiltCommit, epoch: number) {
  return receiveCommit({
    record: p.rec,
    hub: HUB,
    me: { name: p.m.name, identityKey: p.m.ik },
    itemEpoch: epoch,
    core: built.core,
    wrap: built.wraps.find((w) => w.to === p.m.name)?.wrap as Uint8Array,
    now: 0,
    from: { name: from.m.name, identityKey: from.m.entry.ik },
  });
}

async function apply(parties: Party[], from: Party, built: BuiltCommit, epoch: number) {
  for (const p of parties) p.rec = (await deliver(p, from, built, epoch)).record;
}

let ids = 0;
async function send(p: Party, text: string): Promise<Uint8Array> {
  const r = await encryptGroup({
    record: p.rec,
    hub: HUB,
    me: { name: p.m.name, identityKey: p.m.ik },
    sign: p.m.sign,
    content: { t: "text", id: `m${++ids}`, ts: 1, text },
  });
  p.rec = r.record;
  return r.body;
}

let lastFirst: BuiltCommit | null = null;
async function group(...names: string[]): Promise<Party[]> {
  const ps: Party[] = [];
  for (const n of names) {
    const m = await groupMember(n);
    ps.push({ m, rec: joiningRecord(m) });
  }
  const [first] = ps as [Party];
  const c = await commit(first, ps, names);
  await apply(ps, first, c, 1);
  lastFirst = c;
  return ps;
}

/** Everything a thief gets from `p`'s stored group record, as a record it can use. */
const steal = (p: Party): GroupRecord => parseGroupRecord(JSON.parse(JSON.stringify(p.rec)));

/** Whether `rec` (a thief's) opens `body` from `sender` in `epoch`. */
async function opens(rec: GroupRecord, sender: string, epoch: number, body: Uint8Array) {
  try {
    await decryptGroup({ record: rec, hub: HUB, sender, epoch, body });
    return true;
  } catch {
    return false;
  }
}

describe("forward secrecy and post-compromise security per epoch (§9.3)", () => {
  it("a thief after message k of epoch E reads nothing earlier, and nothing after the victim's next commit", async () => {
    const [alice, bob, carol] = (await group("alice", "bob", "carol")) as [Party, Party, Party];
    // epoch 1 traffic, then carol commits epoch 2 (E)
    const e1 = [await send(alice, "e1-a"), await send(bob, "e1-b")];
    for (const body of e1) {
      bob.rec = (
        await decryptGroup({ record: bob.rec, hub: HUB, sender: "alice", epoch: 1, body }).catch(
          () => ({ record: bob.rec }),
        )
      ).record;
    }
    const c2 = await commit(carol, [alice, bob, carol]);
    await apply([alice, bob, carol], carol, c2, 2);
    // messages 0..2 of epoch 2 from alice, bob reads them; the thief copies bob after k = 3
    const before = [await send(alice, "m0"), await send(alice, "m1"), await send(alice, "m2")];
    for (const body of before)
      bob.rec = (
        await decryptGroup({ record: bob.rec, hub: HUB, sender: "alice", epoch: 2, body })
      ).record;
    const stolen = steal(bob);
    const after = await send(alice, "m3");
    // the stolen record reads later messages of epoch 2 ...
    expect(await opens(stolen, "alice", 2, after)).toBe(true);
    // ... but nothing before message k, and no earlier epoch: not with the record as stolen,
    // not with the counters rewound, and no stored leaf key opens an earlier commit's wrap
    for (const body of before) expect(await opens(stolen, "alice", 2, body)).toBe(false);
    const cur = stolen.current;
    if (cur === null) throw new Error("bob is in epoch 2");
    const rewound: GroupRecord = {
      ...stolen,
      current: { ...cur, receivers: cur.receivers.map((r) => ({ ...r, n: 0, skipped: [] })) },
    };
    for (const body of before) expect(await opens(rewound, "alice", 2, body)).toBe(false);
    for (const body of e1) expect(await opens(stolen, "alice", 1, body)).toBe(false);
    const asJoiner = { ...stolen, status: "joining" as const, current: null, previous: null };
    for (const [c, by, e] of [[c2, carol, 2]] as const) {
      await expect(deliver({ m: bob.m, rec: asJoiner }, by, c, e)).rejects.toHaveProperty("code");
    }
    expect(stolen.previous?.init).toBeNull(); // the previous epoch's init secret is gone
    // The victim commits (an update): the thief, holding bob's unused leaf keys and epoch 2's
    // init secret, cannot follow — the commit secret is fresh and bob's own.
    const c3 = await commit(bob, [alice, bob, carol]);
    await apply([alice, carol], bob, c3, 3);
    bob.rec = (await deliver(bob, bob, c3, 3)).record;
    const thief = { m: bob.m, rec: stolen };
    await expect(deliver(thief, bob, c3, 3)).rejects.toMatchObject({
      code: "identity_mismatch",
    });
    // A later commit by someone else is sealed to one of bob's leaf keys the thief also holds,
    // but chains from epoch 3's init secret, which the thief never had: the tag check fails.
    const c4 = await commit(alice, [alice, bob, carol]);
    await apply([alice, bob, carol], alice, c4, 4);
    const lateBody = await send(alice, "after the update");
    expect(await opens(stolen, "alice", 4, lateBody)).toBe(false);
    const thiefAt3 = { m: bob.m, rec: { ...stolen } };
    await expect(deliver(thiefAt3, alice, c4, 4)).rejects.toHaveProperty("code");
    // and bob reads it
    expect(
      (await decryptGroup({ record: bob.rec, hub: HUB, sender: "alice", epoch: 4, body: lateBody }))
        .content,
    ).toMatchObject({ t: "text", text: "after the update" });
  });

  it("entering an epoch deletes the leaf key its commit was sealed to, and every older one", async () => {
    const [alice, bob] = (await group("alice", "bob")) as [Party, Party];
    const used = bob.m.leaves[0];
    expect(bob.rec.leaves.some((l) => l.id === used?.id)).toBe(false);
    // a commit sealed to the deleted key (the relay kept serving it) cannot be entered
    const stale: Party = { m: bob.m, rec: { ...bob.rec, leaves: bob.m.leaves } };
    const c = await commit(alice, [alice, stale]);
    await expect(deliver(bob, alice, c, 2)).rejects.toMatchObject({ code: "no_prekey" });
  });
});

describe("transcript chaining: a forked group stays forked (§9.3)", () => {
  it("two commits for one epoch: neither half reads the other, a later cross-delivered commit is refused as a fork", async () => {
    const [alice, bob, carol, dave] = (await group("alice", "bob", "carol", "dave")) as [
      Party,
      Party,
      Party,
      Party,
    ];
    const all = [alice, bob, carol, dave];
    // the relay shows alice+bob alice's commit for epoch 2 and carol+dave carol's
    const x = await commit(alice, all);
    const y = await commit(carol, all);
    await apply([alice, bob], alice, x, 2);
    await apply([carol, dave], carol, y, 2);
    expect(alice.rec.current?.authenticator).toBe(bob.rec.current?.authenticator);
    expect(alice.rec.current?.authenticator).not.toBe(carol.rec.current?.authenticator);
    const fromA = await send(alice, "side A");
    const fromC = await send(carol, "side C");
    expect(await opens(carol.rec, "alice", 2, fromA)).toBe(false);
    expect(await opens(dave.rec, "alice", 2, fromA)).toBe(false);
    expect(await opens(alice.rec, "carol", 2, fromC)).toBe(false);
    expect(await opens(bob.rec, "carol", 2, fromC)).toBe(false);
    // side A moves on to epoch 3; the relay then hands that commit to dave
    const next = await commit(bob, all);
    await apply([alice], bob, next, 3);
    await expect(deliver(dave, bob, next, 3)).rejects.toMatchObject({ code: "fork" });
    await expect(deliver(carol, bob, next, 3)).rejects.toMatchObject({ code: "fork" });
  });
});

describe("join freshness (§9.3)", () => {
  it("an old commit that added us is refused after we left, and while joining again", async () => {
    const [alice, bob] = (await group("alice", "bob")) as [Party, Party];
    const first = lastFirst as BuiltCommit; // the commit that added bob
    // bob leaves: his record forgets every key
    const left: Party = {
      m: bob.m,
      rec: {
        group: G,
        status: "left",
        current: null,
        previous: null,
        pendingCommit: null,
        leaves: [],
      },
    };
    await expect(deliver(left, alice, first, 1)).rejects.toMatchObject({ code: "not_member" });
    // bob asks to join again (fresh leaf keys): the old adding commit names the old ones
    const again = await groupMember("bob", { identity: bob.m });
    const joining: Party = { m: again, rec: joiningRecord(again) };
    await expect(deliver(joining, alice, first, 1)).rejects.toHaveProperty("code");
  });
});
