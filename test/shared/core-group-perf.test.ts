/**
 * The fast paths of group commits (shared/core/group-*.ts) against their reference definitions:
 * wrap info and sender chain keys encoded once per epoch give the same bytes as the per-member
 * lp()/HKDF of §9.2 and §9.3 (property tests); the verified-leaf cache never lets a changed or
 * unverified roster entry through; a large commit's wraps each open only for their own member
 * under the reference wrap info; receiving in a large group finds the sender through a per-array
 * index that can never pick the wrong member, and keeps the skipped-key bound.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { b64, u64be } from "../../shared/core/codec";
import {
  createCommit,
  decryptGroup,
  encryptGroup,
  enterEpoch,
  forgetVerifiedLeaves,
  type GroupRecord,
  MAX_GROUP_SKIPPED,
  type RosterEntry,
  splitCore,
  verifyRosterLeaves,
} from "../../shared/core/group";
import { epochKeys, groupContext, wrapInfoFor, ZERO_HASH } from "../../shared/core/group-schedule";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  hkdfSha256,
  hpkeOpen,
  type IdentityKeyPair,
  randomBytes,
  sha256,
} from "../../shared/crypto";
import { concatBytes, lp, toB64u } from "../../shared/encoding";
import { groupMember } from "../support/group-fixture";

const name = fc.string({ minLength: 1, maxLength: 40, unit: "grapheme" });
const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Uint8Array.from(b));
const epoch = fc.oneof(fc.nat(10), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const EMPTY = new Uint8Array(0);

/** A roster entry whose leaf key is never used to seal (receiving tests). */
const fakeEntry = (n: string, ik: Uint8Array): RosterEntry => ({
  name: n,
  ik: toB64u(ik),
  leafId: 1,
  leafKey: toB64u(sha256(ik)),
  leafEpoch: 0,
  leafNonce: toB64u(new Uint8Array(16)),
  leafSig: toB64u(new Uint8Array(64)),
});

function enter(
  secret: Uint8Array,
  roster: RosterEntry[],
  me: { name: string; identityKey: Uint8Array },
) {
  return enterEpoch({
    hub: "main",
    group: "g",
    epoch: 3,
    joiner: secret,
    transcript: ZERO_HASH,
    tag: null,
    interim: ZERO_HASH,
    roster,
    me,
    now: 0,
  });
}

