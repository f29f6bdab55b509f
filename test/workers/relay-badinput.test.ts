/** Hostile input at the socket boundary (PROTOCOL.md §6.4, §7.2): typed errors, never a crash. */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CLOSE, LIMITS } from "../../shared/protocol";
import { freshHub, newKeys, TestClient } from "./support/client";

async function authed(name = "alice") {
  const { c } = await TestClient.connect(freshHub(), name);
  await c.next("presence");
  return c;
}

describe("relay bad input", () => {
  it("malformed JSON gets bad_frame and the connection keeps working", async () => {
    const c = await authed();
    c.sendRaw("{not json");
    expect((await c.error()).code).toBe("bad_frame");
    await c.sync();
    c.close();
  });

  it("a JSON value that is not an object gets bad_frame", async () => {
    const c = await authed();
    for (const raw of ["[]", "null", "42", '"str"']) {
      c.sendRaw(raw);
      expect((await c.error()).code).toBe("bad_frame");
    }
    c.close();
  });

  it("an unknown frame type gets unknown_type, with the id echoed", async () => {
    const c = await authed();
    c.send({ v: 1, t: "format_disk", id: "q1" });
    const e = await c.error("q1");
    expect(e.code).toBe("unknown_type");
    c.close();
  });

  it("a wrong protocol version gets unsupported_version", async () => {
    const c = await authed();
    c.send({ v: 2, t: "ping" });
    expect((await c.error()).code).toBe("unsupported_version");
    c.close();
  });

  it("extra keys are rejected (strict schemas)", async () => {
    const c = await authed();
    c.send({ v: 1, t: "fetch_bundle", id: "e1", username: "bob", admin: true });
    expect((await c.error("e1")).code).toBe("bad_frame");
    c.close();
  });

  it("__proto__ keys are rejected and do not pollute anything", async () => {
    const c = await authed();
    c.sendRaw('{"v":1,"t":"fetch_bundle","id":"p1","username":"bob","__proto__":{"admin":true}}');
    expect((await c.error("p1")).code).toBe("bad_frame");
    c.sendRaw('{"v":1,"t":"ping","constructor":{"prototype":{"x":1}}}');
    expect((await c.error()).code).toBe("bad_frame");
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
    await c.sync();
    c.close();
  });

  it("wrongly typed fields are rejected", async () => {
    const c = await authed();
    c.send({ v: 1, t: "send", id: "w1", to: "bob", body: 42 });
    expect((await c.error("w1")).code).toBe("bad_frame");
    c.send({ v: 1, t: "send", id: "w2", to: "Bob!", body: "AAAA" });
    expect((await c.error("w2")).code).toBe("bad_frame");
    c.send({ v: 1, t: "send", id: "w3", to: "bob", body: "AAA=" }); // padded: not canonical
    expect((await c.error("w3")).code).toBe("bad_frame");
    c.close();
  });

  it("a binary frame that is not UTF-8 gets bad_frame", async () => {
    const c = await authed();
    c.sendRaw(new Uint8Array([0xff, 0xfe, 0x00]).buffer);
    expect((await c.error()).code).toBe("bad_frame");
    c.close();
  });

  it("a frame over maxFrameBytes (5 MiB) gets too_large, nothing is lost, the relay still serves", async () => {
    const hub = freshHub();
    const a = await TestClient.connect(hub, "alice");
    const b = await TestClient.connect(hub, "bob");
    a.c.send({ v: 1, t: "send", id: "s1", to: "bob", body: "AAAA" });
    const acc = await a.c.next("accepted", (f) => f.id === "s1");
    a.c.sendRaw(
      `{"v":1,"t":"send","id":"big","to":"bob","body":"${"A".repeat(LIMITS.maxFrameBytes)}"}`,
    );
    expect((await a.c.error()).code).toBe("too_large");
    const d = await b.c.next("deliver");
    expect(d.mid).toBe(acc.mid);
    a.c.send({ v: 1, t: "send", id: "s2", to: "bob", body: "BBBB" });
    await a.c.next("accepted", (f) => f.id === "s2");
    expect((await b.c.next("deliver")).item).toEqual({ kind: "direct", body: "BBBB" });
    a.c.close();
    b.c.close();
  });

  it("before auth, bad frames are answered too and the connection stays open", async () => {
    const c = await TestClient.open(freshHub());
    c.sendRaw("garbage");
    expect((await c.error()).code).toBe("bad_frame");
    await c.sync();
    expect(c.closed).toBeNull();
    c.close();
  });

  it("a flood is rate limited, then closed as abusive", async () => {
    const c = await authed();
    // Far more than burst + violations, so refill during a slow run (shared CPU) cannot save it.
    const n = LIMITS.connBurst + LIMITS.maxRateViolations + 400;
    for (let i = 0; i < n && c.closed === null; i++) {
      try {
        c.send({ t: "ping", v: 1 });
      } catch {
        break; // the relay closed the socket under us
      }
    }
    const closed = await c.waitClosed(10_000);
    expect(closed.code).toBe(CLOSE.abusive);
    expect(c.queue.some((f) => f.t === "error" && f.code === "rate_limited")).toBe(true);
    // Some pings were answered before the bucket ran dry.
    expect(c.queue.filter((f) => f.t === "pong").length).toBeGreaterThanOrEqual(
      LIMITS.connBurst - 5,
    );
  });

  it("the per-identity bucket is shared across reconnects", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    // Each connection stays under its own burst; together they exceed the identity's burst.
    // Up to six reconnects, so refill during a slow run cannot hide the shared bucket.
    const n = LIMITS.connBurst - 5;
    let limited = false;
    for (let k = 0; k < 6 && !limited; k++) {
      const { c } = await TestClient.connect(hub, "alice", keys);
      for (let i = 0; i < n; i++) c.send({ t: "ping", v: 1 });
      const answered = () =>
        c.queue.filter((f) => f.t === "pong" || (f.t === "error" && f.code === "rate_limited"))
          .length;
      const deadline = Date.now() + 5000;
      while (answered() < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      limited = c.queue.some((f) => f.t === "error" && f.code === "rate_limited");
      c.close();
    }
    expect(limited).toBe(true);
  });

  it("too many malformed frames close the connection as abusive", async () => {
    const c = await authed();
    // Spread over time so the rate limit does not trigger first.
    for (let i = 0; i <= LIMITS.maxMalformed; i++) {
      c.sendRaw("x");
      if (i % 50 === 49) await c.next("error", (f) => f.code === "bad_frame");
    }
    const closed = await c.waitClosed(10_000);
    expect(closed.code).toBe(CLOSE.abusive);
  });

  it("random and mutated frames never crash a handler (property test)", async () => {
    const c = await authed("fuzz");
    const valid: Record<string, unknown>[] = [
      { v: 1, t: "send", id: "a", to: "fuzz", body: "AAAA" },
      { v: 1, t: "join", id: "b", group: "g" },
      {
        v: 1,
        t: "commit",
        id: "c",
        group: "g",
        parentEpoch: 0,
        members: ["fuzz"],
        core: "AA",
        wraps: [{ to: "fuzz", wrap: "AA" }],
      },
      { v: 1, t: "group_send", id: "d", group: "g", epoch: 0, body: "AAAA" },
      { v: 1, t: "ack", mids: ["1"] },
      { v: 1, t: "fetch_bundle", id: "e", username: "fuzz" },
      { v: 1, t: "upload_prekeys", id: "f", oneTimePrekeys: [] },
    ];
    const mutated = fc
      .tuple(fc.constantFrom(...valid), fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }))
      .map(([f, k, val]) =>
        JSON.stringify({ ...f, [k in f ? k : (Object.keys(f)[2] ?? "t")]: val }),
      );
    const frames = fc.oneof(
      mutated,
      fc.jsonValue({ maxDepth: 3 }).map((x) => JSON.stringify(x)),
      fc.string({ maxLength: 64 }),
    );
    const sample = fc.sample(frames, { numRuns: 60, seed: 20261125 });
    for (const raw of sample) c.sendRaw(raw);
    await c.sync();
    expect(c.closed).toBeNull();
    const codes = c.queue.flatMap((f) => (f.t === "error" ? [f.code] : []));
    expect(codes).not.toContain("internal");
    expect(c.invalid).toEqual([]);
    c.close();
  });
});
