/** The wire contract (shared/protocol.ts): every frame type parses, everything else is refused. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  CLIENT_FRAME_TYPES,
  CLOSE,
  ERROR_CODES,
  ERRORS,
  errorFrame,
  hasDuplicateKeys,
  LIMITS,
  PING_TEXT,
  PONG_TEXT,
  parseClientFrame,
  parseServerFrame,
} from "../../shared/protocol";

const KEY = "A".repeat(43); // 32 zero bytes
const LINK_OFFER = {
  device: "A".repeat(22),
  deviceKey: KEY,
  linkKey: "A".repeat(1622),
  name: "phone",
  mac: KEY,
};
const LINK_ANSWER = { enc: "A".repeat(1494), ciphertext: "AAAA", mac: KEY };
const SIG = "A".repeat(86); // 64 zero bytes
const SPK = { id: 1, key: KEY, sig: SIG };
const LEAF = { id: 1, key: KEY, epoch: 0, nonce: "A".repeat(22), sig: SIG };
const MEMBER = { username: "bob", identityKey: KEY, leaf: LEAF };

const validClient: Record<string, Record<string, unknown>> = {
  auth: {
    v: 1,
    t: "auth",
    username: "alice",
    identityKey: KEY,
    signedPrekey: SPK,
    device: "A".repeat(22),
    claim: false,
    sig: SIG,
  },
  upload_prekeys: { v: 1, t: "upload_prekeys", id: "1", oneTimePrekeys: [{ id: 2, key: KEY }] },
  fetch_bundle: { v: 1, t: "fetch_bundle", id: "1", username: "bob" },
  devices: {
    v: 1,
    t: "devices",
    id: "1",
    list: {
      identityKey: KEY,
      version: 1,
      devices: [{ id: "A".repeat(22), key: KEY, name: "laptop", addedAt: 1 }],
      removed: [],
      sig: SIG,
    },
  },
  send: { v: 1, t: "send", id: "1", to: "bob", body: "AAAA" },
  ack: { v: 1, t: "ack", mids: ["1", "22"] },
  join: { v: 1, t: "join", id: "1", group: "broadcast", leaves: [LEAF] },
  leaf: { v: 1, t: "leaf", id: "1", group: "broadcast", leaves: [LEAF] },
  leave: { v: 1, t: "leave", id: "1", group: "broadcast" },
  remove: { v: 1, t: "remove", id: "1", group: "broadcast", user: "bob", auth: "AAAA" },
  commit: {
    v: 1,
    t: "commit",
    id: "1",
    group: "g",
    parentEpoch: 0,
    members: ["alice"],
    core: "AAAA",
    wraps: [{ to: "alice", leaf: 1, wrap: "AAAA" }],
    interim: KEY,
  },
  group_send: { v: 1, t: "group_send", id: "1", group: "g", epoch: 3, body: "AAAA" },
  push_subscribe: {
    v: 1,
    t: "push_subscribe",
    id: "1",
    endpoint: "https://push.example.org/s/1",
    keys: { p256dh: `B${"A".repeat(86)}`, auth: "A".repeat(22) },
    vapidKey: `B${"A".repeat(86)}`,
  },
  push_unsubscribe: { v: 1, t: "push_unsubscribe", id: "1" },
  blob_upload: { v: 1, t: "blob_upload", id: "1", size: 1000 },
  settings: { v: 1, t: "settings", id: "1", presence: "everyone" },
  contact: { v: 1, t: "contact", id: "1", user: "mallory", state: "blocked" },
  link_offer: { v: 1, t: "link_offer", id: "1", rendezvous: "7K3D9QXA", offer: LINK_OFFER },
  link_fetch: { v: 1, t: "link_fetch", id: "1", rendezvous: "7K3D9QXA" },
  link_answer: { v: 1, t: "link_answer", id: "1", rendezvous: "7K3D9QXA", answer: LINK_ANSWER },
  ping: { v: 1, t: "ping" },
};

const validServer: Record<string, Record<string, unknown>> = {
  link_offered: { v: 1, t: "link_offered", id: "1", rendezvous: "7K3D9QXA", offer: LINK_OFFER },
  link_answered: { v: 1, t: "link_answered", rendezvous: "7K3D9QXA", answer: LINK_ANSWER },
  hello: { v: 1, t: "hello", hub: "main", challenge: KEY, time: 1 },
  welcome: {
    v: 1,
    t: "welcome",
    username: "alice",
    identityKey: KEY,
    oneTimePrekeysRemaining: 0,
    groups: [
      {
        group: "g",
        epoch: 1,
        members: [MEMBER],
        pendingJoins: [],
        pendingLeaves: ["x"],
        interim: KEY,
      },
    ],
  },
  presence: { v: 1, t: "presence", users: [{ username: "bob", identityKey: KEY }] },
  presence_delta: {
    v: 1,
    t: "presence_delta",
    online: [{ username: "bob", identityKey: KEY }],
    offline: ["carol"],
  },
  bundle: {
    v: 1,
    t: "bundle",
    id: "1",
    username: "bob",
    identityKey: KEY,
    signedPrekey: SPK,
    oneTimePrekey: null,
  },
  accepted: { v: 1, t: "accepted", id: "1", mid: "7" },
  deliver: {
    v: 1,
    t: "deliver",
    mid: "7",
    from: "bob",
    fromKey: KEY,
    ts: 5,
    item: { kind: "commit", group: "g", epoch: 2, core: "AAAA", wrap: "AAAA" },
  },
  receipt: { v: 1, t: "receipt", mid: "7", by: "bob" },
  group: {
    v: 1,
    t: "group",
    state: {
      group: "g",
      epoch: 0,
      members: [],
      pendingJoins: [MEMBER],
      pendingLeaves: [],
      interim: KEY,
    },
  },
  left: { v: 1, t: "left", group: "g" },
  prekeys_low: { v: 1, t: "prekeys_low", remaining: 3 },
  error: errorFrame("stale_epoch", "1"),
  pong: { v: 1, t: "pong" },
  blob_ticket: {
    v: 1,
    t: "blob_ticket",
    id: "1",
    blob: KEY,
    ticket: `${"ab".repeat(32)}.${KEY.slice(0, 43)}`,
    expires: 1,
  },
};

describe("wire contract", () => {
  it("has a valid example for every client frame type", () => {
    expect(Object.keys(validClient).sort()).toEqual([...CLIENT_FRAME_TYPES].sort());
    for (const f of Object.values(validClient)) {
      expect(parseClientFrame(JSON.stringify(f))).toEqual({ ok: true, frame: f });
    }
  });

  it("parses every server frame type", () => {
    for (const f of Object.values(validServer)) {
      expect(parseServerFrame(JSON.stringify(f))).toEqual({ ok: true, frame: f });
    }
  });

  it("rejects an extra key in every frame type, with the id salvaged", () => {
    for (const f of Object.values(validClient)) {
      const r = parseClientFrame(JSON.stringify({ ...f, extra: 1 }));
      expect(r).toEqual({ ok: false, code: "bad_frame", id: f.id });
    }
    for (const f of Object.values(validServer)) {
      expect(parseServerFrame(JSON.stringify({ ...f, extra: 1 })).ok).toBe(false);
    }
  });

  it("rejects __proto__ and constructor keys", () => {
    const raw = '{"v":1,"t":"ping","__proto__":{"polluted":true}}';
    expect(parseClientFrame(raw).ok).toBe(false);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(parseClientFrame('{"v":1,"t":"ping","constructor":{}}').ok).toBe(false);
  });

  it("rejects a missing key in every frame type", () => {
    for (const f of Object.values(validClient)) {
      for (const k of Object.keys(f)) {
        if (k === "v" || k === "t") continue;
        const { [k]: _gone, ...rest } = f;
        if (f.t === "upload_prekeys" && k === "signedPrekey") continue;
        expect(parseClientFrame(JSON.stringify(rest)).ok).toBe(false);
      }
    }
  });

  it("classifies bad input: JSON, version, type, size, bytes", () => {
    expect(parseClientFrame("{")).toEqual({ ok: false, code: "bad_frame" });
    expect(parseClientFrame("[1]")).toEqual({ ok: false, code: "bad_frame" });
    expect(parseClientFrame('{"v":2,"t":"ping"}')).toEqual({
      ok: false,
      code: "unsupported_version",
    });
    expect(parseClientFrame('{"v":1,"t":"nope","id":"q"}')).toEqual({
      ok: false,
      code: "unknown_type",
      id: "q",
    });
    expect(parseClientFrame('{"v":1,"t":"toString"}').ok).toBe(false);
    const big = `{"v":1,"t":"ping","x":"${"a".repeat(LIMITS.maxFrameBytes)}"}`;
    expect(parseClientFrame(big)).toEqual({ ok: false, code: "too_large" });
    expect(parseClientFrame(new Uint8Array([0xc3, 0x28]))).toEqual({
      ok: false,
      code: "bad_frame",
    });
    // Frames are text messages: the same JSON as a binary message is refused.
    expect(parseClientFrame(new TextEncoder().encode('{"v":1,"t":"ping"}'))).toEqual({
      ok: false,
      code: "bad_frame",
    });
    expect(parseClientFrame(42)).toEqual({ ok: false, code: "bad_frame" });
  });

  it("a frame has exactly one meaning: duplicate keys are refused, at any depth, escaped or not", () => {
    const send = '{"v":1,"t":"send","id":"a","to":"bob","body":"AAAA"}';
    expect(parseClientFrame(send).ok).toBe(true);
    for (const dup of [
      '{"v":1,"t":"send","id":"a","to":"bob","to":"eve","body":"AAAA"}',
      '{"v":1,"t":"send","id":"a","to":"bob","body":"AAAA","\\u0074o":"eve"}',
      '{"v":1,"t":"upload_prekeys","id":"u","oneTimePrekeys":[{"id":1,"id":2,"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}',
      '{"v":1,"v":1,"t":"ping"}',
    ]) {
      expect(parseClientFrame(dup)).toMatchObject({ ok: false, code: "bad_frame" });
    }
    // The same key in sibling objects, and a key-like string as a value, are fine.
    expect(hasDuplicateKeys('{"a":{"x":1},"b":{"x":2},"c":["x","x"],"d":"a"}')).toBe(false);
    expect(hasDuplicateKeys('{"a":"\\"a\\"","a":1}')).toBe(true);
    expect(hasDuplicateKeys('{"a":1,"\\u0061":2}')).toBe(true);
  });

  it("duplicate keys are found exactly, whatever the strings hold (generated JSON)", () => {
    // Objects as lists of entries, so a key may repeat; keys and strings drawn from characters
    // that need escaping (quotes, backslashes, controls) beside plain ones; a key written either
    // as JSON.stringify writes it or with every character as a \u escape.
    type Node =
      | { o: Array<[string, boolean, Node]> }
      | { a: Node[] }
      | { s: string }
      | { n: number };
    const text = fc.string({
      unit: fc.constantFrom("a", "b", '"', "\\", "\n", "é", "\u0000", "/"),
    });
    const { node } = fc.letrec<{ node: Node }>((tie) => ({
      node: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        text.map((s) => ({ s })),
        fc.integer().map((n) => ({ n })),
        fc.array(fc.tuple(text, fc.boolean(), tie("node")), { maxLength: 4 }).map((o) => ({ o })),
        fc.array(tie("node"), { maxLength: 4 }).map((a) => ({ a })),
      ),
    }));
    const escaped = (k: string) =>
      `"${[...k].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`).join("")}"`;
    const write = (n: Node): string =>
      "o" in n
        ? `{${n.o.map(([k, e, v]) => `${e ? escaped(k) : JSON.stringify(k)}:${write(v)}`).join(",")}}`
        : "a" in n
          ? `[${n.a.map(write).join(",")}]`
          : JSON.stringify("s" in n ? n.s : n.n);
    const dup = (n: Node): boolean =>
      "o" in n
        ? new Set(n.o.map(([k]) => k)).size < n.o.length || n.o.some(([, , v]) => dup(v))
        : "a" in n && n.a.some(dup);
    fc.assert(
      fc.property(node, (n) => {
        const t = write(n);
        JSON.parse(t); // the generator writes JSON
        expect(hasDuplicateKeys(t)).toBe(dup(n));
      }),
      { numRuns: 2000 },
    );
  });

  it("ids are printable ASCII; -0 is not a natural number", () => {
    const fetch = (id: string) =>
      `{"v":1,"t":"fetch_bundle","id":${JSON.stringify(id)},"username":"bob"}`;
    expect(parseClientFrame(fetch("f-1_~!")).ok).toBe(true);
    for (const bad of ["a b", "é", "\ud800", "😀", "a\u0000"]) {
      expect(parseClientFrame(fetch(bad))).toMatchObject({
        ok: false,
        code: "bad_frame",
      });
    }
    const gs = (epoch: string) =>
      `{"v":1,"t":"group_send","id":"g","group":"team","epoch":${epoch},"body":"AAAA"}`;
    expect(parseClientFrame(gs("0")).ok).toBe(true);
    expect(parseClientFrame(gs("-0"))).toMatchObject({ ok: false, code: "bad_frame" });
  });

  it("counts the frame limit in UTF-8 bytes, not UTF-16 units", () => {
    // Each "é" is one UTF-16 unit but two UTF-8 bytes.
    const n = Math.floor(LIMITS.maxFrameBytes / 2) + 10;
    expect(parseClientFrame(`{"v":1,"t":"ping","x":"${"é".repeat(n)}"}`).ok).toBe(false);
    expect(parseClientFrame(`{"v":1,"t":"ping","x":"${"é".repeat(n)}"}`)).toEqual({
      ok: false,
      code: "too_large",
    });
  });

  it("rejects non-canonical base64url and wrong key lengths", () => {
    const f = validClient.send as Record<string, unknown>;
    for (const body of ["AAA=", "AA+/", "AB", "A", ""]) {
      expect(parseClientFrame(JSON.stringify({ ...f, body })).ok).toBe(false);
    }
    const a = validClient.auth as Record<string, unknown>;
    expect(parseClientFrame(JSON.stringify({ ...a, identityKey: "A".repeat(42) })).ok).toBe(false);
    expect(parseClientFrame(JSON.stringify({ ...a, sig: KEY })).ok).toBe(false);
  });

  it("enforces names, ids and collection bounds", () => {
    const f = validClient.send as Record<string, unknown>;
    for (const to of ["Bob", "-bob", "b ob", "x".repeat(33), "", "ünï"]) {
      expect(parseClientFrame(JSON.stringify({ ...f, to })).ok).toBe(false);
    }
    expect(parseClientFrame(JSON.stringify({ ...f, id: "x".repeat(65) })).ok).toBe(false);
    const ack = {
      v: 1,
      t: "ack",
      mids: Array.from({ length: LIMITS.maxAckIds + 1 }, (_, i) => `${i + 1}`),
    };
    expect(parseClientFrame(JSON.stringify(ack)).ok).toBe(false);
    expect(parseClientFrame(JSON.stringify({ v: 1, t: "ack", mids: ["1e3"] })).ok).toBe(false);
    const up = validClient.upload_prekeys as Record<string, unknown>;
    const many = Array.from({ length: LIMITS.maxOneTimePrekeysPerUpload + 1 }, (_, id) => ({
      id,
      key: KEY,
    }));
    expect(parseClientFrame(JSON.stringify({ ...up, oneTimePrekeys: many })).ok).toBe(false);
    const g = validClient.group_send as Record<string, unknown>;
    expect(parseClientFrame(JSON.stringify({ ...g, epoch: -1 })).ok).toBe(false);
    expect(parseClientFrame(JSON.stringify({ ...g, epoch: 1.5 })).ok).toBe(false);
  });

  it("error frames carry the fixed text for their code", () => {
    for (const code of ERROR_CODES) {
      const e = errorFrame(code);
      expect(e.message).toBe(ERRORS[code]);
      expect(parseServerFrame(JSON.stringify(e)).ok).toBe(true);
    }
    expect(errorFrame("bad_frame", "abc").id).toBe("abc");
  });

  it("the keep-alive texts are valid frames", () => {
    expect(parseClientFrame(PING_TEXT)).toEqual({ ok: true, frame: { v: 1, t: "ping" } });
    expect(parseServerFrame(PONG_TEXT)).toEqual({ ok: true, frame: { v: 1, t: "pong" } });
  });

  it("close codes are distinct and application codes are in 4000–4999", () => {
    const codes = Object.values(CLOSE);
    expect(new Set(codes).size).toBe(codes.length);
    for (const [name, code] of Object.entries(CLOSE)) {
      if (!["normal", "policy", "tooBig"].includes(name)) {
        expect(code).toBeGreaterThanOrEqual(4000);
        expect(code).toBeLessThan(5000);
      }
    }
  });

  it("a 1000-member commit with real-size wraps fits in one frame", () => {
    const names = Array.from({ length: LIMITS.maxGroupSize }, (_, i) =>
      `user-${i}`.padEnd(32, "x"),
    );
    // Version (1) + HPKE enc (32) + sealed 32-byte secret (32 + 16 tag) = 81 bytes = 108 characters.
    const wrap = "A".repeat(108);
    const frame = {
      v: 1,
      t: "commit",
      id: "c",
      group: "g",
      parentEpoch: 1,
      members: names,
      core: "A".repeat(LIMITS.maxCommitCoreChars),
      wraps: names.map((to) => ({ to, leaf: 0xffffffff, wrap })),
      interim: KEY,
    };
    expect(parseClientFrame(JSON.stringify(frame)).ok).toBe(true);
  });
});