describe("per-epoch encodings equal the per-member reference", () => {
  it("wrapInfoFor(hub, group, epoch)(kind, name, ik, leafId) = lp(label, hub, group, epoch, kind, name, ik, leafId)", () => {
    fc.assert(
      fc.property(
        name,
        name,
        epoch,
        fc.array(
          fc.tuple(fc.constantFrom("member" as const, "joiner" as const), name, key32, u32),
          {
            maxLength: 5,
          },
        ),
        (hub, group, e, ms) => {
          const fast = wrapInfoFor(hub, group, e);
          for (const [k, n, ik, id] of ms) {
            expect(fast(k, n, ik, id)).toEqual(
              lp("parley/v2/group-wrap", hub, group, u64be(e), k, n, ik, id),
            );
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("epochKeys' chains = HKDF(epoch_secret, lp(label) || lp(name, ik, leaf)) for each member", () => {
    fc.assert(
      fc.property(
        key32,
        key32,
        fc.array(fc.record({ name, ik: key32, leaf: key32 }), { maxLength: 6 }),
        (joiner, th, ms) => {
          const ctx = groupContext("h", "g", 7, th);
          const epochSecret = hkdfSha256(joiner, EMPTY, ctx, 32);
          const ref = ms.map((m) =>
            hkdfSha256(
              epochSecret,
              EMPTY,
              concatBytes(lp("parley/v2/group-sender"), lp(m.name, m.ik, m.leaf)),
              32,
            ),
          );
          expect(epochKeys(joiner, ctx, ms).chains).toEqual(ref);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("enterEpoch's chains are the reference chains, ours and every other member's", async () => {
    const secret = randomBytes(32);
    const roster: RosterEntry[] = ["a", "b", "c", "d"].map((n) => fakeEntry(n, randomBytes(32)));
    const me = { name: "c", identityKey: b64((roster[2] as RosterEntry).ik, "ik") };
    const ep = enter(secret, roster, me);
    const chain = (m: RosterEntry) =>
      toB64u(
        epochKeys(secret, groupContext("main", "g", 3, ZERO_HASH), [
          { name: m.name, ik: b64(m.ik, "ik"), leaf: b64(m.leafKey, "l") },
        ]).chains[0] as Uint8Array,
      );
    expect(ep.send.ck).toBe(chain(roster[2] as RosterEntry));
    expect(ep.receivers.map((r) => [r.name, r.ck])).toEqual(
      roster.filter((m) => m.name !== "c").map((m) => [m.name, chain(m)]),
    );
  });
});

async function entry(i: number) {
  const m = await groupMember(`m${String(i).padStart(3, "0")}`, { group: "big", count: 1 });
  const leaf = m.leaves[0] as (typeof m.leaves)[number];
  return { e: m.entry, m, leafSecret: b64(leaf.priv, "leaf") };
}

describe("the verified-leaf cache", () => {
  it("a verified roster stays verified; any changed field of an entry is verified afresh and refused", async () => {
    forgetVerifiedLeaves();
    const a = await entry(1);
    const b = await entry(2);
    const other = await entry(3);
    await verifyRosterLeaves("main", "big", [a.e, b.e]);
    await verifyRosterLeaves("main", "big", [a.e, b.e]);
    const variants: Array<[string, RosterEntry]> = [
      ["identity key", { ...b.e, ik: other.e.ik }],
      ["leaf id", { ...b.e, leafId: b.e.leafId + 1 }],
      ["leaf epoch", { ...b.e, leafEpoch: b.e.leafEpoch + 1 }],
      ["leaf key", { ...b.e, leafKey: other.e.leafKey }],
      ["leaf nonce", { ...b.e, leafNonce: other.e.leafNonce }],
      ["signature", { ...b.e, leafSig: other.e.leafSig }],
    ];
    for (const [what, bad] of variants) {
      await expect(verifyRosterLeaves("main", "big", [a.e, bad]), what).rejects.toMatchObject({
        code: "bad_signature",
      });
      // A failure is never remembered: the same entry fails again.
      await expect(verifyRosterLeaves("main", "big", [bad]), what).rejects.toMatchObject({
        code: "bad_signature",
      });
    }
  });

  it("reports the first failing entry in roster order", async () => {
    forgetVerifiedLeaves();
    const [a, b, c] = [await entry(1), await entry(2), await entry(3)];
    const badB = { ...b.e, leafSig: c.e.leafSig };
    const badC = { ...c.e, leafSig: a.e.leafSig };
    await expect(verifyRosterLeaves("main", "big", [a.e, badB, badC])).rejects.toThrow(/m002/);
  });
});

describe("a large commit", () => {
  it("createCommit refuses a roster with a bad leaf key, naming the first in roster order", async () => {
    const members = [];
    for (let i = 0; i < 24; i++) members.push(await entry(i));
    const roster = members.map((m) => m.e);
    const committer = members[0] as (typeof members)[number];
    const params = {
      hub: "main",
      group: "big",
      parentEpoch: 4,
      prev: { init: randomBytes(32), interim: ZERO_HASH },
      ownLeaves: committer.m.leaves,
      committer: committer.e.name,
      committerIk: committer.m.ik,
      sign: committer.m.sign,
      added: [],
      removed: [],
      random: randomBytes,
    };
    const bad = roster.map((m, i) =>
      i === 17 || i === 21 ? { ...m, leafSig: (roster[i - 1] as RosterEntry).leafSig } : m,
    );
    for (const warm of [false, true]) {
      if (!warm) forgetVerifiedLeaves();
      else
        await verifyRosterLeaves(
          "main",
          "big",
          roster.filter((_, i) => i !== 17 && i !== 21),
        );
      await expect(createCommit({ ...params, roster: bad })).rejects.toMatchObject({
        code: "bad_signature",
        message: expect.stringContaining("m017"),
      });
    }
    const ok = await createCommit({ ...params, roster });
    expect(ok.wraps.map((w) => w.to)).toEqual(roster.map((m) => m.name));
    expect(ok.wraps.map((w) => w.leaf)).toEqual(roster.map((m) => m.leafId));
  });

  it("wraps every member in roster order; each opens only for its member with the reference info", async () => {
    const size = 40;
    const members = [];
    for (let i = 0; i < size; i++) members.push(await entry(i));
    const roster = members.map((m) => m.e);
    const committer = members[0] as (typeof members)[number];
    forgetVerifiedLeaves();
    // createCommit: the roster's leaf keys are checked (one batch, above the Node backend's pool
    // threshold) while the wraps are sealed.
    const built = await createCommit({
      hub: "main",
      group: "big",
      parentEpoch: 4,
      prev: { init: randomBytes(32), interim: ZERO_HASH },
      ownLeaves: committer.m.leaves,
      committer: committer.e.name,
      committerIk: committer.m.ik,
      sign: committer.m.sign,
      roster,
      added: [],
      removed: [],
      random: randomBytes,
    });
    expect(built.wraps.map((w) => w.to)).toEqual(roster.map((m) => m.name));
    const aad = sha256(splitCore(built.core).body);
    const info = (e: RosterEntry) =>
      lp(
        "parley/v2/group-wrap",
        "main",
        "big",
        u64be(5),
        "member",
        e.name,
        b64(e.ik, "ik"),
        e.leafId,
      );
    const secrets = new Set<string>();
    for (const [i, m] of members.entries()) {
      const wrap = (built.wraps[i] as { wrap: Uint8Array }).wrap;
      expect(wrap[0]).toBe(1); // the wrap format's version (§9.2)
      const [e, ct] = [wrap.slice(1, 33), wrap.slice(33)];
      secrets.add(toB64u(await hpkeOpen(m.leafSecret, e, ct, info(m.e), aad)));
      // Bound to the recipient: a neighbour's key or info does not open it.
      const next = members[(i + 1) % size] as (typeof members)[number];
      await expect(hpkeOpen(next.leafSecret, e, ct, info(m.e), aad)).rejects.toMatchObject({
        name: "HpkeOpenError",
      });
      await expect(hpkeOpen(m.leafSecret, e, ct, info(next.e), aad)).rejects.toMatchObject({
        name: "HpkeOpenError",
      });
    }
    // Every existing member gets the same commit secret, never the joiner secret itself.
    expect(secrets.size).toBe(1);
    expect(secrets.has(toB64u(built.joiner))).toBe(false);
    // Fresh ephemeral per wrap.
    expect(new Set(built.wraps.map((w) => toB64u(w.wrap.slice(1, 33)))).size).toBe(size);
  });
});

describe("receiving in a large group", () => {
  async function bigGroup(size: number, senders: number) {
    const secret = randomBytes(32);
    const people: Array<{ name: string; id: IdentityKeyPair }> = [];
    for (let i = 0; i < senders; i++) {
      const id = await generateIdentityKeyPair();
      people.push({ name: `s${i}`, id });
    }
    const roster: RosterEntry[] = people.map((p) => fakeEntry(p.name, p.id.publicKey));
    for (let i = 0; roster.length < size; i++) roster.push(fakeEntry(`x${i}`, randomBytes(32)));
    roster.sort((a, b) => (a.name < b.name ? -1 : 1));
    const meIk = randomBytes(32);
    roster.push(fakeEntry("zz-me", meIk));
    const rec = (name: string, ik: Uint8Array): GroupRecord => ({
      group: "g",
      status: "member",
      current: enter(secret, roster, { name, identityKey: ik }),
      previous: null,
      pendingCommit: null,
      leaves: [],
    });
    const me = rec("zz-me", meIk);
    const sent = async (k: number, count: number) => {
      const p = people[k] as (typeof people)[number];
      let r = rec(p.name, p.id.publicKey);
      const out: Uint8Array[] = [];
      for (let i = 0; i < count; i++) {
        const e = await encryptGroup({
          record: r,
          hub: "main",
          me: { name: p.name, identityKey: p.id.publicKey },
          sign: (m) => ed25519Sign(p.id.privateKey, m),
          content: { t: "text", id: `${p.name}-${i}`, ts: 1, text: `${p.name} ${i}` },
        });
        r = e.record;
        out.push(e.body);
      }
      return out;
    };
    return { me, sent, people };
  }

  it("interleaved senders in a 300-member group each decrypt as themselves", async () => {
    const { me, sent, people } = await bigGroup(300, 3);
    const bodies = [await sent(0, 4), await sent(1, 4), await sent(2, 4)];
    let rec = me;
    for (let i = 0; i < 4; i++) {
      for (const k of [2, 0, 1]) {
        const r = await decryptGroup({
          record: rec,
          hub: "main",
          sender: (people[k] as { name: string }).name,
          epoch: 3,
          body: (bodies[k] as Uint8Array[])[i] as Uint8Array,
        });
        expect(r.content).toMatchObject({ text: `s${k} ${i}` });
        rec = r.record;
      }
    }
    // A message under another member's name never decrypts (signature is per sender).
    await expect(
      decryptGroup({
        record: me,
        hub: "main",
        sender: "s1",
        epoch: 3,
        body: (bodies[0] as Uint8Array[])[0] as Uint8Array,
      }),
    ).rejects.toMatchObject({ code: "bad_signature" });
  });

  it("an array changed in place after it was indexed still resolves every sender correctly", async () => {
    const { me, sent, people } = await bigGroup(50, 2);
    const [b0] = await sent(0, 1);
    const [b1] = await sent(1, 1);
    const cur = me.current;
    if (cur === null) throw new Error("epoch");
    // Index the arrays once, then swap two chains in place (never done by the code: a stale
    // index must cost a rescan, not a wrong chain).
    const receivers = cur.receivers.slice();
    const roster = cur.roster.slice();
    const rec: GroupRecord = { ...me, current: { ...cur, receivers, roster } };
    await decryptGroup({
      record: rec,
      hub: "main",
      sender: "s0",
      epoch: 3,
      body: b0 as Uint8Array,
    });
    const i0 = receivers.findIndex((x) => x.name === "s0");
    const i1 = receivers.findIndex((x) => x.name === "s1");
    [receivers[i0], receivers[i1]] = [
      receivers[i1] as (typeof receivers)[number],
      receivers[i0] as (typeof receivers)[number],
    ];
    const r0 = roster.findIndex((x) => x.name === "s0");
    const r1 = roster.findIndex((x) => x.name === "s1");
    [roster[r0], roster[r1]] = [roster[r1] as RosterEntry, roster[r0] as RosterEntry];
    for (const [k, body] of [
      [0, b0],
      [1, b1],
    ] as const) {
      const r = await decryptGroup({
        record: rec,
        hub: "main",
        sender: (people[k] as { name: string }).name,
        epoch: 3,
        body: body as Uint8Array,
      });
      expect(r.content).toMatchObject({ text: `s${k} 0` });
    }
  });

  it("the skipped-key bound holds across senders (§9.5)", async () => {
    const { me, sent, people } = await bigGroup(40, 3);
    // Each sender's 900th message first: 899 skipped keys each (under MAX_SKIP), 2697 in total.
    let rec = me;
    const sum = (r: GroupRecord) =>
      (r.current?.receivers ?? []).reduce((a, x) => a + x.skipped.length, 0);
    const totals: number[] = [];
    for (const k of [0, 1, 2]) {
      const body = (await sent(k, 900)).at(-1) as Uint8Array;
      const name = (people[k] as { name: string }).name;
      rec = (await decryptGroup({ record: rec, hub: "main", sender: name, epoch: 3, body })).record;
      totals.push(sum(rec));
    }
    expect(totals[0]).toBe(899);
    expect(totals[1]).toBe(1798);
    // Exactly the bound is kept, and what goes is the oldest stored: the first sender's first
    // 697 keys, not a share of every sender's.
    expect(totals[2]).toBe(MAX_GROUP_SKIPPED);
    const rx = (k: number) =>
      (rec.current?.receivers ?? []).find((x) => x.name === (people[k] as { name: string }).name)
        ?.skipped ?? [];
    expect(rx(0).map((s) => s.n)).toEqual(Array.from({ length: 202 }, (_, i) => 697 + i));
    expect(rx(1)).toHaveLength(899);
    expect(rx(2)).toHaveLength(899);
    // The oldest key of the first sender is gone for good; a kept one still decrypts.
    const s0 = await sent(0, 900);
    const name0 = (people[0] as { name: string }).name;
    await expect(
      decryptGroup({
        record: rec,
        hub: "main",
        sender: name0,
        epoch: 3,
        body: s0[0] as Uint8Array,
      }),
    ).rejects.toMatchObject({ code: "replay" });
    const kept = await decryptGroup({
      record: rec,
      hub: "main",
      sender: name0,
      epoch: 3,
      body: s0[800] as Uint8Array,
    });
    expect(kept.content).toMatchObject({ text: `s0 800` });
  }, 60_000);
});
