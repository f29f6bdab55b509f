/**
 * Two devices holding the same sending chain (an identity restored on a second device, or a relay
 * that lists the other device's prekey under our name) must never encrypt under the same AES-GCM
 * key and nonce (PROTOCOL.md §9.5): each group message carries its own random nonce. And a
 * committer refuses a roster that gives its own name another identity key (§9.4).
 */
import { describe, expect, it } from "vitest";
import { b64, u64be } from "../../shared/core/codec";
import { encodeContent } from "../../shared/core/content";
import {
  createCommit,
  decryptGroup,
  encryptGroup,
  enterEpoch,
  type GroupRecord,
  type RosterEntry,
} from "../../shared/core/group";
import { spkMessage } from "../../shared/core/prekeys";
import { counterNonce, kdfCk } from "../../shared/core/ratchet";
import {
  aesGcmEncrypt,
  ed25519Sign,
  generateIdentityKeyPair,
  type IdentityKeyPair,
  randomBytes,
  x25519GenerateKeyPair,
} from "../../shared/crypto";
import { concatBytes, lp, toB64u, u32be } from "../../shared/encoding";

async function person(name: string) {
  const id = await generateIdentityKeyPair();
  const spk = await x25519GenerateKeyPair();
  const sig = await ed25519Sign(id.privateKey, spkMessage(1, spk.publicKey));
  const entry: RosterEntry = {
    name,
    ik: toB64u(id.publicKey),
    spkId: 1,
    spkKey: toB64u(spk.publicKey),
    spkSig: toB64u(sig),
  };
  return { name, id, entry };
}

function record(
  secret: Uint8Array,
  roster: RosterEntry[],
  me: { name: string; id: IdentityKeyPair },
): GroupRecord {
  return {
    group: "g",
    status: "member",
    current: enterEpoch(
      "main",
      "g",
      2,
      secret,
      roster,
      { name: me.name, identityKey: me.id.publicKey },
      0,
    ),
    previous: null,
    pendingCommit: null,
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
        sign: (m) => ed25519Sign(alice.id.privateKey, m),
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

  it("a message of the older 0x10 type (nonce from the counter) is still read", async () => {
    const [alice, bob] = [await person("alice"), await person("bob")];
    const secret = randomBytes(32);
    const roster = [alice.entry, bob.entry];
    const dev = record(secret, roster, alice);
    const ck = b64(dev.current?.send.ck ?? "", "ck");
    const { mk } = kdfCk(ck);
    const ik = alice.id.publicKey;
    const ct = await aesGcmEncrypt(
      mk,
      counterNonce(0),
      encodeContent(text("old client")),
      lp("parley/v1/group-msg", "main", "g", u64be(2), "alice", ik, 0),
    );
    const sig = await ed25519Sign(
      alice.id.privateKey,
      lp("parley/v1/group-sig", "main", "g", u64be(2), "alice", 0, ct),
    );
    const body = concatBytes(new Uint8Array([0x01, 0x10]), u32be(0), ct, sig);
    const r = await decryptGroup({
      record: record(secret, roster, bob),
      hub: "main",
      sender: "alice",
      epoch: 2,
      body,
    });
    expect(r.content).toMatchObject({ text: "old client" });
  });

  it("a flipped nonce byte is refused before any state changes", async () => {
    const [alice, bob] = [await person("alice"), await person("bob")];
    const secret = randomBytes(32);
    const roster = [alice.entry, bob.entry];
    const m = await encryptGroup({
      record: record(secret, roster, alice),
      hub: "main",
      me: { name: "alice", identityKey: alice.id.publicKey },
      sign: (x) => ed25519Sign(alice.id.privateKey, x),
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

describe("the committer's own roster entry (§9.4)", () => {
  it("is refused when it carries another identity key under our name", async () => {
    const [alice, bob, other] = [await person("alice"), await person("bob"), await person("alice")];
    const build = (roster: RosterEntry[]) =>
      createCommit({
        hub: "main",
        group: "g",
        parentEpoch: 1,
        committer: "alice",
        committerIk: alice.id.publicKey,
        sign: (m) => ed25519Sign(alice.id.privateKey, m),
        roster,
        added: [],
        removed: [],
        random: randomBytes,
      });
    await expect(build([other.entry, bob.entry])).rejects.toMatchObject({
      code: "roster_mismatch",
    });
    await expect(build([bob.entry])).rejects.toMatchObject({ code: "roster_mismatch" });
    const ok = await build([alice.entry, bob.entry]);
    expect(ok.wraps.map((w) => w.to)).toEqual(["alice", "bob"]);
  });
});
