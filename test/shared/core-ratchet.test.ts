/**
 * Double Ratchet properties (fast-check) and pure-transition checks: any delivery order within
 * the skip window decrypts every message exactly once; messages beyond the window are refused
 * with too_far; every transition leaves its (deep-frozen) input untouched.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isCoreError } from "../../shared/core/errors";
import { PAD_BUCKETS, pad, paddedLength, unpad } from "../../shared/core/padding";
import {
  initInitiator,
  initResponder,
  MAX_SKIP,
  newX25519,
  type RatchetState,
  ratchetDecrypt,
  ratchetEncrypt,
} from "../../shared/core/ratchet";
import { randomBytes } from "../../shared/crypto";
import { fromB64u } from "../../shared/encoding";

const PREFIX = new Uint8Array([1, 5]);

/** Deep-freeze a value so any mutation by the code under test throws (strict mode). */
function deepFreeze<T>(x: T): T {
  if (x !== null && typeof x === "object" && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x as object)) deepFreeze(v);
  }
  return x;
}

/** Run a transition on a frozen deep copy and check the original equals the copy afterwards. */
async function pure<S, R>(state: S, f: (s: S) => Promise<R>): Promise<R> {
  const copy = deepFreeze(structuredClone(state));
  const r = await f(copy);
  expect(copy).toEqual(state);
  return r;
}

async function pair(): Promise<{ a: RatchetState; b: RatchetState }> {
  const root = randomBytes(32);
  const ad = randomBytes(40);
  const bobKey = await newX25519(randomBytes);
  const a = await initInitiator({
    rootKey: root,
    ad,
    peerRatchetKey: fromB64u(bobKey.pub),
    receiveChain: null,
    random: randomBytes,
  });
  const b = initResponder({ rootKey: root, ad, ratchetKeyPair: bobKey, sendChain: null });
  return { a, b };
}

type Msg = { header: Uint8Array; ct: Uint8Array; text: string };

async function sendMany(
  s: RatchetState,
  n: number,
  tag: string,
): Promise<{ s: RatchetState; msgs: Msg[] }> {
  const msgs: Msg[] = [];
  for (let i = 0; i < n; i++) {
    const text = `${tag}${i}`;
    const r = await ratchetEncrypt(s, new TextEncoder().encode(text), PREFIX);
    s = r.state;
    msgs.push({ header: r.header, ct: r.ciphertext, text });
  }
  return { s, msgs };
}

