/**
 * Forward secrecy, post-compromise security and nonce safety of the Double Ratchet, stated as an
 * attacker who steals a party's complete state (docs/SECURITY.md §2; PROTOCOL.md §8.4, §10.2).
 * Pure functions only: the wire tests show the ciphertexts such an attacker would hold.
 */
import { describe, expect, it } from "vitest";
import { messagePrefix } from "../../shared/core/envelope";
import {
  counterNonce,
  initInitiator,
  initResponder,
  kdfCk,
  newX25519,
  type RatchetState,
  ratchetDecrypt,
  ratchetEncrypt,
} from "../../shared/core/ratchet";
import { aesGcmDecrypt, randomBytes } from "../../shared/crypto";
import { fromB64u, lp } from "../../shared/encoding";

const PREFIX = messagePrefix(new Uint8Array(16).fill(7));
const te = new TextEncoder();
const td = new TextDecoder();

interface Wire {
  header: Uint8Array;
  ct: Uint8Array;
}

async function pair(): Promise<{ a: RatchetState; b: RatchetState }> {
  const root = randomBytes(32);
  const ad = randomBytes(40);
  const bobKey = await newX25519(randomBytes);
  const a = await initInitiator({
    rootKey: root,
    ad,
    peerRatchetKey: fromB64u(bobKey.pub),
    receiveChain: null,
    random: randomBytes,
  });
  const b = initResponder({ rootKey: root, ad, ratchetKeyPair: bobKey, sendChain: null });
  return { a, b };
}

async function send(s: RatchetState, text: string): Promise<{ s: RatchetState; w: Wire }> {
  const r = await ratchetEncrypt(s, te.encode(text), PREFIX);
  return { s: r.state, w: { header: r.header, ct: r.ciphertext } };
}

async function recv(s: RatchetState, w: Wire): Promise<{ s: RatchetState; text: string }> {
  const r = await ratchetDecrypt(s, w.header, w.ct, PREFIX, randomBytes);
  return { s: r.state, text: td.decode(r.plaintext) };
}

/** Every 32-byte value anywhere in a state: what a thief of the state holds as key material. */
function keyMaterial(s: RatchetState): Uint8Array[] {
  const out: Uint8Array[] = [];
  const walk = (x: unknown) => {
    if (typeof x === "string") {
      try {
        const b = fromB64u(x);
        if (b.length === 32) out.push(b);
      } catch {
        // not base64url
      }
    } else if (Array.isArray(x)) {
      for (const y of x) walk(y);
    } else if (typeof x === "object" && x !== null) {
      for (const y of Object.values(x)) walk(y);
    }
  };
  walk(s);
  return out;
}

describe("Double Ratchet against a state thief", () => {
  it("forward secrecy: a later full state cannot decrypt an earlier message with any key it holds", async () => {
    let { a, b } = await pair();
    // The message key of m0 as bob derives it (he has no receiving chain yet: first DH step).
    let r = await send(a, "m0: before the theft");
    a = r.s;
    const m0 = r.w;
    const got = await recv(b, m0);
    b = got.s;
    expect(got.text).toBe("m0: before the theft");
    // The conversation goes on for a few turns (DH ratchet steps both ways).
    for (let i = 0; i < 3; i++) {
      r = await send(b, `b${i}`);
      b = r.s;
      a = (await recv(a, r.w)).s;
      r = await send(a, `a${i}`);
      a = r.s;
      b = (await recv(b, r.w)).s;
    }
    // Theft of bob's complete state. The engine refuses m0 (already read) ...
    await expect(recv(b, m0)).rejects.toMatchObject({ code: "replay" });
    // ... and no key the thief holds opens m0 (each tried as the AES-GCM key with m0's nonce and
    // AAD): message keys are deleted once used, chain keys only move forward (HMAC, §8.4).
    const aad = lp("parley/v1/dr-msg", fromB64u(b.ad), PREFIX, m0.header);
    const keys = keyMaterial(b);
    expect(keys.length).toBeGreaterThan(5);
    for (const k of keys) {
      for (const candidate of [k, kdfCk(k).mk]) {
        await expect(aesGcmDecrypt(candidate, counterNonce(0), m0.ct, aad)).rejects.toThrow();
      }
    }
  });

  it("post-compromise security: after the victim's next ratchet step the thief is locked out", async () => {
    let { a, b } = await pair();
    let r = await send(a, "hello");
    a = r.s;
    b = (await recv(b, r.w)).s;
    // Theft of alice's complete state; the thief (passive, on the relay) follows every message.
    let thief: RatchetState = structuredClone(a);
    r = await send(b, "bob after the theft");
    b = r.s;
    const got = await recv(a, r.w);
    a = got.s;
    // Still within the compromised DH step: the thief reads this one — the theft was real.
    const t1 = await recv(thief, r.w);
    thief = t1.s;
    expect(t1.text).toBe("bob after the theft");
    // alice answers with a fresh ratchet key the thief never saw; bob answers that.
    r = await send(a, "alice heals");
    a = r.s;
    b = (await recv(b, r.w)).s;
    r = await send(b, "bob after the heal");
    b = r.s;
    expect((await recv(a, r.w)).text).toBe("bob after the heal");
    await expect(recv(thief, r.w)).rejects.toMatchObject({ code: "decrypt_failed" });
  });

  it("nonce safety: every message key is fresh, so (key, nonce) never repeats", async () => {
    let { a, b } = await pair();
    const used = new Set<string>();
    const hex = (x: Uint8Array) => Buffer.from(x).toString("hex");
    for (let turn = 0; turn < 6; turn++) {
      for (let i = 0; i < 20; i++) {
        const sender = turn % 2 === 0 ? a : b;
        if (sender.cks === null) throw new Error("no sending chain");
        const mk = kdfCk(fromB64u(sender.cks)).mk;
        expect(used.has(hex(mk))).toBe(false);
        used.add(hex(mk));
        const r = await send(sender, `t${turn}m${i}`);
        if (turn % 2 === 0) {
          a = r.s;
          b = (await recv(b, r.w)).s;
        } else {
          b = r.s;
          a = (await recv(a, r.w)).s;
        }
      }
    }
    expect(used.size).toBe(120);
    // The one way to reuse a (key, nonce): encrypting twice from the same stored state, e.g. two
    // engines on one store or a restored old snapshot. The same state gives the same key again —
    // which is why the engine persists before sending and refuses a stale owner (§10.2, tested in
    // scenario-restore-and-ownership.test.ts "two engines on one store ...").
    const x = await ratchetEncrypt(a, te.encode("one"), PREFIX);
    const y = await ratchetEncrypt(a, te.encode("two"), PREFIX);
    expect(x.header).toEqual(y.header);
  });
});
