/**
 * Interoperability vectors for the client protocol (PROTOCOL.md §8.9): every value below is
 * computed from fixed inputs with the production functions and pinned, so a change to any label,
 * layout or KDF shows up here, and another implementation can check itself against the same
 * numbers (they are printed in the spec). Inputs: identity seeds and X25519 secrets are
 * SHA-256 of an ASCII label; "randomness" is the listed sequence of such values.
 */

import { expect, it } from "vitest";
import { signedPrekeyTranscriptV2 } from "../../shared/auth";
import { encodeContent } from "../../shared/core/content";
import { encodeHsInit, messagePrefix, prekeyPrefix } from "../../shared/core/envelope";
import {
  buildCommit,
  type EpochState,
  emptyGroup,
  encryptGroup,
  enterEpoch,
  type GroupRecord,
  type OwnLeaf,
  type RosterEntry,
  receiveCommit,
  splitCore,
} from "../../shared/core/group";
import { leafTranscript } from "../../shared/core/group-schedule";
import {
  confirmMac,
  handshakeHash,
  handshakeKeys,
  initTranscript,
  pqxdhRoot,
  pqxdhTranscript,
  respTranscript,
  sessionAd,
  sessionId,
  x3dhHash,
  x3dhRoot,
  x3dhTranscript,
} from "../../shared/core/handshake";
import { kemOpkMessage, pqSpkMessage, spkMessage } from "../../shared/core/prekeys";
import { initInitiator, kdfRk, ratchetEncrypt } from "../../shared/core/ratchet";
import {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  mlkemEncapsulate,
  mlkemPublicKey,
  sha256,
  x25519,
  x25519PublicKey,
} from "../../shared/crypto";
import { concatBytes, fromB64u, toB64u, utf8 } from "../../shared/encoding";
import pqVectors from "../vectors/parley_pq_vectors.json";

const L = (label: string) => sha256(utf8(label));
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
/** A "random" source that returns the listed values in order (then fails). */
function seq(...labels: string[]) {
  const q = labels.map(L);
  return (n: number) => {
    const v = q.shift();
    if (!v || v.length !== n) throw new Error("vector rng exhausted");
    return v;
  };
}

