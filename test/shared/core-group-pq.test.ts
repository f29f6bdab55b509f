/**
 * Post-quantum group wraps (PROTOCOL.md §9.2.3, §9.3): hybrid (X-Wing) leaf keys, 0x02 wraps,
 * mixed groups, and every downgrade a relay or committer could try — an X25519 wrap for a hybrid
 * leaf key, a roster entry without its ML-KEM hash, a member going back to a classical leaf key,
 * an ML-KEM key that is not the one its owner signed. Plus the "harvest now, decrypt later"
 * thief: a recording of the commit and every X25519 secret involved does not open a hybrid wrap.
 */
import { shake256 } from "@noble/hashes/sha3.js";
import { describe, expect, it } from "vitest";
import {
  buildCommit,
  type GroupRecord,
  isPostQuantum,
  makeLeaves,
  type OwnLeaf,
  pendingFrom,
  type RosterEntry,
  receiveCommit,
  splitCore,
} from "../../shared/core/group";
import { wrapInfoFor } from "../../shared/core/group-schedule";
import { hpkeOpen, hpkeSeal, randomBytes, sha256 } from "../../shared/crypto";
import { concatBytes, fromB64u, toB64u } from "../../shared/encoding";
import { entryOf, type GM, groupMember, joiningRecord, kemsOf } from "../support/group-fixture";

const hybrid = (name: string) => groupMember(name, { hybrid: true });

async function commit(committer: GM, members: GM[], opts: { roster?: RosterEntry[] } = {}) {
  const roster = opts.roster ?? members.map((m) => m.entry);
  const names = members.map((m) => m.name);
  const built = await buildCommit({
    hub: "main",
    group: "g",
    parentEpoch: 0,
    prev: null,
    committer: committer.name,
    committerIk: committer.ik,
    sign: committer.sign,
    roster,
    added: names,
    removed: [],
    random: randomBytes,
    kems: kemsOf(...members),
  });
  const wrapFor = (n: string) => built.wraps.find((w) => w.to === n)?.wrap as Uint8Array;
  const receive = (m: GM, wrap = wrapFor(m.name), core = built.core, rec?: GroupRecord) =>
    receiveCommit({
      record: rec ?? joiningRecord(m),
      hub: "main",
      me: { name: m.name, identityKey: m.ik },
      itemEpoch: 1,
      core,
      wrap,
      now: 1,
      from: { name: committer.name, identityKey: toB64u(committer.ik) },
    });
  const aliceRecord: GroupRecord = {
    ...joiningRecord(committer),
    pendingCommit: pendingFrom(built, {
      id: "1",
      parentEpoch: 0,
      roster,
      added: names,
      removed: [],
      at: 0,
    }),
  };
  return { built, roster, wrapFor, receive, aliceRecord };
}

/** The X25519 half of a hybrid leaf key's secret: SHAKE256(seed, 96)[64..96] (§3.13). */
const x25519Half = (seed: string) => shake256(fromB64u(seed), { dkLen: 96 }).slice(64);

