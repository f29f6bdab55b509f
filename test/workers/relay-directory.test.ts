/** Key directory: signed prekeys, one-time prekeys handed out once, low-supply notice (§5.2). */
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import { LIMITS } from "../../shared/protocol";
import {
  freshHub,
  type Keys,
  newKeys,
  oneTimePrekeys,
  signedLeaves,
  signedPrekey,
  TestClient,
} from "./support/client";

describe("relay key directory", () => {
  it("serves a bundle while the owner is offline, each one-time prekey once", async () => {
    const hub = freshHub();
    const { c: bob, welcome } = await TestClient.connect(hub, "bob");
    expect(welcome.oneTimePrekeysRemaining).toBe(0);
    const otpks = oneTimePrekeys(10, 3);
    bob.send({ v: 1, t: "upload_prekeys", id: "u1", oneTimePrekeys: otpks });
    await bob.next("accepted", (f) => f.id === "u1");
    bob.close();
    await bob.waitClosed();

    const { c: alice } = await TestClient.connect(hub, "alice");
    const seen: (string | null)[] = [];
    for (let i = 0; i < 4; i++) {
      alice.send({ v: 1, t: "fetch_bundle", id: `f${i}`, username: "bob" });
      const b = await alice.next("bundle", (f) => f.id === `f${i}`);
      expect(b.identityKey).toBe(welcome.identityKey);
      seen.push(b.oneTimePrekey?.key ?? null);
    }
    // Oldest first, never twice, then null when the supply is gone.
    expect(seen).toEqual([...otpks.map((k) => k.key), null]);
    alice.close();
  });

  it("the bundle carries the signed prekey the owner published", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const bob = await TestClient.open(hub);
    const spk = await signedPrekey(keys, 7);
    bob.send(await bob.authFrame("bob", keys, { spk }));
    await bob.next("welcome");
    const { c: alice } = await TestClient.connect(hub, "alice");
    alice.send({ v: 1, t: "fetch_bundle", id: "f", username: "bob" });
    expect((await alice.next("bundle")).signedPrekey).toEqual(spk);
    // Rotation through upload_prekeys replaces it.
    const spk2 = await signedPrekey(keys, 8);
    bob.send({ v: 1, t: "upload_prekeys", id: "r", signedPrekey: spk2, oneTimePrekeys: [] });
    await bob.next("accepted", (f) => f.id === "r");
    alice.send({ v: 1, t: "fetch_bundle", id: "g", username: "bob" });
    expect((await alice.next("bundle", (f) => f.id === "g")).signedPrekey).toEqual(spk2);
    alice.close();
    bob.close();
  });

  it("refuses an uploaded signed prekey with a bad signature", async () => {
    const hub = freshHub();
    const { c } = await TestClient.connect(hub, "bob");
    const forged = await signedPrekey(await newKeys(), 9);
    c.send({ v: 1, t: "upload_prekeys", id: "bad", signedPrekey: forged, oneTimePrekeys: [] });
    expect((await c.error("bad")).code).toBe("bad_signature");
    c.close();
  });

  it("unknown users get unknown_user", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    c.send({ v: 1, t: "fetch_bundle", id: "n", username: "nobody" });
    expect((await c.error("n")).code).toBe("unknown_user");
    c.close();
  });

  it("tells the owner when its supply runs low (welcome and after a fetch)", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const first = await TestClient.connect(hub, "bob", keys);
    expect((await first.c.next("prekeys_low")).remaining).toBe(0);
    const n = LIMITS.oneTimePrekeysLowWatermark;
    first.c.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: oneTimePrekeys(1, n) });
    await first.c.next("accepted");
    const { c: alice } = await TestClient.connect(hub, "alice");
    alice.send({ v: 1, t: "fetch_bundle", id: "f", username: "bob" });
    await alice.next("bundle");
    expect((await first.c.next("prekeys_low")).remaining).toBe(n - 1);
    alice.close();
    first.c.close();
  });

  it("bounds the stored supply and rejects duplicate ids in one upload", async () => {
    const { c } = await TestClient.connect(freshHub(), "bob");
    const per = LIMITS.maxOneTimePrekeysPerUpload;
    let next = 1;
    for (let stored = 0; stored + per <= LIMITS.maxOneTimePrekeysStored; stored += per) {
      c.send({
        v: 1,
        t: "upload_prekeys",
        id: `u${next}`,
        oneTimePrekeys: oneTimePrekeys(next, per),
      });
      await c.next("accepted", (f) => f.id === `u${next}`);
      next += per;
    }
    c.send({ v: 1, t: "upload_prekeys", id: "over", oneTimePrekeys: oneTimePrekeys(next, 1) });
    expect((await c.error("over")).code).toBe("limit_reached");
    // Re-uploading an id already stored replaces it and does not count as new.
    c.send({ v: 1, t: "upload_prekeys", id: "same", oneTimePrekeys: oneTimePrekeys(1, 1) });
    await c.next("accepted", (f) => f.id === "same");
    const dup = [...oneTimePrekeys(900, 1), ...oneTimePrekeys(900, 1)];
    c.send({ v: 1, t: "upload_prekeys", id: "dup", oneTimePrekeys: dup });
    expect((await c.error("dup")).code).toBe("bad_frame");
    c.send({
      v: 1,
      t: "upload_prekeys",
      id: "many",
      oneTimePrekeys: oneTimePrekeys(1000, per + 1),
    });
    expect((await c.error("many")).code).toBe("bad_frame");
    c.close();
  });

  it("leaf keys (§9.3): served as the roster head, appended, consumed by a commit, checked in wraps", async () => {
    const hub = freshHub();
    const a = (await TestClient.connect(hub, "alice")).c;
    const b = (await TestClient.connect(hub, "bob")).c;
    const aKeys = a.keys as Keys;
    const first = await signedLeaves(aKeys, hub, "g", 100, 2);
    a.send({ v: 1, t: "join", id: "ja", group: "g", leaves: first });
    await a.next("accepted", (f) => f.id === "ja");
    const st = await a.next("group", (f) => f.state.pendingJoins.length === 1);
    expect(st.state.pendingJoins[0]?.leaf).toEqual(first[0]);
    // a leaf key signed by someone else is refused
    const forged = await signedLeaves(b.keys as Keys, hub, "g", 300, 1);
    a.send({ v: 1, t: "leaf", id: "bad", group: "g", leaves: forged });
    expect((await a.error("bad")).code).toBe("bad_signature");
    // a commit sealed to another key than the head: refused, with the current state first
    a.send({
      v: 1,
      t: "commit",
      id: "c0",
      group: "g",
      parentEpoch: 0,
      members: ["alice"],
      core: "Q09SRQ",
      wraps: [{ to: "alice", leaf: 101, wrap: "d3JhcA" }],
      interim: toB64u(new Uint8Array(32)),
    });
    await a.next("group", (f) => f.state.pendingJoins[0]?.leaf.id === 100);
    expect((await a.error("c0")).code).toBe("leaf_changed");
    a.send({
      v: 1,
      t: "commit",
      id: "c1",
      group: "g",
      parentEpoch: 0,
      members: ["alice"],
      core: "Q09SRQ",
      wraps: [{ to: "alice", leaf: 100, wrap: "d3JhcA" }],
      interim: toB64u(new Uint8Array(32).fill(7)),
    });
    await a.next("accepted", (f) => f.id === "c1");
    // the commit used the head: the next one is served, with the commit's interim hash
    const after = await a.next("group", (f) => f.state.epoch === 1);
    expect(after.state.members[0]?.leaf.id).toBe(101);
    expect(after.state.interim).toBe(toB64u(new Uint8Array(32).fill(7)));
    // fresh keys are appended behind it
    a.send({
      v: 1,
      t: "leaf",
      id: "more",
      group: "g",
      leaves: await signedLeaves(aKeys, hub, "g", 200, 1),
    });
    await a.next("accepted", (f) => f.id === "more");
    b.send({ v: 1, t: "leaf", id: "out", group: "g", leaves: forged });
    expect((await b.error("out")).code).toBe("not_member");
    a.close();
    b.close();
  });
});
