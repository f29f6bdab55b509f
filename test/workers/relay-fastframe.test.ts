/**
 * The relay's fast path for `send`, `group_send` and `ack` frames (worker/relay/fastframe.ts)
 * against the reference parser `parseClientFrame` (shared/protocol.ts, PROTOCOL.md §5): whatever
 * the fast path accepts, the reference accepts with an equal frame; and every well-formed frame
 * of those three types is taken by the fast path (else it would be dead code, not a fast path).
 * The same for the fast path of a group message's `deliver` (what a group's home hands each
 * member's object on users' routes) against `parseServerFrame`.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import { LIMITS, parseClientFrame, parseServerFrame } from "../../shared/protocol";
import { fastClientFrame, fastGroupDeliver } from "../../worker/relay/fastframe";

type Fast = (raw: unknown) => object | null;
type Reference = (raw: unknown) => { ok: true; frame: unknown } | { ok: false };

/** The fast path's verdict must agree with the reference whenever it gives one. */
const agreesWith =
  (fast: Fast, ref: Reference) =>
  (raw: unknown): boolean => {
    const f = fast(raw);
    if (f === null) return true;
    const r = ref(raw);
    expect(r.ok).toBe(true);
    if (r.ok) expect(f).toEqual(r.frame);
    return true;
  };

/** A well-formed frame is taken by the fast path, with the reference's result. */
const takenBy = (fast: Fast, ref: Reference) => (frame: object) => {
  const raw = JSON.stringify(frame);
  const f = fast(raw);
  const r = ref(raw);
  expect(r.ok).toBe(true);
  expect(f).not.toBeNull();
  if (r.ok) expect(f).toEqual(r.frame);
};

const agrees = agreesWith(fastClientFrame, parseClientFrame);

/** Any JSON text, any text, and `framed`: frames of the right type with arbitrary contents. */
const arbitraryText = (framed: fc.Arbitrary<string>) =>
  fc.oneof(
    fc.jsonValue().map((j) => JSON.stringify(j)),
    fc.string(),
    framed,
  );

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const name = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,31}$/);
const body = fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => toB64u(b));
const mid = fc.stringMatching(/^[0-9]{1,16}$/);
const id = fc.stringMatching(/^[\x21-\x7e]{1,64}$/);

const groupSend = fc.record({
  v: fc.constant(1),
  t: fc.constant("group_send"),
  id,
  group: name,
  epoch: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  body,
});
/** A device id (16 bytes), or near misses of one: other lengths, padding, non-zero tail bits. */
const device = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => toB64u(b));
const send = fc.record(
  { v: fc.constant(1), t: fc.constant("send"), id, to: name, device, body },
  { requiredKeys: ["v", "t", "id", "to", "body"] },
);
const ack = fc.record({
  v: fc.constant(1),
  t: fc.constant("ack"),
  mids: fc.array(mid, { minLength: 1, maxLength: LIMITS.maxAckIds }),
});