describe("hybrid group wraps (§9.2.3)", () => {
  it("every wrap to a hybrid leaf key is an X-Wing wrap (0x02, 1169 bytes) and opens for its member only", async () => {
    const [alice, bob, carol] = [await hybrid("alice"), await hybrid("bob"), await hybrid("carol")];
    const c = await commit(alice, [alice, bob, carol]);
    for (const w of c.built.wraps) {
      expect(w.wrap[0]).toBe(0x02);
      expect(w.wrap.length).toBe(1 + 1120 + 32 + 16);
    }
    expect(isPostQuantum(c.roster)).toBe(true);
    // The roster names each member's ML-KEM half by its hash, which the leaf signature covers.
    for (const [i, m] of [alice, bob, carol].entries())
      expect(c.roster[i]?.leafKem).toBe(toB64u(sha256(fromB64u(m.leaves[0]?.kem as string))));
    const b = await c.receive(bob);
    const k = await c.receive(carol);
    expect(b.record.current?.authenticator).toBe(k.record.current?.authenticator);
    expect(b.record.current?.epoch).toBe(1);
    // bob's wrap does not open for carol
    await expect(c.receive(carol, c.wrapFor("bob"))).rejects.toMatchObject({
      code: "decrypt_failed",
    });
  });

  it("a mixed group: the classical member gets an X25519 wrap and the epoch is not post-quantum", async () => {
    const [alice, bob] = [await hybrid("alice"), await hybrid("bob")];
    const old = await groupMember("carol");
    const c = await commit(alice, [alice, bob, old]);
    expect(c.wrapFor("bob")[0]).toBe(0x02);
    expect(c.wrapFor("carol")[0]).toBe(0x01);
    expect(c.wrapFor("carol").length).toBe(81);
    expect(isPostQuantum(c.roster)).toBe(false);
    const b = await c.receive(bob);
    const k = await c.receive(old);
    expect(b.record.current?.authenticator).toBe(k.record.current?.authenticator);
  });

  it("a thief with the recorded commit and every X25519 secret (what a quantum computer yields) opens no hybrid wrap", async () => {
    const [alice, bob, carol] = [await hybrid("alice"), await hybrid("bob"), await hybrid("carol")];
    const c = await commit(alice, [alice, bob, carol]);
    const { body } = splitCore(c.built.core);
    const info = wrapInfoFor("main", "g", 1);
    for (const m of [bob, carol]) {
      const wrap = c.wrapFor(m.name);
      const skX = x25519Half(m.leaves[0]?.priv as string);
      // Classical HPKE with the leaf key's X25519 secret: how a wrap without its ML-KEM part
      // (an X25519 wrap to the same `leafKey`) would open. It must not open this one.
      const enc = wrap.slice(1, 33);
      const opened = await hpkeOpen(
        skX,
        enc,
        wrap.slice(33),
        info("joiner", m.name, m.ik, m.entry.leafId),
        sha256(body),
      ).then(
        () => true,
        () => false,
      );
      expect(opened).toBe(false);
      // Sanity of the attack: the same thief does open a classical wrap to that X25519 key.
      const i = info("joiner", m.name, m.ik, m.entry.leafId);
      const classical = await hpkeSeal(
        fromB64u(m.entry.leafKey),
        new Uint8Array(32),
        i,
        sha256(body),
      );
      await expect(
        hpkeOpen(skX, classical.enc, classical.ciphertext, i, sha256(body)),
      ).resolves.toEqual(new Uint8Array(32));
    }
  });
});

