/** Pure 1:1 transitions (dm.ts): online handshake, async start, tie-break, tamper, replay. */
import { describe, expect, it } from "vitest";
import type { Content, ReceivedDmContent } from "../../shared/core/content";
import {
  type DmCtx,
  type DmRecord,
  emptyDm,
  encryptDm,
  receiveDm,
  startFromBundle,
  startOnline,
} from "../../shared/core/dm";
import { isCoreError } from "../../shared/core/errors";
import {
  addOneTimePrekeys,
  initialPrekeys,
  type PrekeyState,
  publicPq,
  publicSpk,
} from "../../shared/core/prekeys";
import type { Contact } from "../../shared/core/trust";
import { ed25519Sign, generateIdentityKeyPair, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";

/** The text of the first decrypted content (receipts, §8.6, have none). */
function textOf(r: { received: ReceivedDmContent[] }): string | undefined {
  const c = r.received[0];
  return c?.t === "text" ? c.text : undefined;
}

interface Side {
  name: string;
  ctx: DmCtx;
  ik: string;
  prekeys: PrekeyState;
  rec: DmRecord;
  contact: Contact | null;
}

async function side(name: string, peer: string): Promise<Side> {
  const id = await generateIdentityKeyPair();
  const now = 1_000;
  const prekeys = (
    await addOneTimePrekeys(await initialPrekeys(id, now, randomBytes), 5, randomBytes)
  ).state;
  return {
    name,
    ik: toB64u(id.publicKey),
    prekeys,
    rec: emptyDm(peer),
    contact: null,
    ctx: {
      hub: "main",
      me: { name, identityKey: id.publicKey },
      sign: (m) => ed25519Sign(id.privateKey, m),
      random: randomBytes,
      now,
    },
  };
}

const text = (t: string): Content => ({ t: "text", id: toB64u(randomBytes(9)), ts: 5, text: t });

function deepFreeze<T>(x: T): T {
  if (x !== null && typeof x === "object" && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x as object)) deepFreeze(v);
  }
  return x;
}

/**
 * Every transition in this file runs on deep-frozen inputs (a mutation would throw) and the
 * inputs are compared with copies afterwards — also when the transition fails.
 */
async function deliver(to: Side, body: Uint8Array) {
  const before = structuredClone({ rec: to.rec, contact: to.contact, prekeys: to.prekeys });
  const rec = deepFreeze(to.rec);
  const contact = deepFreeze(to.contact);
  const prekeys = deepFreeze(to.prekeys);
  try {
    const r = await receiveDm(rec, contact, prekeys, body, to.ctx);
    to.rec = r.record;
    to.contact = r.contact;
    if (r.prekeys) to.prekeys = r.prekeys;
    return r;
  } finally {
    expect({ rec, contact, prekeys }).toEqual(before);
  }
}

async function send(from: Side, t: string) {
  if (!from.contact) throw new Error("no contact");
  const r = await encryptDm(deepFreeze(from.rec), deepFreeze(from.contact), text(t), from.ctx);
  from.rec = r.record;
  return r.body;
}

function pin(s: Side, other: Side) {
  s.contact = {
    username: other.name,
    identityKey: other.ik,
    verified: false,
    changedKey: null,
    pinnedAt: 0,
  };
}

describe("dm online handshake", () => {
  it("agrees keys, confirms both ways, and chats both ways", async () => {
    const a = await side("alice", "bob");
    const b = await side("bob", "alice");
    pin(a, b);
    const init = await startOnline(a.rec, a.contact as Contact, a.ctx);
    a.rec = init.record;
    const resp = await deliver(b, init.send[0] as Uint8Array);
    expect(b.contact?.identityKey).toBe(a.ik);
    const conf = await deliver(a, resp.send[0] as Uint8Array);
    expect(a.rec.current?.confirmed).toBe(true);
    const done = await deliver(b, conf.send[0] as Uint8Array);
    expect(done.notes[0]).toMatchObject({ kind: "session_started", role: "responder" });
    // bob speaks first on the handshake's responder chain, then alice, then both several times
    const m1 = await send(b, "hi alice");
    expect(textOf(await deliver(a, m1))).toBe("hi alice");
    for (let i = 0; i < 3; i++) {
      const x = await send(a, `a${i}`);
      expect(textOf(await deliver(b, x))).toBe(`a${i}`);
      const y = await send(b, `b${i}`);
      expect(textOf(await deliver(a, y))).toBe(`b${i}`);
    }
  });
});

describe("dm async start", () => {
  it("starts from a bundle; replay and tamper are rejected without state change", async () => {
    const a = await side("alice", "bob");
    const b = await side("bob", "alice");
    const opk = b.prekeys.opks[0];
    const bundle = {
      identityKey: b.ik,
      signedPrekey: publicSpk(b.prekeys),
      oneTimePrekey: opk ? { id: opk.id, key: opk.pub } : null,
      pqPrekey: publicPq(b.prekeys),
    };
    const st = await startFromBundle(a.rec, null, bundle, a.ctx, a.prekeys);
    expect(st.record.current?.pq).toBe(true);
    a.rec = st.record;
    a.contact = st.contact;
    const first = await send(a, "first");
    const second = await send(a, "second");
    // deliver second first (out of order), both prekey envelopes
    expect(textOf(await deliver(b, second))).toBe("second");
    expect(textOf(await deliver(b, first))).toBe("first");
    expect(b.prekeys.opks.find((o) => o.id === opk?.id)).toBeUndefined();
    const before = structuredClone(b.rec);
    await expect(deliver(b, first)).rejects.toSatisfy((e) => isCoreError(e, "replay"));
    expect(b.rec).toEqual(before);
    const reply = await send(b, "reply");
    expect(textOf(await deliver(a, reply))).toBe("reply");
    expect(a.rec.current?.prekey).toBeNull();
    const m = await send(a, "after");
    for (const i of [3, 20, m.length - 20, m.length - 1]) {
      const t = m.slice();
      t[i] = (t[i] as number) ^ 1;
      const before = structuredClone(b.rec);
      await expect(deliver(b, t)).rejects.toSatisfy((e) => isCoreError(e));
      expect(b.rec).toEqual(before);
    }
    expect(textOf(await deliver(b, m))).toBe("after");
  });
});
