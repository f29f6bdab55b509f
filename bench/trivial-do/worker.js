// The baseline of the relay bench's memory row: the least a hibernating Durable Object holding
// WebSockets can be under `wrangler dev` — it accepts every socket with the hibernation API,
// keeps a small attachment, answers the keep-alive ping without waking (as the relay does) and
// echoes any other message. Nothing else: no protocol, no storage. Run by bench/relay.ts.
import { DurableObject } from "cloudflare:workers";

export class Trivial extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.setWebSocketAutoResponse(
      new WebSocketRequestResponsePair('{"v":1,"t":"ping"}', '{"v":1,"t":"pong"}'),
    );
  }

  async fetch() {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    pair[1].serializeAttachment({ connectedAt: Date.now() });
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  async webSocketMessage(ws, message) {
    ws.send(message);
  }
}

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    if (path === "/health") return new Response("ok");
    if (path === "/ws") return env.TRIVIAL.get(env.TRIVIAL.idFromName("hub")).fetch(request);
    return new Response("not found", { status: 404 });
  },
};
