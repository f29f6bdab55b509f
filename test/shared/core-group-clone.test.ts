/**
 * Two devices holding one identity (a restore on a second device, or a relay that lists the other
 * device's leaf key under our name) must never encrypt under the same AES-GCM key and nonce
 * (PROTOCOL.md §9.5): each sending chain takes the member's own leaf key, a committer and a
 * receiver accept only rosters that list one of their own leaf keys for them, a commit under our
 * name is applied only if we persisted it (§9.4), and every message carries a random nonce.
 */
import { describe, expect, it } from "vitest";
import { encodeContent } from "../../shared/core/content";
import {
  buildCommit,
  createCommit,
  decryptGroup,
  encryptGroup,
  enterEpoch,
  type GroupRecord,
  pendingFrom,
  type RosterEntry,
  receiveCommit,
} from "../../shared/core/group";
import { ZERO_HASH } from "../../shared/core/group-schedule";
import { randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { entryOf, type GM, groupMember, joiningRecord } from "../support/group-fixture";

async function person(name: string, identity?: GM) {
  const m = await groupMember(name, identity === undefined ? {} : { identity });
  return { name, m, id: { publicKey: m.ik }, sign: m.sign, entry: m.entry };
}
type Person = Awaited<ReturnType<typeof person>>;

/** `me` in epoch 2 of a group whose joiner secret is `secret` (its keys as §9.3 derives them). */
function record(secret: Uint8Array, roster: RosterEntry[], me: Person): GroupRecord {
  return {
    group: "g",
    status: "member",
    current: enterEpoch({
      hub: "main",
      group: "g",
      epoch: 2,
      joiner: secret,
      transcript: ZERO_HASH,
      tag: null,
      interim: ZERO_HASH,
      roster,
      me: { name: me.name, identityKey: me.m.ik },
      now: 0,
    }),
    previous: null,
    pendingCommit: null,
    leaves: me.m.leaves,
  };
}

const text = (t: string) => ({ t: "text" as const, id: "m1", ts: 1, text: t });
const xor = (a: Uint8Array, b: Uint8Array) => a.map((x, i) => x ^ (b[i] as number));
/** The AES-GCM ciphertext (without tag) of a 0x11 body: after 1+1+4+12 header bytes. */
const ctOf = (body: Uint8Array) => body.slice(18, body.length - 64 - 16);

describe("a cloned sending chain never reuses a (key, nonce) pair (§9.5)", () => {
  it("two devices at the same counter: same message key, different nonces, no XOR leak", async () => {
    const [alice, bob] = [await person("alice"), await person("bob")];
    const secret = randomBytes(32);
    const roster = [alice.entry, bob.entry];
    // Device 1 and device 2 of alice: byte-identical state, as after a restore.
    const dev1 = record(secret, roster, alice);
    const dev2 = structuredClone(dev1);
    const send = (rec: GroupRecord, t: string) =>
      encryptGroup({
        record: rec,
        hub: "main",
        me: { name: "alice", identityKey: alice.id.publicKey },
        sign: alice.sign,
        content: text(t),
      });
    const a = await send(dev1, "attack at dawn!!");
    const b = await send(dev2, "retreat at noon!");
    expect(dev1.current?.send).toEqual(dev2.current?.send); // same chain, same counter
    expect([a.body[1], b.body[1]]).toEqual([0x11, 0x11]); // the type that carries a nonce
    const nonceA = a.body.slice(6, 18);
    const nonceB = b.body.slice(6, 18);
    expect(toB64u(nonceA)).not.toBe(toB64u(nonceB));
    // Same-length plaintexts: with a shared nonce ct_a ⊕ ct_b would equal pt_a ⊕ pt_b.
    const pa = encodeContent(text("attack at dawn!!"));
    const pb = encodeContent(text("retreat at noon!"));
    expect(pa.length).toBe(pb.length);
    const ca = ctOf(a.body);
    const cb = ctOf(b.body);
    expect(toB64u(xor(ca, cb))).not.toBe(
      toB64u(xor(pa.slice(0, ca.length), pb.slice(0, cb.length))),
    );
    // Both are valid messages of alice's; bob reads the first, the second reuses its counter.
    const bobRec = record(secret, roster, bob);
    const got = await decryptGroup({
      record: bobRec,
      hub: "main",
      sender: "alice",
      epoch: 2,
      body: a.body,
    });
    expect(got.content).toMatchObject({ text: "attack at dawn!!" });
    await expect(
      decryptGroup({ record: got.record, hub: "main", sender: "alice", epoch: 2, body: b.body }),
    ).rejects.toMatchObject({ code: "replay" });
  });

  it("a flipped nonce byte is refused before any state changes", async () => {
    const [alice, bob] = [await person("alice"), await person("bob")];
    const secret = randomBytes(32);
    const roster = [alice.entry, bob.entry];
    const m = await encryptGroup({
      record: record(secret, roster, alice),
      hub: "main",
      me: { name: "alice", identityKey: alice.id.publicKey },
      sign: alice.sign,
      content: text("hi"),
    });
    const bad = m.body.slice();
    bad[7] = (bad[7] as number) ^ 1;
    await expect(
      decryptGroup({
        record: record(secret, roster, bob),
        hub: "main",
        sender: "alice",
        epoch: 2,
        body: bad,
      }),
    ).rejects.toMatchObject({ code: "bad_signature" });
  });
});

describe("two devices of one identity never share a sending chain (§9.4, §9.5)", () => {
  it("the chain takes the member's leaf key: same epoch secret, other leaf → other chain", async () => {
    const alice = await person("alice");
    const bob = await person("bob");
    const twin = await person("alice", alice.m); // the identity exported to a second device
    expect(twin.m.ik).toEqual(alice.m.ik);
    const secret = randomBytes(32);
    const a1 = record(secret, [alice.entry, bob.entry], alice);
    const a2 = record(secret, [twin.entry, bob.entry], twin);
    expect(a1.current?.send.ck).not.toBe(a2.current?.send.ck);
  });

  it("a committer refuses a roster that lists another device's leaf key under its name", async () => {
    const [alice, bob] = [await person("alice"), await person("bob")];
    const twin = await person("alice", alice.m);
    const build = (roster: RosterEntry[], own = alice.m.leaves) =>
      createCommit({
        hub: "main",
        group: "g",
        parentEpoch: 0,
        prev: null,
        ownLeaves: own,
        committer: "alice",
        committerIk: alice.m.ik,
        sign: alice.sign,
        roster,
        added: ["alice", "bob"],
        removed: [],
        random: randomBytes,
      });
    // the twin's leaf key is validly signed by the same identity: only its private half tells
    await expect(build([twin.entry, bob.entry])).rejects.toMatchObject({
      code: "identity_mismatch",
    });
    const ok = await build([alice.entry, bob.entry]);
    expect(ok.wraps.map((w) => w.to).sort()).toEqual(["alice", "bob"]);
  });

  it("a delivered commit under our own name is applied only if it is the one we persisted", async () => {
    const [alice, bob] = [await person("alice"), await person("bob")];
    const twin = await person("alice", alice.m);
    const roster = [twin.entry, bob.entry];
    // the twin commits (its roster names its own leaf key); the relay hands the commit to alice
    const built = await buildCommit({
      hub: "main",
      group: "g",
      parentEpoch: 0,
      prev: null,
      committer: "alice",
      committerIk: twin.m.ik,
      sign: twin.sign,
      roster,
      added: ["alice", "bob"],
      removed: [],
      random: randomBytes,
    });
    const deliver = (rec: GroupRecord) =>
      receiveCommit({
        record: rec,
        hub: "main",
        me: { name: "alice", identityKey: alice.m.ik },
        itemEpoch: 1,
        core: built.core,
        wrap: built.wraps.find((w) => w.to === "alice")?.wrap as Uint8Array,
        now: 0,
        from: { name: "alice", identityKey: alice.entry.ik },
      });
    await expect(deliver(joiningRecord(alice.m))).rejects.toMatchObject({
      code: "identity_mismatch",
    });
    // the twin itself applies it: it is the commit it persisted
    const own: GroupRecord = {
      ...joiningRecord(twin.m),
      pendingCommit: pendingFrom(built, {
        id: "1",
        parentEpoch: 0,
        roster,
        added: ["alice", "bob"],
        removed: [],
        at: 0,
      }),
    };
    const r = await receiveCommit({
      record: own,
      hub: "main",
      me: { name: "alice", identityKey: twin.m.ik },
      itemEpoch: 1,
      core: built.core,
      wrap: built.wraps.find((w) => w.to === "alice")?.wrap as Uint8Array,
      now: 0,
      from: { name: "alice", identityKey: twin.entry.ik },
    });
    expect(r.record.current?.epoch).toBe(1);
  });

  it("a commit sealed to another device's leaf key under our name is refused, not entered", async () => {
    const [alice, bob] = [await person("alice"), await person("bob")];
    const twin = await person("alice", alice.m);
    const built = await buildCommit({
      hub: "main",
      group: "g",
      parentEpoch: 0,
      prev: null,
      committer: "bob",
      committerIk: bob.m.ik,
      sign: bob.sign,
      roster: [twin.entry, bob.entry],
      added: ["alice", "bob"],
      removed: [],
      random: randomBytes,
    });
    await expect(
      receiveCommit({
        record: joiningRecord(alice.m),
        hub: "main",
        me: { name: "alice", identityKey: alice.m.ik },
        itemEpoch: 1,
        core: built.core,
        wrap: built.wraps.find((w) => w.to === "alice")?.wrap as Uint8Array,
        now: 0,
        from: { name: "bob", identityKey: bob.entry.ik },
      }),
    ).rejects.toMatchObject({ code: "no_prekey" });
    expect(entryOf("alice", alice.m.ik, alice.m.leaves[0] as never).leafKey).not.toBe(
      twin.entry.leafKey,
    );
  });
});
