/**
 * Per-user abuse bounds and spec gaps (PROTOCOL.md §5, §7.4): the per-requester one-time prekey
 * quota, duplicate names in a commit's `members`, an empty `?hub=`.
 */
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import { BASE, freshHub, ORIGIN, oneTimePrekeys, TestClient } from "./support/client";

describe("per-user abuse bounds", () => {
  it("a requester takes a few one-time prekeys of a user, then gets bundles without; others still get one", async () => {
    const hub = freshHub();
    const bob = (await TestClient.connect(hub, "bob")).c;
    bob.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: oneTimePrekeys(1, 50) });
    await bob.next("accepted", (f) => f.id === "u");
    const eve = (await TestClient.connect(hub, "eve")).c;
    const taken: Array<number | null> = [];
    for (let i = 0; i < 10; i++) {
      eve.send({ v: 1, t: "fetch_bundle", id: `f${i}`, username: "bob" });
      const b = await eve.next("bundle", (f) => f.id === `f${i}`);
      taken.push(b.oneTimePrekey?.id ?? null);
      // The signed prekey is always there: the start still works (last resort, §8.3).
      expect(b.signedPrekey.id).toBe(1);
    }
    const burst = LIMITS.oneTimePrekeyBurstPerRequester;
    expect(taken.slice(0, burst).every((id) => id !== null)).toBe(true);
    expect(taken.slice(burst)).toEqual(Array(10 - burst).fill(null));
    // carol, another requester, still gets one: eve drained nothing beyond her share.
    const carol = (await TestClient.connect(hub, "carol")).c;
    carol.send({ v: 1, t: "fetch_bundle", id: "c", username: "bob" });
    expect((await carol.next("bundle", (f) => f.id === "c")).oneTimePrekey).not.toBeNull();
    for (const c of [bob, eve, carol]) c.close();
  });

  it("a commit naming a member twice is bad_frame (§5)", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    c.send({ v: 1, t: "join", id: "j", group: "g" });
    await c.next("accepted", (f) => f.id === "j");
    c.send({
      v: 1,
      t: "commit",
      id: "dup",
      group: "g",
      parentEpoch: 0,
      members: ["alice", "alice"],
      core: "Q09SRQ",
      wraps: [{ to: "alice", wrap: "d3JhcA" }],
    });
    expect((await c.error("dup")).code).toBe("bad_frame");
    c.close();
  });

  it("an empty ?hub= is refused with 400; no hub parameter is the default hub", async () => {
    const headers = { Upgrade: "websocket", Origin: ORIGIN };
    expect((await SELF.fetch(`${BASE}/ws?hub=`, { headers })).status).toBe(400);
    const ok = await SELF.fetch(`${BASE}/ws`, { headers });
    expect(ok.status).toBe(101);
    ok.webSocket?.accept();
    ok.webSocket?.close(1000, "bye");
  });
});
