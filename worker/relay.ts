/** Placeholder relay Durable Object; replaced by the relay issue (#3). */
import { DurableObject } from "cloudflare:workers";

export class Relay extends DurableObject {
  override async fetch(_request: Request): Promise<Response> {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }
}
