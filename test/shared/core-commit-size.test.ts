/**
 * The largest commit the protocol allows must fit the wire limits (PROTOCOL.md §7.1):
 * maxGroupSize members with maximal (32-character) names, every one of them both leaving and
 * joining again, so the core lists each name in the roster, in `added` and in `removed`. Built
 * with the engine's own code (nextRoster, buildCommit) and sent the way the engine sends it.
 */
import { describe, expect, it } from "vitest";
import { buildCommit, nextRoster } from "../../shared/core/group";
import { randomBytes, x25519GenerateKeyPair } from "../../shared/crypto";
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
    const spk = await x25519GenerateKeyPair();
    const members: Member[] = Array.from({ length: LIMITS.maxGroupSize }, (_, i) => ({
      username: `m${String(i).padStart(4, "0")}`.padEnd(LIMITS.maxNameLength, "z"),
      identityKey: toB64u(randomBytes(32)),
      // one X25519 key for all (the sizes are those of distinct keys; sealing needs a real one)
      leaf: {
        id: 0xffffffff,
        key: toB64u(spk.publicKey),
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
    };
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
    });
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
