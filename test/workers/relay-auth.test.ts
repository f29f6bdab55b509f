/** Relay authentication, name binding and connection rules (PROTOCOL.md §4). */
import { env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE, LIMITS } from "../../shared/protocol";
import { freshHub, newKeys, signedPrekey, TestClient } from "./support/client";
import { relaySql } from "./support/relay-store";

describe("relay auth", () => {
  it("sends hello with a fresh 32-byte challenge for the hub", async () => {
    const hub = freshHub();
    const a = await TestClient.open(hub);
    const b = await TestClient.open(hub);
    expect(a.hello?.hub).toBe(hub);
    expect(a.hello?.challenge).not.toBe(b.hello?.challenge);
    a.close();
    b.close();
  });

  it("welcomes a client that signs the challenge, and lists it in presence", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const { c, welcome } = await TestClient.connect(hub, "alice", keys);
    expect(welcome.username).toBe("alice");
    expect(welcome.identityKey).toBe(keys.identityKey);
    expect(welcome.groups.map((g) => g.group)).toEqual([]);
    const p = await c.next("presence");
    expect(p.users).toEqual([{ username: "alice", identityKey: keys.identityKey }]);
    c.close();
  });

  it("refuses a wrong auth signature with auth_failed and closes", async () => {
    const c = await TestClient.open(freshHub());
    const keys = await newKeys();
    const frame = await c.authFrame("alice", keys, { origin: "http://evil.test" });
    c.send(frame);
    const e = await c.error();
    expect(e.code).toBe("auth_failed");
    expect((await c.waitClosed()).code).toBe(CLOSE.authFailed);
  });

  it("refuses a signature made for another hub", async () => {
    const c = await TestClient.open(freshHub());
    const frame = await c.authFrame("alice", await newKeys(), { hub: "other" });
    c.send(frame);
    expect((await c.error()).code).toBe("auth_failed");
  });

  it("refuses a signed prekey not signed by the identity with bad_signature", async () => {
    const c = await TestClient.open(freshHub());
    const keys = await newKeys();
    const other = await newKeys();
    const frame = await c.authFrame("alice", keys, { spk: await signedPrekey(other) });
    c.send(frame);
    expect((await c.error()).code).toBe("bad_signature");
    expect((await c.waitClosed()).code).toBe(CLOSE.authFailed);
  });

  it("binds a name to the first identity: another key gets name_taken, across reconnects", async () => {
    const hub = freshHub();
    const alice = await newKeys();
    const first = await TestClient.connect(hub, "alice", alice);
    first.c.close();
    await first.c.waitClosed();
    const intruder = await TestClient.open(hub);
    intruder.send(await intruder.authFrame("alice", await newKeys()));
    expect((await intruder.error()).code).toBe("name_taken");
    expect((await intruder.waitClosed()).code).toBe(CLOSE.authFailed);
    // The owner comes back later with the same key and is welcomed again.
    const again = await TestClient.connect(hub, "alice", alice);
    expect(again.welcome.username).toBe("alice");
    again.c.close();
  });

  it("binds an identity to one name per hub (identity_bound)", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const { c } = await TestClient.connect(hub, "alice", keys);
    const second = await TestClient.open(hub);
    second.send(await second.authFrame("alice2", keys));
    expect((await second.error()).code).toBe("identity_bound");
    c.close();
  });

  it("a replayed auth frame fails: the challenge is per connection", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const first = await TestClient.open(hub);
    const frame = await first.authFrame("alice", keys);
    first.send(frame);
    await first.next("welcome");
    const replay = await TestClient.open(hub);
    replay.send(frame);
    expect((await replay.error()).code).toBe("auth_failed");
    first.close();
  });

  it("one live connection per identity: the newer replaces the older", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const old = await TestClient.connect(hub, "alice", keys);
    const fresh = await TestClient.connect(hub, "alice", keys);
    expect((await old.c.error()).code).toBe("replaced");
    expect((await old.c.waitClosed()).code).toBe(CLOSE.replaced);
    // Presence still shows alice exactly once, through the new connection.
    const p = await fresh.c.next("presence");
    expect(p.users.map((u) => u.username)).toEqual(["alice"]);
    fresh.c.close();
  });

  it("frames before auth get not_authenticated; a second auth gets already_authenticated", async () => {
    const hub = freshHub();
    const c = await TestClient.open(hub);
    c.send({ v: 1, t: "fetch_bundle", id: "x1", username: "bob" });
    const e = await c.error("x1");
    expect(e.code).toBe("not_authenticated");
    await c.auth("alice", await newKeys());
    c.send(await c.authFrame("alice", c.keys ?? (await newKeys())));
    expect((await c.error()).code).toBe("already_authenticated");
    c.close();
  });

  it("presence: a newcomer's view is itself; strangers are not pushed to each other", async () => {
    const hub = freshHub();
    const a = await TestClient.connect(hub, "alice");
    await a.c.next("presence");
    const b = await TestClient.connect(hub, "bob");
    const p = await b.c.next("presence");
    expect(p.users.map((u) => u.username)).toEqual(["bob"]);
    b.c.close();
    await b.c.waitClosed();
    await a.c.sync();
    expect(a.c.queue.some((f) => f.t === "presence_delta")).toBe(false);
    a.c.close();
  });

  it("two identities racing for a new name: exactly one wins", async () => {
    const hub = freshHub();
    const [x, y] = await Promise.all([TestClient.open(hub), TestClient.open(hub)]);
    const [fx, fy] = await Promise.all([
      x.authFrame("alice", await newKeys()),
      y.authFrame("alice", await newKeys()),
    ]);
    x.send(fx);
    y.send(fy);
    const outcome = (c: TestClient) =>
      Promise.race([c.next("welcome").then(() => "welcome"), c.error().then((e) => e.code)]);
    const results = await Promise.all([outcome(x), outcome(y)]);
    expect(results.sort()).toEqual(["name_taken", "welcome"]);
    x.close();
    y.close();
  });

  it("a full hub refuses new names with limit_reached but still admits known users", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const known = await TestClient.connect(hub, "known", keys);
    known.c.close();
    await known.c.waitClosed();
    // The user count is the directory's: it owns the bindings (key-directory.ts `claim`).
    await runInDurableObject(
      env.DIRECTORY.get(env.DIRECTORY.idFromName(`${hub}/dir`)),
      (_i, state) => {
        for (let i = 1; i < LIMITS.maxUsersPerHub; i++) {
          relaySql(state).exec(
            "INSERT INTO bindings (username, identity_key, bound_at) VALUES (?, ?, 0)",
            `filler-${i}`,
            `key-${i}`,
          );
        }
      },
    );
    const late = await TestClient.open(hub);
    late.send(await late.authFrame("newcomer", await newKeys()));
    expect((await late.error()).code).toBe("limit_reached");
    const again = await TestClient.connect(hub, "known", keys);
    expect(again.welcome.username).toBe("known");
    again.c.close();
  });

  it("two auth frames back to back: the first wins, the second is already_authenticated", async () => {
    const c = await TestClient.open(freshHub());
    const frame = await c.authFrame("alice", await newKeys());
    c.send(frame);
    c.send(frame);
    await c.next("welcome");
    expect((await c.error()).code).toBe("already_authenticated");
    expect(c.closed).toBeNull();
    c.close();
  });
});
