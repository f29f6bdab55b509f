/**
 * Attachment throughput (PROTOCOL.md §7.10, §3.12): upload + download of a 10 MB file through a
 * real `wrangler dev` (ticket over the authenticated socket, PUT through the Worker into the
 * simulated R2, GET back), encrypted (Cobblestone-256, digest, decrypt and check) against the
 * same bytes sent as they are through the same path, interleaved in the same run. Runs inside
 * `npm run bench` (section "attachments") or alone: `node dist/bench/attachments.mjs` after
 * `node bench/build.mjs`.
 */
import WebSocket from "ws";
import { decryptAttachment, encryptAttachment, fileRefOf } from "../shared/core/attachments";
import { ParleyClient } from "../shared/core/client";
import { MemoryStore } from "../shared/core/store";
import { generateIdentityKeyPair, randomBytes } from "../shared/crypto";
import { type ClientFrame, parseServerFrame } from "../shared/protocol";
import { startWranglerDev } from "../test/support/wrangler-dev";
import { median } from "./lib";

const SIZE = 10 * 1000 * 1000;
const ROUNDS = Number(process.env.BENCH_ATTACH_ROUNDS ?? 12);

export interface AttachmentFigures {
  /** MB/s of upload + download (2 × 10 MB moved per round), medians. */
  encrypted: number;
  plain: number;
  /**
   * Median over rounds of encrypted / plain within the round: each round runs both back to back,
   * so a slow spell of the machine (another process, the local R2's disk) hits both sides of one
   * ratio instead of one side of the medians.
   */
  ratio: number;
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

async function* body(res: Response): AsyncGenerator<Uint8Array> {
  const reader = res.body?.getReader();
  if (reader === undefined) throw new Error("no body");
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    yield value;
  }
}

export async function runAttachments(
  port: number,
  log: (s: string) => void = () => {},
): Promise<AttachmentFigures> {
  const dev = await startWranglerDev({ port, root: process.cwd() });
  const base = dev.url;
  let ws: WebSocket | null = null;
  try {
    let online = false;
    const client = await ParleyClient.create({
      hub: "bench-attach",
      origin: base,
      username: "bencher",
      identity: await generateIdentityKeyPair(),
      store: new MemoryStore(),
      transport: { send: (f: ClientFrame) => ws?.send(JSON.stringify(f)) },
      now: () => Date.now(),
    });
    client.subscribe((e) => {
      if (e.type === "connection") online = e.state === "online";
    });
    ws = new WebSocket(`${base.replace(/^http/, "ws")}/ws?hub=bench-attach`, {
      headers: { Origin: base },
      perMessageDeflate: false,
    });
    ws.on("open", () => client.onConnected());
    ws.on("message", (d) => {
      const r = parseServerFrame(String(d));
      if (r.ok) void client.onServerFrame(r.frame);
    });
    for (let i = 0; !online; i++) {
      if (i > 300) throw new Error("bench: never authenticated");
      await new Promise((r) => setTimeout(r, 100));
    }
    const data = randomBytes(SIZE);
    const put = async (bytes: Uint8Array | Blob, length: number) => {
      const t = await client.requestBlobTicket(length);
      const res = await fetch(`${base}/blob/${t.blob}`, {
        method: "PUT",
        headers: { Authorization: `Ticket ${t.ticket}`, "Content-Length": String(length) },
        body: bytes as BodyInit,
      });
      if (res.status !== 201) throw new Error(`bench: PUT ${res.status}`);
      await res.body?.cancel();
      return t.blob;
    };
    const encrypted = async () => {
      const enc = await encryptAttachment(once(data), SIZE);
      // One buffer, as the plain side sends: the comparison is of the bytes' cost, not of Node's
      // Blob streaming (the copy is timed with the rest).
      const sealed = new Uint8Array(enc.length);
      let off = 0;
      for (const part of enc.parts) {
        sealed.set(part, off);
        off += part.length;
      }
      const blob = await put(sealed, enc.length);
      const ref = fileRefOf(blob, enc, { size: SIZE, type: "", name: "bench.bin" });
      const res = await fetch(`${base}/blob/${blob}`);
      let n = 0;
      for await (const p of decryptAttachment(ref, body(res))) n += p.length;
      if (n !== SIZE) throw new Error("bench: short decrypt");
    };
    const plain = async () => {
      const blob = await put(data, SIZE);
      const res = await fetch(`${base}/blob/${blob}`);
      let n = 0;
      for await (const p of body(res)) n += p.length;
      if (n !== SIZE) throw new Error("bench: short download");
    };
    const rate = async (f: () => Promise<void>) => {
      const t0 = performance.now();
      await f();
      return (2 * SIZE) / 1e6 / ((performance.now() - t0) / 1000);
    };
    // One warm-up of each, then paired rounds whose order alternates, so neither side always
    // runs on the warmer (or the fuller) local R2. The quota (500 MiB) holds 2 × (ROUNDS + 1)
    // uploads of 10 MB.
    await plain();
    await encrypted();
    const e: number[] = [];
    const p: number[] = [];
    const r: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      let pe: number;
      let pp: number;
      if (i % 2 === 0) {
        pp = await rate(plain);
        pe = await rate(encrypted);
      } else {
        pe = await rate(encrypted);
        pp = await rate(plain);
      }
      p.push(pp);
      e.push(pe);
      r.push(pe / pp);
      log(
        `attachments: round ${i + 1}: plain ${pp.toFixed(1)} MB/s, encrypted ${pe.toFixed(1)} MB/s (${(pe / pp).toFixed(2)}×)`,
      );
    }
    return { encrypted: median(e), plain: median(p), ratio: median(r) };
  } finally {
    ws?.close();
    await dev.stop();
  }
}

// Standalone: print the figures.
if (process.argv[1]?.endsWith("attachments.mjs")) {
  const { installNodeCryptoBackend } = await import("../node/crypto-backend");
  installNodeCryptoBackend();
  const port = Number(process.env.BENCH_ATTACH_PORT ?? 8797);
  const r = await runAttachments(port, (s) => process.stderr.write(`${s}\n`));
  process.stdout.write(
    `attachments 10 MB up+down: encrypted ${r.encrypted.toFixed(1)} MB/s, plain ${r.plain.toFixed(1)} MB/s ; paired ratio ${r.ratio.toFixed(2)}×\n`,
  );
}
