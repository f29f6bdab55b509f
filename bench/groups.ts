/**
 * Group costs through the core's pure functions (shared/core/group.ts), exactly the
 * calls the engine makes: creating a commit = createCommit (every roster leaf key verified while
 * the commit is built: one HPKE wrap per member, signature, confirmation tag); processing a
 * commit = receiveCommit (signature, roster checks, every roster leaf key, our wrap, the tag, the
 * new epoch's chains); and per-message
 * send (encryptGroup) and receive (decryptGroup) at the same roster sizes.
 *
 * Every member has a hybrid (X-Wing) leaf key, as the engine makes them, so every wrap is an
 * X-Wing HPKE wrap (PROTOCOL §9.2.3).
 *
 * Baselines: the 2-member figure of the same operation, measured in the same run.
 * The log names the HPKE suite instance hpkeSeal settled on (shared/crypto/hpke.ts).
 */

import { b64 } from "../shared/core/codec";
import {
  createCommit,
  decryptGroup,
  encryptGroup,
  enterEpoch,
  forgetVerifiedLeaves,
  type GroupRecord,
  makeLeaves,
  type OwnLeaf,
  type RosterEntry,
  receiveCommit,
} from "../shared/core/group";
import { ZERO_HASH } from "../shared/core/group-schedule";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  type IdentityKeyPair,
  randomBytes,
  sha256,
} from "../shared/crypto";
import { hpkeSealSuite } from "../shared/crypto/hpke";
import { toB64u } from "../shared/encoding";
import { comparePair, measure, type Row } from "./lib";

interface Member {
  entry: RosterEntry;
  identity: IdentityKeyPair;
  leaves: OwnLeaf[];
}

const HUB = "bench";
const GROUP = "g";

async function makeMember(i: number): Promise<Member> {
  const identity = await generateIdentityKeyPair();
  const leaves = await makeLeaves({
    hub: HUB,
    group: GROUP,
    epoch: 0,
    count: 1,
    random: randomBytes,
    sign: (m) => ed25519Sign(identity.privateKey, m),
  });
  const l = leaves[0] as OwnLeaf;
  return {
    identity,
    leaves,
    entry: {
      name: `m${String(i).padStart(4, "0")}`,
      ik: toB64u(identity.publicKey),
      leafId: l.id,
      leafKey: l.key,
      leafEpoch: l.epoch,
      leafNonce: l.nonce,
      leafSig: l.sig,
      leafKem: toB64u(sha256(b64(l.kem as string, "kem"))),
    },
  };
}

function recordFor(
  m: Member,
  roster: RosterEntry[],
  epoch: number,
  secret: Uint8Array,
): GroupRecord {
  const me = { name: m.entry.name, identityKey: m.identity.publicKey };
  return {
    group: GROUP,
    status: "member",
    current: enterEpoch({
      hub: HUB,
      group: GROUP,
      epoch,
      joiner: secret,
      transcript: ZERO_HASH,
      tag: null,
      interim: ZERO_HASH,
      roster,
      me,
      now: 0,
    }),
    previous: null,
    pendingCommit: null,
    leaves: m.leaves,
  };
}

interface Messaging {
  prepare(): Promise<void>;
  send(): Promise<void>;
  receive(): Promise<void>;
}

const BODIES = 3000;

/**
 * One sender and one receiver of a group at some size. `send` advances the sender's chain;
 * `receive` decrypts pre-made bodies in order and, when it runs out, starts again from the
 * receiver's original state (decryption never mutates its input, so that is a fresh receiver).
 */
function messaging(
  committer: Member,
  committerRec: GroupRecord,
  receiverRec: GroupRecord,
  sign: (m: Uint8Array) => Promise<Uint8Array>,
  epoch: number,
): Messaging {
  const me = { name: committer.entry.name, identityKey: committer.identity.publicKey };
  const content = { t: "text" as const, id: "bench", ts: 1, text: "x".repeat(100) };
  let sRec = committerRec;
  let rRec = receiverRec;
  const bodies: Uint8Array[] = [];
  let k = 0;
  const send = async () => {
    const r = await encryptGroup({ record: sRec, hub: HUB, me, sign, content });
    sRec = r.record;
    return r.body;
  };
  return {
    async prepare() {
      for (let i = 0; i < BODIES; i++) bodies.push(await send());
    },
    async send() {
      await send();
    },
    async receive() {
      if (k === bodies.length) {
        k = 0;
        rRec = receiverRec;
      }
      const body = bodies[k++] as Uint8Array;
      const r = await decryptGroup({
        record: rRec,
        hub: HUB,
        sender: committer.entry.name,
        epoch,
        body,
      });
      rRec = r.record;
    },
  };
}

export interface GroupFigures {
  rows: Row[];
  /** size → ms per commit create / process, µs per send / receive. */
  bySize: Array<{
    size: number;
    coldMs: number;
    commitMs: number;
    processMs: number;
    sendUs: number;
    recvUs: number;
    /** Cost per message relative to the 2-member group, from the paired run (1 = flat). */
    sendVs2: number;
    recvVs2: number;
  }>;
}

