/**
 * Fuzzing the one boundary parser (docs/SECURITY.md §6; PROTOCOL.md §5–§6): arbitrary JSON
 * values, arbitrary strings and arbitrary bytes never throw past `parseClientFrame` /
 * `parseServerFrame`; a rejection always carries a known error code; whatever is accepted
 * re-validates against its schema and survives a JSON round trip unchanged; generated valid
 * frames are always accepted. Runs in Node and in workerd.
 */
import fc from "fast-check";
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import {
  ClientFrame,
  ERROR_CODES,
  LIMITS,
  type ParseResult,
  parseClientFrame,
  parseServerFrame,
  ServerFrame,
} from "../../shared/protocol";

const RUNS = { numRuns: 400, seed: 0x5ec }; // fixed seed: CI failures reproduce

type Parser = (raw: unknown) => ParseResult<unknown>;
const parsers: Array<[string, Parser, v.GenericSchema]> = [
  ["parseClientFrame", parseClientFrame, ClientFrame],
  ["parseServerFrame", parseServerFrame, ServerFrame],
];

/** The invariant for any input: no throw; typed rejection or a schema-valid, stable frame. */
function check(parse: Parser, schema: v.GenericSchema, raw: unknown): void {
  let r: ParseResult<unknown>;
  try {
    r = parse(raw);
  } catch (e) {
    throw new Error(`parser threw on ${String(raw).slice(0, 80)}: ${String(e)}`);
  }
  if (!r.ok) {
    expect(ERROR_CODES).toContain(r.code);
    if (r.id !== undefined) {
      expect(typeof r.id).toBe("string");
      expect(r.id.length).toBeLessThanOrEqual(LIMITS.maxClientIdLength);
    }
    return;
  }
  expect(v.safeParse(schema, r.frame).success).toBe(true);
  const again = parse(JSON.stringify(r.frame));
  expect(again).toEqual({ ok: true, frame: r.frame });
}

// --- valid frame generators ------------------------------------------------------------------

const name = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,31}$/);
const id = fc.stringMatching(/^[\x21-\x7e]{1,64}$/);
const bytes = (min: number, max: number) =>
  fc.uint8Array({ minLength: min, maxLength: max }).map(toB64u);
const key = bytes(32, 32);
const sig = bytes(64, 64);
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const epoch = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const mid = fc.bigInt({ min: 1n, max: 9_999_999_999_999_999n }).map(String);
const spk = fc.record({ id: u32, key, sig });
const leaf = fc.record({ id: u32, key, epoch, nonce: bytes(16, 16), sig });
const member = fc.record({ username: name, identityKey: key, leaf });

const validClient = fc.oneof(
  fc.record({ v: fc.constant(1), t: fc.constant("send"), id, to: name, body: bytes(1, 200) }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("ack"),
    mids: fc.array(mid, { minLength: 1, maxLength: 20 }),
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("join"),
    id,
    group: name,
    leaves: fc.array(leaf, { minLength: 1, maxLength: 8 }),
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("leaf"),
    id,
    group: name,
    leaves: fc.array(leaf, { minLength: 1, maxLength: 8 }),
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("group_send"),
    id,
    group: name,
    epoch,
    body: bytes(1, 200),
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("commit"),
    id,
    group: name,
    parentEpoch: epoch,
    members: fc.array(name, { minLength: 1, maxLength: 5 }),
    core: bytes(1, 300),
    wraps: fc.array(fc.record({ to: name, leaf: u32, wrap: bytes(1, 80) }), {
      minLength: 1,
      maxLength: 5,
    }),
    interim: key,
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("auth"),
    username: name,
    identityKey: key,
    signedPrekey: spk,
    device: bytes(16, 16),
    claim: fc.boolean(),
    sig,
  }),
);