async function compute() {
  const hub = "main";
  const alice = await ed25519KeyPairFromSeed(L("alice-seed"));
  const bob = await ed25519KeyPairFromSeed(L("bob-seed"));
  const A = { name: "alice", identityKey: alice.publicKey };
  const B = { name: "bob", identityKey: bob.publicKey };
  const out: Record<string, string> = { IK_A: hex(A.identityKey), IK_B: hex(B.identityKey) };

  // §8.2 online handshake
  const ephA = await x25519PublicKey(L("eph_a"));
  const ephB = await x25519PublicKey(L("eph_b"));
  const sigA = await ed25519Sign(alice.privateKey, initTranscript(hub, A, B, ephA));
  const sigB = await ed25519Sign(bob.privateKey, respTranscript(hub, A, B, ephA, ephB));
  const th = handshakeHash(hub, A, B, ephA, ephB, sigA, sigB);
  const k = handshakeKeys(await x25519(L("eph_a"), ephB), th);
  const sid = sessionId(th);
  Object.assign(out, {
    hs_eph_a: hex(ephA),
    hs_eph_b: hex(ephB),
    hs_sig_a: hex(sigA),
    hs_sig_b: hex(sigB),
    hs_th: hex(th),
    hs_root: hex(k.rootKey),
    hs_chain_r2i: hex(k.chainR2I),
    hs_confirm_a: hex(confirmMac(k.confirmI2R, "initiator", th)),
    hs_confirm_b: hex(confirmMac(k.confirmR2I, "responder", th)),
    hs_sid: hex(sid),
    hs_init_sha256: hex(
      sha256(encodeHsInit({ ikA: A.identityKey, ikB: B.identityKey, ephA, sigA })),
    ),
  });
  // §8.4 alice's first ratchet message on that session
  const ad = sessionAd(hub, A, B);
  const ra = await initInitiator({
    rootKey: k.rootKey,
    ad,
    peerRatchetKey: ephB,
    receiveChain: k.chainR2I,
    random: seq("dr_a_1"),
  });
  const text = { t: "text" as const, id: "vector1", ts: 1700000000000, text: "hello bob" };
  const content = encodeContent(text);
  const prefix = messagePrefix(sid);
  const m1 = await ratchetEncrypt(ra, content, prefix);
  out.dr_padded_content = hex(content);
  out.dr_msg1 = hex(concatBytes(prefix, m1.header, m1.ciphertext));

  // §8.3 asynchronous start (SPK id 7, OPK id 9)
  const spk = await x25519PublicKey(L("spk_b"));
  const opk = await x25519PublicKey(L("opk_b"));
  const ekA = await x25519PublicKey(L("ek_a"));
  const spkSig = await ed25519Sign(bob.privateKey, spkMessage(7, spk));
  const T = x3dhTranscript(hub, A, B, { spkId: 7, spk, opk: { id: 9, key: opk } }, ekA);
  const xs = await ed25519Sign(alice.privateKey, T);
  const root = x3dhRoot(await x25519(L("ek_a"), spk), await x25519(L("ek_a"), opk), T, xs);
  const xsid = sessionId(x3dhHash(T, xs));
  const rx = await initInitiator({
    rootKey: root,
    ad,
    peerRatchetKey: spk,
    receiveChain: null,
    random: seq("dr_a_2"),
  });
  const pp = prekeyPrefix({
    ikA: A.identityKey,
    ikB: B.identityKey,
    spkId: 7,
    opkId: 9,
    ekA,
    sigA: xs,
    sid: xsid,
  });
  const pm = await ratchetEncrypt(rx, content, pp);
  Object.assign(out, {
    x3dh_spk_sig: hex(spkSig),
    x3dh_transcript_sha256: hex(sha256(T)),
    x3dh_sig_a: hex(xs),
    x3dh_root: hex(root),
    x3dh_sid: hex(xsid),
    x3dh_prekey_msg_sha256: hex(sha256(concatBytes(pp, pm.header, pm.ciphertext))),
  });

  // §9 groups: alice (joining) commits epoch 1 of "broadcast" adding alice and bob; bob then
  // commits epoch 2 (an update, chained from epoch 1's init secret and transcript); alice sends
  // a message in epoch 2.
  const leaf = async (who: "a" | "b", kp: typeof alice, id: number): Promise<OwnLeaf> => {
    const key = await x25519PublicKey(L(`leaf_${who}${id}`));
    const nonce = L(`leaf_${who}${id}_nonce`).slice(0, 16);
    const sig = await ed25519Sign(
      kp.privateKey,
      leafTranscript(hub, "broadcast", 0, id, key, nonce),
    );
    return {
      id,
      key: toB64u(key),
      priv: toB64u(L(`leaf_${who}${id}`)),
      epoch: 0,
      nonce: toB64u(nonce),
      sig: toB64u(sig),
    };
  };
  const leavesA = [await leaf("a", alice, 1), await leaf("a", alice, 2)];
  const leavesB = [await leaf("b", bob, 1), await leaf("b", bob, 2)];
  const entry = (name: string, ik: Uint8Array, l: OwnLeaf): RosterEntry => ({
    name,
    ik: toB64u(ik),
    leafId: l.id,
    leafKey: l.key,
    leafEpoch: l.epoch,
    leafNonce: l.nonce,
    leafSig: l.sig,
  });
  const roster1 = [
    entry("alice", A.identityKey, leavesA[0] as OwnLeaf),
    entry("bob", B.identityKey, leavesB[0] as OwnLeaf),
  ];
  const c1 = await buildCommit({
    hub,
    group: "broadcast",
    parentEpoch: 0,
    prev: null,
    committer: "alice",
    committerIk: A.identityKey,
    sign: (m) => ed25519Sign(alice.privateKey, m),
    roster: roster1,
    added: ["alice", "bob"],
    removed: [],
    random: seq("joiner-1"),
  });
  const p1 = splitCore(c1.core);
  const bobJoining: GroupRecord = {
    ...emptyGroup("broadcast"),
    status: "joining",
    leaves: leavesB,
  };
  const bob1 = (
    await receiveCommit({
      record: bobJoining,
      hub,
      me: { name: "bob", identityKey: B.identityKey },
      itemEpoch: 1,
      core: c1.core,
      wrap: c1.wraps.find((w) => w.to === "bob")?.wrap as Uint8Array,
      now: 0,
      from: { name: "alice", identityKey: toB64u(A.identityKey) },
    })
  ).record;
  const e1 = bob1.current as EpochState;
  const roster2 = [
    entry("alice", A.identityKey, leavesA[1] as OwnLeaf),
    entry("bob", B.identityKey, leavesB[1] as OwnLeaf),
  ];
  const c2 = await buildCommit({
    hub,
    group: "broadcast",
    parentEpoch: 1,
    prev: { init: fromB64u(e1.init ?? ""), interim: fromB64u(e1.interim) },
    committer: "bob",
    committerIk: B.identityKey,
    sign: (m) => ed25519Sign(bob.privateKey, m),
    roster: roster2,
    added: [],
    removed: [],
    random: seq("commit-2"),
  });
  const p2 = splitCore(c2.core);
  const e2 = enterEpoch({
    hub,
    group: "broadcast",
    epoch: 2,
    joiner: c2.joiner,
    transcript: c2.transcript,
    tag: p2.tag,
    interim: c2.interim,
    roster: roster2,
    me: { name: "alice", identityKey: A.identityKey },
    now: 0,
  });
  const gm = await encryptGroup({
    record: { ...emptyGroup("broadcast"), status: "member", current: e2 },
    hub,
    me: { name: "alice", identityKey: A.identityKey },
    sign: (m) => ed25519Sign(alice.privateKey, m),
    content: text,
    // The per-message nonce (§9.5): the first 12 bytes of L("group-nonce").
    random: (n) => L("group-nonce").slice(0, n),
  });
  Object.assign(out, {
    group_leaf_sig_a1: hex(fromB64u((leavesA[0] as OwnLeaf).sig)),
    group_c1_body_sha256: hex(sha256(p1.body)),
    group_c1_sig: hex(p1.sig),
    group_c1_transcript: hex(c1.transcript),
    group_c1_tag: hex(p1.tag),
    group_c1_interim: hex(c1.interim),
    group_e1_init: hex(fromB64u(e1.init ?? "")),
    group_e1_authenticator: hex(fromB64u(e1.authenticator)),
    group_e1_ck_bob: hex(fromB64u(e1.send.ck)),
    group_c2_joiner: hex(c2.joiner),
    group_c2_body_sha256: hex(sha256(p2.body)),
    group_c2_transcript: hex(c2.transcript),
    group_c2_tag: hex(p2.tag),
    group_e2_authenticator: hex(fromB64u(e2.authenticator)),
    group_e2_ck_alice: hex(fromB64u(e2.send.ck)),
    group_msg_sha256: hex(sha256(gm.body)),
  });
  return out;
}

