/**
 * What the wire reveals (docs/SECURITY.md §3): the original design's Wireshark analysis
 * (origin report §5.3), automated. A real `wrangler dev` in https/wss mode, three ParleyClient
 * engines (alice, bob, carol) doing the whole story — connect and authenticate, 1:1 both ways,
 * group joins, group messages, a leave and the new epoch — with a tap on every frame at the relay
 * boundary and, when tshark is installed, a loopback packet capture of the relay's port.
 *
 * Asserted: no plaintext, no private key (identity seeds exported from extractable test keys;
 * X25519 prekeys, ratchet keys and group secrets read from the engines' stores during the story),
 * no epoch secret and no derived key (root/chain/message keys, group confirm and sender keys)
 * appears in any frame or packet, raw or as base64url/base64/hex — nor in the WebSocket messages
 * of the capture decrypted with the clients' TLS session keys (the relay operator's view, checked
 * to equal the tapped frames). What an observer does see is measured and written to
 * test-results/security-capture.md (the table in SECURITY.md §3).
 */
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { decodeCommitBody, parseGroupRecord, splitCore } from "../../shared/core/group";
import {
  confirmedTranscript,
  epochKeys,
  groupContext,
  joinerSecret,
  wrapInfoFor,
} from "../../shared/core/group-schedule";
import { kdfCk } from "../../shared/core/ratchet";
import {
  ed25519KeyPairFromSeed,
  hpkeOpen,
  hpkeOpenXWing,
  randomBytes,
  sha256,
} from "../../shared/crypto";
import { fromB64u, utf8 } from "../../shared/encoding";
import {
  attach,
  detach,
  errorCodes,
  findLeaks,
  inbox,
  newWireUser,
  type PacketCapture,
  type PacketRow,
  readPackets,
  readWebSocketTexts,
  type Secret,
  startPacketCapture,
  storeSecrets,
  Tap,
  type TappedFrame,
  tsharkAvailable,
  until,
  type WireUser,
  type WsMessage,
} from "../support/capture";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";

// `wrangler dev` serves dist/pwa: like relay-wrangler.test.ts, run once `npm run build` has.
const built = existsSync(resolve(import.meta.dirname, "../../dist/pwa/index.html"));

const PORT = testPort(8795);
const HUB = `cap-${Date.now().toString(36)}`;
const G = "group:broadcast" as const;
const ROOT = resolve(import.meta.dirname, "../..");

let dev: WranglerDev | undefined;
let pcap: PacketCapture | null = null;
let tmp = "";
const tap = new Tap();
const users: WireUser[] = [];
const secrets = new Map<string, Secret>();
const plaintexts: string[] = [];
const localPort = new Map<number, string>();
/** WebSocket extensions the relay accepted per client (permessage-deflate changes sizes). */
const extensions = new Map<string, string>();
/**
 * TLS session keys of every client connection (SSLKEYLOGFILE format), so the capture can also be
 * read the way the relay operator (or anyone holding TLS keys) reads it.
 */
let keylog = "";
const tlsAgent = new https.Agent({ rejectUnauthorized: false, maxCachedSessions: 0 });
tlsAgent.on("keylog", (line: Buffer) => {
  if (keylog !== "") appendFileSync(keylog, line);
});
let wsTexts: WsMessage[] = [];

