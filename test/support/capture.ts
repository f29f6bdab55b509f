/**
 * Wire capture for the security evaluation (docs/SECURITY.md §3): ParleyClient engines over real
 * Node WebSockets with a tap on every frame they send and receive (the relay boundary), a search
 * for secrets in every encoding they could take on the wire, and an optional loopback packet
 * capture with tshark (only on `lo`, only the relay's port, bounded by time and packet count).
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { ParleyClient } from "../../shared/core/client";
import type { ParleyEvent, Tuning } from "../../shared/core/client-api";
import { MemoryStore } from "../../shared/core/store";
import type { IdentityKeyPair } from "../../shared/crypto";
import { fromB64u } from "../../shared/encoding";
import { type ClientFrame, parseServerFrame, type ServerFrame } from "../../shared/protocol";

// ---------------------------------------------------------------------------------------------
// Frame tap

export interface TappedFrame {
  /** Milliseconds since the tap was created. */
  at: number;
  user: string;
  /** "up": client → relay; "down": relay → client. */
  dir: "up" | "down";
  /** Frame type (`t`), or "?" for something that did not parse. */
  t: string;
  /** UTF-8 bytes on the WebSocket (the TLS payload before framing overhead). */
  bytes: number;
  text: string;
}

export class Tap {
  readonly frames: TappedFrame[] = [];
  private readonly t0 = performance.now();
  record(user: string, dir: "up" | "down", text: string): void {
    let t = "?";
    try {
      const o = JSON.parse(text) as { t?: unknown };
      if (typeof o.t === "string") t = o.t;
    } catch {
      // not JSON: recorded as "?"
    }
    this.frames.push({
      at: performance.now() - this.t0,
      user,
      dir,
      t,
      bytes: new TextEncoder().encode(text).length,
      text,
    });
  }
  mark(): number {
    return this.frames.length;
  }
}

// ---------------------------------------------------------------------------------------------
// Engines over a real WebSocket

/** The bits of a `ws` WebSocket we use (kept structural so this file does not pin a ws type). */
export interface SocketLike {
  send(data: string): void;
  close(code?: number): void;
  on(event: "open", cb: () => void): unknown;
  on(event: "message", cb: (data: { toString(): string }) => void): unknown;
  on(event: "close", cb: () => void): unknown;
  on(event: "error", cb: (e: Error) => void): unknown;
  readonly readyState: number;
}

export interface WireUser {
  name: string;
  identity: IdentityKeyPair;
  store: MemoryStore;
  client: ParleyClient;
  events: ParleyEvent[];
  /** Server frames the engine received (already parsed). */
  received: ServerFrame[];
  /** Raw texts the boundary parser refused (must stay empty against an honest relay). */
  invalid: string[];
  ws: SocketLike | null;
}

export interface EngineOptions {
  hub: string;
  origin: string;
  name: string;
  identity: IdentityKeyPair;
  store?: MemoryStore;
  tap?: Tap;
  tuning?: Partial<Tuning>;
  /** Clock override (default Date.now), so a test can let retry timers elapse. */
  now?: () => number;
}

export async function newWireUser(o: EngineOptions): Promise<WireUser> {
  const u: WireUser = {
    name: o.name,
    identity: o.identity,
    store: o.store ?? new MemoryStore(),
    client: undefined as unknown as ParleyClient,
    events: [],
    received: [],
    invalid: [],
    ws: null,
  };
  u.client = await ParleyClient.create({
    hub: o.hub,
    origin: o.origin,
    username: o.name,
    identity: o.identity,
    store: u.store,
    transport: {
      send: (f: ClientFrame) => {
        const text = JSON.stringify(f);
        o.tap?.record(o.name, "up", text);
        if (u.ws !== null && u.ws.readyState === 1) u.ws.send(text);
      },
    },
    now: o.now ?? (() => Date.now()),
    ...(o.tuning ? { tuning: o.tuning } : {}),
  });
  u.client.subscribe((e) => u.events.push(e));
  return u;
}

/** Attach an engine to an open-able socket; resolves once the engine saw `welcome`. */
export async function attach(
  u: WireUser,
  ws: SocketLike,
  tap?: Tap,
  timeoutMs = 15_000,
): Promise<void> {
  u.ws = ws;
  await new Promise<void>((res, rej) => {
    ws.on("open", () => res());
    ws.on("error", rej);
  });
  u.client.onConnected();
  ws.on("message", (data) => {
    const text = data.toString();
    tap?.record(u.name, "down", text);
    const r = parseServerFrame(text);
    if (!r.ok) {
      u.invalid.push(text);
      return;
    }
    u.received.push(r.frame);
    void u.client.onServerFrame(r.frame);
  });
  ws.on("close", () => {
    if (u.ws === ws) u.ws = null;
    u.client.onDisconnected();
  });
  const before = u.events.filter((e) => e.type === "ready").length;
  await until(
    () => u.events.filter((e) => e.type === "ready").length > before,
    `${u.name} ready`,
    timeoutMs,
  );
}