describe("downgrades are refused (§9.3)", () => {
  it("an X25519 wrap for a hybrid leaf key is refused as a downgrade, never opened", async () => {
    const [alice, bob] = [await hybrid("alice"), await hybrid("bob")];
    const c = await commit(alice, [alice, bob]);
    const { body } = splitCore(c.built.core);
    // What a committer (or relay) that dropped the ML-KEM half would send: X25519 HPKE to leafKey.
    const w = await hpkeSeal(
      fromB64u(bob.entry.leafKey),
      randomBytes(32),
      wrapInfoFor("main", "g", 1)("joiner", "bob", bob.ik, bob.entry.leafId),
      sha256(body),
    );
    const stripped = concatBytes(new Uint8Array([0x01]), w.enc, w.ciphertext);
    await expect(c.receive(bob, stripped)).rejects.toMatchObject({ code: "downgrade" });
  });

  it("a roster entry naming our hybrid leaf key without its ML-KEM hash is refused", async () => {
    const [alice, bob] = [await hybrid("alice"), await hybrid("bob")];
    const { leafKem: _, ...bare } = bob.entry;
    const c = await commit(alice, [alice, bob], { roster: [alice.entry, bare] });
    // The committer's side: without `leafKem` it seals an X25519 wrap to the bare key.
    expect(c.wrapFor("bob")[0]).toBe(0x01);
    await expect(c.receive(bob)).rejects.toMatchObject({ code: "downgrade" });
  });

  it("a member whose leaf key was hybrid may not come back classical, even with a key it signed", async () => {
    const [alice, bob, carol] = [await hybrid("alice"), await hybrid("bob"), await hybrid("carol")];
    const c1 = await commit(alice, [alice, bob, carol]);
    const b1 = await c1.receive(bob);
    // An old classical leaf key carol really signed for this group (a relay replays it).
    const old = await makeLeaves({
      hub: "main",
      group: "g",
      epoch: 0,
      count: 1,
      random: randomBytes,
      sign: carol.sign,
      classical: true,
    });
    const carolClassical = entryOf("carol", carol.ik, old[0] as (typeof old)[number]);
    const aliceRec = (await c1.receive(alice, undefined, undefined, c1.aliceRecord)).record;
    const init = fromB64u(aliceRec.current?.init as string);
    const interim = fromB64u(aliceRec.current?.interim as string);
    // Epoch 2 wraps to alice's and bob's next leaf keys, as the relay would list them.
    const aliceNext = aliceRec.leaves[0] as OwnLeaf;
    const bobNext = b1.record.leaves[0] as OwnLeaf;
    const roster2 = [
      entryOf("alice", alice.ik, aliceNext),
      entryOf("bob", bob.ik, bobNext),
      carolClassical,
    ];
    const params = {
      hub: "main",
      group: "g",
      parentEpoch: 1,
      prev: { init, interim },
      committer: "alice",
      committerIk: alice.ik,
      sign: alice.sign,
      roster: roster2,
      added: [],
      removed: [],
      random: randomBytes,
      kems: new Map([
        ["alice", aliceNext.kem as string],
        ["bob", bobNext.kem as string],
      ]),
    };
    // An honest committer refuses to wrap to it (createCommit checks against its epoch's roster).
    const { createCommit } = await import("../../shared/core/group");
    await expect(
      createCommit({ ...params, ownLeaves: aliceRec.leaves, prevRoster: aliceRec.current?.roster }),
    ).rejects.toMatchObject({ code: "downgrade" });
    // A receiver refuses a commit that does it anyway.
    const forged = await buildCommit(params);
    await expect(
      receiveCommit({
        record: b1.record,
        hub: "main",
        me: { name: "bob", identityKey: bob.ik },
        itemEpoch: 2,
        core: forged.core,
        wrap: forged.wraps.find((w) => w.to === "bob")?.wrap as Uint8Array,
        now: 2,
        from: { name: "alice", identityKey: toB64u(alice.ik) },
      }),
    ).rejects.toMatchObject({ code: "downgrade" });
  });

  it("an ML-KEM key that is not the one its owner signed is refused by the committer, also after a commit to the genuine one", async () => {
    const [alice, bob] = [await hybrid("alice"), await hybrid("bob")];
    const other = await hybrid("bob");
    const build = (bobKem: string) =>
      buildCommit({
        hub: "main",
        group: "g",
        parentEpoch: 0,
        prev: null,
        committer: "alice",
        committerIk: alice.ik,
        sign: alice.sign,
        roster: [alice.entry, bob.entry],
        added: ["alice", "bob"],
        removed: [],
        random: randomBytes,
        kems: new Map([["bob", bobKem]]),
      });
    // The relay hands out another ML-KEM key for bob's leaf key: cold, then after a commit to
    // the genuine key (its checked decoding is cached, keyed by what was checked).
    await expect(build(other.leaves[0]?.kem as string)).rejects.toMatchObject({
      code: "bad_signature",
    });
    await build(bob.leaves[0]?.kem as string);
    await expect(build(other.leaves[0]?.kem as string)).rejects.toMatchObject({
      code: "bad_signature",
    });
  });
});
