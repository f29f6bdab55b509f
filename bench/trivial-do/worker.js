// The baselines of the relay bench that run under the same `wrangler dev` as Parley: the least a
// hibernating Durable Object holding WebSockets can be. It accepts every socket with the
// hibernation API, keeps a small attachment, answers the keep-alive ping without waking (as the
// relay does), and otherwise speaks the bare server's protocol (bench/bare-server.ts): `hello`
// names a socket, `send` forwards a body to the socket of that name; anything else is echoed.
// A socket whose `hello` asks for Parley's frames (`frames: "parley"`) also gets an `accepted`
// for each `send`, and its `ack`s are taken without an answer: the frames a Parley 1:1 message
// costs (PROTOCOL.md §7.3), without the protocol's work. A socket whose `hello` says `peers`
// came to an object of its own name (`?room=`, as a user's route gives each user an object):
// its `send` is one call to the recipient's object (`deliver` below), which sends on its socket —
// the floor of users' routes (docs/ARCHITECTURE.md "User objects"), one call between objects
// per message and nothing else. No authentication, no storage. The memory row
// (bench/relay.ts) holds idle sockets on it; the relay bench and the A/B tool
// (bench/relay-ab.ts) run the 1:1 load through it, the platform's own floor.
import { DurableObject } from "cloudflare:workers";

export class Trivial extends DurableObject {
  /** Socket by its `hello` name; rebuilt from the attachments after hibernation. */
  byName = new Map();
  seq = 0;

  constructor(ctx, env) {
    super(ctx, env);
    ctx.setWebSocketAutoResponse(
      new WebSocketRequestResponsePair('{"v":1,"t":"ping"}', '{"v":1,"t":"pong"}'),
    );
    for (const ws of ctx.getWebSockets()) {
      const name = ws.deserializeAttachment()?.name;
      if (typeof name === "string") this.byName.set(name, ws);
    }
  }

  async fetch() {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    pair[1].serializeAttachment({ connectedAt: Date.now() });
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  async webSocketMessage(ws, message) {
    let f;
    try {
      f = JSON.parse(message);
    } catch {
      f = null;
    }
    if (f?.t === "hello" && typeof f.name === "string") {
      ws.serializeAttachment({
        name: f.name,
        frames: f.frames === "parley",
        peers: f.peers === true,
      });
      this.byName.set(f.name, ws);
      ws.send('{"t":"ready"}');
    } else if (f?.t === "send" && typeof f.to === "string") {
      const att = ws.deserializeAttachment();
      const from = att?.name ?? "";
      const mid = String(++this.seq);
      if (att?.peers === true) {
        const peer = this.env.TRIVIAL.get(this.env.TRIVIAL.idFromName(f.to));
        await peer.deliver(f.to, from, mid, f.body);
      } else this.deliver(f.to, from, mid, f.body);
      if (att?.frames === true)
        ws.send(JSON.stringify({ v: 1, t: "accepted", id: String(f.id), mid }));
    } else if (f?.t === "ack") {
      // Parley's frame pattern (a `hello` with `frames`): taken, nothing stored.
    } else {
      ws.send(message);
    }
  }

  /** A `deliver` to the socket named `to`: a call from the sender's object, or this one's. */
  deliver(to, from, mid, body) {
    this.byName.get(to)?.send(JSON.stringify({ t: "deliver", mid, from, body }));
  }

  async webSocketClose(ws) {
    const name = ws.deserializeAttachment()?.name;
    if (typeof name === "string" && this.byName.get(name) === ws) this.byName.delete(name);
  }
}

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    if (path === "/health") return new Response("ok");
    if (path === "/ws") {
      // `?room=`: an object of that name instead of the one shared object (the memory baseline
      // of users' routes, where every user has an object of its own).
      const room = new URL(request.url).searchParams.get("room") ?? "hub";
      return env.TRIVIAL.get(env.TRIVIAL.idFromName(room)).fetch(request);
    }
    return new Response("not found", { status: 404 });
  },
};