const EXPECTED: Record<string, string> = {
  IK_A: "b4bf3ee819c42353b65affc5656c291ce0d1fa6a66ca507d76a664adbff723b9",
  IK_B: "855ca7aac17542f5f33367d1845764c040e5b0df6161fe00595f42099c0c80f0",
  hs_eph_a: "83b1ac35046c27908a8b6943534c294ee42a02363664724e11d9528f1a78be22",
  hs_eph_b: "8c72ec25a61f11e9035da697158b0d129e6d71f355bbbacb7433fd3b3309b823",
  hs_sig_a:
    "c2562bfcba1f081124f0f291531c4859449b2f1e9ba528e63a47c7bd926f584ddd7a6b6edf74e8156da9c1c9f852b1f3949a82f60bdd446988ee370c90cc3c0c",
  hs_sig_b:
    "77c4208abf57cb03f1fb2d0bab9ff7a8ecf3c41d1aa89612573e08ff751b8b6db9b78906ffa3dcdb9fa2b42cc2a1fea4c430dd62b0ea687135f44b0f8ffbe804",
  hs_th: "be2a1eb67aaf12b2d113e043fc04db407e443644dba5a143dd3b95ebd1340176",
  hs_root: "4f98a40214560dc132370a596ba3132f41e39af0eaf9ea6f7e770e0f07e583d7",
  hs_chain_r2i: "01d835e28cc3b2487b0452cc4fdec75bdb9dd8550c759d5ab19400154ff576e4",
  hs_confirm_a: "6c756d2c2377af350ff3f3779515f85383ccc12fe154031f77957d92e0ebf597",
  hs_confirm_b: "f63a877f8a3a67431a7e12f0fcb6006753d6dd4f99bbbe098bbaac75cbdb2f38",
  hs_sid: "f0682bfa60d9db36bb3fc6eb32fe5478",
  hs_init_sha256: "15d104c10a58c01387e30156f6e18ec5cd860346c12e9dcfff0790c927e1687a",
  dr_padded_content:
    "7b2274223a2274657874222c226964223a22766563746f7231222c227473223a313730303030303030303030302c2274657874223a2268656c6c6f20626f62227d800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
  dr_msg1:
    "0105f0682bfa60d9db36bb3fc6eb32fe5478ffaede6b54224eedaec600efe26286de6e2cd52fbf872ce7ad1ef366167f971e0000000000000000d461c7cb48c01b83e14ec5060de560b61d4351fd9aac1c099c381aa7d92c59a88fe5889a172ff8067b8cefcdd793b35c5f06abe490cfbe8beafc969f1803308dbccacebeb04fc55e3017333a2be3b44b73cf71d2ec854a6b3625b83f83e2e64fcd272742cdbe194ed448890c10632c6e34067968e67d5dbd3f55434800b3b684a3f3863f54a7a26a7ba9a65bb98d9c41",
  x3dh_spk_sig:
    "db58d9b8ca7aeae94b5fafb33359c7fb3c3d0f296ad448b94a5ee5741dfc2ff8488333114186c745e170a34262c60aa514ff6749cd4a5658213cf56ea2364003",
  x3dh_transcript_sha256: "3f79e3845088f2ed54ed01d271d93ec33562963ab2b171adcd35651ada62707f",
  x3dh_sig_a:
    "ae5866ee43dd4001602b05c3be92712a31ff76fba663df2482012f549dd3d09753db3e8e30d08b38d1a76d65544aed8e5cebb31968c68ac2d7d361138762560f",
  x3dh_root: "2357482d5678b94c4713b2089a55c52d8275c61a5a4ef83adb60530771822211",
  x3dh_sid: "b9d34194243845774c0e401dd4ffb605",
  x3dh_prekey_msg_sha256: "591ff88b50b68618e538ed5f1c605a837a98617617d4c49e8fb6338179693791",
  group_c1_body_sha256: "d56d2ef5ed8510be716c498ec9620e4cb95662c2ff20cd4d2f4d0e34cab6b344",
  group_c1_interim: "a4caeac6ea39fdcefd7859ced2ec775ea01f277372af229ff5bcaf1f21a54d07",
  group_c1_sig:
    "ed569c52620e19ac237db5a63eff8abd062672a17756eb39d5426bbd85e9885d1f28eb44910762db125b8c9c5ec414afaec7e4b48e8bb7890fce943249a05909",
  group_c1_tag: "b9d196e1d858f84cb8b7cff987f9dc52da9e501ef0cb13959bd358a4d51c37d2",
  group_c1_transcript: "cf4309f7a0acb3aa964faa6ddeafe2856f86a30983ffa0ce39dfdd3ed85a88b5",
  group_c2_body_sha256: "8d6a3f0c4985a50c15e89066fbc957a12f5d6369e8e4d1e0f1ca8c71a715072c",
  group_c2_joiner: "eab51a2945e3b391e5a04ffbc2ca007d37410a9b8b011b85ed2dbbeed87f4f60",
  group_c2_tag: "d62c59a6620b496f84c948443f6705fcd0de4b28653815dbe941b121bcd1d495",
  group_c2_transcript: "1ca53c8ffa27389b4fe8815c62a8534a9455c17a2ffa625e6e780ca414f00754",
  group_e1_authenticator: "baa0432f0acdb5112f69639f2fc956d460cd9ad4d886dda2088a3996a7fd3eb7",
  group_e1_ck_bob: "d3b3b2a9b05752d49e22c12291e5aecce7e9ff186fe4613b05beaf22771c5d93",
  group_e1_init: "4e00423826966e49d7d1fb1cb5cfb6322b91da36246e89788df9783ead510723",
  group_e2_authenticator: "6ee1b1259dba191cce9cc3394d4c63a5a4b7d8ae56fe1c545867b0a6f4c6c131",
  group_e2_ck_alice: "d72b61400e4b7f2bc053f9f29cc011c0990164c548bb55beb188c7373b33843e",
  group_leaf_sig_a1:
    "2a1be1f3719a11409a34e9a5ea0046e2bae6b596d8b5982a044c30e8ac33f610b8587ecd64ecb22d532574dd84c4dfc6f45b21ed683a0dc1f8b67176046af90b",
  group_msg_sha256: "c984cb492dbe2a895fb6dd0f890ee65ebe0331105c3b9c5ec383d9387f968f4c",
};

