/**
 * Fuzzing the engine's byte decoders (docs/SECURITY.md §6): direct envelopes (PROTOCOL.md §8.1),
 * the Double Ratchet (§8.4), group messages (§9.5), commit cores (§9.2.2) and content (§8.6).
 * Arbitrary bytes and mutated genuine messages always end in a typed CoreError — never another
 * exception, never a crash — and never change the state they were tried against (inputs are
 * deep-frozen and compared afterwards). The genuine message still decrypts after the fuzzing.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeContent } from "../../shared/core/content";
import { decodeEnvelope, messagePrefix } from "../../shared/core/envelope";
import { isCoreError } from "../../shared/core/errors";
import {
  decryptGroup,
  encryptGroup,
  enterEpoch,
  type GroupRecord,
  type RosterEntry,
  receiveCommit,
} from "../../shared/core/group";
import {
  HEADER_BYTES,
  initInitiator,
  initResponder,
  newX25519,
  type RatchetState,
  ratchetDecrypt,
  ratchetEncrypt,
} from "../../shared/core/ratchet";
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { concatBytes, fromB64u, toB64u } from "../../shared/encoding";

const RUNS = { numRuns: 150, seed: 0xf0221 };

function deepFreeze<T>(x: T): T {
  if (x !== null && typeof x === "object" && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const val of Object.values(x as object)) deepFreeze(val);
  }
  return x;
}

/** Run `f` on a frozen copy of `state`; it must fail with a CoreError and leave state intact. */
async function rejects<S>(state: S, f: (s: S) => Promise<unknown>): Promise<string> {
  const before = structuredClone(state);
  const frozen = deepFreeze(structuredClone(state));
  try {
    await f(frozen);
  } catch (e) {
    if (!isCoreError(e)) throw new Error(`untyped failure: ${String(e)}`);
    expect(frozen).toEqual(before);
    return e.code;
  }
  throw new Error("accepted a forged input");
}

/** A byte string with one of: a bit flip, a truncation, an extension, or a random splice. */
const mutate = (genuine: Uint8Array) =>
  fc.oneof(
    fc
      .tuple(fc.nat({ max: genuine.length - 1 }), fc.integer({ min: 0, max: 7 }))
      .map(([i, bit]) => {
        const b = genuine.slice();
        b[i] = (b[i] as number) ^ (1 << bit);
        return b;
      }),
    fc.nat({ max: genuine.length - 1 }).map((n) => genuine.slice(0, n)),
    fc.uint8Array({ minLength: 1, maxLength: 40 }).map((x) => concatBytes(genuine, x)),
    fc
      .tuple(fc.nat({ max: genuine.length - 1 }), fc.uint8Array({ minLength: 1, maxLength: 16 }))
      .map(([i, x]) => {
        const b = genuine.slice();
        b.set(x.subarray(0, b.length - i), i);
        return b;
      })
      .filter((b) => b.some((x, i) => x !== genuine[i])),
  );

describe("direct envelopes and the Double Ratchet", () => {
  async function session() {
    const root = randomBytes(32);
    const ad = randomBytes(40);
    const bobKey = await newX25519(randomBytes);
    let a = await initInitiator({
      rootKey: root,
      ad,
      peerRatchetKey: fromB64u(bobKey.pub),
      receiveChain: null,
      random: randomBytes,
    });
    let b: RatchetState = initResponder({
      rootKey: root,
      ad,
      ratchetKeyPair: bobKey,
      sendChain: null,
    });
    const sid = randomBytes(16);
    const prefix = messagePrefix(sid);
    // One message read, so bob holds a receiving chain; the next one is the fuzz target.
    const first = await ratchetEncrypt(a, new TextEncoder().encode("first"), prefix);
    a = first.state;
    b = (await ratchetDecrypt(b, first.header, first.ciphertext, prefix, randomBytes)).state;
    const next = await ratchetEncrypt(a, new TextEncoder().encode("the genuine one"), prefix);
    const envelope = concatBytes(prefix, next.header, next.ciphertext);
    return { b, prefix, envelope };
  }

  it("decodeEnvelope: arbitrary bytes → an envelope or a typed malformed error", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        try {
          decodeEnvelope(bytes);
        } catch (e) {
          expect(isCoreError(e, "malformed")).toBe(true);
        }
      }),
      { numRuns: 1000, seed: 7 },
    );
  });

  it("ratchetDecrypt: mutated genuine messages → typed error, state unchanged; genuine still reads", async () => {
    const { b, prefix, envelope } = await session();
    const seen = new Set<string>();
    await fc.assert(
      fc.asyncProperty(mutate(envelope), async (m) => {
        const code = await rejects(b, async (s) => {
          const env = decodeEnvelope(m);
          if (env.type !== "message") throw new Error(`decoded as ${env.type}`);
          // A mutated sid/version changes the prefix: the AAD no longer matches.
          return ratchetDecrypt(s, env.header, env.ciphertext, env.prefix, randomBytes);
        }).catch((e: Error) => {
          // A version/type flip can decode as another envelope type: that is a typed reject too.
          if (/decoded as/.test(e.message)) return "other_type";
          throw e;
        });
        seen.add(code);
      }),
      RUNS,
    );
    expect(
      [...seen].every((c) =>
        ["malformed", "decrypt_failed", "replay", "too_far", "other_type"].includes(c),
      ),
    ).toBe(true);
    expect(seen.has("decrypt_failed")).toBe(true);
    const env = decodeEnvelope(envelope);
    if (env.type !== "message") throw new Error("genuine envelope");
    const ok = await ratchetDecrypt(b, env.header, env.ciphertext, prefix, randomBytes);
    expect(new TextDecoder().decode(ok.plaintext)).toBe("the genuine one");
  });

  it("ratchetDecrypt: arbitrary header and ciphertext bytes → typed error, state unchanged", async () => {
    const { b, prefix } = await session();
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: HEADER_BYTES, maxLength: HEADER_BYTES }),
        fc.uint8Array({ minLength: 16, maxLength: 200 }),
        async (header, ct) => {
          await rejects(b, (s) => ratchetDecrypt(s, header, ct, prefix, randomBytes));
        },
      ),
      { numRuns: 60, seed: 11 },
    );
  });
});

