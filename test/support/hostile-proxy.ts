/**
 * A malicious relay in front of the real one (docs/SECURITY.md §4): a WebSocket proxy on
 * loopback that forwards every connection to a real `wrangler dev` and lets a test rewrite,
 * drop, hold, duplicate or inject frames in either direction. This is exactly the power of a
 * compromised relay (it sees and controls every frame), so whatever the clients survive here
 * they survive against the relay itself (threat model, SECURITY.md §1).
 *
 *   const proxy = await startHostileProxy({ port: 8789, target: dev.wsUrl });
 *   proxy.down = ({ user, frame, text }) => (frame?.t === "bundle" ? [forged] : [text]);
 *   ...; await proxy.stop();
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import WebSocket, { WebSocketServer } from "ws";
import { parseClientFrame, parseServerFrame, type ServerFrame } from "../../shared/protocol";

export interface DownContext {
  /** Username the client authenticated as (null before its `auth`). */
  user: string | null;
  text: string;
  /** The frame as a client would parse it (null if it does not parse). */
  frame: ServerFrame | null;
}

export interface UpContext {
  user: string | null;
  text: string;
}

/** Return the texts to forward instead (empty array: drop; several: duplicate/inject). */
export type Rule<C> = (ctx: C) => string[];

interface Link {
  user: string | null;
  client: WebSocket;
  upstream: WebSocket;
}

export interface HostileProxy {
  /** e.g. ws://127.0.0.1:8789/ws */
  wsUrl: string;
  /** Relay → client rule; default forwards unchanged. */
  down: Rule<DownContext>;
  /** Client → relay rule; default forwards unchanged. */
  up: Rule<UpContext>;
  /** Everything that crossed the proxy, after the rules, in order. */
  readonly log: Array<{ user: string | null; dir: "up" | "down"; text: string }>;
  /** Send a frame to every live connection of `user`, as if the relay had sent it. */
  inject(user: string, text: string): number;
  reset(): void;
  stop(): Promise<void>;
}

const pass = <C extends { text: string }>(ctx: C) => [ctx.text];

export async function startHostileProxy(opts: {
  port: number;
  /** The real relay's ws URL, e.g. ws://127.0.0.1:8794/ws */
  target: string;
}): Promise<HostileProxy> {
  const links = new Set<Link>();
  const server: Server = createServer((_req, res) => {
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  const proxy: HostileProxy = {
    wsUrl: `ws://127.0.0.1:${opts.port}/ws`,
    down: pass,
    up: pass,
    log: [],
    inject(user, text) {
      let n = 0;
      for (const l of links) {
        if (l.user === user && l.client.readyState === WebSocket.OPEN) {
          l.client.send(text);
          proxy.log.push({ user, dir: "down", text });
          n++;
        }
      }
      return n;
    },
    reset() {
      proxy.down = pass;
      proxy.up = pass;
    },
    async stop() {
      for (const l of links) {
        l.client.terminate();
        l.upstream.terminate();
      }
      // Never hang a test run on a lingering socket: force-close and bound the wait.
      const bounded = (p: Promise<void>) =>
        Promise.race([p, new Promise<void>((res) => setTimeout(res, 3000))]);
      await bounded(new Promise<void>((res) => wss.close(() => res())));
      server.closeAllConnections();
      await bounded(new Promise<void>((res) => server.close(() => res())));
    },
  };

  wss.on("connection", (client: WebSocket, req: IncomingMessage) => {
    const url = new URL(req.url ?? "/ws", "http://x");
    const origin = req.headers.origin;
    const upstream = new WebSocket(`${opts.target}${url.search}`, {
      headers: origin === undefined ? {} : { Origin: origin },
      rejectUnauthorized: false,
      perMessageDeflate: false,
    });
    const link: Link = { user: null, client, upstream };
    links.add(link);
    const early: string[] = [];
    upstream.on("open", () => {
      for (const t of early.splice(0)) upstream.send(t);
    });
    client.on("message", (data) => {
      const text = data.toString();
      const parsed = parseClientFrame(text);
      if (parsed.ok && parsed.frame.t === "auth") link.user = parsed.frame.username;
      for (const out of proxy.up({ user: link.user, text })) {
        proxy.log.push({ user: link.user, dir: "up", text: out });
        if (upstream.readyState === WebSocket.OPEN) upstream.send(out);
        else early.push(out);
      }
    });
    upstream.on("message", (data) => {
      const text = data.toString();
      const parsed = parseServerFrame(text);
      const frame = parsed.ok ? parsed.frame : null;
      for (const out of proxy.down({ user: link.user, text, frame })) {
        proxy.log.push({ user: link.user, dir: "down", text: out });
        if (client.readyState === WebSocket.OPEN) client.send(out);
      }
    });
    const end = () => {
      links.delete(link);
      if (client.readyState === WebSocket.OPEN) client.close(1000);
      if (upstream.readyState === WebSocket.OPEN) upstream.close(1000);
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  });

  await new Promise<void>((res, rej) => {
    server.once("error", rej);
    server.listen(opts.port, "127.0.0.1", () => res());
  });
  return proxy;
}
