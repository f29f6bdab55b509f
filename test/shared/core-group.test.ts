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
  confirmKey,
  decodeCommitBody,
  decryptGroup,
  emptyGroup,
  encodeCommitBody,
  encryptGroup,
  type GroupRecord,
  nextRoster,
  parseGroupRecord,
  type RosterEntry,
  receiveCommit,
  splitCore,
  wrapInfo,
} from "../../shared/core/group";
import { initialPrekeys, type PrekeyState, publicSpk } from "../../shared/core/prekeys";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  hpkeSeal,
  randomBytes,
  sha256,
} from "../../shared/crypto";
import { concatBytes, toB64u } from "../../shared/encoding";

interface M {
  name: string;
  id: CryptoKeyPair & { publicKey: CryptoKey };
  ik: Uint8Array;
  sign: (m: Uint8Array) => Promise<Uint8Array>;
  pre: PrekeyState;
  entry: RosterEntry;
}

async function member(name: string): Promise<M> {
  const id = await generateIdentityKeyPair();
  const pre = await initialPrekeys(id, 0, randomBytes);
  const spk = publicSpk(pre);
  return {
    name,
    id: id as unknown as M["id"],
    ik: id.publicKey,
    sign: (m) => ed25519Sign(id.privateKey, m),
    pre,
    entry: { name, ik: toB64u(id.publicKey), spkId: spk.id, spkKey: spk.key, spkSig: spk.sig },
  };
}

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
    committer: "alice",
    committerIk: alice.ik,
    sign: alice.sign,
    roster,
    added: ["alice", "bob", "carol"],
    removed: [],
    random: randomBytes,
  });
  const wrapFor = (n: string) => built.wraps.find((w) => w.to === n)?.wrap as Uint8Array;
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
      spkSecret: (id) => (id === m.pre.spk.id ? b64(m.pre.spk.priv, "k") : null),
      now: 0,
      from: { name: by.name, identityKey: by.entry.ik },
    });
  return { alice, bob, carol, roster, built, wrapFor, receive };
}

describe("group commits", () => {
  it("a joiner accepts a valid commit; the record passed in is not mutated", async () => {
    const { bob, built, receive } = await setup();
    const rec = deepFreeze({ ...emptyGroup("g"), status: "joining" as const });
    const r = await receive(bob, rec);
    expect(r.record.status).toBe("member");
    expect(r.record.current?.epoch).toBe(1);
    expect(r.record.current).not.toHaveProperty("secret");
    expect(JSON.stringify(r.record)).not.toContain(toB64u(built.secret));
    expect(rec.status).toBe("joining");
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
      b64(bob.entry.spkKey, "k"),
      other,
      wrapInfo("main", "g", 1, bob.entry),
      sha256(body),
    );
    const wrap = concatBytes(sealed.enc, sealed.ciphertext);
    await expect(
      receive(bob, { ...emptyGroup("g"), status: "joining" }, built.core, wrap),
    ).rejects.toMatchObject({
      code: "bad_signature",
    });
  });

  it("rejects: altered core, wrong epoch, wrap for someone else, commit not adding us", async () => {
    const { bob, carol, built, receive, wrapFor } = await setup();
    const joining: GroupRecord = { ...emptyGroup("g"), status: "joining" };
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
    const member = (await receive(carol, joining)).record;
    const again = await buildCommit({
      hub: "main",
      group: "g",
      parentEpoch: 1,
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
    const joining: GroupRecord = { ...emptyGroup("g"), status: "joining" };
    const start = (await receive(carol, joining)).record;
    // dave claims to commit epoch 2 removing bob, without being a member or a joiner
    const forged = await buildCommit({
      hub: "main",
      group: "g",
      parentEpoch: 1,
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
    const m = (x: M) => ({
      username: x.name,
      identityKey: x.entry.ik,
      signedPrekey: { id: x.entry.spkId, key: x.entry.spkKey, sig: x.entry.spkSig },
    });
    const r = nextRoster({
      group: "g",
      epoch: 3,
      members: [m(alice), m(bob)],
      pendingJoins: [m(carol), m(bob)],
      pendingLeaves: ["bob"],
    });
    expect(r.roster.map((x) => x.name)).toEqual(["alice", "bob", "carol"]);
    expect(r.added).toEqual(["bob", "carol"]);
    expect(r.removed).toEqual(["bob"]);
  });
});

describe("group messages", () => {
  async function epochPair() {
    const { alice, bob, receive } = await setup();
    const joining: GroupRecord = { ...emptyGroup("g"), status: "joining" };
    const a = (await receive(alice, joining)).record;
    const b = (await receive(bob, joining)).record;
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
    const { alice, bob, built, receive } = await setup();
    const joining: GroupRecord = { ...emptyGroup("g"), status: "joining" };
    const a = (await receive(alice, joining)).record;
    let b = (await receive(bob, joining)).record;
    // No stored record holds the epoch secret (nor its confirmation key), in any encoding.
    const secret = toB64u(built.secret);
    const confirm = toB64u(confirmKey(built.secret, "main", "g", 1));
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

  it("a stored record of the old format (epoch secret included) is migrated: the secret is dropped", async () => {
    const { bob, built, receive } = await setup();
    const rec = (await receive(bob, { ...emptyGroup("g"), status: "joining" })).record;
    const legacy = JSON.parse(JSON.stringify(rec)) as { current: Record<string, unknown> };
    legacy.current.secret = toB64u(built.secret);
    const migrated = parseGroupRecord(legacy);
    expect(migrated).toEqual(rec);
    expect(JSON.stringify(migrated)).not.toContain(toB64u(built.secret));
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
