/**
 * The baseline relay for the relay benchmarks: a bare Node `ws` fan-out server with no authentication, storage
 * or validation beyond JSON.parse. It marks the practical ceiling of this machine, so Parley's relay
 * figures can be given as a ratio against it, measured in the same run.
 *
 * Run as a child process (`node bare-server.mjs PORT`) so it has its own event loop and core,
 * like workerd does.
 */
import { type WebSocket, WebSocketServer } from "ws";

const port = Number(process.argv[2] ?? 8796);
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
const byName = new Map<string, WebSocket>();
const group = new Set<WebSocket>();
let seq = 0;

wss.on("connection", (ws) => {
  let name = "";
  ws.on("message", (data) => {
    let f: { t?: string; name?: string; to?: string; body?: string; ts?: number };
    try {
      f = JSON.parse(String(data));
    } catch {
      return;
    }
    if (f.t === "hello" && typeof f.name === "string") {
      name = f.name;
      byName.set(name, ws);
      group.add(ws);
      ws.send(JSON.stringify({ t: "ready" }));
    } else if (f.t === "send" && typeof f.to === "string") {
      const out = JSON.stringify({ t: "deliver", mid: String(++seq), from: name, body: f.body });
      byName.get(f.to)?.send(out);
    } else if (f.t === "group_send") {
      const out = JSON.stringify({ t: "deliver", mid: String(++seq), from: name, body: f.body });
      for (const peer of group) if (peer !== ws) peer.send(out);
    }
  });
  ws.on("close", () => {
    byName.delete(name);
    group.delete(ws);
  });
});

wss.on("listening", () => process.stdout.write(`listening ${port}\n`));
process.on("SIGTERM", () => wss.close(() => process.exit(0)));