it("protocol vectors are stable", async () => {
  const got = await compute();
  expect(got).toEqual(EXPECTED);
});

/**
 * Post-quantum derivations (PROTOCOL.md §8.2.6, §8.3.5, §8.4.1; values in §8.9.1). Extra inputs:
 * ML-KEM seeds are `L(x) || L(x + "/z")` (64 bytes), encapsulation randomness `m = L(x)`;
 * identity-DH secrets `L("idh_a")`, `L("idh_b")`; bob's v2 SPK is `L("spk_b")` (id 7) with
 * last-resort KEM seed "kem_lr_b"; his one-time KEM prekey id 11 has seed "kem_ot_b".
 */
async function computePq() {
  const hub = "main";
  const seed = (x: string) => concatBytes(L(x), L(`${x}/z`));
  const alice = await ed25519KeyPairFromSeed(L("alice-seed"));
  const bob = await ed25519KeyPairFromSeed(L("bob-seed"));
  const A = { name: "alice", identityKey: alice.publicKey };
  const B = { name: "bob", identityKey: bob.publicKey };
  const out: Record<string, string> = {};

  // §8.2.6 hybrid online handshake
  const ephA = await x25519PublicKey(L("eph_a"));
  const ephB = await x25519PublicKey(L("eph_b"));
  const hsKemPk = mlkemPublicKey(seed("hs_kem_a"));
  const hsEnc = mlkemEncapsulate(hsKemPk, L("hs_kem_m"));
  const kem = { pk: hsKemPk, ct: hsEnc.ciphertext };
  const sigA = await ed25519Sign(alice.privateKey, initTranscript(hub, A, B, ephA, hsKemPk));
  const sigB = await ed25519Sign(bob.privateKey, respTranscript(hub, A, B, ephA, ephB, kem));
  const th = handshakeHash(hub, A, B, ephA, ephB, sigA, sigB, kem);
  const k = handshakeKeys(concatBytes(await x25519(L("eph_a"), ephB), hsEnc.sharedSecret), th);
  Object.assign(out, {
    hs2_kem_pk_sha256: hex(sha256(hsKemPk)),
    hs2_kem_ct_sha256: hex(sha256(hsEnc.ciphertext)),
    hs2_kem_ss: hex(hsEnc.sharedSecret),
    hs2_sig_a: hex(sigA),
    hs2_th: hex(th),
    hs2_root: hex(k.rootKey),
    hs2_chain_r2i: hex(k.chainR2I),
    hs2_init_sha256: hex(
      sha256(encodeHsInit({ ikA: A.identityKey, ikB: B.identityKey, ephA, kemPk: hsKemPk, sigA })),
    ),
  });

  // §8.3.5 PQXDH (SPK 7, OPK 9, one-time KEM prekey 11)
  const spk = await x25519PublicKey(L("spk_b"));
  const opk = await x25519PublicKey(L("opk_b"));
  const ekA = await x25519PublicKey(L("ek_a"));
  const idhA = await x25519PublicKey(L("idh_a"));
  const idhB = await x25519PublicKey(L("idh_b"));
  const kemLr = mlkemPublicKey(seed("kem_lr_b"));
  const kemOt = mlkemPublicKey(seed("kem_ot_b"));
  const spkSigV2 = await ed25519Sign(bob.privateKey, signedPrekeyTranscriptV2(7, spk));
  const pqSig = await ed25519Sign(bob.privateKey, pqSpkMessage(7, spk, idhB, kemLr));
  const otSig = await ed25519Sign(bob.privateKey, kemOpkMessage(11, kemOt));
  const enc2 = mlkemEncapsulate(kemOt, L("pqxdh_m"));
  const pre = {
    spkId: 7,
    spk,
    opk: { id: 9, key: opk },
    idh: idhB,
    kem: { oneTimeId: 11, key: kemOt },
  };
  const T = pqxdhTranscript(hub, A, idhA, B, pre, ekA, enc2.ciphertext);
  const xs = await ed25519Sign(alice.privateKey, T);
  const root = pqxdhRoot(
    {
      dh1: await x25519(L("idh_a"), spk),
      dh2: await x25519(L("ek_a"), idhB),
      dh3: await x25519(L("ek_a"), spk),
      dh4: await x25519(L("ek_a"), opk),
    },
    enc2.sharedSecret,
    T,
    xs,
  );
  const sid = sessionId(x3dhHash(T, xs));
  const pp = prekeyPrefix({
    ikA: A.identityKey,
    ikB: B.identityKey,
    spkId: 7,
    opkId: 9,
    ekA,
    sigA: xs,
    sid,
    pq: { idhA, kemOpkId: 11, kemCt: enc2.ciphertext },
  });
  Object.assign(out, {
    pq_spk_sig_v2: hex(spkSigV2),
    pq_prekey_sig: hex(pqSig),
    pq_kem_opk_sig: hex(otSig),
    pq_kem_lr_pk_sha256: hex(sha256(kemLr)),
    pqxdh_kem_ct_sha256: hex(sha256(enc2.ciphertext)),
    pqxdh_kem_ss: hex(enc2.sharedSecret),
    pqxdh_transcript_sha256: hex(sha256(T)),
    pqxdh_sig_a: hex(xs),
    pqxdh_root: hex(root),
    pqxdh_sid: hex(sid),
    pqxdh_prefix_sha256: hex(sha256(pp)),
  });

  // §8.4.1 a KEM step: KDF_RK over dh || ss, and a message_kem prefix carrying both fields
  const stepEnc = mlkemEncapsulate(mlkemPublicKey(seed("dr_kem")), L("dr_kem_m"));
  const step = kdfRk(
    L("dr_rk"),
    concatBytes(await x25519(L("dr_a_1"), ephB), stepEnc.sharedSecret),
  );
  out.dr_kem_rk = hex(step.rk);
  out.dr_kem_ck = hex(step.ck);
  out.dr_kem_prefix_sha256 = hex(
    sha256(messagePrefix(sid, { pk: mlkemPublicKey(seed("dr_kem_next")), ct: stepEnc.ciphertext })),
  );
  return out;
}

it("post-quantum protocol vectors are stable", async () => {
  const got = await computePq();
  expect(got).toEqual(pqVectors.values);
});
