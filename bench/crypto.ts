/**
 * 1:1 crypto in Node: Parley's pure core (shared/core dm.ts / ratchet.ts / prekeys.ts)
 * against Signal's own library, interleaved round by round so machine drift hits both alike.
 *
 * Parley is driven through the same transitions the engine uses — envelope, content encoding,
 * padding, valibot-checked records — minus storage, just as libsignal runs on in-memory stores.
 */
import type { Content, ReceivedDmContent } from "../shared/core/content";
import {
  type DmCtx,
  type DmRecord,
  emptyDm,
  encryptDm,
  receiveDm,
  startFromBundle,
  startOnline,
} from "../shared/core/dm";
import { messagePrefix } from "../shared/core/envelope";
import {
  addOneTimePrekeys,
  initialPrekeys,
  type PrekeyState,
  publicPq,
  publicSpk,
} from "../shared/core/prekeys";
import { ratchetDecrypt, ratchetEncrypt } from "../shared/core/ratchet";
import type { Contact } from "../shared/core/trust";
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../shared/crypto";
import { toB64u } from "../shared/encoding";
import type { PqPrekey } from "../shared/protocol";
import { comparePair, type Row } from "./lib";
import { makeSignalParty, signalDecrypt, signalEncrypt, signalSetup } from "./libsignal";

export interface Side {
  name: string;
  ctx: DmCtx;
  ik: string;
  prekeys: PrekeyState;
  rec: DmRecord;
  contact: Contact | null;
}

export async function side(name: string, peer: string): Promise<Side> {
  const id = await generateIdentityKeyPair();
  const now = 1_000;
  return {
    name,
    ik: toB64u(id.publicKey),
    prekeys: await initialPrekeys(id, now, randomBytes),
    rec: emptyDm(peer),
    contact: null,
    ctx: {
      hub: "bench",
      me: { name, identityKey: id.publicKey },
      sign: (m) => ed25519Sign(id.privateKey, m),
      random: randomBytes,
      now,
    },
  };
}

function pin(s: Side, other: Side): void {
  s.contact = {
    username: other.name,
    identityKey: other.ik,
    verified: false,
    changedKey: null,
    pinnedAt: 0,
  };
}

const text = (t: string): Content => ({ t: "text", id: toB64u(randomBytes(9)), ts: 5, text: t });

async function deliver(to: Side, body: Uint8Array) {
  const r = await receiveDm(to.rec, to.contact, to.prekeys, body, to.ctx);
  to.rec = r.record;
  to.contact = r.contact;
  if (r.prekeys) to.prekeys = r.prekeys;
  return r;
}

async function send(from: Side, t: string): Promise<Uint8Array> {
  if (from.contact === null) throw new Error("no contact");
  const r = await encryptDm(from.rec, from.contact, text(t), from.ctx);
  from.rec = r.record;
  return r.body;
}

function expectText(r: { received: ReceivedDmContent[] }, t: string): void {
  const c = r.received[0];
  if (c?.t !== "text" || c.text !== t) throw new Error("bench: decrypted text differs");
}

/** Online handshake (hs_init → hs_resp → hs_confirm) plus the first message, both sides fresh. */
export async function parleyOnlineSetup(a: Side, b: Side, first: string): Promise<void> {
  a.rec = emptyDm(b.name);
  b.rec = emptyDm(a.name);
  pin(a, b);
  b.contact = null;
  const init = await startOnline(a.rec, a.contact as Contact, a.ctx);
  a.rec = init.record;
  const resp = await deliver(b, init.send[0] as Uint8Array);
  const conf = await deliver(a, resp.send[0] as Uint8Array);
  await deliver(b, conf.send[0] as Uint8Array);
  expectText(await deliver(b, await send(a, first)), first);
}

/** Bob's published PQ prekey (PROTOCOL.md §8.3.5), made once per signed prekey: like
 * libsignal's last-resort Kyber key in its bundle, it is published, not made per start. */
const pqCache = new WeakMap<Side, { spkId: number; pq: PqPrekey | null }>();
function publishedPq(b: Side): PqPrekey | null {
  const hit = pqCache.get(b);
  if (hit && hit.spkId === b.prekeys.spk.id) return hit.pq;
  const pq = publicPq(b.prekeys);
  pqCache.set(b, { spkId: b.prekeys.spk.id, pq });
  return pq;
}

/** Async start, post-quantum on both sides (PQXDH): Bob makes a one-time prekey (as libsignal's
 * harness does per bundle; the KEM key is the last-resort one in both), Alice verifies the bundle
 * and its PQ prekey, encapsulates, derives the root from four DHs and the KEM secret, sends a
 * prekey message, Bob decapsulates and decrypts it. */
export async function parleyAsyncSetup(a: Side, b: Side, first: string): Promise<void> {
  a.rec = emptyDm(b.name);
  b.rec = emptyDm(a.name);
  b.contact = null;
  const made = await addOneTimePrekeys(b.prekeys, 1, randomBytes);
  b.prekeys = made.state;
  const opk = made.upload[0] ?? null;
  const started = await startFromBundle(
    a.rec,
    null,
    {
      identityKey: b.ik,
      signedPrekey: publicSpk(b.prekeys),
      oneTimePrekey: opk,
      pqPrekey: publishedPq(b),
    },
    a.ctx,
    a.prekeys,
  );
  a.rec = started.record;
  a.contact = started.contact;
  expectText(await deliver(b, await send(a, first)), first);
  // Keep the replay cache from growing across iterations (it is bounded anyway).
  b.prekeys = { ...b.prekeys, seen: [] };
}

