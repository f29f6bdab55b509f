/**
 * An HTTP and WebSocket proxy on loopback in front of a real `wrangler dev`, for stories about
 * interrupted attachment transfers (PROTOCOL.md §7.10): it can hold the body of a blob upload
 * (PUT) or download (GET) after a given number of bytes, so a test can reload the page or cut the
 * network at a known point mid-transfer, and it can cut every open connection at once (a lost
 * network: the WebSocket and any transfer break, new connections are accepted again).
 *
 *   const gate = await startGateProxy({ port, target: relay.url });
 *   gate.holdUpload = 3_000_000;         // the next PUT stops after 3 MB
 *   await gate.held("put");              // ...here it is
 *   gate.release();                      // holds lifted; held bodies go on
 */
import { createServer, request, type Server } from "node:http";
import net from "node:net";
import { Transform, type TransformCallback } from "node:stream";

export interface GateProxy {
  /** e.g. http://127.0.0.1:8830 — what the browser opens. */
  url: string;
  /** Hold a blob PUT's request body once this many bytes went through (null: never). */
  holdUpload: number | null;
  /** Hold a blob GET's response body once this many bytes went through (null: never). */
  holdDownload: number | null;
  /** Answer blob GETs with 503 instead of forwarding them (a relay that is briefly down). */
  refuseDownloads: boolean;
  /** The Range header of every blob GET, in order ("" for none). */
  ranges: string[];
  /** Resolves once a body of that kind is held at its limit. */
  held(kind: "put" | "get"): Promise<void>;
  /** Lift both holds: held bodies continue, later ones are not held. */
  release(): void;
  /** Destroy every open connection (HTTP and WebSocket), as a lost network does. */
  cut(): void;
  stop(): Promise<void>;
}

/** Passes bytes until `limit()`, then waits for `open()` before passing the rest. */
class Gate extends Transform {
  private passed = 0;
  constructor(
    private readonly limit: () => number | null,
    private readonly onHeld: () => void,
    private readonly opened: () => Promise<void>,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const limit = this.limit();
    if (limit === null || this.passed + chunk.length <= limit) {
      this.passed += chunk.length;
      done(null, chunk);
      return;
    }
    const head = Math.max(0, limit - this.passed);
    if (head > 0) this.push(chunk.subarray(0, head));
    this.passed += head;
    this.onHeld();
    void this.opened().then(() => {
      this.passed += chunk.length - head;
      done(null, chunk.subarray(head));
    });
  }
}

export async function startGateProxy(o: { port: number; target: string }): Promise<GateProxy> {
  const target = new URL(o.target);
  const sockets = new Set<net.Socket>();
  let releaseAll: () => void = () => {};
  let opened = new Promise<void>((r) => {
    releaseAll = r;
  });
  const waiters: Record<"put" | "get", Array<() => void>> = { put: [], get: [] };
  const heldNow: Record<"put" | "get", boolean> = { put: false, get: false };
  const onHeld = (kind: "put" | "get") => {
    heldNow[kind] = true;
    for (const w of waiters[kind].splice(0)) w();
  };

  const proxy: GateProxy = {
    url: `http://127.0.0.1:${o.port}`,
    holdUpload: null,
    holdDownload: null,
    refuseDownloads: false,
    ranges: [],
    held(kind) {
      if (heldNow[kind]) return Promise.resolve();
      return new Promise((r) => waiters[kind].push(r));
    },
    release() {
      proxy.holdUpload = null;
      proxy.holdDownload = null;
      heldNow.put = false;
      heldNow.get = false;
      releaseAll();
      opened = new Promise<void>((r) => {
        releaseAll = r;
      });
    },
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    stop: () =>
      new Promise<void>((r) => {
        proxy.cut();
        server.close(() => r());
      }),
  };

  const server: Server = createServer((req, res) => {
    const isBlob = (req.url ?? "").startsWith("/blob/");
    if (isBlob && req.method === "GET" && proxy.refuseDownloads) {
      res.writeHead(503, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: "unavailable", message: "down for a moment" }));
      return;
    }
    const up = request(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
        agent: false,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (isBlob && req.method === "GET") {
          const gate = new Gate(
            () => proxy.holdDownload,
            () => onHeld("get"),
            () => opened,
          );
          answer.pipe(gate).pipe(res);
        } else answer.pipe(res);
      },
    );
    if (isBlob && req.method === "GET") proxy.ranges.push(String(req.headers.range ?? ""));
    up.on("error", () => res.destroy());
    // The browser went away (reload, cut): the relay's side of the request breaks too.
    res.on("close", () => up.destroy());
    if (isBlob && req.method === "PUT") {
      req
        .pipe(
          new Gate(
            () => proxy.holdUpload,
            () => onHeld("put"),
            () => opened,
          ),
        )
        .pipe(up);
    } else req.pipe(up);
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  // WebSocket upgrades: the raw bytes both ways, after replaying the request head upstream.
  server.on("upgrade", (req, client, head) => {
    const up = net.connect(Number(target.port), target.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      }
      up.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length > 0) up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    sockets.add(up);
    up.on("close", () => {
      sockets.delete(up);
      client.destroy();
    });
    client.on("close", () => up.destroy());
    up.on("error", () => client.destroy());
    client.on("error", () => up.destroy());
  });
  await new Promise<void>((r) => server.listen(o.port, "127.0.0.1", () => r()));
  return proxy;
}
