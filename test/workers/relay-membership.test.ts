/**
 * Join/leave amplification (PROTOCOL.md §7.5 "Membership pushes"): a stranger's join+leave pairs
 * on an open group no longer make the relay push the whole roster to every member each time.
 */
import { describe, expect, it } from "vitest";
import { MEMBERSHIP_PUSHES } from "../../worker/relay/group-push";
import { freshHub, TestClient } from "./support/client";

const MEMBERS = 20;
const PAIRS = 60;

describe("membership pushes (§7.5)", () => {
  it("the 20-member join+leave flood pushes bounded bytes", async () => {
    const hub = freshHub();
    const members: TestClient[] = [];
    for (let i = 0; i < MEMBERS; i++) {
      members.push((await TestClient.connect(hub, `m${String(i).padStart(2, "0")}`)).c);
    }
    const [founder] = members as [TestClient];
    founder.send({ v: 1, t: "join", id: "j", group: "open" });
    await founder.next("accepted", (f) => f.id === "j");
    const commit = (id: string, parentEpoch: number, names: string[]) => ({
      v: 1,
      t: "commit",
      id,
      group: "open",
      parentEpoch,
      members: names,
      core: "Q09SRQ",
      wraps: names.map((to) => ({ to, wrap: "d3JhcA" })),
    });
    founder.send(commit("c0", 0, [founder.username]));
    await founder.next("accepted", (f) => f.id === "c0");
    for (const m of members.slice(1)) {
      m.send({ v: 1, t: "join", id: "j", group: "open" });
      await m.next("accepted", (f) => f.id === "j");
    }
    const names = members.map((m) => m.username).sort();
    founder.send(commit("c1", 1, names));
    await founder.next("accepted", (f) => f.id === "c1");
    for (const m of members) {
      await m.next("group", (f) => f.state.epoch === 2 && f.state.members.length === MEMBERS);
      await m.sync();
      m.queue.length = 0;
    }
    // The stranger: 60 join+leave pairs, as fast as the relay takes them.
    const eve = (await TestClient.connect(hub, "eve")).c;
    const started = Date.now();
    let sent = 0;
    for (let i = 0; i < PAIRS; i++) {
      const join = JSON.stringify({ v: 1, t: "join", id: `j${i}`, group: "open" });
      const leave = JSON.stringify({ v: 1, t: "leave", id: `l${i}`, group: "open" });
      eve.sendRaw(join);
      eve.sendRaw(leave);
      sent += join.length + leave.length;
    }
    // A last join that stays: every member hears of it, within the group's push bound.
    eve.send({ v: 1, t: "join", id: "last", group: "open" });
    await eve.next("accepted", (f) => f.id === "last");
    const lastSizes: number[] = [];
    for (const m of members) {
      const f = await m.next(
        "group",
        (g) => g.state.pendingJoins.some((u) => u.username === "eve"),
        5000,
      );
      lastSizes.push(JSON.stringify(f).length);
    }
    const elapsedSec = Math.ceil((Date.now() - started) / 1000);
    for (const m of members) await m.sync();
    // Each member got at most the burst plus one push per second of the flood (and one for the
    // change still held at its end), never one per frame.
    const bound = MEMBERSHIP_PUSHES.burst + (elapsedSec + 1) * MEMBERSHIP_PUSHES.ratePerSec;
    let pushed = 0;
    let largest = 0;
    const lastSize = Math.max(...lastSizes);
    for (const m of members) {
      const frames = m.queue.filter((f) => f.t === "group");
      // (the push naming eve's last join was taken off the queue above)
      expect(frames.length + 1).toBeLessThanOrEqual(bound);
      largest = Math.max(largest, lastSize);
      pushed += lastSize;
      for (const f of frames) {
        const n = JSON.stringify(f).length;
        pushed += n;
        largest = Math.max(largest, n);
      }
    }
    expect(pushed).toBeLessThanOrEqual(MEMBERS * bound * largest);
    // Before the bound every frame pushed the state to every member: 2 × PAIRS × MEMBERS pushes.
    expect(pushed).toBeLessThan((2 * PAIRS * MEMBERS * largest) / 4);
    console.log(
      `membership flood: ${sent} B sent in ${2 * PAIRS} frames -> ${pushed} B pushed to ${MEMBERS} members (unbounded: ~${2 * PAIRS * MEMBERS * largest} B)`,
    );
    for (const m of [...members, eve]) m.close();
  });
});