export async function runGroups(log: (s: string) => void = () => {}): Promise<GroupFigures> {
  const sizes = (process.env.BENCH_GROUP_SIZES ?? "2,10,100,1000").split(",").map(Number);
  const maxSize = Math.max(...sizes);
  const pool: Member[] = [];
  for (let i = 0; i < maxSize; i++) pool.push(await makeMember(i));
  log(`  made ${pool.length} members`);
  const bySize: GroupFigures["bySize"] = [];
  let baseline: Messaging | null = null;
  for (const size of sizes) {
    const members = pool.slice(0, size);
    const roster = members.map((m) => m.entry).sort((a, b) => (a.name < b.name ? -1 : 1));
    const committer = members[0] as Member;
    const receiver = members[size - 1] as Member;
    const epoch = 7;
    const secret = randomBytes(32);
    const committerRec = recordFor(committer, roster, epoch, secret);
    const receiverRec = recordFor(receiver, roster, epoch, secret);
    const sign = (msg: Uint8Array) => ed25519Sign(committer.identity.privateKey, msg);
    // The ML-KEM halves the relay's group state lists (§9.2.3).
    const kems = new Map(members.map((m) => [m.entry.name, m.leaves[0]?.kem as string]));

    // Create: what the engine does for a periodic update commit (no roster change).
    const build = () =>
      createCommit({
        hub: HUB,
        group: GROUP,
        parentEpoch: epoch,
        prev: {
          init: b64(committerRec.current?.init ?? "", "init"),
          interim: b64(committerRec.current?.interim ?? "", "interim"),
        },
        ownLeaves: committer.leaves,
        committer: committer.entry.name,
        committerIk: committer.identity.publicKey,
        sign,
        roster,
        added: [],
        removed: [],
        random: randomBytes,
        kems,
      });
    const slow = size >= 100;
    const opts = { minMs: slow ? 1500 : 800, minIterations: 3, warmup: 1 };
    // Cold: the roster's leaf keys were never verified in this process (first commit after
    // a restart, or a group whose members we have not seen before).
    const cold = await measure(
      `commit create cold ${size}`,
      () => {
        forgetVerifiedLeaves();
        return build();
      },
      opts,
    );
    // Warm: the same roster was verified before (every later commit in a steady group).
    const create = await measure(`commit create ${size}`, build, opts);

    // Process: the receiving member's side of the same commit.
    const built = await build();
    const wrap = built.wraps.find((w) => w.to === receiver.entry.name)?.wrap;
    if (!wrap) throw new Error("no wrap for the receiver");
    const process_ = await measure(
      `commit process ${size}`,
      async () => {
        forgetVerifiedLeaves();
        const r = await receiveCommit({
          record: receiverRec,
          hub: HUB,
          me: { name: receiver.entry.name, identityKey: receiver.identity.publicKey },
          itemEpoch: epoch + 1,
          core: built.core,
          wrap,
          now: 0,
          from: { name: committer.entry.name, identityKey: toB64u(committer.identity.publicKey) },
        });
        if (r.record.current?.epoch !== epoch + 1) throw new Error("commit not applied");
      },
      opts,
    );

    // Per message, paired with the 2-member group in alternating slices (same load on both).
    const here = messaging(committer, committerRec, receiverRec, sign, epoch);
    const two = baseline ?? here;
    baseline ??= here;
    await here.prepare();
    const sendPair = await comparePair(`group send ${size}`, here.send, two.send);
    const recvPair = await comparePair(`group receive ${size}`, here.receive, two.receive);
    const send = sendPair.a;
    const recv = recvPair.a;
    bySize.push({
      size,
      coldMs: cold.meanUs / 1000,
      commitMs: create.meanUs / 1000,
      processMs: process_.meanUs / 1000,
      sendUs: send.meanUs,
      recvUs: recv.meanUs,
      sendVs2: sendPair.ratio === 0 ? Number.NaN : 1 / sendPair.ratio,
      recvVs2: recvPair.ratio === 0 ? Number.NaN : 1 / recvPair.ratio,
    });
    log(
      `  size ${size} (HPKE suite: ${hpkeSealSuite() ?? "still measuring"}): commit cold ${(cold.meanUs / 1000).toFixed(1)} ms, warm ${(create.meanUs / 1000).toFixed(1)} ms, process ${(process_.meanUs / 1000).toFixed(1)} ms, send ${send.meanUs.toFixed(0)} µs, recv ${recv.meanUs.toFixed(0)} µs`,
    );
  }
  const base = bySize[0];
  const rows: Row[] = bySize.map((b) => ({
    members: b.size,
    "commit create cold ms": b.coldMs,
    "cold × vs 2": base ? `${(b.coldMs / base.coldMs).toFixed(1)}×` : "",
    "commit create warm ms": b.commitMs,
    "warm × vs 2": base ? `${(b.commitMs / base.commitMs).toFixed(1)}×` : "",
    "commit process (cold) ms": b.processMs,
    "process × vs 2": base ? `${(b.processMs / base.processMs).toFixed(1)}×` : "",
    "send µs/msg": b.sendUs,
    "send cost × vs 2 (paired)": `${b.sendVs2.toFixed(2)}×`,
    "receive µs/msg": b.recvUs,
    "receive cost × vs 2 (paired)": `${b.recvVs2.toFixed(2)}×`,
  }));
  return { rows, bySize };
}
