/**
 * A thief of everything stored, through the real relay (PROTOCOL.md §9.3, SECURITY.md "Groups:
 * forward secrecy and post-compromise security per epoch"). bob's device is copied whole after he
 * read message k of epoch E of an invite-only group — every record of his store: prekeys, leaf
 * keys, the group record, sessions, contacts — and with it every row of the relay's SQLite and
 * every frame the relay ever delivered (a hostile relay keeps them all). With every 32-byte value
 * of that loot tried as a chain key, a message key and an X25519 private key:
 * - no message of an epoch before E, and none of E before message k, opens, and no wrap of an
 *   earlier commit opens;
 * - after bob's own next commit (a periodic update) nothing opens: not his commit (its self-wrap
 *   is sealed to a key nobody kept), not a later member's commit sealed to one of bob's stolen
 *   leaf keys (its secret opens, but chains from an init secret the thief never had: the tag
 *   check fails), and no message of those epochs.
 * The loot does read E's messages after k: the test checks that it is real.
 */
import { expect, it } from "vitest";
import {
  decodeCommitBody,
  decryptGroup,
  type EpochState,
  emptyGroup,
  type GroupRecord,
  splitCore,
} from "../../shared/core/group";
import { constantTimeEqual, hpkeOpen, hpkeOpenXWing, sha256 } from "../../shared/crypto";
import { concatBytes, fromB64u, lp } from "../../shared/encoding";
import { connect, messages, newUser, say } from "../support/clients";
import { addByInvite, type Delivered, delivered, recordOf, values32 } from "../support/group-story";
import { NodeRelay } from "../support/node-relay";

const G = "club";
const C = "group:club" as const;

type CommitItem = Extract<Delivered["item"], { kind: "commit" }>;
type GroupItem = Extract<Delivered["item"], { kind: "group" }>;

const u64 = (n: number) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
};

/**
 * Every way `priv` could open `wrap` for `to`: the wrap layouts and HPKE infos of both group
 * key schedules (§9.2.3: a version byte, `kind` and the leaf id; before it: no version byte and
 * the signed prekey's id), so the check means the same against either; a hybrid wrap (0x02) is
 * tried as X-Wing HPKE with `priv` as the seed. The opened secret, or null.
 */
async function wrapOpens(
  hub: string,
  item: CommitItem,
  to: string,
  priv: Uint8Array,
): Promise<Uint8Array | null> {
  const { body } = splitCore(fromB64u(item.core));
  const c = decodeCommitBody(body) as unknown as {
    roster: { name: string; ik: string; leafId?: number; spkId?: number }[];
  };
  const me = c.roster.find((m) => m.name === to);
  if (me === undefined) return null;
  const id = me.leafId ?? me.spkId ?? 0;
  const ik = fromB64u(me.ik);
  const wrap = fromB64u(item.wrap);
  const v2 = (kind: string) =>
    concatBytes(lp("parley/v2/group-wrap", hub, G, u64(item.epoch)), lp(kind, to, ik, id));
  const tries: [Uint8Array, Uint8Array, Uint8Array][] = [
    [wrap.slice(1, 33), wrap.slice(33), v2("member")],
    [wrap.slice(1, 33), wrap.slice(33), v2("joiner")],
    [
      wrap.slice(0, 32),
      wrap.slice(32),
      lp("parley/v1/group-wrap", hub, G, u64(item.epoch), to, ik, id),
    ],
  ];
  for (const [enc, ct, info] of tries) {
    try {
      return await hpkeOpen(priv, enc, ct, info, sha256(body));
    } catch {
      // Not this layout, or not this key.
    }
  }
  if (wrap[0] === 0x02 && priv.length === 32) {
    for (const kind of ["member", "joiner"]) {
      try {
        return await hpkeOpenXWing(
          priv,
          wrap.slice(1, 1121),
          wrap.slice(1121),
          v2(kind),
          sha256(body),
        );
      } catch {
        // Not this key.
      }
    }
  }
  return null;
}

