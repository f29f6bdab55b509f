/**
 * The engine's pure step (engine/step.ts, PROTOCOL.md §10.1): `step(state, input)` returns the
 * next state and its effects as data — it writes, sends and emits nothing itself, never changes
 * the state it was given, and an input it refuses leaves no effect at all. Per input kind: the
 * socket opening and closing, a hello, a verb offline (write-ahead: persisted, nothing sent),
 * relay answers routed by the in-flight registry, and timers.
 */
import { describe, expect, it } from "vitest";
import { DEFAULT_TUNING } from "../../shared/core/client";
import { type Effect, Tx } from "../../shared/core/engine/effects";
import { loadEngine } from "../../shared/core/engine/load";
import type { EngineState, Env } from "../../shared/core/engine/state";
import { draft } from "../../shared/core/engine/state";
import { type Input, step } from "../../shared/core/engine/step";
import { MemoryStore } from "../../shared/core/store";
import { generateIdentityKeyPair, identityFingerprint, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { ERRORS, PROTOCOL_VERSION } from "../../shared/protocol";

async function fresh() {
  const identity = await generateIdentityKeyPair();
  const env: Env = {
    hub: "main",
    origin: "https://parley.test",
    username: "alice",
    identity,
    identityKey: toB64u(identity.publicKey),
    fingerprint: identityFingerprint(identity.publicKey),
    tuning: DEFAULT_TUNING,
    random: randomBytes,
    now: () => 1_000_000,
  };
  const store = new MemoryStore();
  const { state } = await loadEngine(store, env);
  return { env, store, state };
}

const writes = (fx: readonly Effect[]) => fx.filter((e) => e.t === "write");
const frames = (fx: readonly Effect[]) => fx.flatMap((e) => (e.t === "send" ? [e.frame] : []));
const events = (fx: readonly Effect[]) => fx.flatMap((e) => (e.t === "emit" ? [e.event] : []));

/** A comparable snapshot of a state (Maps and Sets as entries). */
function snap(s: EngineState): string {
  return JSON.stringify(s, (_k, v) =>
    v instanceof Map ? [...v.entries()] : v instanceof Set ? [...v] : v,
  );
}

async function run(env: Env, store: MemoryStore, state: EngineState, input: Input) {
  const before = snap(state);
  const dump = store.dump();
  const r = await step(env, store, state, input);
  // Pure with respect to its inputs: the state given is unchanged, the store untouched.
  expect(snap(state)).toBe(before);
  expect(store.dump()).toBe(dump);
  return r;
}

describe("step", () => {
  it("connected → authenticating, one event, no write, no frame", async () => {
    const { env, store, state } = await fresh();
    const r = await run(env, store, state, { t: "connected", socket: 1 });
    expect(r.state.link).toEqual({ t: "authenticating", socket: 1 });
    expect(r.effects).toEqual([{ t: "emit", event: { type: "connection", state: "connecting" } }]);
  });

  it("hello while authenticating → the prekey state written, then `auth` (and only it)", async () => {
    const { env, store, state } = await fresh();
    const s1 = (await run(env, store, state, { t: "connected", socket: 1 })).state;
    const challenge = toB64u(randomBytes(32));
    const r = await run(env, store, s1, {
      t: "frame",
      frame: { v: PROTOCOL_VERSION, t: "hello", hub: "main", challenge, time: 1_000_000 },
    });
    expect(writes(r.effects).map((e) => e.t === "write" && e.op.key)).toEqual(["prekeys"]);
    expect(frames(r.effects).map((f) => f.t)).toEqual(["auth"]);
    // The write comes before the frame in the effect list (and the runner commits it first).
    expect(r.effects.findIndex((e) => e.t === "write")).toBeLessThan(
      r.effects.findIndex((e) => e.t === "send"),
    );
  });

  it("join offline → the group record and a join flight persisted, nothing sent", async () => {
    const { env, store, state } = await fresh();
    const r = await run(env, store, state, { t: "verb", verb: { t: "join_group", name: "g" } });
    expect(frames(r.effects)).toEqual([]);
    const keys = writes(r.effects).map((e) => e.t === "write" && e.op.key);
    expect(keys).toContain("group/g");
    expect(keys.some((k) => typeof k === "string" && k.startsWith("flight/"))).toBe(true);
    expect([...r.state.flights.values()]).toEqual([
      expect.objectContaining({ kind: "join", group: "g" }),
    ]);
    expect(events(r.effects)).toContainEqual(
      expect.objectContaining({
        type: "conversation",
        conversation: expect.objectContaining({ id: "group:g", joining: true }),
      }),
    );
  });

  it("leave offline → a leave flight persisted; the summary says leaving", async () => {
    const { env, store, state } = await fresh();
    const r = await run(env, store, state, { t: "verb", verb: { t: "leave_group", name: "g" } });
    expect(frames(r.effects)).toEqual([]);
    expect(writes(r.effects)).toHaveLength(1);
    expect(r.state.summaries.get("group:g")).toMatchObject({ leaving: true });
  });

  it("a text to a new peer offline → queued in the record, announced, nothing sent", async () => {
    const { env, store, state } = await fresh();
    const r = await run(env, store, state, {
      t: "verb",
      verb: { t: "send_text", conversationId: "dm:bob", text: "hi" },
    });
    expect(typeof r.result).toBe("string");
    expect(frames(r.effects)).toEqual([]);
    const dm = writes(r.effects).find((e) => e.t === "write" && e.op.key === "dm/bob");
    expect(dm?.t === "write" && dm.op.op === "put" && dm.op.value).toMatchObject({
      queue: [expect.objectContaining({ text: "hi" })],
    });
    expect(events(r.effects)).toContainEqual(
      expect.objectContaining({
        type: "message",
        message: expect.objectContaining({ text: "hi" }),
      }),
    );
  });

  it("a refused verb leaves no effect and returns its error", async () => {
    const { env, store, state } = await fresh();
    const r = await run(env, store, state, {
      t: "verb",
      verb: { t: "send_text", conversationId: "dm:bob", text: "x".repeat(100_000) },
    });
    expect(r.error).toMatchObject({ code: "too_long" });
    expect(r.effects).toEqual([]);
    const self = await run(env, store, state, {
      t: "verb",
      verb: { t: "start_chat", username: "alice" },
    });
    expect(self.error).toMatchObject({ code: "malformed" });
    expect(self.effects).toEqual([]);
  });

  it("a relay error is routed by the registry to what it answers, its code typed", async () => {
    const { env, store, state } = await fresh();
    const joined = await run(env, store, state, {
      t: "verb",
      verb: { t: "join_group", name: "g" },
    });
    const [id] = [...joined.state.flights.keys()];
    const r = await run(env, store, joined.state, {
      t: "frame",
      frame: {
        v: PROTOCOL_VERSION,
        t: "error",
        id,
        code: "group_full",
        message: ERRORS.group_full,
      },
    });
    expect(r.state.flights.size).toBe(0);
    expect(events(r.effects)).toContainEqual({
      type: "error",
      code: "relay_error",
      relayCode: "group_full",
      conversationId: "group:g",
      message: `group_full: ${ERRORS.group_full}`,
    });
    // A transient refusal keeps the flight for the next connection.
    const kept = await run(env, store, joined.state, {
      t: "frame",
      frame: {
        v: PROTOCOL_VERSION,
        t: "error",
        id,
        code: "rate_limited",
        message: ERRORS.rate_limited,
      },
    });
    expect(kept.state.flights.size).toBe(1);
  });

  it("an answer to an id nobody registered changes nothing", async () => {
    const { env, store, state } = await fresh();
    const r = await run(env, store, state, {
      t: "frame",
      frame: { v: PROTOCOL_VERSION, t: "accepted", id: "o12" },
    });
    expect(r.effects).toEqual([]);
  });

  it("disconnected → offline; the persisted flights stay, the in-memory ones go", async () => {
    const { env, store, state } = await fresh();
    let s = (await run(env, store, state, { t: "verb", verb: { t: "join_group", name: "g" } }))
      .state;
    s = { ...s, flights: new Map([...s.flights, ["99", { kind: "upload" }]]) };
    const r = await run(env, store, s, { t: "disconnected" });
    expect(r.state.link).toEqual({ t: "offline" });
    expect([...r.state.flights.values()].map((f) => f.kind)).toEqual(["join"]);
    expect(events(r.effects)[0]).toEqual({ type: "connection", state: "offline" });
  });

  it("a gap timer offline reports nothing (the mailbox may still hold the message)", async () => {
    const { env, store, state } = await fresh();
    const s = {
      ...state,
      gaps: new Map([["dm:bob|x|1", { conversationId: "dm:bob" as const, from: "bob" }]]),
    };
    const offline = await run(env, store, s, {
      t: "timer",
      timer: { t: "gap_check", keys: ["dm:bob|x|1"] },
    });
    expect(offline.effects).toEqual([]);
    const on = { ...s, link: { t: "online" as const, socket: 1, uploading: false } };
    const online = await run(env, store, on, {
      t: "timer",
      timer: { t: "gap_check", keys: ["dm:bob|x|1"] },
    });
    expect(events(online.effects)).toEqual([
      expect.objectContaining({
        type: "system",
        line: expect.objectContaining({
          kind: "missing",
          text: "1 message from bob did not arrive",
        }),
      }),
    ]);
  });
});

describe("Tx.attempt", () => {
  it("a failed unit leaves no effect and no state change; reads saw its writes meanwhile", async () => {
    const { env, store, state } = await fresh();
    const tx = new Tx(env, draft(state), store);
    tx.put("dm/carol", { kept: true });
    await expect(
      tx.attempt(async () => {
        tx.put("dm/bob", { half: true });
        tx.state.seq += 5;
        tx.state.receiptsDue.set("bob", ["m1"]);
        tx.send({ v: PROTOCOL_VERSION, t: "ping" });
        tx.emit({ type: "connection", state: "online" });
        expect(await tx.get("dm/bob")).toEqual({ half: true });
        throw new Error("the ratchet step failed after staging");
      }),
    ).rejects.toThrow("after staging");
    expect(tx.effects).toEqual([
      { t: "write", op: { op: "put", key: "dm/carol", value: { kept: true } } },
    ]);
    expect(await tx.get("dm/bob")).toBeUndefined();
    expect(tx.state.seq).toBe(state.seq);
    expect(tx.state.receiptsDue.size).toBe(0);
    expect(await tx.list("dm/")).toEqual([{ key: "dm/carol", value: { kept: true } }]);
  });
});
