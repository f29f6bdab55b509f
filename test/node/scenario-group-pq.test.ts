/**
 * Post-quantum groups through the real engines and relay (PROTOCOL.md §9.2.3, §9.3, §7.1):
 *
 * - "Harvest now, decrypt later": a thief records every frame the relay sent and, as a quantum
 *   computer would, recovers every X25519 secret behind the public keys it saw — the X25519
 *   halves of every member's leaf keys. No commit wrap opens with them, so no epoch does; each
 *   wrap is an X-Wing wrap (0x02). Sealed as X25519 wraps to the same keys (the KEM part
 *   dropped), the same thief opens them: the test fails if the ML-KEM part goes.
 * - A hostile relay that strips the ML-KEM half of a member's leaf key from the group state gets
 *   no commit: the committer refuses (the leaf's signature covers the hash of that half), and no
 *   X25519-only wrap ever leaves it.
 * - A member whose app publishes only X25519 leaf keys (an older client) gets an X25519 wrap;
 *   the group says it is not post-quantum.
 */
import { shake256 } from "@noble/hashes/sha3.js";
import { expect, it } from "vitest";
import type { StoreOp } from "../../shared/core/client-api";
import {
  decodeCommitBody,
  makeLeaves,
  type OwnLeaf,
  publicLeaf,
  splitCore,
} from "../../shared/core/group";
import { wrapInfoFor } from "../../shared/core/group-schedule";
import { ed25519Sign, hpkeOpen, hpkeSeal, randomBytes, sha256 } from "../../shared/crypto";
import { fromB64u } from "../../shared/encoding";
import type { ClientFrame, ServerFrame } from "../../shared/protocol";
import { errors, lines, messages, online, say, type TestUser } from "../support/clients";
import { NodeRelay } from "../support/node-relay";

const G = "broadcast";
const C = "group:broadcast" as const;

type CommitItem = { group: string; epoch: number; core: string; wrap: string };

/** Every leaf key `u` ever stored (its private halves included), by id. */
function recordLeaves(u: TestUser): Map<number, OwnLeaf> {
  const seen = new Map<number, OwnLeaf>();
  const batch = u.store.batch.bind(u.store);
  u.store.batch = async (ops: readonly StoreOp[]) => {
    for (const o of ops)
      if (o.op === "put" && o.key === `group/${G}`)
        for (const l of (o.value as { leaves: OwnLeaf[] }).leaves) seen.set(l.id, l);
    return batch(ops);
  };
  return seen;
}

function commitsTo(relay: NodeRelay, name: string): CommitItem[] {
  return relay.log.flatMap((e) =>
    e.to === name && e.frame.t === "deliver" && e.frame.item.kind === "commit"
      ? [e.frame.item as CommitItem]
      : [],
  );
}

it("a thief with every recorded commit and every X25519 secret opens no epoch; with the KEM part dropped it would", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  const leaves = {
    alice: recordLeaves(alice),
    bob: recordLeaves(bob),
    carol: recordLeaves(carol),
  };
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup(G);
    await relay.settle();
  }
  await say(alice, C, "harvest me");
  await relay.settle();
  expect(messages(bob, C)).toContain("harvest me");
  expect(lines(bob, C).some((l) => l.kind === "not_post_quantum")).toBe(false);

  let wraps = 0;
  for (const u of [alice, bob, carol] as const) {
    for (const item of commitsTo(relay, u.name)) {
      const { body } = splitCore(fromB64u(item.core));
      const c = decodeCommitBody(body);
      const me = c.roster.find((m) => m.name === u.name);
      if (me === undefined) continue;
      if (c.committer === u.name) continue; // the self-wrap is sealed to a dropped key
      const wrap = fromB64u(item.wrap);
      expect(wrap[0]).toBe(0x02);
      expect(me.leafKem).toBeDefined();
      const leaf = leaves[u.name as keyof typeof leaves].get(me.leafId) as OwnLeaf;
      // What a quantum computer recovers from the public X25519 half: its secret.
      const skX = shake256(fromB64u(leaf.priv), { dkLen: 96 }).slice(64);
      const info = wrapInfoFor(relay.hub, G, c.epoch);
      const aad = sha256(body);
      for (const kind of ["member", "joiner"] as const) {
        const i = info(kind, u.name, fromB64u(me.ik), me.leafId);
        const opened = await hpkeOpen(skX, wrap.slice(1, 33), wrap.slice(33), i, aad).then(
          () => true,
          () => false,
        );
        expect(opened).toBe(false);
        // The same secret sealed the way a wrap without its ML-KEM part would be: it opens.
        const classical = await hpkeSeal(fromB64u(me.leafKey), randomBytes(32), i, aad);
        await expect(
          hpkeOpen(skX, classical.enc, classical.ciphertext, i, aad),
        ).resolves.toHaveLength(32);
      }
      wraps++;
    }
  }
  // bob's join commit wraps to alice, carol's to alice and bob.
  expect(wraps).toBe(3);
});