function key(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function addSecret(label: string, bytes: Uint8Array): void {
  if (!secrets.has(key(bytes))) secrets.set(key(bytes), { label, bytes });
}

/** Leaf private keys seen in any snapshot, by group, id and public key (PROTOCOL.md §9.3). */
const leafPrivs = new Map<string, Uint8Array>();

/**
 * Epoch secrets, recovered the way their recipient does (PROTOCOL.md §9.4): open the user's own
 * wrap of every commit it was delivered with the leaf key it was sealed to (as seen in a store
 * snapshot before the engine deleted it). The engine never stores epoch secrets, so this is the
 * only place the test can get them. A joiner secret also gives the keys derived from it (§9.3):
 * the confirmation key, the next init secret and every member's sender chain key.
 */
/** Each epoch's init secret by `group.epoch`, to chain the next member-wrapped epoch (§9.3). */
const inits = new Map<string, Uint8Array>();

async function epochSecrets(u: WireUser): Promise<void> {
  for (const f of u.received) {
    if (f.t !== "deliver" || f.item.kind !== "commit") continue;
    const { group, epoch } = f.item;
    const { body, sig } = splitCore(fromB64u(f.item.core));
    const c = decodeCommitBody(body);
    const mine = c.roster.find((m) => m.name === u.name);
    const priv = mine && leafPrivs.get(`${group}.${mine.leafId}.${mine.leafKey}`);
    // A committer's own wrap seals random bytes to a dropped key (§9.2.3): its epoch's secret
    // is recovered from another member's wrap.
    if (mine === undefined || priv === undefined || c.committer === u.name) continue;
    const kind = c.added.includes(c.committer) || c.added.includes(u.name) ? "joiner" : "member";
    const wrap = fromB64u(f.item.wrap);
    const info = wrapInfoFor(HUB, group, epoch)(kind, u.name, fromB64u(mine.ik), mine.leafId);
    // 0x02: X-Wing HPKE to a hybrid leaf key (its private half is the X-Wing seed), 0x01: X25519.
    const secret =
      wrap[0] === 0x02
        ? await hpkeOpenXWing(priv, wrap.slice(1, 1121), wrap.slice(1121), info, sha256(body))
        : await hpkeOpen(priv, wrap.slice(1, 33), wrap.slice(33), info, sha256(body));
    addSecret(`epoch ${epoch} ${kind} secret`, secret);
    // A member's wrap carries the commit secret; the epoch's keys chain it with the previous
    // epoch's init secret (§9.3), which this test derived from that epoch's commit.
    const initPrev = inits.get(`${group}.${epoch - 1}`);
    if (kind === "member" && initPrev === undefined) continue;
    const joiner =
      kind === "joiner" ? secret : joinerSecret(initPrev as Uint8Array, secret, HUB, group, epoch);
    const ctx = groupContext(HUB, group, epoch, confirmedTranscript(c.parentInterim, body, sig));
    const keys = epochKeys(
      joiner,
      ctx,
      c.roster.map((m) => ({ name: m.name, ik: fromB64u(m.ik), leaf: fromB64u(m.leafKey) })),
    );
    addSecret(`epoch ${epoch} confirm key`, keys.confirmKey);
    addSecret(`epoch ${epoch} init secret`, keys.init);
    inits.set(`${group}.${epoch}`, keys.init);
    for (const [i, m] of c.roster.entries()) {
      addSecret(`epoch ${epoch} sender key ${m.name}`, keys.chains[i] as Uint8Array);
    }
  }
}

/** Snapshot every secret the engines hold right now (they evolve as the story goes on). */
async function snapshot(): Promise<void> {
  for (const u of users) {
    for (const s of await storeSecrets(u.name, u.store)) {
      addSecret(s.label, s.bytes);
      // The next message key of every chain key: a "derived key" that is never stored.
      if (/\.(ck|cks|ckr)$/.test(s.label) && s.bytes.length === 32) {
        addSecret(`${s.label} → next mk`, kdfCk(s.bytes).mk);
      }
    }
    for (const { value } of await u.store.list("group/")) {
      const rec = parseGroupRecord(value);
      for (const l of rec.leaves) leafPrivs.set(`${rec.group}.${l.id}.${l.key}`, fromB64u(l.priv));
    }
    await epochSecrets(u);
  }
}

async function connect(u: WireUser): Promise<void> {
  if (dev === undefined) throw new Error("relay not started");
  const origin = new URL(dev.url).origin;
  const ws = new WebSocket(`${dev.wsUrl}?hub=${HUB}`, {
    agent: tlsAgent,
    headers: { Origin: origin },
    rejectUnauthorized: false,
  });
  ws.on("open", () => {
    const sock = (ws as unknown as { _socket?: { localPort?: number } })._socket;
    if (sock?.localPort !== undefined) localPort.set(sock.localPort, u.name);
    extensions.set(u.name, ws.extensions);
  });
  await attach(u, ws, tap);
}

async function say(from: WireUser, conv: string, text: string): Promise<void> {
  plaintexts.push(text);
  await from.client.sendText(conv as `dm:${string}`, text);
}

const epochOf = (u: WireUser) => u.client.conversations().find((c) => c.id === G)?.epoch;

function stats(xs: number[]): string {
  if (xs.length === 0) return "–";
  const s = [...xs].sort((a, b) => a - b);
  const min = s[0];
  const max = s[s.length - 1];
  return min === max ? `${min}` : `${min}–${max}`;
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

describe.skipIf(!built).sequential("security: what the wire reveals (capture)", () => {
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "parley-capture-"));
    keylog = join(tmp, "tls-keys.log");
    writeFileSync(keylog, "");
    // Every hub shows everyone online (a hub default, PROTOCOL.md §6.3): these stories start
    // online handshakes between users who never wrote to each other.
    dev = await startWranglerDev({
      port: PORT,
      https: true,
      vars: { PRESENCE_EVERYONE_HUBS: "*" },
    });
    if (tsharkAvailable()) {
      pcap = await startPacketCapture({
        port: PORT,
        file: join(tmp, "relay.pcap"),
        maxSeconds: 240,
        maxPackets: 200_000,
      });
    }
    const origin = new URL(dev.url).origin;
    for (const name of ["alice", "bob", "carol"]) {
      const seed = randomBytes(32);
      // Extractable test identity: we export its private key to search the wire for it.
      const identity = await ed25519KeyPairFromSeed(seed, true);
      const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", identity.privateKey));
      addSecret(`${name} identity seed`, seed);
      addSecret(`${name} identity pkcs8`, pkcs8);
      users.push(await newWireUser({ hub: HUB, origin, name, identity, tap }));
    }
  }, 180_000);

  afterAll(async () => {
    for (const u of users) await detach(u);
    if (pcap !== null) await pcap.stop();
    await dev?.stop();
    if (tmp !== "") rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  const story = { done: false, marks: {} as Record<string, number> };
  const dmSizes: Array<{ chars: number; bytes: number }> = [];
  const commitSizes: Array<{ epoch: number; members: number; wraps: number; bytes: number }> = [];

  it("three engines play the whole story over wss", async () => {
    const [alice, bob, carol] = users as [WireUser, WireUser, WireUser];
    story.marks.start = tap.mark();
    for (const u of users) await connect(u);
    await until(() => alice.client.presence().length === 3, "presence of three");
    await snapshot();

    // 1:1 alice ↔ bob (online handshake), both ways.
    story.marks.dm = tap.mark();
    await alice.client.startChat("bob");
    await until(
      () =>
        alice.client.conversations().find((c) => c.id === "dm:bob")?.session === "ready" &&
        bob.client.conversations().find((c) => c.id === "dm:alice")?.session === "ready",
      "alice–bob secure",
    );
    await snapshot();
    // Messages of growing length, to measure what padding leaves visible (PROTOCOL.md §8.5).
    // (≥ 12 characters each, so the plaintext search below cannot match by chance.)
    const lengths = [12, 30, 60, 120, 300, 1000];
    for (const [i, n] of lengths.entries()) {
      const text = `dm-${i}-${"secret-words ".repeat(Math.ceil(n / 13))}`.slice(0, n);
      const before = tap.mark();
      await say(alice, "dm:bob", text);
      await until(() => inbox(bob, "dm:alice").length === i + 1, `bob reads dm ${i}`);
      const send = tap.frames.slice(before).find((f) => f.user === "alice" && f.t === "send");
      if (send) dmSizes.push({ chars: text.length, bytes: send.bytes });
      await snapshot();
    }
    await say(bob, "dm:alice", "bob-to-alice: the eagle lands at noon");
    await until(() => inbox(alice, "dm:bob").length === 1, "alice reads bob");
    // bob ↔ carol as well, so "who talks to whom" has more than one pair.
    await bob.client.startChat("carol");
    await say(bob, "dm:carol", "bob-to-carol: pineapple protocol");
    await until(() => inbox(carol, "dm:bob").length === 1, "carol reads bob");
    await say(carol, "dm:bob", "carol-to-bob: acknowledged pineapple");
    await until(() => inbox(bob, "dm:carol").length === 1, "bob reads carol");
    await snapshot();

    // Group: everyone joins broadcast one after the other (epochs 1, 2, 3).
    story.marks.group = tap.mark();
    for (const [i, u] of users.entries()) {
      await u.client.joinGroup("broadcast");
      await until(() => users.slice(0, i + 1).every((x) => epochOf(x) === i + 1), `epoch ${i + 1}`);
      await snapshot();
    }
    await say(alice, G, "group: alice says the vault code is 4711");
    await say(carol, G, "group: carol was here");
    await until(() => inbox(bob, G).length === 2 && inbox(alice, G).length === 1, "group fan-out");
    await snapshot();

    // carol leaves: a remaining member commits epoch 4 without her.
    story.marks.leave = tap.mark();
    await carol.client.leaveGroup("broadcast");
    await until(() => epochOf(alice) === 4 && epochOf(bob) === 4, "epoch 4 without carol");
    await snapshot();
    await say(bob, G, "group: after carol left, the new code is 0815");
    await until(() => inbox(alice, G).length === 2, "alice reads epoch 4");
    await snapshot();
    story.marks.end = tap.mark();

    expect(inbox(carol, G)).not.toContain("group: after carol left, the new code is 0815");
    for (const u of users) {
      expect(u.invalid).toEqual([]);
      expect(errorCodes(u)).toEqual([]);
    }
    for (const f of tap.frames.filter((x) => x.t === "commit")) {
      const c = JSON.parse(f.text) as { parentEpoch: number; members: string[]; wraps: unknown[] };
      commitSizes.push({
        epoch: c.parentEpoch + 1,
        members: c.members.length,
        wraps: c.wraps.length,
        bytes: f.bytes,
      });
    }
    story.done = true;
  }, 240_000);

  it("no plaintext, private key, epoch secret or derived key in any frame or packet", async () => {
    expect(story.done).toBe(true);
    const captured = pcap === null ? null : await pcap.stop();
    const packets = captured?.bytes ?? null;
    const pcapFile = pcap?.file;
    pcap = null;
    // Sanity of the search itself: it must find what is there.
    const sample = tap.frames.find((f) => f.t === "deliver");
    if (!sample) throw new Error("no deliver frame captured");
    const probe = JSON.parse(sample.text) as { item: { body?: string } };
    const probeBytes = fromB64u(probe.item.body ?? "").slice(5, 37);
    expect(
      findLeaks([{ label: "probe", bytes: probeBytes }], [sample], null).length,
    ).toBeGreaterThan(0);

    // Secrets: ≥ 3 identities + prekeys + ratchet and group keys.
    const all = [...secrets.values()];
    expect(all.length).toBeGreaterThan(100);
    for (const l of [
      "identity seed",
      "spk",
      "rk",
      "epoch 4 member secret",
      "epoch 4 confirm key",
    ]) {
      expect(
        all.some((s) => s.label.includes(l)),
        l,
      ).toBe(true);
    }
    const plain = plaintexts.map((p) => ({ label: `plaintext "${p}"`, bytes: utf8(p) }));
    expect(findLeaks([...all, ...plain], tap.frames, packets)).toEqual([]);

    if (packets !== null && pcapFile !== undefined) {
      // The capture really saw the traffic: TLS records to and from the relay port.
      const rows = readPackets(pcapFile, PORT);
      // Keep the capture next to the report: open it in Wireshark (decode port 8795 as TLS).
      mkdirSync(join(ROOT, "test-results"), { recursive: true });
      copyFileSync(pcapFile, join(ROOT, "test-results/security-capture.pcap"));
      // The TLS keys of this test run only: Wireshark decrypts the capture with them.
      copyFileSync(keylog, join(ROOT, "test-results/security-capture.keys"));
      expect(rows.filter((r) => r.len > 0).length, "data packets").toBeGreaterThan(
        tap.frames.length / 4,
      );
      expect(
        rows.some((r) => r.tlsTypes.includes("23")),
        "TLS application data",
      ).toBe(true);
      // With the TLS keys: every WebSocket message decrypts to exactly a frame the taps saw, and
      // the same secret search over those texts finds nothing.
      wsTexts = readWebSocketTexts(pcapFile, PORT, keylog);
      const tapped = new Set(tap.frames.map((f) => f.text));
      // Only complete messages: a segment the kernel dropped under load leaves a partial text
      // that is not JSON (and breaks TLS decryption of the rest of that connection).
      const data = wsTexts.filter((m) => isJson(m.text));
      if (captured?.dropped === 0) {
        // dumpcap lost nothing: every frame the taps saw must be in the capture, decrypted.
        const seen = new Set(data.map((m) => m.text));
        expect(
          tap.frames.filter((f) => !seen.has(f.text)).map((f) => `${f.user} ${f.dir} ${f.t}`),
          "tapped frames missing from the decrypted capture",
        ).toEqual([]);
      } else {
        // The kernel dropped packets (reported by dumpcap): what did decrypt must still match.
        expect(data.length, "decrypted WebSocket messages").toBeGreaterThan(0);
      }
      expect(
        data.filter((m) => !tapped.has(m.text)),
        "decrypted messages the taps did not see",
      ).toEqual([]);
      const asFrames: TappedFrame[] = data.map((m, k) => ({
        at: k,
        user: "tls",
        dir: m.srcPort === PORT ? "down" : "up",
        t: "?",
        bytes: m.text.length,
        text: m.text,
      }));
      expect(findLeaks([...all, ...plain], asFrames, null)).toEqual([]);
      writeReport(rows, captured?.dropped ?? null);
    } else {
      writeReport(null, null);
    }
  }, 120_000);

  function writeReport(rows: PacketRow[] | null, dropped: number | null): void {
    const frames = tap.frames;
    const byType = new Map<string, TappedFrame[]>();
    for (const f of frames) {
      const k = `${f.dir === "up" ? "→ relay" : "relay →"} ${f.t}`;
      byType.set(k, [...(byType.get(k) ?? []), f]);
    }
    const lines: string[] = [];
    lines.push(`# Capture report (${new Date().toISOString()})`, "");
    lines.push(
      `Hub ${HUB}; ${frames.length} frames; packets: ${rows ? `${rows.length} (dropped by the kernel: ${dropped ?? "not reported"})` : "no tshark"}.`,
    );
    lines.push(
      "",
      `Secrets searched for: ${secrets.size} keys and ${plaintexts.length} plaintexts.`,
    );
    lines.push("", "## Frames by type (bytes on the WebSocket)", "", "| frame | count | bytes |");
    lines.push("|---|---|---|");
    for (const [k, fs] of [...byType.entries()].sort()) {
      lines.push(`| ${k} | ${fs.length} | ${stats(fs.map((f) => f.bytes))} |`);
    }
    lines.push("", "## 1:1 `send` frame size by text length (padding buckets)", "");
    lines.push("| text chars | send bytes |", "|---|---|");
    for (const d of dmSizes) lines.push(`| ${d.chars} | ${d.bytes} |`);
    lines.push("", "## Commits", "", "| epoch | roster | wraps | bytes |", "|---|---|---|---|");
    for (const c of commitSizes)
      lines.push(`| ${c.epoch} | ${c.members} | ${c.wraps} | ${c.bytes} |`);
    // Timing: send → deliver latency at the relay boundary (what links sender and recipient).
    const lat: number[] = [];
    for (const [i, f] of frames.entries()) {
      if (f.dir !== "up" || (f.t !== "send" && f.t !== "group_send")) continue;
      const d = frames.slice(i + 1).find((x) => x.dir === "down" && x.t === "deliver");
      if (d) lat.push(d.at - f.at);
    }
    lines.push("", "## Error frames in the honest story", "");
    for (const f of frames.filter((x) => x.t === "error")) lines.push(`- ${f.user}: ${f.text}`);
    lines.push("", `WebSocket extensions negotiated: ${JSON.stringify([...extensions])}.`);
    lines.push("", `Median send → deliver: ${median(lat).toFixed(1)} ms (n=${lat.length}).`);
    // Who talks to whom from timing alone: for each 1:1 send, guess that the recipient is the
    // first other connection receiving a deliver within 50 ms; compare with the real `to`.
    let linked = 0;
    let sends = 0;
    for (const [i, f] of frames.entries()) {
      if (f.dir !== "up" || f.t !== "send") continue;
      sends++;
      const to = (JSON.parse(f.text) as { to: string }).to;
      const d = frames
        .slice(i + 1)
        .find(
          (x) => x.dir === "down" && x.t === "deliver" && x.user !== f.user && x.at - f.at < 50,
        );
      if (d?.user === to) linked++;
    }
    lines.push(
      "",
      `Timing linkage: the first other connection to get a deliver within 50 ms is the real recipient for ${linked} of ${sends} 1:1 sends.`,
    );
    if (rows) {
      const who = (p: number) => localPort.get(p) ?? (p === PORT ? "relay" : `:${p}`);
      const data = rows.filter((r) => r.len > 0);
      lines.push("", "## Packets per connection (TCP payload bytes)", "");
      lines.push("| direction | packets | payload bytes |", "|---|---|---|");
      const dirs = new Map<string, number[]>();
      const recs = new Map<string, number[]>();
      for (const r of data) {
        const k = `${who(r.srcPort)} → ${who(r.dstPort)}`;
        dirs.set(k, [...(dirs.get(k) ?? []), r.len]);
        recs.set(k, [...(recs.get(k) ?? []), ...r.records]);
      }
      for (const [k, ls] of [...dirs.entries()].sort()) {
        lines.push(`| ${k} | ${ls.length} | ${stats(ls)} |`);
      }
      lines.push("", "## TLS records per direction (record length)", "");
      lines.push("| direction | records | record bytes |", "|---|---|---|");
      for (const [k, ls] of [...recs.entries()].sort()) {
        lines.push(`| ${k} | ${ls.length} | ${stats(ls)} |`);
      }
      const compressed = wsTexts.filter((m) => m.compressed).length;
      lines.push(
        "",
        `Decrypted with the TLS keys: ${wsTexts.length} WebSocket text messages, ${compressed} of them permessage-deflate compressed; every one equals a tapped frame.`,
      );
      const tlsTypes = new Set(rows.flatMap((r) => r.tlsTypes.split(",")).filter(Boolean));
      lines.push("", `TLS record content types seen: ${[...tlsTypes].sort().join(", ")}.`);
    }
    mkdirSync(join(ROOT, "test-results"), { recursive: true });
    writeFileSync(join(ROOT, "test-results/security-capture.md"), `${lines.join("\n")}\n`);
  }

  it("padding: the observer learns only a size class, not the length", () => {
    expect(story.done).toBe(true);
    const [a, b] = dmSizes;
    // 12 and 30 characters land in the same bucket: identical frames on the wire.
    expect(a && b && a.bytes === b.bytes).toBe(true);
    // Sizes grow in steps (buckets), never one-for-one with the text.
    const distinct = new Set(dmSizes.map((d) => d.bytes));
    expect(distinct.size).toBeLessThan(dmSizes.length);
  });
});
