/**
 * Parley Worker entry: Hono routes /health and /ws (to the hub's Durable Object); everything else
 * is the PWA's static files, from the `parley-pwa` Worker (pwa/wrangler.toml) through the ASSETS
 * service binding. A path the files lack is the app (SPA fallback) when it names an app route,
 * and 404 when it names a file (isAppRoute). Every response carries the security headers.
 */
import { Hono } from "hono";
import * as v from "valibot";
import { HubName, Name, Rendezvous } from "../shared/protocol";
import { type BlobRouteEnv, getBlob, putBlob } from "./blob-routes";
import {
  DEFAULT_HUB,
  isAllowedOrigin,
  isAppRoute,
  parseAllowedOrigins,
  securityHeaders,
} from "./http";
import { type PushEnv, pushConfigFromEnv } from "./relay/push-send";

// Only handlers and Durable Object classes may be exported from the entry module (workerd).
export { BlobOwner } from "./blobs";
export { Directory } from "./directory";
export { Group } from "./group";
export { Relay } from "./relay";

export interface Env extends PushEnv, BlobRouteEnv {
  RELAY: DurableObjectNamespace;
  ASSETS: Fetcher;
  /** Optional extra origins allowed to open /ws (comma-separated), e.g. a LAN address. */
  ALLOWED_ORIGINS?: string;
}

const app = new Hono<{ Bindings: Env }>();

app.use("*", async (c, next) => {
  await next();
  const headers = securityHeaders(new URL(c.req.url));
  const res = c.res;
  // Responses from fetch()/ASSETS have immutable headers: copy once, then set. A 101 carries
  // its socket, which must be handed over explicitly.
  const out =
    res.status === 101
      ? new Response(null, { status: 101, webSocket: res.webSocket, headers: res.headers })
      : new Response(res.body, res);
  for (const [k, val] of Object.entries(headers)) out.headers.set(k, val);
  c.res = out;
});

app.get("/health", (c) => c.json({ ok: true }));

// The relay's VAPID public key, the `applicationServerKey` a client subscribes with (PROTOCOL.md
// §7.9); 404 when this deployment sends no push. Not cached: a rotated key must be seen at once.
app.get("/push/vapid", (c) => {
  const push = pushConfigFromEnv(c.env);
  if (push === null)
    return c.json({ error: "push_unavailable" }, 404, { "Cache-Control": "no-store" });
  return c.json({ key: push.publicKey }, 200, { "Cache-Control": "no-store" });
});

// Attachments (PROTOCOL.md §7.10): upload under a ticket, download by unguessable id.
app.put("/blob/:id", putBlob);
app.get("/blob/:id", getBlob);

app.get("/ws", async (c) => {
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    return c.text("Upgrade Required", 426, { Upgrade: "websocket" });
  }
  const url = new URL(c.req.url);
  const hub = v.safeParse(HubName, url.searchParams.get("hub") ?? DEFAULT_HUB);
  if (!hub.success) return c.text("Bad hub name", 400);
  if (!isAllowedOrigin(c.req.header("Origin"), url, parseAllowedOrigins(c.env.ALLOWED_ORIGINS))) {
    return c.text("Forbidden origin", 403);
  }
  // A user's route goes to that user's object (docs/ARCHITECTURE.md "User objects"), the hub's
  // route to the hub's. "." and "/" are outside both alphabets, so no user's object id is
  // another object's.
  const rawUser = url.searchParams.get("user");
  const user = rawUser === null ? null : v.safeParse(Name, rawUser);
  if (user !== null && !user.success) return c.text("Bad user name", 400);
  // A new device waiting to be linked has no user yet: its route names its code's rendezvous
  // (`&link=`, PROTOCOL.md §4.8.3), whose object the user's devices reach.
  const rawLink = url.searchParams.get("link");
  const link = rawLink === null ? null : v.safeParse(Rendezvous, rawLink);
  if (link !== null && (!link.success || user !== null)) return c.text("Bad link route", 400);
  // Forward with the hub made explicit, so the object never falls back to a default itself.
  const forward = new URL(url);
  forward.search =
    user !== null
      ? `?hub=${hub.output}&user=${user.output}`
      : link !== null
        ? `?hub=${hub.output}&link=${link.output}`
        : `?hub=${hub.output}`;
  const object =
    user !== null
      ? `${hub.output}/u/${user.output}`
      : link !== null
        ? `${hub.output}/l/${link.output}`
        : hub.output;
  const stub = c.env.RELAY.get(c.env.RELAY.idFromName(object));
  return stub.fetch(new Request(forward, c.req.raw));
});

app.all("*", async (c) => {
  // pwa/wrangler.toml sets `not_found_handling = "none"`: the files answer 404 for what they lack,
  // and the fallback to the app is decided here, where a missing file can stay a 404.
  const res = await c.env.ASSETS.fetch(c.req.raw);
  if (res.status !== 404) return res;
  const url = new URL(c.req.url);
  const method = c.req.method;
  if ((method !== "GET" && method !== "HEAD") || !isAppRoute(url.pathname)) {
    return c.text("Not Found", 404);
  }
  return c.env.ASSETS.fetch(new Request(new URL("/", url), c.req.raw));
});

app.onError((err, c) => {
  // Log the kind of failure for the operator; the client gets a bare 500 and nothing internal.
  console.error("worker: unhandled", err.name);
  return c.text("Internal Server Error", 500);
});

export default app;
