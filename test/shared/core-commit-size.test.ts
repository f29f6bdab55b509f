/**
 * The largest commit the protocol allows must fit the wire limits (PROTOCOL.md §7.1):
 * maxGroupSize members with maximal (32-character) names, every one of them both leaving and
 * joining again, so the core lists each name in the roster, in `added` and in `removed`, every
 * one with a hybrid leaf key (X-Wing wraps of 1169 bytes, §9.2.3). Built with the engine's own
 * code (nextRoster, buildCommit) and sent the way the engine sends it; the `group` state listing
 * all of them twice (committed and pending join) must fit too.
 */
import { describe, expect, it } from "vitest";
import { buildCommit, nextRoster } from "../../shared/core/group";
import { randomBytes, xwingPublicKey } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import {
  type GroupState,
  LIMITS,
  type Member,
  parseClientFrame,
  parseServerFrame,
} from "../../shared/protocol";

describe("worst-case commit size", () => {
  it(`a ${LIMITS.maxGroupSize}-member commit with 32-character names passes parseClientFrame`, async () => {
    // One X-Wing key for all (the sizes are those of distinct keys; sealing needs a real one).
    const pk = await xwingPublicKey(randomBytes(32));
    const members: Member[] = Array.from({ length: LIMITS.maxGroupSize }, (_, i) => ({
      username: `m${String(i).padStart(4, "0")}`.padEnd(LIMITS.maxNameLength, "z"),
      identityKey: toB64u(randomBytes(32)),
      leaf: {
        id: 0xffffffff,
        key: toB64u(pk.slice(1184)),
        kem: toB64u(pk.slice(0, 1184)),
        epoch: Number.MAX_SAFE_INTEGER,
        nonce: toB64u(randomBytes(16)),
        sig: toB64u(randomBytes(64)),
      },
    }));
    const names = members.map((m) => m.username);
    const state: GroupState = {
      group: "g".repeat(LIMITS.maxNameLength),
      epoch: Number.MAX_SAFE_INTEGER - 1,
      members,
      pendingJoins: members,
      pendingLeaves: names,
      interim: toB64u(randomBytes(32)),
      info: toB64u(randomBytes(Math.floor((LIMITS.maxGroupInfoChars * 3) / 4))),
      joinAuths: names.map((username) => ({
        username,
        auth: toB64u(randomBytes(Math.floor((LIMITS.maxGroupAuthChars * 3) / 4))),
      })),
    };
    // The group state every member receives (§6.2), with 2000 listed hybrid leaf keys.
    const groupFrame = JSON.stringify({ v: 1, t: "group", state });
    expect(groupFrame.length).toBeLessThanOrEqual(LIMITS.maxFrameBytes);
    expect(parseServerFrame(groupFrame).ok).toBe(true);
    const { roster, added, removed } = nextRoster(state);
    expect([roster.length, added.length, removed.length]).toEqual([
      LIMITS.maxGroupSize,
      LIMITS.maxGroupSize,
      LIMITS.maxGroupSize,
    ]);
    const built = await buildCommit({
      hub: "h".repeat(LIMITS.maxHubLength),
      group: state.group,
      parentEpoch: state.epoch,
      prev: null,
      committer: names[0] as string,
      committerIk: randomBytes(32),
      sign: async () => randomBytes(64),
      roster,
      added,
      removed,
      // A closed group (§9.7.2): the largest signed state, and every removal's authorization at
      // its largest (an admin's removal, 126 bytes); the re-adds need none (same key and name).
      access: {
        info: randomBytes(Math.floor((LIMITS.maxGroupInfoChars * 3) / 4)),
        adds: [],
        removals: removed.map((name) => ({
          name,
          auth: randomBytes(126),
        })),
      },
      random: randomBytes,
      kems: new Map(members.map((m) => [m.username, m.leaf.kem as string])),
    });
    expect(built.wraps.every((w) => w.wrap[0] === 0x02 && w.wrap.length === 1169)).toBe(true);
    const core = toB64u(built.core);
    const frame = {
      v: 1,
      t: "commit",
      id: "c".repeat(LIMITS.maxClientIdLength),
      group: state.group,
      parentEpoch: state.epoch,
      members: roster.map((m) => m.name),
      core,
      wraps: built.wraps.map((w) => ({ to: w.to, leaf: w.leaf, wrap: toB64u(w.wrap) })),
      interim: toB64u(built.interim),
      info: toB64u(randomBytes(Math.floor((LIMITS.maxGroupInfoChars * 3) / 4))),
    };
    const raw = JSON.stringify(frame);
    // The numbers PROTOCOL §7.1 quotes.
    console.info(
      `worst-case core ${core.length} chars, commit frame ${raw.length} bytes, group frame ${groupFrame.length} bytes`,
    );
    expect(core.length).toBeLessThanOrEqual(LIMITS.maxCommitCoreChars);
    expect(raw.length).toBeLessThanOrEqual(LIMITS.maxFrameBytes);
    const parsed = parseClientFrame(raw);
    expect(parsed.ok).toBe(true);
    // what each member then receives through its mailbox fits as well
    const wrap = frame.wraps[0]?.wrap as string;
    const deliver = {
      v: 1,
      t: "deliver",
      mid: String(Number.MAX_SAFE_INTEGER),
      from: names[0],
      fromKey: members[0]?.identityKey,
      ts: Number.MAX_SAFE_INTEGER,
      item: { kind: "commit", group: state.group, epoch: state.epoch + 1, core, wrap },
    };
    expect(parseServerFrame(JSON.stringify(deliver)).ok).toBe(true);
    // the relay stores the core as one SQLite value: Durable Object rows must stay < 2 MB
    expect(core.length).toBeLessThan(2 * 1000 * 1000);
  }, 60_000);
});