describe("group messages, commit cores and content", () => {
  const HUB = "fuzz";
  const GROUP = "g";

  async function group() {
    const ids = {
      alice: await generateIdentityKeyPair(),
      bob: await generateIdentityKeyPair(),
    };
    const roster: RosterEntry[] = Object.entries(ids).map(([name, id]) => ({
      name,
      ik: toB64u(id.publicKey),
      leafId: 1,
      leafKey: toB64u(randomBytes(32)),
      leafEpoch: 0,
      leafNonce: toB64u(randomBytes(16)),
      leafSig: toB64u(randomBytes(64)),
    }));
    const secret = randomBytes(32);
    const th = randomBytes(32);
    const rec = (name: "alice" | "bob"): GroupRecord => ({
      group: GROUP,
      status: "member",
      previous: null,
      pendingCommit: null,
      leaves: [],
      current: enterEpoch({
        hub: HUB,
        group: GROUP,
        epoch: 3,
        joiner: secret,
        transcript: th,
        tag: null,
        interim: th,
        roster,
        me: { name, identityKey: ids[name].publicKey },
        now: 0,
      }),
    });
    const sent = await encryptGroup({
      record: rec("alice"),
      hub: HUB,
      me: { name: "alice", identityKey: ids.alice.publicKey },
      sign: (m) => ed25519Sign(ids.alice.privateKey, m),
      content: { t: "text", id: "m1", ts: 1, text: "to the group" },
    });
    return { bob: rec("bob"), body: sent.body };
  }

  it("decryptGroup: mutated and arbitrary bodies → typed error, record unchanged", async () => {
    const { bob, body } = await group();
    const input = fc.oneof(mutate(body), fc.uint8Array({ maxLength: 300 }));
    await fc.assert(
      fc.asyncProperty(input, async (m) => {
        const code = await rejects(bob, (record) =>
          decryptGroup({ record, hub: HUB, sender: "alice", epoch: 3, body: m }),
        );
        expect(["malformed", "bad_signature", "decrypt_failed", "replay", "too_far"]).toContain(
          code,
        );
      }),
      RUNS,
    );
    // Wrong sender or epoch for the genuine body: typed too.
    expect(
      await rejects(bob, (record) =>
        decryptGroup({ record, hub: HUB, sender: "carol", epoch: 3, body }),
      ),
    ).toBe("not_member");
    expect(
      await rejects(bob, (record) =>
        decryptGroup({ record, hub: HUB, sender: "alice", epoch: 4, body }),
      ),
    ).toBe("stale_epoch");
    const ok = await decryptGroup({ record: bob, hub: HUB, sender: "alice", epoch: 3, body });
    expect(ok.content.t === "text" && ok.content.text).toBe("to the group");
  });

  it("receiveCommit: arbitrary cores and wraps → typed error, record unchanged", async () => {
    const { bob } = await group();
    const bobIk = fromB64u(bob.current?.roster.find((m) => m.name === "bob")?.ik ?? "");
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 600 }),
        fc.uint8Array({ maxLength: 120 }),
        async (core, wrap) => {
          await rejects(bob, (record) =>
            receiveCommit({
              record,
              hub: HUB,
              me: { name: "bob", identityKey: bobIk },
              itemEpoch: 4,
              core,
              wrap,
              now: 0,
              from: { name: "alice", identityKey: toB64u(randomBytes(32)) },
            }),
          );
        },
      ),
      RUNS,
    );
  });

  it("decodeContent: arbitrary bytes → content or a typed malformed error", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        try {
          decodeContent(b);
        } catch (e) {
          expect(isCoreError(e, "malformed")).toBe(true);
        }
      }),
      { numRuns: 1000, seed: 3 },
    );
  });
});
