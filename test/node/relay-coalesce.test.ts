/**
 * The relay's coalesced steps (worker/relay/coalesce.ts; docs/ARCHITECTURE.md "Coalesced
 * writes"): steps that come due together run in one scheduled run, so a Durable Object writes
 * them in one event; each in arrival order, each answered on its own.
 */
import { describe, expect, it } from "vitest";
import { Coalescer } from "../../worker/relay/coalesce";

/** A scheduler the test turns by hand: each `turn()` is one event of the object. */
function manual() {
  const due: Array<() => void> = [];
  return {
    later: (run: () => void) => {
      due.push(run);
    },
    scheduled: () => due.length,
    turn: async () => {
      const run = due.shift();
      run?.();
      // Let the steps' promises settle.
      await new Promise((r) => setImmediate(r));
    },
  };
}

describe("coalesced steps", () => {
  it("steps that come due together run in one run, in arrival order, none before it", async () => {
    const clock = manual();
    const c = new Coalescer(clock.later);
    const ran: number[] = [];
    const done: number[] = [];
    const all = [1, 2, 3, 4].map((n) => c.run(() => ran.push(n)).then(() => done.push(n)));
    expect(clock.scheduled()).toBe(1);
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual([]);
    await clock.turn();
    await Promise.all(all);
    expect(ran).toEqual([1, 2, 3, 4]);
    expect(done).toEqual([1, 2, 3, 4]);
    expect(clock.scheduled()).toBe(0);
  });

  it("a step that throws rejects its own promise only; a step queued during a run goes to the next", async () => {
    const clock = manual();
    const c = new Coalescer(clock.later);
    const ran: string[] = [];
    let inner: Promise<void> | null = null;
    const a = c.run(() => {
      ran.push("a");
      inner = c.run(() => ran.push("inner"));
    });
    const b = c.run(() => {
      throw new Error("b failed");
    });
    const d = c.run(() => ran.push("d"));
    const settled = Promise.allSettled([a, b, d]);
    await clock.turn();
    expect((await settled).map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    await expect(b).rejects.toThrow("b failed");
    expect(ran).toEqual(["a", "d"]);
    expect(clock.scheduled()).toBe(1);
    await clock.turn();
    await inner;
    expect(ran).toEqual(["a", "d", "inner"]);
  });

  it("`after` steps run once the run's others have, in their own arrival order; queued during a run, the next", async () => {
    const clock = manual();
    const c = new Coalescer(clock.later);
    const ran: string[] = [];
    let inner: Promise<void> | null = null;
    const all = [
      c.run(() => ran.push("ack1"), true),
      c.run(() => ran.push("send1")),
      c.run(() => {
        ran.push("ack2");
        inner = c.run(() => ran.push("ack3"), true);
      }, true),
      c.run(() => ran.push("send2")),
    ];
    expect(clock.scheduled()).toBe(1);
    await clock.turn();
    await Promise.all(all);
    expect(ran).toEqual(["send1", "send2", "ack1", "ack2"]);
    expect(clock.scheduled()).toBe(1);
    await clock.turn();
    await inner;
    expect(ran).toEqual(["send1", "send2", "ack1", "ack2", "ack3"]);
    // A run of `after` steps alone.
    const only = c.run(() => ran.push("ack4"), true);
    expect(clock.scheduled()).toBe(1);
    await clock.turn();
    await only;
    expect(ran.at(-1)).toBe("ack4");
  });

  it("by default a run is one zero-delay timer: steps queued in the same turn share it", async () => {
    const c = new Coalescer();
    const turns: number[] = [];
    let turn = 0;
    const tick = setInterval(() => turn++, 0);
    await Promise.all([1, 2, 3].map(() => c.run(() => turns.push(turn))));
    clearInterval(tick);
    expect(new Set(turns).size).toBe(1);
  });
});