describe("double ratchet", () => {
  it("any delivery order (with duplicates) across two turns decrypts each message exactly once", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 0, max: 2 ** 31 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        async (n1, n2, seed, dups) => {
          let { a, b } = await pair();
          const first = await sendMany(a, n1, "x");
          a = first.s;
          // bob must see one message of alice's first chain before he can answer (async start)
          const opening = first.msgs[0] as Msg;
          let r = await ratchetDecrypt(b, opening.header, opening.ct, PREFIX, randomBytes);
          b = r.state;
          const reply = await ratchetEncrypt(b, new TextEncoder().encode("r"), PREFIX);
          b = reply.state;
          r = await ratchetDecrypt(a, reply.header, reply.ciphertext, PREFIX, randomBytes);
          a = r.state;
          const second = await sendMany(a, n2, "y");
          const all = [...first.msgs.slice(1), ...second.msgs];
          // deterministic shuffle from the seed, plus some duplicates
          const order = all
            .map((m, i) => ({ m, k: (Math.imul(i + 1, 2654435761) ^ seed) >>> 0 }))
            .sort((p, q) => p.k - q.k)
            .map((x) => x.m);
          for (const d of dups)
            if (all.length > 0) order.splice(d % (order.length + 1), 0, all[d % all.length] as Msg);
          const got: string[] = [];
          for (const m of order) {
            try {
              const out = await ratchetDecrypt(b, m.header, m.ct, PREFIX, randomBytes);
              b = out.state;
              got.push(new TextDecoder().decode(out.plaintext));
            } catch (e) {
              if (!isCoreError(e, "replay")) throw e;
            }
          }
          expect([...got].sort()).toEqual(all.map((m) => m.text).sort());
        },
      ),
      { numRuns: 40 },
    );
  });

  it("random interleavings of both parties sending and out-of-order delivery: each message read once", async () => {
    // Online-handshake initialisation: both sides can send from the start (§8.2).
    const root = randomBytes(32);
    const ad = randomBytes(40);
    const chain = randomBytes(32);
    const bobKey = await newX25519(randomBytes);
    const init = {
      a: await initInitiator({
        rootKey: root,
        ad,
        peerRatchetKey: fromB64u(bobKey.pub),
        receiveChain: chain,
        random: randomBytes,
      }),
      b: initResponder({ rootKey: root, ad, ratchetKeyPair: bobKey, sendChain: chain }),
    };
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 }), fc.nat()), { maxLength: 40 }),
        async (ops) => {
          const st = { a: init.a, b: init.b };
          const inFlight = { a: [] as Msg[], b: [] as Msg[] }; // messages travelling TO a / TO b
          const sent = { a: [] as string[], b: [] as string[] };
          const got = { a: [] as string[], b: [] as string[] };
          let k = 0;
          const deliver = async (to: "a" | "b", pick: number) => {
            const q = inFlight[to];
            if (q.length === 0) return;
            const [m] = q.splice(pick % q.length, 1) as [Msg];
            const out = await ratchetDecrypt(st[to], m.header, m.ct, PREFIX, randomBytes);
            st[to] = out.state;
            got[to].push(new TextDecoder().decode(out.plaintext));
          };
          for (const [op, pick] of ops) {
            if (op === 0 || op === 1) {
              const from = op === 0 ? "a" : "b";
              const text = `${from}${k++}`;
              const r = await ratchetEncrypt(st[from], new TextEncoder().encode(text), PREFIX);
              st[from] = r.state;
              inFlight[from === "a" ? "b" : "a"].push({ header: r.header, ct: r.ciphertext, text });
              sent[from].push(text);
            } else await deliver(op === 2 ? "b" : "a", pick);
          }
          // drain the rest in a scrambled order
          while (inFlight.a.length + inFlight.b.length > 0) {
            if (inFlight.a.length > 0) await deliver("a", 7);
            if (inFlight.b.length > 0) await deliver("b", 3);
          }
          expect([...got.b].sort()).toEqual([...sent.a].sort());
          expect([...got.a].sort()).toEqual([...sent.b].sort());
        },
      ),
      { numRuns: 30 },
    );
  });

  it("a message more than MAX_SKIP ahead is refused (too_far) and the state is unchanged", async () => {
    let { a, b } = await pair();
    const open = await ratchetEncrypt(a, new Uint8Array([1]), PREFIX);
    a = open.state;
    b = (await ratchetDecrypt(b, open.header, open.ciphertext, PREFIX, randomBytes)).state;
    a = { ...a, ns: a.ns + MAX_SKIP + 1 };
    const far = await ratchetEncrypt(a, new Uint8Array([2]), PREFIX);
    await pure(b, async (frozen) => {
      await expect(
        ratchetDecrypt(frozen, far.header, far.ciphertext, PREFIX, randomBytes),
      ).rejects.toSatisfy((e) => isCoreError(e, "too_far"));
    });
  });

  it("encrypt and decrypt never mutate their input state", async () => {
    const { a, b } = await pair();
    const m = await pure(a, (s) => ratchetEncrypt(s, new Uint8Array([7]), PREFIX));
    const out = await pure(b, (s) =>
      ratchetDecrypt(s, m.header, m.ciphertext, PREFIX, randomBytes),
    );
    expect(out.plaintext).toEqual(new Uint8Array([7]));
    // a failed decryption of a tampered message also leaves the state as it was
    const bad = m.ciphertext.slice();
    bad[0] = (bad[0] as number) ^ 1;
    await pure(b, async (s) => {
      await expect(ratchetDecrypt(s, m.header, bad, PREFIX, randomBytes)).rejects.toSatisfy((e) =>
        isCoreError(e, "decrypt_failed"),
      );
    });
  });

  it("the state survives a JSON round trip mid-conversation", async () => {
    let { a, b } = await pair();
    const first = await sendMany(a, 3, "z");
    a = first.s;
    for (const m of [first.msgs[2], first.msgs[0]] as Msg[]) {
      b = (await ratchetDecrypt(b, m.header, m.ct, PREFIX, randomBytes)).state;
    }
    b = JSON.parse(JSON.stringify(b)) as RatchetState;
    const late = first.msgs[1] as Msg;
    const out = await ratchetDecrypt(b, late.header, late.ct, PREFIX, randomBytes);
    expect(new TextDecoder().decode(out.plaintext)).toBe("z1");
  });
});

describe("padding", () => {
  it("pads to the documented buckets and round-trips", () => {
    expect(PAD_BUCKETS[0]).toBe(64);
    expect(paddedLength(0)).toBe(64);
    expect(paddedLength(63)).toBe(64);
    expect(paddedLength(64)).toBe(128);
    expect(paddedLength(65536)).toBe(65536 + 16384);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), (b) => {
        const p = pad(b);
        expect(PAD_BUCKETS as readonly number[]).toContain(p.length);
        expect(unpad(p)).toEqual(b);
      }),
    );
    expect(() => unpad(new Uint8Array(64))).toThrow();
  });
});