const validServer = fc.oneof(
  fc.record({
    v: fc.constant(1),
    t: fc.constant("deliver"),
    mid,
    from: name,
    fromKey: key,
    ts: fc.nat(),
    item: fc.oneof(
      fc.record({ kind: fc.constant("direct"), body: bytes(1, 200) }),
      fc.record({ kind: fc.constant("group"), group: name, epoch, body: bytes(1, 200) }),
      fc.record({
        kind: fc.constant("commit"),
        group: name,
        epoch,
        core: bytes(1, 200),
        wrap: bytes(1, 80),
      }),
    ),
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("group"),
    state: fc.record({
      group: name,
      epoch,
      members: fc.array(member, { maxLength: 3 }),
      pendingJoins: fc.array(member, { maxLength: 2 }),
      pendingLeaves: fc.array(name, { maxLength: 2 }),
      interim: key,
    }),
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("bundle"),
    id,
    username: name,
    identityKey: key,
    signedPrekey: spk,
    oneTimePrekey: fc.option(fc.record({ id: u32, key }), { nil: null }),
  }),
  fc.record({
    v: fc.constant(1),
    t: fc.constant("presence"),
    users: fc.array(fc.record({ username: name, identityKey: key }), { maxLength: 5 }),
  }),
);

/** Mutate one field of a valid frame: delete it, replace it with any JSON, or add a key. */
const mutated = (valid: fc.Arbitrary<Record<string, unknown>>) =>
  fc
    .tuple(valid, fc.nat(), fc.jsonValue({ maxDepth: 2 }), fc.constantFrom("del", "set", "add"))
    .map(([f, i, val, op]) => {
      const keys = Object.keys(f);
      const k = keys[i % keys.length] as string;
      const out: Record<string, unknown> = { ...f };
      if (op === "del") delete out[k];
      else if (op === "set") out[k] = val;
      else out[`x${i}`] = val;
      return JSON.stringify(out);
    });

describe.each(parsers)("%s under fuzzing", (_n, parse, schema) => {
  it("arbitrary JSON values never throw; accepted frames re-validate and round-trip", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (j) => check(parse, schema, JSON.stringify(j))),
      RUNS,
    );
  });

  it("arbitrary JSON objects shaped like frames (v:1, a known t) never throw", () => {
    const t = fc.constantFrom(
      "auth",
      "send",
      "ack",
      "commit",
      "group_send",
      "deliver",
      "group",
      "bundle",
      "error",
      "__proto__",
    );
    fc.assert(
      fc.property(t, fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })), (tt, rest) =>
        check(parse, schema, JSON.stringify({ ...rest, v: 1, t: tt })),
      ),
      RUNS,
    );
  });

  it("arbitrary strings and arbitrary bytes never throw", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), (s) => check(parse, schema, s)),
      RUNS,
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        check(parse, schema, b);
        check(parse, schema, b.buffer);
      }),
      RUNS,
    );
  });

  it("non-socket values (numbers, null, objects, arrays) are typed rejections", () => {
    for (const raw of [undefined, null, 0, 1n, true, {}, [], () => 1, Symbol("x")]) {
      const r = parse(raw);
      expect(r.ok).toBe(false);
    }
  });
});

describe("valid frames", () => {
  it("every generated client frame is accepted and round-trips exactly", () => {
    fc.assert(
      fc.property(validClient, (f) => {
        expect(parseClientFrame(JSON.stringify(f))).toEqual({ ok: true, frame: f });
      }),
      RUNS,
    );
  });

  it("every generated server frame is accepted and round-trips exactly", () => {
    fc.assert(
      fc.property(validServer, (f) => {
        expect(parseServerFrame(JSON.stringify(f))).toEqual({ ok: true, frame: f });
      }),
      RUNS,
    );
  });

  it("one-field mutations of valid frames never throw and never yield an invalid frame", () => {
    fc.assert(
      fc.property(mutated(validClient), (raw) => check(parseClientFrame, ClientFrame, raw)),
      RUNS,
    );
    fc.assert(
      fc.property(mutated(validServer), (raw) => check(parseServerFrame, ServerFrame, raw)),
      RUNS,
    );
  });
});