/** Near misses: one field or the shape changed in a way the schema may or may not accept. */
const mutation = fc.oneof(
  fc.record({ kind: fc.constant("extraKey" as const), key: fc.string(), value: fc.jsonValue() }),
  fc.record({ kind: fc.constant("dropKey" as const), index: fc.nat() }),
  fc.record({ kind: fc.constant("replace" as const), index: fc.nat(), value: fc.jsonValue() }),
  fc.record({
    kind: fc.constant("bodyChar" as const),
    at: fc.nat(),
    c: fc.constantFrom(...`${B64}=+/. é`.split("")),
  }),
  fc.record({ kind: fc.constant("bodyAppend" as const), c: fc.constantFrom(...B64.split("")) }),
  fc.record({ kind: fc.constant("epoch" as const), value: fc.oneof(fc.double(), fc.integer()) }),
  fc.record({ kind: fc.constant("proto" as const) }),
  fc.record({ kind: fc.constant("shuffle" as const), seed: fc.nat() }),
  fc.record({ kind: fc.constant("duplicate" as const), index: fc.nat(), value: fc.jsonValue() }),
  fc.record({ kind: fc.constant("id" as const), value: fc.string({ minLength: 1, maxLength: 8 }) }),
  fc.record({
    kind: fc.constant("device" as const),
    value: fc.oneof(
      fc.uint8Array({ minLength: 0, maxLength: 20 }).map((b) => toB64u(b)),
      fc.stringMatching(/^[A-Za-z0-9_=+/-]{20,24}$/),
      fc.jsonValue(),
    ),
  }),
);

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(frame: Record<string, unknown>, m: Mutation): string {
  const f: Record<string, unknown> = { ...frame };
  const keys = Object.keys(f);
  switch (m.kind) {
    case "extraKey":
      f[m.key] = m.value;
      break;
    case "dropKey":
      delete f[keys[m.index % keys.length] as string];
      break;
    case "replace":
      f[keys[m.index % keys.length] as string] = m.value;
      break;
    case "bodyChar":
      if (typeof f.body === "string" && f.body.length > 0) {
        const at = m.at % f.body.length;
        f.body = f.body.slice(0, at) + m.c + f.body.slice(at + 1);
      }
      break;
    case "bodyAppend":
      if (typeof f.body === "string") f.body += m.c;
      break;
    case "epoch":
      f.epoch = m.value;
      break;
    case "proto":
      return JSON.stringify(f).replace(/^\{/, '{"__proto__":{"x":1},');
    case "duplicate": {
      // The same key twice: JSON.parse keeps the last, the wire contract refuses the frame.
      const k = keys[m.index % keys.length] as string;
      return JSON.stringify(f).replace(/^\{/, `{${JSON.stringify(k)}:${JSON.stringify(m.value)},`);
    }
    case "id":
      f.id = m.value;
      break;
    case "device":
      f.device = m.value;
      break;
    case "shuffle": {
      const order = [...keys].sort(
        (a, b) => ((a.charCodeAt(0) * (m.seed + 1)) % 7) - ((b.charCodeAt(0) * (m.seed + 1)) % 7),
      );
      const g: Record<string, unknown> = {};
      for (const k of order) g[k] = f[k];
      return JSON.stringify(g);
    }
  }
  return JSON.stringify(f);
}

describe("relay fast frame parser", () => {
  it("takes every well-formed send, group_send and ack, with the reference's result", () => {
    fc.assert(
      fc.property(fc.oneof(send, groupSend, ack), takenBy(fastClientFrame, parseClientFrame)),
      { numRuns: 400 },
    );
  });

  it("never accepts what the reference refuses (near misses of the three frames)", () => {
    fc.assert(
      fc.property(fc.oneof(send, groupSend, ack), mutation, (frame, m) => agrees(mutate(frame, m))),
      { numRuns: 2500 },
    );
  });

  it("never accepts what the reference refuses (arbitrary JSON and text)", () => {
    const framed = fc
      .record({
        v: fc.jsonValue(),
        t: fc.constantFrom("ack", "group_send", "send"),
        mids: fc.jsonValue(),
      })
      .map((j) => JSON.stringify(j));
    fc.assert(fc.property(arbitraryText(framed), agrees), { numRuns: 800 });
  });

  it("known cases at the bounds", () => {
    const gs = (over: Record<string, unknown>) =>
      JSON.stringify({ v: 1, t: "group_send", id: "x", group: "g", epoch: 0, body: "AA", ...over });
    // Canonical base64url only: "AB" leaves non-zero bits, "A" is not a length at all.
    expect(fastClientFrame(gs({}))).not.toBeNull();
    for (const bad of ["AB", "A", "AA=", "A+", "", "AAAAA"]) {
      expect(fastClientFrame(gs({ body: bad }))).toBeNull();
      expect(parseClientFrame(gs({ body: bad })).ok).toBe(false);
    }
    expect(fastClientFrame(gs({ body: "A".repeat(LIMITS.maxBodyChars) }))).not.toBeNull();
    expect(fastClientFrame(gs({ body: "A".repeat(LIMITS.maxBodyChars + 4) }))).toBeNull();
    expect(fastClientFrame(gs({ epoch: Number.MAX_SAFE_INTEGER }))).not.toBeNull();
    for (const e of [-1, 1.5, Number.MAX_SAFE_INTEGER + 1, "1"]) {
      expect(fastClientFrame(gs({ epoch: e }))).toBeNull();
      expect(parseClientFrame(gs({ epoch: e })).ok).toBe(false);
    }
    expect(fastClientFrame(gs({ group: "G" }))).toBeNull();
    expect(fastClientFrame(gs({ id: "" }))).toBeNull();
    expect(fastClientFrame(gs({ id: "x".repeat(65) }))).toBeNull();
    const acks = (mids: unknown) => JSON.stringify({ v: 1, t: "ack", mids });
    expect(fastClientFrame(acks(["1", "0000000000000001"]))).toEqual({
      v: 1,
      t: "ack",
      mids: ["1", "0000000000000001"],
    });
    for (const bad of [[], ["a"], ["12345678901234567"], [1], Array(257).fill("1")]) {
      expect(fastClientFrame(acks(bad))).toBeNull();
      expect(parseClientFrame(acks(bad)).ok).toBe(false);
    }
    const sends = (over: Record<string, unknown>) =>
      JSON.stringify({ v: 1, t: "send", id: "1", to: "bob", body: "AA", ...over });
    expect(fastClientFrame(sends({}))).toEqual({ v: 1, t: "send", id: "1", to: "bob", body: "AA" });
    const dev = toB64u(new Uint8Array(16).fill(7));
    expect(fastClientFrame(sends({ device: dev }))).toEqual({
      v: 1,
      t: "send",
      id: "1",
      to: "bob",
      device: dev,
      body: "AA",
    });
    // A device id of another length, with bits past its 16 bytes, or not a string; a missing or
    // malformed recipient; an unknown key: each goes to the reference, which refuses it.
    for (const over of [
      { device: toB64u(new Uint8Array(15)) },
      { device: toB64u(new Uint8Array(17)) },
      { device: `${"A".repeat(21)}B` },
      { device: null },
      { to: "Bob" },
      { to: "" },
      { to: undefined },
      { body: "AB" },
      { extra: 1 },
    ]) {
      expect(fastClientFrame(sends(over))).toBeNull();
      expect(parseClientFrame(sends(over)).ok).toBe(false);
    }
    // A key given twice (a frame has one meaning, §5), plainly or spelled with an escape (the
    // quote count cannot see through `\u0074`, so such a text takes the general check): refused.
    for (const raw of [
      '{"v":1,"t":"send","id":"1","to":"bob","to":"eve","body":"AA"}',
      '{"v":1,"t":"send","id":"1","to":"bob","body":"AA","v":1}',
      '{"v":1,"t":"send","id":"1","\\u0074o":"eve","to":"bob","body":"AA"}',
      '{"v":1,"t":"ack","mids":["1"],"mids":["2"]}',
    ]) {
      expect(fastClientFrame(raw)).toBeNull();
      expect(parseClientFrame(raw).ok).toBe(false);
    }
    // An escape that repeats nothing is fine.
    expect(fastClientFrame('{"v":1,"t":"send","id":"\\"","to":"bob","body":"AA"}')).toEqual({
      v: 1,
      t: "send",
      id: '"',
      to: "bob",
      body: "AA",
    });
    // Bytes, other types and other versions go to the reference.
    expect(fastClientFrame(new TextEncoder().encode(gs({})))).toBeNull();
    expect(fastClientFrame(JSON.stringify({ v: 1, t: "ping" }))).toBeNull();
    expect(fastClientFrame(gs({ v: 2 }))).toBeNull();
  });
});

/** The same rule for the server side: fastGroupDeliver against parseServerFrame. */
const agreesDeliver = agreesWith(fastGroupDeliver, parseServerFrame);

const key = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => toB64u(b));
/** A member: a username, or a linked device's address (username "." 22-character device id). */
const member = fc.oneof(
  name,
  fc.tuple(name, device).map(([n, d]) => `${n}.${d}`),
);
const groupItem = fc.record({
  kind: fc.constant("group"),
  group: name,
  epoch: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  body,
});
const groupDeliver = fc.record({
  v: fc.constant(1),
  t: fc.constant("deliver"),
  mid,
  from: member,
  fromKey: key,
  ts: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  item: groupItem,
});

describe("relay fast parser of a group message's deliver", () => {
  it("takes every well-formed group deliver, with the reference's result", () => {
    fc.assert(fc.property(groupDeliver, takenBy(fastGroupDeliver, parseServerFrame)), {
      numRuns: 400,
    });
  });

  it("never accepts what the reference refuses (near misses of the frame and of its item)", () => {
    fc.assert(
      fc.property(groupDeliver, mutation, fc.boolean(), (frame, m, inner) => {
        if (!inner) return agreesDeliver(mutate(frame, m));
        // The item changed instead: mutate's text of it, put back into the frame's text.
        const item = mutate(frame.item, m);
        const raw = JSON.stringify({ ...frame, item: "@" }).replace('"@"', item);
        return agreesDeliver(raw);
      }),
      { numRuns: 2500 },
    );
  });

  it("never accepts what the reference refuses (arbitrary JSON and text)", () => {
    const framed = fc
      .record({ v: fc.jsonValue(), t: fc.constant("deliver"), item: fc.jsonValue() })
      .map((j) => JSON.stringify(j));
    fc.assert(fc.property(arbitraryText(framed), agreesDeliver), { numRuns: 800 });
  });

  it("known cases at the bounds", () => {
    const k = toB64u(new Uint8Array(32).fill(9));
    const frame = (over: Record<string, unknown>, item: Record<string, unknown> = {}) =>
      JSON.stringify({
        v: 1,
        t: "deliver",
        mid: "7",
        from: "alice",
        fromKey: k,
        ts: 1,
        item: { kind: "group", group: "g", epoch: 0, body: "AA", ...item },
        ...over,
      });
    expect(fastGroupDeliver(frame({}))).toEqual(JSON.parse(frame({})));
    const dev = toB64u(new Uint8Array(16).fill(3));
    expect(fastGroupDeliver(frame({ from: `alice.${dev}` }))).not.toBeNull();
    // Each of these goes to the reference, which refuses it: a key of 31 or 33 bytes or with
    // bits past its 32, a member name with a short device id or an upper-case username, a
    // fractional or negative time, an unknown key at either level, a body that is not canonical.
    for (const [over, item] of [
      [{ fromKey: toB64u(new Uint8Array(31)) }, {}],
      [{ fromKey: toB64u(new Uint8Array(33)) }, {}],
      [{ fromKey: `${"A".repeat(42)}B` }, {}],
      [{ from: `alice.${dev.slice(1)}` }, {}],
      [{ from: "Alice" }, {}],
      [{ from: `${"a".repeat(LIMITS.maxNameLength + 1)}.${dev}` }, {}],
      [{ ts: 1.5 }, {}],
      [{ ts: -1 }, {}],
      [{ mid: "" }, {}],
      [{ extra: 1 }, {}],
      [{}, { extra: 1 }],
      [{}, { body: "AB" }],
      [{}, { epoch: -1 }],
      [{}, { group: "G" }],
    ] as Array<[Record<string, unknown>, Record<string, unknown>]>) {
      expect(fastGroupDeliver(frame(over, item))).toBeNull();
      expect(parseServerFrame(frame(over, item)).ok).toBe(false);
    }
    // A key given twice, in the frame or in its item, plainly or behind an escape: refused.
    for (const raw of [
      frame({}).replace('"mid":"7"', '"mid":"7","mid":"8"'),
      frame({}).replace('"epoch":0', '"epoch":0,"epoch":1'),
      frame({}).replace('"group":"g"', '"\\u0067roup":"h","group":"g"'),
    ]) {
      expect(fastGroupDeliver(raw)).toBeNull();
      expect(parseServerFrame(raw).ok).toBe(false);
    }
    // A direct item, a commit, another frame type: the reference's.
    expect(fastGroupDeliver(frame({ item: { kind: "direct", body: "AA" } }))).toBeNull();
    expect(parseServerFrame(frame({ item: { kind: "direct", body: "AA" } })).ok).toBe(true);
    expect(fastGroupDeliver(JSON.stringify({ v: 1, t: "pong" }))).toBeNull();
  });
});
