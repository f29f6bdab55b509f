/**
 * Pure group transitions (group.ts): commit build/verify round trip, every verification rule
 * of §9.4 with a typed error, a substituted wrapped secret caught by the confirmation tag, and
 * inputs never mutated.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { b64 } from "../../shared/core/codec";
import { isCoreError } from "../../shared/core/errors";
import {
  buildCommit,
  decodeCommitBody,
  decryptGroup,
  encodeCommitBody,
  encryptGroup,
  type GroupRecord,
  nextRoster,
  parseGroupRecord,
  pendingFrom,
  receiveCommit,
  splitCore,
} from "../../shared/core/group";
import { epochKeys, groupContext, wrapInfoFor, ZERO_HASH } from "../../shared/core/group-schedule";
import { hpkeSeal, randomBytes, sha256 } from "../../shared/crypto";
import { concatBytes, toB64u } from "../../shared/encoding";
import { type GM, groupMember, joiningRecord, relayMember } from "../support/group-fixture";

type M = GM;
const member = (name: string) => groupMember(name);

function deepFreeze<T>(x: T): T {
  if (x !== null && typeof x === "object" && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x as object)) deepFreeze(v);
  }
  return x;
}

async function setup() {
  const [alice, bob, carol] = [await member("alice"), await member("bob"), await member("carol")];
  const roster = [alice.entry, bob.entry, carol.entry];
  const built = await buildCommit({
    hub: "main",
    group: "g",
    parentEpoch: 0,
    prev: null,
    committer: "alice",
    committerIk: alice.ik,
    sign: alice.sign,
    roster,
    added: ["alice", "bob", "carol"],
    removed: [],
    random: randomBytes,
  });
  const wrapFor = (n: string) => built.wraps.find((w) => w.to === n)?.wrap as Uint8Array;
  /** alice's own record: joining, with the commit she persisted before sending it (§9.4). */
  const aliceJoining: GroupRecord = {
    ...joiningRecord(alice),
    pendingCommit: pendingFrom(built, {
      id: "1",
      parentEpoch: 0,
      roster,
      added: ["alice", "bob", "carol"],
      removed: [],
      at: 0,
    }),
  };
  const receive = (
    m: M,
    rec: GroupRecord,
    core = built.core,
    wrap = wrapFor(m.name),
    epoch = 1,
    by: M = alice,
  ) =>
    receiveCommit({
      record: rec,
      hub: "main",
      me: { name: m.name, identityKey: m.ik },
      itemEpoch: epoch,
      core,
      wrap,
      now: 0,
      from: { name: by.name, identityKey: by.entry.ik },
    });
  return { alice, bob, carol, roster, built, wrapFor, receive, aliceJoining };
}