it("a thief of bob's whole store and of the relay after message k of epoch E reads nothing earlier, and nothing after bob's next commit", async () => {
  const relay = new NodeRelay();
  const alice = await newUser(relay, "alice");
  // bob commits a periodic update after 3 messages of his in one epoch (§9.6).
  const bob = await newUser(relay, "bob", { tuning: { groupUpdateAfterMessages: 3 } });
  const carol = await newUser(relay, "carol");
  const dave = await newUser(relay, "dave");
  await connect(alice, bob, carol, dave);
  const hub = relay.hub;
  // The epochs as alice holds them (her transcript hashes and rosters: public to the thief).
  const epochs = new Map<number, EpochState>();
  const note = async () => {
    const cur = (await recordOf(alice, G)).current;
    if (cur !== null) epochs.set(cur.epoch, cur);
  };

  await alice.client.createGroup(G, { title: "Club", policy: "invite" });
  await relay.settle();
  await note();
  await addByInvite(relay, G, alice, bob);
  await note();
  await say(alice, C, "e2 from alice");
  await say(bob, C, "e2 from bob");
  await addByInvite(relay, G, alice, carol);
  await note();
  const E = (await recordOf(bob, G)).current?.epoch as number;
  expect(E).toBe(3);
  // Epoch E: alice's messages 0..2 (k = 3) and one of bob's, all read.
  for (const t of ["m0", "m1", "m2"]) await say(alice, C, t);
  await say(bob, C, "e3 from bob");
  expect(messages(bob, C)).toEqual(["e2 from alice", "m0", "m1", "m2"]);

  // The theft: bob's whole store, every table of the relay, every frame it delivered so far.
  const stolenStore: unknown = JSON.parse(bob.store.dump());
  const stolenRecord = (await recordOf(bob, G)) as GroupRecord;
  const stealAt = relay.log.length;
  const before = delivered(relay);

  // After the theft: alice's message 3 of epoch E (the thief reads it: the loot is real) ...
  await say(alice, C, "m3");
  // ... bob's next messages make his update due: he commits epoch E+1 (§9.6) ...
  await say(bob, C, "e3 from bob, 2");
  await say(bob, C, "e3 from bob, 3");
  await relay.settle();
  await note();
  expect((await recordOf(bob, G)).current?.epoch).toBe(E + 1);
  await say(alice, C, "e4 from alice");
  // ... and alice adds dave: epoch E+2, sealed to bob's next leaf key, which the thief holds.
  await addByInvite(relay, G, alice, dave);
  await note();
  expect((await recordOf(bob, G)).current?.epoch).toBe(E + 2);
  await say(alice, C, "e5 from alice");
  expect(messages(bob, C).slice(-3)).toEqual(["m3", "e4 from alice", "e5 from alice"]);

  // The loot: every 32-byte value in bob's store, the relay's tables and its delivered frames
  // (public values included: more candidates only make the thief stronger).
  const loot = values32([stolenStore, relay.dumpTables(), relay.log.slice(0, stealAt)]);
  expect(loot.size).toBeGreaterThan(200);
  const candidates = [...loot].map((x) => fromB64u(x));
  const all = delivered(relay);
  const groupItems = (xs: Delivered[]) =>
    xs.filter((d): d is Delivered & { item: GroupItem } => d.item.kind === "group");
  const commits = (xs: Delivered[]) =>
    xs.filter((d): d is Delivered & { item: CommitItem } => d.item.kind === "commit");

  /** Does any candidate open `body` (from `sender`, in epoch `ep`) as chain or message key? */
  const anyKeyOpens = async (ep: EpochState, sender: string, body: Uint8Array) => {
    const n = new DataView(body.buffer, body.byteOffset).getUint32(2);
    for (const v of loot) {
      for (const skipped of [[], [{ n, mk: v, seq: 0 }]]) {
        const rec: GroupRecord = {
          ...emptyGroup(G),
          status: "member",
          current: { ...ep, receivers: [{ name: sender, ck: v, n: 0, skipped }] },
        };
        const ok = await decryptGroup({ record: rec, hub, sender, epoch: ep.epoch, body }).then(
          () => true,
          () => false,
        );
        if (ok) return true;
      }
    }
    return false;
  };
  const opens = (rec: GroupRecord, sender: string, epoch: number, body: Uint8Array) =>
    decryptGroup({ record: rec, hub, sender, epoch, body }).then(
      () => true,
      () => false,
    );

  // The loot is real: the stolen record reads alice's message 3 of epoch E.
  const m3 = groupItems(all).find((d) => d.at >= stealAt && d.to === "bob");
  if (m3 === undefined) throw new Error("m3 was delivered");
  expect(await opens(stolenRecord, "alice", E, fromB64u(m3.item.body))).toBe(true);

  // 1. No wrap of a commit of epoch ≤ E opens with any value of the loot.
  for (const d of commits(before))
    for (const priv of candidates)
      expect(await wrapOpens(hub, d.item, d.to, priv), `wrap of epoch ${d.item.epoch}`).toBe(null);

  // 2. No message of an epoch before E, and none of E before the theft, opens: not with the
  //    record as stolen, not with its counters rewound, not with any value as a chain or
  //    message key.
  const cur = stolenRecord.current as EpochState;
  const rewound: GroupRecord = {
    ...stolenRecord,
    current: { ...cur, receivers: cur.receivers.map((r) => ({ ...r, n: 0, skipped: [] })) },
  };
  const earlier = new Map<string, Delivered & { item: GroupItem }>();
  for (const d of groupItems(before)) earlier.set(d.item.body, d);
  expect(earlier.size).toBe(6); // e2 ×2, m0..m2, bob's e3
  for (const d of earlier.values()) {
    const body = fromB64u(d.item.body);
    expect(await opens(stolenRecord, d.from, d.item.epoch, body)).toBe(false);
    expect(await opens(rewound, d.from, d.item.epoch, body)).toBe(false);
    expect(await anyKeyOpens(epochs.get(d.item.epoch) as EpochState, d.from, body)).toBe(false);
  }

  // 3. After bob's update: no wrap of his commit opens (his own included) ...
  const c4 = commits(all).filter((d) => d.item.epoch === E + 1);
  expect(c4.map((d) => d.from)).toContain("bob");
  for (const d of c4)
    for (const priv of candidates)
      expect(await wrapOpens(hub, d.item, d.to, priv), `wrap of bob's update to ${d.to}`).toBe(
        null,
      );
  // ... alice's next commit opens with a stolen leaf key of bob's, but no init secret of the
  // loot chains it: its confirmation tag never matches ...
  const c5 = commits(all).find((d) => d.item.epoch === E + 2 && d.to === "bob");
  if (c5 === undefined) throw new Error("bob got epoch E+2");
  const secrets: Uint8Array[] = [];
  for (const priv of candidates) {
    const s = await wrapOpens(hub, c5.item, "bob", priv);
    if (s !== null) secrets.push(s);
  }
  expect(secrets.length).toBeGreaterThan(0);
  // Imported here: this file also runs against the key schedule before §9.3 (whose wraps are
  // sealed to signed prekeys, so step 1 already fails there), which has no such module.
  const { confirmationTag, confirmedTranscript, epochKeys, groupContext, joinerSecret } =
    await import("../../shared/core/group-schedule");
  const { body, sig, tag } = splitCore(fromB64u(c5.item.core));
  const parentInterim = decodeCommitBody(body).parentInterim;
  const confirmed = confirmedTranscript(parentInterim, body, sig);
  for (const s of secrets)
    for (const init of [...candidates, s]) {
      const keys = epochKeys(
        joinerSecret(init, s, hub, G, E + 2),
        groupContext(hub, G, E + 2, confirmed),
        [],
      );
      expect(constantTimeEqual(confirmationTag(keys.confirmKey, confirmed), tag)).toBe(false);
    }
  // ... and no message of those epochs opens.
  const later = groupItems(all).filter((d) => d.item.epoch > E && d.to === "bob");
  expect(later.length).toBe(2);
  for (const d of later) {
    const b = fromB64u(d.item.body);
    expect(await opens(stolenRecord, d.from, d.item.epoch, b)).toBe(false);
    expect(await anyKeyOpens(epochs.get(d.item.epoch) as EpochState, d.from, b)).toBe(false);
  }
}, 240_000);
