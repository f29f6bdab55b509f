/** Parley Worker entry: Hono routes /health and /ws; everything else is the PWA's static assets. */
import { Hono } from "hono";

export { Relay } from "./relay";

export interface Env {
  RELAY: DurableObjectNamespace;
  ASSETS: Fetcher;
}

const app = new Hono<{ Bindings: Env }>();

app.get("/health", (c) => c.json({ ok: true }));

app.get("/ws", async (c) => {
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    return c.text("Upgrade Required", 426);
  }
  const hub = c.req.query("hub") ?? "main";
  const stub = c.env.RELAY.get(c.env.RELAY.idFromName(hub));
  return stub.fetch(c.req.raw);
});

app.all("*", (c) => c.env.ASSETS.fetch(c.req.raw));

export default app;
