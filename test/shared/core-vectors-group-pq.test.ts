/**
 * Interoperability vectors for post-quantum group wraps (PROTOCOL.md §8.9.2): a hybrid leaf key
 * (X-Wing, §3.13) and its signature, a commit whose roster names the ML-KEM halves by hash, and
 * an X-Wing wrap made with fixed encapsulation randomness, computed with the production functions
 * and pinned in test/vectors/parley_group_pq_vectors.json. The wrap opens for its member, and
 * the X-Wing part agrees with @noble/post-quantum's independent X-Wing.
 */
import { ml_kem768_x25519 } from "@noble/post-quantum/hybrid.js";
import { expect, it } from "vitest";
import {
  buildCommit,
  emptyGroup,
  type GroupRecord,
  type OwnLeaf,
  type RosterEntry,
  receiveCommit,
  splitCore,
} from "../../shared/core/group";
import { leafTranscript, wrapInfoFor } from "../../shared/core/group-schedule";
import {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  hpkeSealXWing,
  sha256,
  xwingDecapsulate,
  xwingPublicKey,
} from "../../shared/crypto";
import { concatBytes, fromB64u, toB64u, utf8 } from "../../shared/encoding";
import expected from "../vectors/parley_group_pq_vectors.json";

const L = (label: string) => sha256(utf8(label));
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

async function compute() {
  const hub = "main";
  const group = "broadcast";
  const alice = await ed25519KeyPairFromSeed(L("alice-seed"));
  const bob = await ed25519KeyPairFromSeed(L("bob-seed"));
  const out: Record<string, string> = {};
  // Hybrid leaf keys: X-Wing seed L("xw_leaf_<who>"), id 1, nonce L("xw_leaf_<who>_nonce")[0..16].
  const leaf = async (who: "a" | "b", kp: typeof alice): Promise<OwnLeaf> => {
    const seed = L(`xw_leaf_${who}`);
    const pk = await xwingPublicKey(seed);
    const kem = pk.slice(0, 1184);
    const key = pk.slice(1184);
    const nonce = L(`xw_leaf_${who}_nonce`).slice(0, 16);
    const sig = await ed25519Sign(
      kp.privateKey,
      leafTranscript(hub, group, 0, 1, key, nonce, sha256(kem)),
    );
    return {
      id: 1,
      key: toB64u(key),
      priv: toB64u(seed),
      epoch: 0,
      nonce: toB64u(nonce),
      sig: toB64u(sig),
      kem: toB64u(kem),
    };
  };
  const la = await leaf("a", alice);
  const lb = await leaf("b", bob);
  const pkB = await xwingPublicKey(L("xw_leaf_b"));
  out.group_xw_leaf_pk_b_sha256 = hex(sha256(pkB));
  out.group_xw_leaf_kem_hash_b = hex(sha256(pkB.slice(0, 1184)));
  out.group_xw_leaf_sig_b = hex(fromB64u(lb.sig));
  const entry = (name: string, ik: Uint8Array, l: OwnLeaf): RosterEntry => ({
    name,
    ik: toB64u(ik),
    leafId: l.id,
    leafKey: l.key,
    leafEpoch: l.epoch,
    leafNonce: l.nonce,
    leafSig: l.sig,
    leafKem: toB64u(sha256(fromB64u(l.kem as string))),
  });
  const roster = [entry("alice", alice.publicKey, la), entry("bob", bob.publicKey, lb)];
  const built = await buildCommit({
    hub,
    group,
    parentEpoch: 0,
    prev: null,
    committer: "alice",
    committerIk: alice.publicKey,
    sign: (m) => ed25519Sign(alice.privateKey, m),
    roster,
    added: ["alice", "bob"],
    removed: [],
    random: () => L("xw_joiner"),
    kems: new Map([
      ["alice", la.kem as string],
      ["bob", lb.kem as string],
    ]),
  });
  const { body } = splitCore(built.core);
  out.group_xw_c1_body_sha256 = hex(sha256(body));
  // bob's wrap with fixed randomness: eseed = L("xw_wrap_m") || L("xw_wrap_ek") (§3.13).
  const eseed = concatBytes(L("xw_wrap_m"), L("xw_wrap_ek"));
  const info = wrapInfoFor(hub, group, 1)("joiner", "bob", bob.publicKey, 1);
  const sealed = await hpkeSealXWing(pkB, L("xw_joiner"), info, sha256(body), eseed);
  const wrap = concatBytes(new Uint8Array([0x02]), sealed.enc, sealed.ciphertext);
  out.group_xw_wrap_b_enc_sha256 = hex(sha256(sealed.enc));
  out.group_xw_wrap_b_kem_ss = hex(await xwingDecapsulate(sealed.enc, L("xw_leaf_b")));
  out.group_xw_wrap_b_ct = hex(sealed.ciphertext);
  out.group_xw_wrap_b_sha256 = hex(sha256(wrap));
  // The X-Wing part, independently: noble's X-Wing decapsulates the same secret.
  expect(hex(ml_kem768_x25519.decapsulate(sealed.enc, L("xw_leaf_b")))).toBe(
    out.group_xw_wrap_b_kem_ss,
  );
  // The wrap opens for bob and gives the commit's joiner secret (checked by its tag).
  const bobJoining: GroupRecord = { ...emptyGroup(group), status: "joining", leaves: [lb] };
  const got = await receiveCommit({
    record: bobJoining,
    hub,
    me: { name: "bob", identityKey: bob.publicKey },
    itemEpoch: 1,
    core: built.core,
    wrap,
    now: 0,
    from: { name: "alice", identityKey: toB64u(alice.publicKey) },
  });
  out.group_xw_e1_authenticator = hex(fromB64u(got.record.current?.authenticator as string));
  return out;
}

it("post-quantum group vectors are stable", async () => {
  const got = await compute();
  expect(got).toEqual(expected.values);
});
