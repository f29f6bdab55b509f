/**
 * Durable Object lifecycle (PROTOCOL.md §4.1, §7.4): hibernation wake-up restores sessions from
 * their re-validated attachments, keep-alives are auto-answered, silent and unauthenticated
 * connections expire, and every close is answered.
 */
import {
  env,
  evictDurableObject,
  runDurableObjectAlarm,
  runInDurableObject,
} from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CLOSE, PING_TEXT } from "../../shared/protocol";
import { freshHub, newKeys, TestClient } from "./support/client";

const stubFor = (hub: string) => env.RELAY.get(env.RELAY.idFromName(hub));

/** Rewrite every socket's attachment in the object, then evict it so the next event restores. */
async function tamper(hub: string, edit: (att: Record<string, unknown>) => unknown) {
  const stub = stubFor(hub);
  await runInDurableObject(stub, (_i, state) => {
    for (const ws of state.getWebSockets()) {
      ws.serializeAttachment(edit(ws.deserializeAttachment() as Record<string, unknown>));
    }
  });
  await evictDurableObject(stub);
}

describe("relay lifecycle", () => {
  it("wakes from hibernation with sessions restored from attachments", async () => {
    const hub = freshHub();
    const a = await TestClient.connect(hub, "alice");
    const b = await TestClient.connect(hub, "bob");
    a.c.send({ v: 1, t: "send", id: "before", to: "bob", body: "AAAA" });
    const first = await a.c.next("accepted");
    expect((await b.c.next("deliver")).mid).toBe(first.mid);

    await evictDurableObject(stubFor(hub)); // hibernate: sockets stay open, memory is gone

    // Still authenticated as alice (no not_authenticated), routing to bob still works, and the
    // unacknowledged item is not sent again on the same connection (the cursor was restored).
    a.c.send({ v: 1, t: "send", id: "after", to: "bob", body: "BBBB" });
    const second = await a.c.next("accepted", (f) => f.id === "after");
    const d = await b.c.next("deliver");
    expect(d.mid).toBe(second.mid);
    expect(d.from).toBe("alice");
    await b.c.sync();
    expect(b.c.queue.filter((f) => f.t === "deliver")).toEqual([]);
    a.c.close();
    b.c.close();
  });

  it("closes a socket whose attachment does not validate after wake-up", async () => {
    const hub = freshHub();
    const { c } = await TestClient.connect(hub, "alice");
    await tamper(hub, (att) => ({ ...att, username: "Not A Name!" }));
    c.send({ t: "ping", v: 1 });
    expect((await c.waitClosed()).code).toBe(CLOSE.policy);
  });

  it("a tampered attachment cannot smuggle in extra state", async () => {
    const hub = freshHub();
    const { c } = await TestClient.connect(hub, "alice");
    await tamper(hub, (att) => ({ ...att, admin: true }));
    c.send({ t: "ping", v: 1 });
    expect((await c.waitClosed()).code).toBe(CLOSE.policy);
  });

  it("answers the exact ping text by auto-response", async () => {
    const hub = freshHub();
    const { c } = await TestClient.connect(hub, "alice");
    c.sendRaw(PING_TEXT);
    await c.next("pong");
    const stamped = await runInDurableObject(stubFor(hub), (_i, state) =>
      state.getWebSockets().map((ws) => state.getWebSocketAutoResponseTimestamp(ws) !== null),
    );
    expect(stamped).toEqual([true]);
    c.close();
  });

  it("expires a silent connection: closed as idle and removed from presence", async () => {
    const hub = freshHub();
    const a = await TestClient.connect(hub, "alice");
    const bobKeys = await newKeys();
    const b = await TestClient.connect(hub, "bob", bobKeys);
    // bob writes to alice, so alice sees him online (§6.3).
    b.c.send({ v: 1, t: "send", id: "s", to: "alice", body: "aGk" });
    await a.c.next("presence_delta", (f) => f.online.some((u) => u.username === "bob"));
    // bob went silent long ago (no frame, no auto-answered ping); alice is recent.
    await tamper(hub, (att) => (att.username === "bob" ? { ...att, lastSeen: 1 } : att));
    expect(await runDurableObjectAlarm(stubFor(hub))).toBe(true);
    expect((await b.c.waitClosed()).code).toBe(CLOSE.idle);
    // The delta is held back to one a second; the object's alarm sends it.
    const p = await a.c.next("presence_delta", (f) => f.offline.length > 0, 5000);
    expect(p.offline).toEqual(["bob"]);
    a.c.close();
  });

  it("closes a connection that never authenticates", async () => {
    const hub = freshHub();
    const c = await TestClient.open(hub);
    await tamper(hub, (att) => ({ ...att, connectedAt: 1 }));
    expect(await runDurableObjectAlarm(stubFor(hub))).toBe(true);
    expect((await c.waitClosed()).code).toBe(CLOSE.authTimeout);
  });

  it("answers a client's close with the same code", async () => {
    const hub = freshHub();
    const { c } = await TestClient.connect(hub, "alice");
    c.ws.close(4321, "done");
    const closed = await c.waitClosed();
    expect(closed.code).toBe(4321);
  });
});