describe("group commits", () => {
  it("a joiner accepts a valid commit; the record passed in is not mutated", async () => {
    const { bob, built, receive } = await setup();
    const rec = deepFreeze(joiningRecord(bob));
    const r = await receive(bob, rec);
    expect(r.record.status).toBe("member");
    expect(r.record.current?.epoch).toBe(1);
    expect(r.record.current).not.toHaveProperty("secret");
    expect(JSON.stringify(r.record)).not.toContain(toB64u(built.joiner));
    expect(rec.status).toBe("joining");
    // the leaf key that opened the commit is gone from the record (§9.3)
    expect(r.record.leaves.map((l) => l.id)).toEqual(bob.leaves.slice(1).map((l) => l.id));
  });

  it("body codec round-trips", async () => {
    const { built } = await setup();
    const body = splitCore(built.core).body;
    expect(encodeCommitBody(decodeCommitBody(body))).toEqual(body);
  });

  it("a substituted wrapped secret is detected by the confirmation tag", async () => {
    const { bob, built, receive } = await setup();
    const body = splitCore(built.core).body;
    const other = randomBytes(32);
    const sealed = await hpkeSeal(
      b64(bob.entry.leafKey, "k"),
      other,
      wrapInfoFor("main", "g", 1)("joiner", "bob", bob.ik, bob.entry.leafId),
      sha256(body),
    );
    const wrap = concatBytes(new Uint8Array([1]), sealed.enc, sealed.ciphertext);
    await expect(receive(bob, joiningRecord(bob), built.core, wrap)).rejects.toMatchObject({
      code: "bad_signature",
    });
  });

  it("rejects: altered core, wrong epoch, wrap for someone else, commit not adding us", async () => {
    const { bob, carol, built, receive, wrapFor } = await setup();
    const joining = joiningRecord(bob);
    const flipped = built.core.slice();
    flipped[40] = (flipped[40] as number) ^ 1;
    await expect(receive(bob, joining, flipped)).rejects.toHaveProperty("code");
    const sigFlip = built.core.slice();
    sigFlip[sigFlip.length - 1] = (sigFlip[sigFlip.length - 1] as number) ^ 1;
    await expect(receive(bob, joining, sigFlip)).rejects.toMatchObject({ code: "bad_signature" });
    await expect(receive(bob, joining, built.core, wrapFor("bob"), 2)).rejects.toMatchObject({
      code: "stale_epoch",
    });
    await expect(receive(bob, joining, built.core, wrapFor("carol"))).rejects.toMatchObject({
      code: "decrypt_failed",
    });
    // an existing member at epoch 1 receiving a commit that "re-adds" everyone
    const member = (await receive(carol, joiningRecord(carol))).record;
    const cur = member.current;
    if (cur === null || cur.init === null) throw new Error("carol has epoch 1");
    const again = await buildCommit({
      hub: "main",
      group: "g",
      parentEpoch: 1,
      prev: null,
      parentInterim: b64(cur.interim, "i"),
      committer: "bob",
      committerIk: bob.ik,
      sign: bob.sign,
      roster: member.current?.roster ?? [],
      added: ["bob"],
      removed: [],
      random: randomBytes,
    });
    const w = again.wraps.find((x) => x.to === "carol")?.wrap as Uint8Array;
    await expect(receive(carol, member, again.core, w, 2, bob)).rejects.toMatchObject({
      code: "roster_mismatch",
    });
  });

  it("members verify the committer: a non-member cannot commit", async () => {
    const { alice, carol, receive } = await setup();
    const dave = await member("dave");
    const start = (await receive(carol, joiningRecord(carol))).record;
    const cur = start.current;
    if (cur === null || cur.init === null) throw new Error("carol has epoch 1");
    // dave claims to commit epoch 2 removing bob, without being a member or a joiner (and even
    // holding the parent epoch's secrets would not help him)
    const forged = await buildCommit({
      hub: "main",
      group: "g",
      parentEpoch: 1,
      prev: { init: b64(cur.init, "i"), interim: b64(cur.interim, "i") },
      committer: "dave",
      committerIk: dave.ik,
      sign: dave.sign,
      roster: [alice.entry, carol.entry],
      added: [],
      removed: ["bob"],
      random: randomBytes,
    });
    const w = forged.wraps.find((x) => x.to === "carol")?.wrap as Uint8Array;
    await expect(receive(carol, start, forged.core, w, 2, dave)).rejects.toMatchObject({
      code: "not_member",
    });
  });

  it("nextRoster follows the relay: (members − leaves) ∪ joins, rejoin = removed and added", async () => {
    const { alice, bob, carol } = await setup();
    const m = relayMember;
    const r = nextRoster({
      group: "g",
      epoch: 3,
      members: [m(alice), m(bob)],
      pendingJoins: [m(carol), m(bob)],
      pendingLeaves: ["bob"],
      interim: toB64u(ZERO_HASH),
    });
    expect(r.roster.map((x) => x.name)).toEqual(["alice", "bob", "carol"]);
    expect(r.added).toEqual(["bob", "carol"]);
    expect(r.removed).toEqual(["bob"]);
  });
});

