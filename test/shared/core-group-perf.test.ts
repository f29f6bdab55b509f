/**
 * The fast paths of group commits (shared/core/group.ts) against their reference
 * definitions: wrap info and sender chain keys encoded once per epoch give the same bytes as the
 * per-member lp()/HKDF of §9.2.3 and §9.5 (property tests); the verified-prekey cache never lets
 * a changed or unverified roster entry through; a large commit's wraps are in roster order and
 * each opens only for its own member under the reference wrap info; receiving in a large group
 * finds the sender through a per-array index that can never pick the wrong member, and keeps the
 * skipped-key bound.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { b64 } from "../../shared/core/codec";
import {
  createCommit,
  decryptGroup,
  encryptGroup,
  enterEpoch,
  forgetVerifiedPrekeys,
  type GroupRecord,
  MAX_GROUP_SKIPPED,
  type RosterEntry,
  senderChainKey,
  senderChainKeys,
  splitCore,
  verifyRosterPrekeys,
  wrapInfo,
  wrapInfoFor,
} from "../../shared/core/group";
import { spkMessage } from "../../shared/core/prekeys";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  hpkeOpen,
  type IdentityKeyPair,
  randomBytes,
  sha256,
  x25519GenerateKeyPair,
} from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";

const name = fc.string({ minLength: 1, maxLength: 40, unit: "grapheme" });
const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Uint8Array.from(b));
const epoch = fc.oneof(fc.nat(10), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }));
const u32 = fc.integer({ min: 0, max: 0xffffffff });

describe("per-epoch encodings equal the per-member reference", () => {
  it("wrapInfoFor(hub, group, epoch)(name, ik, spkId) = wrapInfo(...)", () => {
    fc.assert(
      fc.property(
        name,
        name,
        epoch,
        fc.array(fc.tuple(name, key32, u32), { maxLength: 5 }),
        (hub, group, e, ms) => {
          const fast = wrapInfoFor(hub, group, e);
          for (const [n, ik, spkId] of ms) {
            const entry: RosterEntry = { name: n, ik: toB64u(ik), spkId, spkKey: "", spkSig: "" };
            expect(fast(n, ik, spkId)).toEqual(wrapInfo(hub, group, e, entry));
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("senderChainKeys(secret, …, members) = senderChainKey(secret, …, each member)", () => {
    fc.assert(
      fc.property(
        key32,
        name,
        name,
        epoch,
        fc.array(fc.record({ name, ik: key32 }), { maxLength: 6 }),
        (secret, hub, group, e, ms) => {
          expect(senderChainKeys(secret, hub, group, e, ms)).toEqual(
            ms.map((m) => senderChainKey(secret, hub, group, e, m.name, m.ik)),
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it("enterEpoch's chains are the reference chains, ours and every other member's", async () => {
    const secret = randomBytes(32);
    const roster: RosterEntry[] = [];
    for (const n of ["a", "b", "c", "d"]) {
      roster.push({ name: n, ik: toB64u(randomBytes(32)), spkId: 1, spkKey: "", spkSig: "" });
    }
    const me = { name: "c", identityKey: b64((roster[2] as RosterEntry).ik, "ik") };
    const ep = enterEpoch("hub", "grp", 9, secret, roster, me, 0);
    const ref = (m: RosterEntry) =>
      toB64u(senderChainKey(secret, "hub", "grp", 9, m.name, b64(m.ik, "ik")));
    expect(ep.send.ck).toBe(ref(roster[2] as RosterEntry));
    expect(ep.receivers.map((r) => [r.name, r.ck])).toEqual(
      roster.filter((m) => m.name !== "c").map((m) => [m.name, ref(m)]),
    );
  });
});

async function entry(i: number) {
  const id = await generateIdentityKeyPair();
  const spk = await x25519GenerateKeyPair();
  const spkId = 100 + i;
  const sig = await ed25519Sign(id.privateKey, spkMessage(spkId, spk.publicKey));
  const e: RosterEntry = {
    name: `m${String(i).padStart(3, "0")}`,
    ik: toB64u(id.publicKey),
    spkId,
    spkKey: toB64u(spk.publicKey),
    spkSig: toB64u(sig),
  };
  return { e, id, spkSecret: spk.secretKey };
}

describe("the verified-prekey cache", () => {
  it("a verified roster stays verified; any changed field of an entry is verified afresh and refused", async () => {
    forgetVerifiedPrekeys();
    const a = await entry(1);
    const b = await entry(2);
    const other = await entry(3);
    await verifyRosterPrekeys([a.e, b.e]);
    await verifyRosterPrekeys([a.e, b.e]);
    const variants: Array<[string, RosterEntry]> = [
      ["identity key", { ...b.e, ik: other.e.ik }],
      ["prekey id", { ...b.e, spkId: b.e.spkId + 1 }],
      ["prekey", { ...b.e, spkKey: other.e.spkKey }],
      ["signature", { ...b.e, spkSig: other.e.spkSig }],
    ];
    for (const [what, bad] of variants) {
      await expect(verifyRosterPrekeys([a.e, bad]), what).rejects.toMatchObject({
        code: "bad_signature",
      });
      // A failure is never remembered: the same entry fails again.
      await expect(verifyRosterPrekeys([bad]), what).rejects.toMatchObject({
        code: "bad_signature",
      });
    }
  });

  it("reports the first failing entry in roster order", async () => {
    forgetVerifiedPrekeys();
    const [a, b, c] = [await entry(1), await entry(2), await entry(3)];
    const badB = { ...b.e, spkSig: c.e.spkSig };
    const badC = { ...c.e, spkSig: a.e.spkSig };
    await expect(verifyRosterPrekeys([a.e, badB, badC])).rejects.toThrow(/m002/);
  });
});

describe("a large commit", () => {
  it("createCommit refuses a roster with a bad signed prekey, naming the first in roster order", async () => {
    const members = [];
    for (let i = 0; i < 24; i++) members.push(await entry(i));
    const roster = members.map((m) => m.e);
    const committer = members[0] as (typeof members)[number];
    const params = {
      hub: "main",
      group: "big",
      parentEpoch: 4,
      committer: committer.e.name,
      committerIk: committer.id.publicKey,
      sign: (m: Uint8Array) => ed25519Sign(committer.id.privateKey, m),
      added: [],
      removed: [],
      random: randomBytes,
    };
    const bad = roster.map((m, i) =>
      i === 17 || i === 21 ? { ...m, spkSig: (roster[i - 1] as RosterEntry).spkSig } : m,
    );
    for (const warm of [false, true]) {
      if (!warm) forgetVerifiedPrekeys();
      else await verifyRosterPrekeys(roster.filter((_, i) => i !== 17 && i !== 21));
      await expect(createCommit({ ...params, roster: bad })).rejects.toMatchObject({
        code: "bad_signature",
        message: expect.stringContaining("m017"),
      });
    }
    const ok = await createCommit({ ...params, roster });
    expect(ok.wraps.map((w) => w.to)).toEqual(roster.map((m) => m.name));
  });

  it("wraps every member in roster order; each opens only for its member with the reference info", async () => {
    const size = 40;
    const members = [];
    for (let i = 0; i < size; i++) members.push(await entry(i));
    const roster = members.map((m) => m.e);
    const committer = members[0] as (typeof members)[number];
    forgetVerifiedPrekeys();
    // createCommit: the roster's prekeys are checked (one batch, above the Node backend's pool
    // threshold) while the wraps are sealed.
    const built = await createCommit({
      hub: "main",
      group: "big",
      parentEpoch: 4,
      committer: committer.e.name,
      committerIk: committer.id.publicKey,
      sign: (m) => ed25519Sign(committer.id.privateKey, m),
      roster,
      added: [],
      removed: [],
      random: randomBytes,
    });
    expect(built.wraps.map((w) => w.to)).toEqual(roster.map((m) => m.name));
    const aad = sha256(splitCore(built.core).body);
    for (const [i, m] of members.entries()) {
      const wrap = (built.wraps[i] as { wrap: Uint8Array }).wrap;
      const info = wrapInfo("main", "big", 5, m.e);
      const secret = await hpkeOpen(m.spkSecret, wrap.slice(0, 32), wrap.slice(32), info, aad);
      expect(secret).toEqual(built.secret);
      // Bound to the recipient: a neighbour's key or info does not open it.
      const next = members[(i + 1) % size] as (typeof members)[number];
      await expect(
        hpkeOpen(next.spkSecret, wrap.slice(0, 32), wrap.slice(32), info, aad),
      ).rejects.toMatchObject({ name: "HpkeOpenError" });
      await expect(
        hpkeOpen(
          m.spkSecret,
          wrap.slice(0, 32),
          wrap.slice(32),
          wrapInfo("main", "big", 5, next.e),
          aad,
        ),
      ).rejects.toMatchObject({ name: "HpkeOpenError" });
    }
    // Fresh ephemeral per wrap.
    expect(new Set(built.wraps.map((w) => toB64u(w.wrap.slice(0, 32)))).size).toBe(size);
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
    const roster: RosterEntry[] = people.map((p) => ({
      name: p.name,
      ik: toB64u(p.id.publicKey),
      spkId: 1,
      spkKey: "",
      spkSig: "",
    }));
    for (let i = 0; roster.length < size; i++) {
      roster.push({ name: `x${i}`, ik: toB64u(randomBytes(32)), spkId: 1, spkKey: "", spkSig: "" });
    }
    roster.sort((a, b) => (a.name < b.name ? -1 : 1));
    const meIk = randomBytes(32);
    roster.push({ name: "zz-me", ik: toB64u(meIk), spkId: 1, spkKey: "", spkSig: "" });
    const rec = (name: string, ik: Uint8Array): GroupRecord => ({
      group: "g",
      status: "member",
      current: enterEpoch("main", "g", 3, secret, roster, { name, identityKey: ik }, 0),
      previous: null,
      pendingCommit: null,
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