export interface CryptoFigures {
  rows: Row[];
  /** name → { parley, libsignal } ops/s (median over rounds). */
  pairs: Record<string, { parley: number; libsignal: number; target?: number }>;
}

export async function runCrypto(log: (s: string) => void = () => {}): Promise<CryptoFigures> {
  const pa = await side("alice", "bob");
  const pb = await side("bob", "alice");
  const sa = makeSignalParty("alice");
  const sb = makeSignalParty("bob");
  const msg100 = "x".repeat(100);
  const bytes100 = new TextEncoder().encode(msg100);
  const bytes64k = randomBytes(64 * 1024);

  // Established sessions for the message benchmarks.
  const pm = { a: await side("alice", "bob"), b: await side("bob", "alice") };
  await parleyOnlineSetup(pm.a, pm.b, "hello");
  expectText(await deliver(pm.a, await send(pm.b, "back")), "back");
  const sm = { a: makeSignalParty("alice"), b: makeSignalParty("bob") };
  await signalSetup(sm.a, sm.b, bytes100);
  await signalDecrypt(sm.a, sm.b, await signalEncrypt(sm.b, sm.a, bytes100));

  type Case = {
    name: string;
    target?: number;
    parley: () => Promise<unknown>;
    libsignal: () => Promise<unknown>;
  };
  const cases: Case[] = [
    {
      // Both post-quantum: Parley's hybrid handshake (X25519 + ML-KEM-768, §8.2.6) against
      // libsignal's PQXDH (its only session setup).
      name: "setup PQ: hybrid online handshake + 1st msg",
      target: 1.5,
      parley: () => parleyOnlineSetup(pa, pb, msg100),
      libsignal: () => signalSetup(sa, sb, bytes100),
    },
    {
      name: "setup PQ: PQXDH async start + 1st msg",
      target: 1.5,
      parley: () => parleyAsyncSetup(pa, pb, msg100),
      libsignal: () => signalSetup(sa, sb, bytes100),
    },
    {
      name: "message 100 B enc+dec (one way)",
      target: 1.5,
      parley: async () => {
        const body = await send(pm.a, msg100);
        expectText(await deliver(pm.b, body), msg100);
      },
      libsignal: async () => {
        await signalDecrypt(sm.b, sm.a, await signalEncrypt(sm.a, sm.b, bytes100));
      },
    },
    {
      // Content is capped at 16,000 characters (§8.6), so 64 KiB goes straight through the
      // ratchet (header, KDF chain, AES-GCM, AAD with the session prefix) — still the full
      // Double Ratchet step both sides take for every message.
      name: "message 64 KiB enc+dec (one way)",
      target: 1.5,
      parley: async () => {
        const sa0 = pm.a.rec.current;
        const sb0 = pm.b.rec.current;
        if (!sa0 || !sb0) throw new Error("no session");
        const prefix = messagePrefix(new Uint8Array(16));
        const out = await ratchetEncrypt(sa0.ratchet, bytes64k, prefix);
        const back = await ratchetDecrypt(
          sb0.ratchet,
          out.header,
          out.ciphertext,
          prefix,
          randomBytes,
        );
        if (back.plaintext.length !== bytes64k.length) throw new Error("64k mismatch");
        pm.a.rec = { ...pm.a.rec, current: { ...sa0, ratchet: out.state } };
        pm.b.rec = { ...pm.b.rec, current: { ...sb0, ratchet: back.state } };
      },
      libsignal: async () => {
        await signalDecrypt(sm.b, sm.a, await signalEncrypt(sm.a, sm.b, bytes64k));
      },
    },
    {
      name: "ping-pong 100 B (DH ratchet each msg)",
      target: 1.5,
      parley: async () => {
        expectText(await deliver(pm.b, await send(pm.a, msg100)), msg100);
        expectText(await deliver(pm.a, await send(pm.b, msg100)), msg100);
      },
      libsignal: async () => {
        await signalDecrypt(sm.b, sm.a, await signalEncrypt(sm.a, sm.b, bytes100));
        await signalDecrypt(sm.a, sm.b, await signalEncrypt(sm.b, sm.a, bytes100));
      },
    },
  ];

  const only = process.env.BENCH_ONLY;
  const selected = only ? cases.filter((c) => c.name.includes(only)) : cases;
  const rows: Row[] = [];
  const pairs: CryptoFigures["pairs"] = {};
  for (const c of selected) {
    const r = await comparePair(c.name, c.parley, c.libsignal);
    const p = r.a.opsPerSec;
    const l = r.b.opsPerSec;
    log(`  ${c.name}: ${p.toFixed(0)} vs ${l.toFixed(0)} ops/s`);
    pairs[c.name] = { parley: p, libsignal: l, ...(c.target ? { target: c.target } : {}) };
    rows.push({
      case: c.name,
      "parley ops/s": p,
      "libsignal ops/s": l,
      "parley/libsignal": `${r.ratio.toFixed(2)}×`,
      target: c.target ? `≥ ${c.target}×` : "",
      met: c.target ? (r.ratio >= c.target ? "yes" : "NO") : "",
    });
  }
  return { rows, pairs };
}