export async function detach(u: WireUser): Promise<void> {
  const ws = u.ws;
  if (ws === null) return;
  await new Promise<void>((res) => {
    ws.on("close", () => res());
    ws.close(1000);
    setTimeout(res, 2000);
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(pred: () => boolean, what: string, ms = 25_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
    await sleep(10);
  }
}

export function inbox(u: WireUser, conversationId: string): string[] {
  return u.events.flatMap((e) =>
    e.type === "message" &&
    e.message.conversationId === conversationId &&
    e.message.direction === "in"
      ? [e.message.text]
      : [],
  );
}

export function errorCodes(u: WireUser): string[] {
  return u.events.flatMap((e) => (e.type === "error" ? [e.code] : []));
}

// ---------------------------------------------------------------------------------------------
// Secrets and where they could show up

export interface Secret {
  /** Where the value came from, e.g. "alice dm/bob current.ratchet.rk". */
  label: string;
  bytes: Uint8Array;
}

/** Field names in the engine's store that hold secret key material (PROTOCOL.md §10.1). */
const SECRET_FIELDS = new Set(["priv", "rk", "cks", "ckr", "ck", "mk", "secret", "confirmKey"]);

/** Every secret-named 32-byte value in a store (private keys, chain/root/message keys, epoch secrets). */
export async function storeSecrets(owner: string, store: MemoryStore): Promise<Secret[]> {
  const out: Secret[] = [];
  const walk = (v: unknown, path: string) => {
    if (Array.isArray(v)) {
      for (const [i, x] of v.entries()) walk(x, `${path}[${i}]`);
      return;
    }
    if (typeof v !== "object" || v === null) return;
    for (const [k, x] of Object.entries(v)) {
      if (typeof x === "string" && SECRET_FIELDS.has(k)) {
        try {
          const b = fromB64u(x);
          if (b.length >= 16) out.push({ label: `${owner} ${path}.${k}`, bytes: b });
        } catch {
          // not base64url: not key material
        }
      } else {
        walk(x, `${path}.${k}`);
      }
    }
  };
  for (const { key, value } of await store.list("")) walk(value, key);
  return out;
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function b64std(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

/**
 * Text spellings of `secret` that would appear if it were embedded anywhere in a larger base64,
 * base64url or hex string: for each of the three base64 alignments, the characters fully
 * determined by the secret's own bits; plus hex in both cases.
 */
export function textForms(secret: Uint8Array): string[] {
  const forms = new Set<string>();
  for (let shift = 0; shift < 3; shift++) {
    const padded = new Uint8Array(shift + secret.length);
    padded.set(secret, shift);
    const std = b64std(padded);
    const first = Math.ceil((8 * shift) / 6);
    const last = Math.floor((8 * (shift + secret.length)) / 6); // exclusive
    const core = std.slice(first, last);
    forms.add(core);
    forms.add(core.replace(/\+/g, "-").replace(/\//g, "_"));
  }
  forms.add(hex(secret));
  forms.add(hex(secret).toUpperCase());
  return [...forms];
}

function indexOfBytes(hay: Uint8Array, needle: Uint8Array): number {
  if (needle.length === 0 || needle.length > hay.length) return -1;
  const first = needle[0];
  outer: for (let i = hay.indexOf(first as number); i >= 0 && i <= hay.length - needle.length; ) {
    for (let j = 1; j < needle.length; j++) {
      if (hay[i + j] !== needle[j]) {
        i = hay.indexOf(first as number, i + 1);
        continue outer;
      }
    }
    return i;
  }
  return -1;
}

/** Every base64url string inside a JSON text, decoded (so binary bodies are searched raw too). */
function decodedStrings(text: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const visit = (v: unknown) => {
    if (typeof v === "string") {
      try {
        out.push(fromB64u(v));
      } catch {
        // not base64url
      }
    } else if (Array.isArray(v)) {
      for (const x of v) visit(x);
    } else if (typeof v === "object" && v !== null) {
      for (const x of Object.values(v)) visit(x);
    }
  };
  try {
    visit(JSON.parse(text));
  } catch {
    // not JSON
  }
  return out;
}

export interface Leak {
  secret: string;
  where: string;
  form: string;
}

/**
 * Search frames (as text, and every base64url field decoded to bytes) and raw packet bytes for
 * each secret: raw bytes, base64url/base64 at every alignment, hex. Returns every hit.
 */
export function findLeaks(
  secrets: readonly Secret[],
  frames: readonly TappedFrame[],
  packets: Uint8Array | null,
): Leak[] {
  const leaks: Leak[] = [];
  const enc = new TextEncoder();
  const frameBytes = frames.map((f) => ({
    f,
    raw: enc.encode(f.text),
    decoded: decodedStrings(f.text),
  }));
  for (const s of secrets) {
    const forms = textForms(s.bytes);
    for (const { f, raw, decoded } of frameBytes) {
      const where = `${f.user} ${f.dir} ${f.t} @${f.at.toFixed(0)}ms`;
      if (indexOfBytes(raw, s.bytes) >= 0) leaks.push({ secret: s.label, where, form: "raw" });
      for (const form of forms) {
        if (f.text.includes(form)) leaks.push({ secret: s.label, where, form: `text:${form}` });
      }
      for (const d of decoded) {
        if (indexOfBytes(d, s.bytes) >= 0) leaks.push({ secret: s.label, where, form: "decoded" });
      }
    }
    if (packets !== null) {
      if (indexOfBytes(packets, s.bytes) >= 0)
        leaks.push({ secret: s.label, where: "pcap", form: "raw" });
      for (const form of forms) {
        if (indexOfBytes(packets, enc.encode(form)) >= 0)
          leaks.push({ secret: s.label, where: "pcap", form: `text:${form}` });
      }
    }
  }
  return leaks;
}

// ---------------------------------------------------------------------------------------------
// Loopback packet capture (tshark)

/** tshark on PATH (PARLEY_NO_TSHARK=1 forces the frame-only path, to test it). */
export function tsharkAvailable(): boolean {
  if (process.env.PARLEY_NO_TSHARK === "1") return false;
  // tshark decodes; dumpcap (same package family) captures.
  return ["tshark", "dumpcap"].every(
    (tool) => spawnSync(tool, ["-v"], { stdio: "ignore" }).status === 0,
  );
}

export interface PacketCapture {
  file: string;
  pid: number;
  /**
   * Stop (SIGINT by PID, then SIGKILL) and return the pcap bytes with dumpcap's own count of
   * packets the kernel dropped (null when it did not report one, e.g. it had to be killed).
   */
  stop(): Promise<{ bytes: Uint8Array; dropped: number | null }>;
}

/**
 * Capture TCP on `lo` for one port only, bounded by `maxSeconds` and `maxPackets` so a failed
 * test can never leave an unbounded capture running. Resolves once dumpcap reports it is live.
 *
 * dumpcap itself, not `tshark -w`: dumpcap reports the kernel's drop count at exit, which lets
 * the test demand every frame when nothing was dropped.
 */
export async function startPacketCapture(opts: {
  port: number;
  file: string;
  maxSeconds: number;
  maxPackets: number;
}): Promise<PacketCapture> {
  const child: ChildProcess = spawn(
    "dumpcap",
    [
      "-i",
      "lo",
      "-f",
      `tcp port ${opts.port}`,
      "-a",
      `duration:${opts.maxSeconds}`,
      "-c",
      String(opts.maxPackets),
      // A bigger kernel buffer than the 2 MiB default: a busy CI machine reads it late.
      "-B",
      "16",
      // Classic pcap: every tool (and older Wireshark) reads it.
      "-P",
      "-w",
      opts.file,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let err = "";
  let exited = false;
  child.on("exit", () => {
    exited = true;
  });
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const deadline = Date.now() + 15_000;
  while (!/Capturing on/.test(err)) {
    if (exited || Date.now() > deadline) {
      if (!exited && child.pid !== undefined) process.kill(child.pid, "SIGKILL");
      throw new Error(`dumpcap did not start: ${err}`);
    }
    await sleep(50);
  }
  return {
    file: opts.file,
    pid: child.pid ?? 0,
    async stop() {
      // libpcap hands packets to dumpcap in blocks, and a block not yet handed over when SIGINT
      // arrives is lost (measured: the last ~40% of the story's packets). Wait until the file
      // has not grown for 1.5 s, i.e. every block has been read and written, then stop.
      let size = -1;
      let stableSince = Date.now();
      const settleBy = Date.now() + 20_000;
      while (!exited && Date.now() < settleBy && Date.now() - stableSince < 1500) {
        const now = existsSync(opts.file) ? statSync(opts.file).size : 0;
        if (now !== size) {
          size = now;
          stableSince = Date.now();
        }
        await sleep(100);
      }
      if (!exited && child.pid !== undefined) process.kill(child.pid, "SIGINT");
      const until2 = Date.now() + 10_000;
      while (!exited && Date.now() < until2) await sleep(50);
      if (!exited && child.pid !== undefined) process.kill(child.pid, "SIGKILL");
      // "Packets received/dropped on interface 'Loopback: lo': 345/0 (pcap:0/dumpcap:0/…)"
      const m = /received\/dropped on interface '.*?':\s*\d+\/(\d+)/.exec(err);
      return {
        bytes: existsSync(opts.file) ? new Uint8Array(readFileSync(opts.file)) : new Uint8Array(),
        dropped: m?.[1] === undefined ? null : Number(m[1]),
      };
    },
  };
}

export interface PacketRow {
  time: number;
  srcPort: number;
  dstPort: number;
  /** TCP payload bytes. */
  len: number;
  /** TLS record content types in the segment (23 = application data, 22 = handshake). */
  tlsTypes: string;
  /** Lengths of the TLS records that start in this segment. */
  records: number[];
}

/** Per-packet fields of a pcap, read back with tshark. */
export function readPackets(file: string, tlsPort: number): PacketRow[] {
  const r = spawnSync(
    "tshark",
    [
      "-r",
      file,
      // A non-standard port: tell the dissector it carries TLS.
      "-d",
      `tcp.port==${tlsPort},tls`,
      "-T",
      "fields",
      "-E",
      "separator=\t",
      "-e",
      "frame.time_relative",
      "-e",
      "tcp.srcport",
      "-e",
      "tcp.dstport",
      "-e",
      "tcp.len",
      "-e",
      "tls.record.content_type",
      // TLS 1.3 hides the real type: every encrypted record is "application data" (23) outside.
      "-e",
      "tls.record.opaque_type",
      "-e",
      "tls.record.length",
    ],
    { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
  );
  if (r.status !== 0) throw new Error(`tshark -r failed: ${r.stderr}`);
  return r.stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      const [time, src, dst, len, types, opaque, lengths] = l.split("\t");
      return {
        time: Number(time),
        srcPort: Number(src),
        dstPort: Number(dst),
        len: Number(len),
        tlsTypes: [types, opaque].filter((x) => x !== undefined && x !== "").join(","),
        records: (lengths ?? "")
          .split(",")
          .filter((x) => x !== "")
          .map(Number),
      };
    });
}

export interface WsMessage {
  srcPort: number;
  dstPort: number;
  /** The frame was sent permessage-deflate compressed (RSV1). */
  compressed: boolean;
  /** The WebSocket text after TLS decryption, unmasking and decompression. */
  text: string;
}

/**
 * Decrypt a pcap with the TLS session keys (SSLKEYLOGFILE format) and read back every WebSocket
 * text message: the view of whoever holds the TLS keys (the relay operator, a TLS-terminating
 * proxy, or an attacker who broke TLS).
 */
export function readWebSocketTexts(file: string, tlsPort: number, keylog: string): WsMessage[] {
  const SEP = "\u001e";
  const r = spawnSync(
    "tshark",
    [
      "-r",
      file,
      "-o",
      `tls.keylog_file:${keylog}`,
      "-d",
      `tcp.port==${tlsPort},tls`,
      "-Y",
      "websocket.payload.text",
      "-T",
      "fields",
      "-E",
      "separator=\t",
      "-E",
      `aggregator=${SEP}`,
      "-e",
      "tcp.srcport",
      "-e",
      "tcp.dstport",
      "-e",
      "websocket.pmc",
      "-e",
      "websocket.payload.text",
    ],
    { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 },
  );
  if (r.status !== 0) throw new Error(`tshark -r failed: ${r.stderr}`);
  const out: WsMessage[] = [];
  for (const line of r.stdout.split("\n")) {
    if (line.trim() === "") continue;
    const [src, dst, pmc, texts] = line.split("\t");
    const flags = (pmc ?? "").split(SEP);
    for (const [i, text] of (texts ?? "").split(SEP).entries()) {
      out.push({
        srcPort: Number(src),
        dstPort: Number(dst),
        compressed: flags[i] === "True" || flags[i] === "1",
        text,
      });
    }
  }
  return out;
}