describe("group messages", () => {
  async function epochPair() {
    const { alice, bob, receive, aliceJoining } = await setup();
    const a = (await receive(alice, aliceJoining)).record;
    const b = (await receive(bob, joiningRecord(bob))).record;
    return { alice, bob, a, b };
  }

  it("any delivery order (with duplicates) decrypts each message exactly once", async () => {
    const { alice, a, b } = await epochPair();
    let sender = a;
    const bodies: { body: Uint8Array; text: string }[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await encryptGroup({
        record: sender,
        hub: "main",
        me: { name: "alice", identityKey: alice.ik },
        sign: alice.sign,
        content: { t: "text", id: `m${i}`, ts: 1, text: `t${i}` },
      });
      sender = r.record;
      bodies.push({ body: r.body, text: `t${i}` });
    }
    await fc.assert(
      fc.asyncProperty(
        fc.shuffledSubarray([...bodies.keys(), 0, 3, 7], { minLength: 11, maxLength: 11 }),
        async (order) => {
          let rec = b;
          const got: string[] = [];
          for (const i of order) {
            const m = bodies[i] as { body: Uint8Array };
            try {
              const r = await decryptGroup({
                record: deepFreeze(rec),
                hub: "main",
                sender: "alice",
                epoch: 1,
                body: m.body,
              });
              rec = r.record;
              got.push(r.content.t === "text" ? r.content.text : "");
            } catch (e) {
              if (!isCoreError(e, "replay")) throw e;
            }
          }
          expect(got.sort()).toEqual(bodies.map((x) => x.text).sort());
        },
      ),
      { numRuns: 25 },
    );
  });

  it("forward secrecy inside an epoch: a mid-epoch snapshot opens later messages, never earlier ones (§9.5)", async () => {
    const { alice, bob, built, receive, aliceJoining } = await setup();
    const a = (await receive(alice, aliceJoining)).record;
    let b = (await receive(bob, joiningRecord(bob))).record;
    // No stored record holds the joiner secret (nor the epoch's confirmation key), in any encoding.
    const secret = toB64u(built.joiner);
    const confirm = toB64u(
      epochKeys(built.joiner, groupContext("main", "g", 1, built.transcript), []).confirmKey,
    );
    for (const rec of [a, b]) {
      const json = JSON.stringify(rec);
      expect(json).not.toContain(secret);
      expect(json).not.toContain(confirm);
    }
    let sender = a;
    const bodies: Uint8Array[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await encryptGroup({
        record: sender,
        hub: "main",
        me: { name: "alice", identityKey: alice.ik },
        sign: alice.sign,
        content: { t: "text", id: `m${i}`, ts: 1, text: `t${i}` },
      });
      sender = r.record;
      bodies.push(r.body);
    }
    // bob reads messages 0..2, then his stored state is snapshotted (as a device dump would).
    for (const body of bodies.slice(0, 3)) {
      b = (await decryptGroup({ record: b, hub: "main", sender: "alice", epoch: 1, body })).record;
    }
    const snap = parseGroupRecord(JSON.parse(JSON.stringify(b)));
    expect(JSON.stringify(snap)).not.toContain(secret);
    // Later messages open from the snapshot...
    let later = snap;
    for (const [i, body] of bodies.slice(3).entries()) {
      const r = await decryptGroup({ record: later, hub: "main", sender: "alice", epoch: 1, body });
      expect(r.content).toMatchObject({ t: "text", text: `t${i + 3}` });
      later = r.record;
    }
    // ...earlier ones do not: refused by the counter, and with the counter rewound (an attacker
    // editing the snapshot) the stored chain key yields the wrong message keys.
    const cur = snap.current;
    if (cur === null) throw new Error("bob has an epoch");
    const rewound: GroupRecord = {
      ...snap,
      current: { ...cur, receivers: cur.receivers.map((x) => ({ ...x, n: 0, skipped: [] })) },
    };
    for (const body of bodies.slice(0, 3)) {
      await expect(
        decryptGroup({ record: snap, hub: "main", sender: "alice", epoch: 1, body }),
      ).rejects.toMatchObject({ code: "replay" });
      await expect(
        decryptGroup({ record: rewound, hub: "main", sender: "alice", epoch: 1, body }),
      ).rejects.toMatchObject({ code: "decrypt_failed" });
    }
  });

  it("a bit flip anywhere is rejected with a typed error and no state change", async () => {
    const { alice, a, b } = await epochPair();
    const r = await encryptGroup({
      record: a,
      hub: "main",
      me: { name: "alice", identityKey: alice.ik },
      sign: alice.sign,
      content: { t: "text", id: "x", ts: 1, text: "hi" },
    });
    const frozen = deepFreeze(b);
    for (const at of [0, 1, 3, 10, r.body.length - 70, r.body.length - 1]) {
      const t = r.body.slice();
      t[at] = (t[at] as number) ^ 0x04;
      await expect(
        decryptGroup({ record: frozen, hub: "main", sender: "alice", epoch: 1, body: t }),
      ).rejects.toSatisfy((e) => isCoreError(e, "malformed") || isCoreError(e, "bad_signature"));
    }
    // wrong claimed sender / epoch
    await expect(
      decryptGroup({ record: frozen, hub: "main", sender: "carol", epoch: 1, body: r.body }),
    ).rejects.toMatchObject({
      code: "bad_signature",
    });
    await expect(
      decryptGroup({ record: frozen, hub: "main", sender: "alice", epoch: 2, body: r.body }),
    ).rejects.toMatchObject({
      code: "stale_epoch",
    });
    const ok = await decryptGroup({
      record: frozen,
      hub: "main",
      sender: "alice",
      epoch: 1,
      body: r.body,
    });
    expect(ok.content.t === "text" && ok.content.text).toBe("hi");
  });
});
