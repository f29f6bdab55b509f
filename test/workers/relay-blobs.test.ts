/**
 * Attachment blobs inside workerd (PROTOCOL.md §7.10): an upload ticket only over an
 * authenticated socket, PUT under that ticket into the simulated R2 bucket, GET with byte
 * ranges, ticket misuse (reuse, wrong blob, wrong secret, wrong length, expired), over-size and
 * over-quota refusals with their typed codes, and deletion by the owner object's alarm once a
 * blob's expiry has passed.
 */
import { env, runDurableObjectAlarm, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { LIMITS, PROTOCOL_VERSION } from "../../shared/protocol";
import { blobKey } from "../../worker/relay/blobs";
import { BASE, freshHub, TestClient } from "./support/client";

let seq = 0;
async function ticket(c: TestClient, size: number) {
  const id = `b${++seq}`;
  c.send({ v: PROTOCOL_VERSION, t: "blob_upload", id, size });
  return c.next("blob_ticket", (f) => f.id === id);
}

function put(
  blob: string,
  ticketText: string,
  body: Uint8Array,
  headers: Record<string, string> = {},
) {
  return SELF.fetch(`${BASE}/blob/${blob}`, {
    method: "PUT",
    headers: { Authorization: `Ticket ${ticketText}`, ...headers },
    body: body as Uint8Array<ArrayBuffer>,
  });
}

async function errorOf(res: Response): Promise<{ status: number; error: string }> {
  const j = (await res.json()) as { error: string };
  return { status: res.status, error: j.error };
}

const ownerStub = (ticketText: string) =>
  env.BLOB_OWNER.get(env.BLOB_OWNER.idFromString(ticketText.slice(0, 64)));

describe("blob upload and download", () => {
  it("stores a blob under a ticket and serves it whole and by range", async () => {
    const { c } = await TestClient.connect(freshHub(), "alice");
    const data = randomBytes(100_000);
    const t = await ticket(c, data.length);
    expect(t.ticket).toMatch(/^[0-9a-f]{64}\.[A-Za-z0-9_-]{43}$/);
    const res = await put(t.blob, t.ticket, data);
    expect(res.status).toBe(201);
    const whole = await SELF.fetch(`${BASE}/blob/${t.blob}`);
    expect(whole.status).toBe(200);
    expect(whole.headers.get("Accept-Ranges")).toBe("bytes");
    expect(new Uint8Array(await whole.arrayBuffer())).toEqual(data);
    const part = await SELF.fetch(`${BASE}/blob/${t.blob}`, { headers: { Range: "bytes=70000-" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("Content-Range")).toBe(`bytes 70000-99999/100000`);
    expect(new Uint8Array(await part.arrayBuffer())).toEqual(data.subarray(70_000));
    const bad = await SELF.fetch(`${BASE}/blob/${t.blob}`, { headers: { Range: "bytes=100000-" } });
    expect(bad.status).toBe(416);
    await bad.body?.cancel();
    // The quota counts it.
    expect(await ownerStub(t.ticket).usage()).toEqual({ bytes: 100_000, count: 1 });
    c.ws.close();
  });

  it("answers an unknown or malformed id with not_found", async () => {
    const unknown = await SELF.fetch(`${BASE}/blob/${toB64u(randomBytes(32))}`);
    expect(await errorOf(unknown)).toEqual({ status: 404, error: "not_found" });
    const malformed = await SELF.fetch(`${BASE}/blob/..%2F..%2Fetc`);
    expect(await errorOf(malformed)).toEqual({ status: 404, error: "not_found" });
  });
});

describe("upload rights", () => {
  it("gives no ticket before authentication", async () => {
    const c = await TestClient.open(freshHub());
    c.send({ v: PROTOCOL_VERSION, t: "blob_upload", id: "x1", size: 10 });
    expect((await c.error("x1")).code).toBe("not_authenticated");
    c.ws.close();
  });

  it("refuses a PUT without a ticket, with a forged one, or another blob's ticket", async () => {
    const { c } = await TestClient.connect(freshHub(), "bob");
    const a = await ticket(c, 10);
    const b = await ticket(c, 10);
    const data = randomBytes(10) as Uint8Array<ArrayBuffer>;
    const none = await SELF.fetch(`${BASE}/blob/${a.blob}`, { method: "PUT", body: data });
    expect(await errorOf(none)).toEqual({ status: 400, error: "bad_request" });
    const forged = `${a.ticket.slice(0, 65)}${toB64u(randomBytes(32))}`;
    expect(await errorOf(await put(a.blob, forged, data))).toEqual({
      status: 403,
      error: "ticket_invalid",
    });
    expect(await errorOf(await put(a.blob, b.ticket, data))).toEqual({
      status: 403,
      error: "ticket_invalid",
    });
    // A ticket naming an object that is not a blob owner (a made-up id) is refused too.
    const stranger = `${"0".repeat(64)}.${a.ticket.slice(65)}`;
    expect((await put(a.blob, stranger, data)).status).toBe(403);
    c.ws.close();
  });

  it("works once, for exactly its size", async () => {
    const { c } = await TestClient.connect(freshHub(), "carol");
    const t = await ticket(c, 1000);
    expect(await errorOf(await put(t.blob, t.ticket, randomBytes(999)))).toEqual({
      status: 400,
      error: "size_mismatch",
    });
    const u = await ticket(c, 1000);
    expect((await put(u.blob, u.ticket, randomBytes(1000))).status).toBe(201);
    // Used: a second PUT (overwriting the stored blob) is refused.
    expect(await errorOf(await put(u.blob, u.ticket, randomBytes(1000)))).toEqual({
      status: 403,
      error: "ticket_invalid",
    });
    c.ws.close();
  });

  it("refuses an expired ticket", async () => {
    const { c } = await TestClient.connect(freshHub(), "dave");
    const t = await ticket(c, 10);
    await runInDurableObject(ownerStub(t.ticket), (_o, state) => {
      state.storage.sql.exec("UPDATE blobs SET expires = 1 WHERE id = ?", t.blob);
    });
    expect(await errorOf(await put(t.blob, t.ticket, randomBytes(10)))).toEqual({
      status: 403,
      error: "ticket_expired",
    });
    c.ws.close();
  });
});

describe("limits", () => {
  it("refuses an over-size blob at ticket time and at PUT time", async () => {
    const { c } = await TestClient.connect(freshHub(), "erin");
    c.send({ v: PROTOCOL_VERSION, t: "blob_upload", id: "big", size: LIMITS.maxBlobBytes + 1 });
    expect((await c.error("big")).code).toBe("blob_too_large");
    const t = await ticket(c, 10);
    const res = await SELF.fetch(`${BASE}/blob/${t.blob}`, {
      method: "PUT",
      headers: {
        Authorization: `Ticket ${t.ticket}`,
        "Content-Length": String(LIMITS.maxBlobBytes + 1),
      },
      body: new ReadableStream({
        start(ctl) {
          ctl.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    expect((await errorOf(res)).error).toBe("blob_too_large");
    c.ws.close();
  });

  it("refuses a ticket past the quota, and frees the quota when a blob expires", async () => {
    const { c } = await TestClient.connect(freshHub(), "frank");
    const tickets = [];
    const per = LIMITS.maxBlobBytes;
    for (let i = 0; i * per + per <= LIMITS.blobQuotaBytes; i++) tickets.push(await ticket(c, per));
    expect(tickets.length).toBe(Math.floor(LIMITS.blobQuotaBytes / per));
    c.send({ v: PROTOCOL_VERSION, t: "blob_upload", id: "over", size: per });
    expect((await c.error("over")).code).toBe("blob_quota");
    // The tickets lapse unused: the alarm frees their reservation.
    const first = tickets[0];
    if (first === undefined) throw new Error("no ticket");
    const stub = ownerStub(first.ticket);
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec("UPDATE blobs SET expires = 1");
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await stub.usage()).toEqual({ bytes: 0, count: 0 });
    await ticket(c, per);
    c.ws.close();
  });
});

describe("expiry", () => {
  it("deletes a stored blob from R2 when its time is up (owner's alarm), and GET stops at once", async () => {
    const { c } = await TestClient.connect(freshHub(), "gina");
    const data = randomBytes(5000);
    const t = await ticket(c, data.length);
    expect((await put(t.blob, t.ticket, data)).status).toBe(201);
    expect(await env.BLOBS.head(blobKey(t.blob))).not.toBeNull();
    // Past the expiry the object carries, GET refuses it even before the alarm has run.
    const obj = await env.BLOBS.get(blobKey(t.blob));
    await env.BLOBS.put(blobKey(t.blob), (await obj?.arrayBuffer()) ?? new ArrayBuffer(0), {
      customMetadata: { expires: "1" },
    });
    expect((await errorOf(await SELF.fetch(`${BASE}/blob/${t.blob}`))).error).toBe("not_found");
    const stub = ownerStub(t.ticket);
    await runInDurableObject(stub, (_o, state) => {
      state.storage.sql.exec("UPDATE blobs SET expires = 1 WHERE id = ?", t.blob);
    });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await env.BLOBS.head(blobKey(t.blob))).toBeNull();
    expect(await stub.usage()).toEqual({ bytes: 0, count: 0 });
    c.ws.close();
  });

  it("keeps the alarm set while blobs are held", async () => {
    const { c } = await TestClient.connect(freshHub(), "hank");
    const t = await ticket(c, 10);
    const alarm = await runInDurableObject(ownerStub(t.ticket), (_o, state) =>
      state.storage.getAlarm(),
    );
    expect(alarm).toBeGreaterThan(Date.now());
    c.ws.close();
  });
});