it("a relay that strips the ML-KEM half of a leaf key gets no commit, and no X25519 wrap leaves", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.joinGroup(G);
  await relay.settle();
  // From now on every group state alice receives lists bob's leaf key without its ML-KEM half.
  relay.intercept = (to, f: ServerFrame) => {
    if (to !== "alice" || f.t !== "group") return f;
    const strip = (m: (typeof f.state.members)[number]) =>
      m.username === "bob" ? { ...m, leaf: { ...m.leaf, kem: undefined } } : m;
    return {
      ...f,
      state: {
        ...f.state,
        members: f.state.members.map(strip),
        pendingJoins: f.state.pendingJoins.map(strip),
      },
    } as ServerFrame;
  };
  await bob.client.joinGroup(G);
  await relay.settle();
  // bob is a pending joiner and commits his own join (§9.2.1) with the honest state: fine.
  // alice now owes an update (§9.6) on a state whose bob entry is stripped: she must refuse.
  for (let i = 0; i < 101; i++) await say(alice, C, `m${i}`).catch(() => undefined);
  await relay.settle();
  const fromAlice = relay.clientLog.filter(
    (e): e is { from: string; frame: Extract<ClientFrame, { t: "commit" }> } =>
      e.from === "alice" && e.frame.t === "commit",
  );
  for (const e of fromAlice)
    for (const w of e.frame.wraps) expect(fromB64u(w.wrap)[0], `wrap to ${w.to}`).toBe(0x02);
  expect(errors(alice).some((e) => e.code === "downgrade" || e.code === "bad_signature")).toBe(
    true,
  );
});

it("a member with an X25519-only leaf key gets an X25519 wrap, and the group says it is not post-quantum", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  await alice.client.joinGroup(G);
  await relay.settle();
  await bob.client.joinGroup(G);
  await relay.settle();
  // carol's app is an older one: its join carries X25519-only leaf keys. This revision's engine
  // always makes hybrid ones, so its join is rewritten on the way out and its store given the
  // matching private halves, as the older app would have kept them.
  const old = await makeLeaves({
    hub: relay.hub,
    group: G,
    epoch: 0,
    count: 8,
    random: randomBytes,
    sign: (m) => ed25519Sign(carol.identity.privateKey, m),
    classical: true,
  });
  const conn = carol.conn;
  if (conn === null) throw new Error("carol is online");
  const send = conn.fromClient.bind(conn);
  conn.fromClient = (f: ClientFrame) => {
    if (f.t !== "join") return send(f);
    void (async () => {
      const rec = (await carol.store.get(`group/${G}`)) as { leaves: OwnLeaf[] };
      await carol.store.batch([{ op: "put", key: `group/${G}`, value: { ...rec, leaves: old } }]);
      send({ ...f, leaves: old.map(publicLeaf) });
    })();
  };
  await carol.client.joinGroup(G);
  await relay.settle();
  await relay.settle();
  expect(relay.group(G)?.members).toContain("carol");
  // alice's next commit (an update, §9.6) wraps to carol's X25519 leaf key.
  for (let i = 0; i < 101; i++) await say(alice, C, `m${i}`).catch(() => undefined);
  await relay.settle();
  const toCarol = relay.clientLog.filter(
    (e): e is { from: string; frame: Extract<ClientFrame, { t: "commit" }> } =>
      e.frame.t === "commit" && e.frame.wraps.some((w) => w.to === "carol"),
  );
  expect(toCarol.length).toBeGreaterThan(0);
  for (const e of toCarol)
    for (const w of e.frame.wraps) expect(fromB64u(w.wrap)[0]).toBe(w.to === "carol" ? 0x01 : 0x02);
  expect(messages(carol, C)).toContain("m100");
  const marked = [alice, bob].map((u) =>
    lines(u, C).find((l) => l.kind === "not_post_quantum" && l.username === "carol"),
  );
  expect(marked.every((l) => l !== undefined)).toBe(true);
});
