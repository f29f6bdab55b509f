/**
 * The blob routes (PROTOCOL.md §7.10): PUT /blob/{id} streams an upload into R2 under a ticket
 * from the owner's `BlobOwner` object; GET /blob/{id} streams it back, with single byte ranges
 * for resumed downloads. The blob id is the download capability (32 random bytes); the relay
 * sees sizes and timing, never what a blob is (the client chunk-encrypts it, §3.12).
 */
import type { Context } from "hono";
import * as v from "valibot";
import {
  BLOB_HTTP_ERRORS,
  BLOB_TICKET_RE,
  type BlobHttpError,
  BlobId,
  LIMITS,
} from "../shared/protocol";
import type { BlobOwner } from "./blobs";
import { blobKey } from "./relay/blobs";

export interface BlobRouteEnv {
  BLOBS?: R2Bucket;
  BLOB_OWNER?: DurableObjectNamespace<BlobOwner>;
}

/** The ticket travels as `Authorization: Ticket <ticket>` (never in a URL, which gets logged). */
const AUTH_RE = /^Ticket ([0-9a-f]{64})\.([A-Za-z0-9_-]{43})$/;

function fail(code: BlobHttpError): Response {
  const [status, message] = BLOB_HTTP_ERRORS[code];
  return Response.json(
    { error: code, message },
    { status, headers: { "Cache-Control": "no-store" } },
  );
}

export async function putBlob(c: Context<{ Bindings: BlobRouteEnv }>): Promise<Response> {
  const { BLOBS, BLOB_OWNER } = c.env;
  if (BLOBS === undefined || BLOB_OWNER === undefined) return fail("blob_unavailable");
  const blob = c.req.param("id") ?? "";
  const auth = AUTH_RE.exec(c.req.header("Authorization") ?? "");
  if (!v.is(BlobId, blob) || auth === null) return fail("bad_request");
  const [, owner = "", token = ""] = auth;
  const lengthHeader = c.req.header("Content-Length");
  if (lengthHeader === undefined) return fail("length_required");
  if (!/^[0-9]{1,10}$/.test(lengthHeader)) return fail("bad_request");
  const length = Number(lengthHeader);
  if (length > LIMITS.maxBlobBytes) return fail("blob_too_large");
  const body = c.req.raw.body;
  if (body === null || length === 0) return fail("size_mismatch");
  let stub: DurableObjectStub<BlobOwner>;
  try {
    stub = BLOB_OWNER.get(BLOB_OWNER.idFromString(owner));
  } catch {
    return fail("ticket_invalid");
  }
  if (!BLOB_TICKET_RE.test(`${owner}.${token}`)) return fail("bad_request");
  const begun = await stub.begin(blob, token, length);
  if (!begun.ok) return fail(begun.code);
  // FixedLengthStream makes R2 see a known length, and errors if the body is shorter or longer
  // than the ticket's size, so what is stored is exactly what was reserved.
  const fixed = new FixedLengthStream(length);
  const piping = body.pipeTo(fixed.writable).catch(() => undefined);
  try {
    await BLOBS.put(blobKey(blob), fixed.readable, {
      customMetadata: { expires: String(begun.keepUntil) },
    });
    await piping;
  } catch {
    await stub.end(blob, false);
    return fail("size_mismatch");
  }
  const expires = await stub.end(blob, true);
  if (expires === null) {
    // The ledger lost the row meanwhile (its upload window passed): the object goes too.
    await BLOBS.delete(blobKey(blob));
    return fail("ticket_expired");
  }
  return Response.json({ blob, size: length, expires: begun.keepUntil }, { status: 201 });
}

/** `bytes=a-` or `bytes=a-b` (one range, all a client resuming a download needs). */
function parseRange(header: string | undefined, size: number) {
  if (header === undefined) return null;
  const m = /^bytes=([0-9]{1,15})-([0-9]{0,15})$/.exec(header.trim());
  if (m === null) return "bad" as const;
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return "bad" as const;
  return { offset: start, length: end - start + 1 };
}

export async function getBlob(c: Context<{ Bindings: BlobRouteEnv }>): Promise<Response> {
  const { BLOBS } = c.env;
  if (BLOBS === undefined) return fail("blob_unavailable");
  const blob = c.req.param("id") ?? "";
  if (!v.is(BlobId, blob)) return fail("not_found");
  const head = await BLOBS.head(blobKey(blob));
  // Past its expiry it is gone, even if the owner's alarm has not deleted it yet.
  const expires = Number(head?.customMetadata?.expires ?? 0);
  if (head === null || !(expires > Date.now())) return fail("not_found");
  const range = parseRange(c.req.header("Range"), head.size);
  if (range === "bad") {
    return new Response(null, {
      status: 416,
      headers: { "Content-Range": `bytes */${head.size}` },
    });
  }
  const obj = await BLOBS.get(blobKey(blob), range === null ? {} : { range });
  if (obj === null) return fail("not_found");
  const headers = new Headers({
    "Content-Type": "application/octet-stream",
    "Accept-Ranges": "bytes",
    "Cache-Control": "private, no-store",
    ETag: obj.httpEtag,
  });
  if (range === null) {
    headers.set("Content-Length", String(head.size));
    return new Response(obj.body, { status: 200, headers });
  }
  headers.set("Content-Length", String(range.length));
  headers.set(
    "Content-Range",
    `bytes ${range.offset}-${range.offset + range.length - 1}/${head.size}`,
  );
  return new Response(obj.body, { status: 206, headers });
}
