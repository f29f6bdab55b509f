/**
 * The post-quantum asynchronous start (PROTOCOL.md §8.3.5; SECURITY.md "Post-quantum"): what a
 * thief of the medium-term prekeys, a future quantum computer, and a relay that strips keys can
 * and cannot do. Pure transitions (dm.ts), no relay.
 */
import { describe, expect, it } from "vitest";
import type { Content, ReceivedDmContent } from "../../shared/core/content";
import {
  type Bundle,
  type DmCtx,
  type DmRecord,
  emptyDm,
  encryptDm,
  receiveDm,
  startFromBundle,
  startOnline,
} from "../../shared/core/dm";
import { decodeEnvelope, ENV, encodeHsInit } from "../../shared/core/envelope";
import { isCoreError } from "../../shared/core/errors";
import { initTranscript, pqxdhRoot, pqxdhTranscript, sessionAd } from "../../shared/core/handshake";
import {
  addOneTimeKemPrekeys,
  addOneTimePrekeys,
  findPqPrekeys,
  initialPrekeys,
  type PrekeyState,
  publicPq,
  publicSpk,
  spkMessage,
} from "../../shared/core/prekeys";
import {
  initResponder,
  KEM_STEP_EVERY,
  newX25519,
  ratchetDecrypt,
} from "../../shared/core/ratchet";
import type { Contact } from "../../shared/core/trust";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  type IdentityKeyPair,
  mlkemCached,
  mlkemDecapsulateSeed,
  mlkemPublicKey,
  randomBytes,
  x25519,
} from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";

interface Side {
  id: IdentityKeyPair;
  ik: string;
  ctx: DmCtx;
  prekeys: PrekeyState;
}

async function side(name: string): Promise<Side> {
  const id = await generateIdentityKeyPair();
  let prekeys = (
    await addOneTimePrekeys(await initialPrekeys(id, 1_000, randomBytes), 3, randomBytes)
  ).state;
  prekeys = (await addOneTimeKemPrekeys(prekeys, 3, id, randomBytes)).state;
  return {
    id,
    ik: toB64u(id.publicKey),
    prekeys,
    ctx: {
      hub: "main",
      me: { name, identityKey: id.publicKey },
      sign: (m) => ed25519Sign(id.privateKey, m),
      random: randomBytes,
      now: 1_000,
    },
  };
}

const text = (t: string): Content => ({ t: "text", id: toB64u(randomBytes(9)), ts: 5, text: t });
const textOf = (r: { received: ReceivedDmContent[] }) => {
  const c = r.received[0];
  return c?.t === "text" ? c.text : undefined;
};

/** Bob's bundle as an honest relay hands it out, with what a hostile one withholds left out. */
async function bundleOf(
  b: Side,
  o: { opk?: boolean; kemOpk?: boolean; pq?: boolean } = {},
): Promise<Bundle> {
  const opk = b.prekeys.opks[0];
  const kem = o.kemOpk ? await addOneTimeKemPrekeys(b.prekeys, 1, b.id, randomBytes) : null;
  if (kem) b.prekeys = kem.state;
  return {
    identityKey: b.ik,
    signedPrekey: publicSpk(b.prekeys),
    oneTimePrekey: o.opk && opk ? { id: opk.id, key: opk.pub } : null,
    pqPrekey: o.pq === false ? null : publicPq(b.prekeys),
    oneTimeKemPrekey: kem?.upload[0] ?? null,
  };
}

/** Alice starts from `bundle` and writes one first-flight message. */
async function firstFlight(a: Side, bundle: Bundle, words = "the first flight") {
  const st = await startFromBundle(emptyDm("bob"), null, bundle, a.ctx, a.prekeys);
  const contact = st.contact as Contact;
  const out = await encryptDm(st.record, contact, text(words), a.ctx);
  return { record: out.record, contact, body: out.body, notes: st.notes };
}

const open = (b: Side, prekeys: PrekeyState, body: Uint8Array, rec: DmRecord = emptyDm("alice")) =>
  receiveDm(rec, null, prekeys, body, b.ctx);

describe("PQXDH start (§8.3.5)", () => {
  it("agrees a post-quantum session; the one-time KEM prekey opens once", async () => {
    const a = await side("alice");
    const b = await side("bob");
    const flight = await firstFlight(a, await bundleOf(b, { opk: true, kemOpk: true }));
    expect(flight.record.current?.pq).toBe(true);
    expect(flight.notes).toContainEqual({
      kind: "session_started",
      role: "initiator",
      mode: "async",
      pq: true,
    });
    const got = await open(b, b.prekeys, flight.body);
    expect(textOf(got)).toBe("the first flight");
    expect(got.record.current?.pq).toBe(true);
    const after = got.prekeys as PrekeyState;
    // Both one-time keys are deleted with the first decryption; the replay is refused.
    expect(after.kopks?.length).toBe((b.prekeys.kopks?.length ?? 0) - 1);
    await expect(open(b, after, flight.body)).rejects.toSatisfy((e) => isCoreError(e, "replay"));
    // A reply on the session works both ways.
    const reply = await encryptDm(got.record, got.contact, text("reply"), b.ctx);
    const back = await receiveDm(flight.record, flight.contact, null, reply.body, a.ctx);
    expect(textOf(back)).toBe("reply");
  });

  it("a stolen signed prekey (and last-resort KEM key) with one-time keys withheld reads nothing", async () => {
    const a = await side("alice");
    const b = await side("bob");
    // The hostile relay withholds both one-time prekeys; the thief holds bob's SPK secret and
    // last-resort KEM seed — everything but the identity-DH key.
    const flight = await firstFlight(a, await bundleOf(b, { opk: false, kemOpk: false }));
    // (The thief knows the public identity-DH key, as everyone does, but not its secret.)
    const idh = { pub: b.prekeys.idh?.pub ?? "", priv: (await newX25519(randomBytes)).priv };
    const thief: PrekeyState = { ...b.prekeys, idh };
    await expect(open(b, thief, flight.body)).rejects.toSatisfy((e) =>
      isCoreError(e, "decrypt_failed"),
    );
    // Bob himself reads it: the failure is the missing identity-DH secret, nothing else.
    expect(textOf(await open(b, b.prekeys, flight.body))).toBe("the first flight");
  });

  it("classical contrast: before the identity DH, the same stolen SPK read the first flight", async () => {
    const a = await side("alice");
    const b = await side("bob");
    // A v1 (classical) signed prekey of bob: no identity DH, no KEM.
    const spkKey = fromB64u(b.prekeys.spk.pub);
    const v1: Bundle = {
      identityKey: b.ik,
      signedPrekey: {
        id: b.prekeys.spk.id,
        key: b.prekeys.spk.pub,
        sig: toB64u(await ed25519Sign(b.id.privateKey, spkMessage(b.prekeys.spk.id, spkKey))),
      },
      oneTimePrekey: null,
    };
    const flight = await firstFlight(a, v1);
    const thief: PrekeyState = { ...b.prekeys, idh: await newX25519(randomBytes) };
    expect(textOf(await open(b, thief, flight.body))).toBe("the first flight");
  });

  it("harvest now, decrypt later: every X25519 secret of bob without the KEM secret reads nothing", async () => {
    const a = await side("alice");
    const b = await side("bob");
    for (const kemOpk of [false, true]) {
      const flight = await firstFlight(a, await bundleOf(b, { opk: true, kemOpk }));
      // A quantum adversary recovers every X25519 secret (SPK, identity DH, OPK) from the public
      // keys, and has every public value; it cannot recover an ML-KEM secret, so its best guess
      // for the KEM shared secret is wrong. It runs bob's derivation with everything else right.
      const env = decodeEnvelope(flight.body);
      if (env.type !== "prekey" || env.pq === null) throw new Error("a prekey_pq envelope");
      const used = findPqPrekeys(b.prekeys, env.spkId, env.opkId, env.pq.kemOpkId, env.ekA);
      const spkPriv = fromB64u(used.spk.priv);
      const transcript = pqxdhTranscript(
        "main",
        { name: "alice", identityKey: env.ikA },
        env.pq.idhA,
        b.ctx.me,
        {
          spkId: env.spkId,
          spk: fromB64u(used.spk.pub),
          opk:
            used.opk && env.opkId !== null ? { id: env.opkId, key: fromB64u(used.opk.pub) } : null,
          idh: fromB64u(used.idh.pub),
          kem: { oneTimeId: env.pq.kemOpkId, key: mlkemPublicKey(fromB64u(used.kemSeed)) },
        },
        env.ekA,
        env.pq.kemCt,
      );
      const dhs = {
        dh1: await x25519(spkPriv, env.pq.idhA),
        dh2: await x25519(fromB64u(used.idh.priv), env.ekA),
        dh3: await x25519(spkPriv, env.ekA),
        dh4: used.opk ? await x25519(fromB64u(used.opk.priv), env.ekA) : null,
      };
      const decrypt = (ss: Uint8Array) =>
        ratchetDecrypt(
          initResponder({
            rootKey: pqxdhRoot(dhs, ss, transcript, env.sigA),
            ad: sessionAd("main", { name: "alice", identityKey: env.ikA }, b.ctx.me),
            ratchetKeyPair: { pub: used.spk.pub, priv: used.spk.priv },
            sendChain: null,
          }),
          env.header,
          env.ciphertext,
          env.prefix,
          randomBytes,
        );
      await expect(decrypt(randomBytes(32))).rejects.toSatisfy((e) =>
        isCoreError(e, "decrypt_failed"),
      );
      // The same derivation with the real KEM secret opens it: the KEM secret is what was missing.
      const ss = mlkemDecapsulateSeed(env.pq.kemCt, fromB64u(used.kemSeed));
      expect((await decrypt(ss)).plaintext.length).toBeGreaterThan(0);
    }
  });
});

describe("versions and downgrade (§8.3.5)", () => {
  it("a relay stripping the PQ prekey of a v2 peer is refused: no session, nothing to send", async () => {
    const a = await side("alice");
    const b = await side("bob");
    const stripped = await bundleOf(b, { opk: true, pq: false });
    await expect(
      startFromBundle(emptyDm("bob"), null, stripped, a.ctx, a.prekeys),
    ).rejects.toSatisfy((e) => isCoreError(e, "downgrade"));
    const { pqPrekey: _, ...absent } = stripped;
    await expect(startFromBundle(emptyDm("bob"), null, absent, a.ctx, a.prekeys)).rejects.toSatisfy(
      (e) => isCoreError(e, "downgrade"),
    );
    // Re-signing the SPK under the v1 label needs bob's identity key: the relay cannot.
    const honest = await bundleOf(b);
    const pq = honest.pqPrekey;
    if (!pq) throw new Error("bob publishes a PQ prekey");
    // A PQ prekey of another SPK, or one whose signature does not verify, is refused too.
    await expect(
      startFromBundle(
        emptyDm("bob"),
        null,
        { ...honest, pqPrekey: { ...pq, spkId: pq.spkId ^ 1 } },
        a.ctx,
        a.prekeys,
      ),
    ).rejects.toSatisfy((e) => isCoreError(e, "downgrade"));
    const other = toB64u(fromB64u(pq.kem).map((x, i) => (i === 0 ? x ^ 1 : x)));
    await expect(
      startFromBundle(
        emptyDm("bob"),
        null,
        { ...honest, pqPrekey: { ...pq, kem: other } },
        a.ctx,
        a.prekeys,
      ),
    ).rejects.toSatisfy((e) => isCoreError(e, "bad_signature"));
    const kemOpk = (await bundleOf(b, { kemOpk: true })).oneTimeKemPrekey;
    if (!kemOpk) throw new Error("a one-time KEM prekey");
    await expect(
      startFromBundle(
        emptyDm("bob"),
        null,
        { ...honest, oneTimeKemPrekey: { ...kemOpk, key: other } },
        a.ctx,
        a.prekeys,
      ),
    ).rejects.toSatisfy((e) => isCoreError(e, "bad_signature"));
  });

  it("a classical (v1) peer: the session is made and marked not post-quantum on both sides", async () => {
    const a = await side("alice");
    const b = await side("bob");
    const spkKey = fromB64u(b.prekeys.spk.pub);
    const v1: Bundle = {
      identityKey: b.ik,
      signedPrekey: {
        id: b.prekeys.spk.id,
        key: b.prekeys.spk.pub,
        sig: toB64u(await ed25519Sign(b.id.privateKey, spkMessage(b.prekeys.spk.id, spkKey))),
      },
      oneTimePrekey: null,
    };
    const flight = await firstFlight(a, v1);
    expect(flight.record.current?.pq).toBe(false);
    expect(flight.notes).toContainEqual({
      kind: "session_started",
      role: "initiator",
      mode: "async",
      pq: false,
    });
    const got = await open(b, b.prekeys, flight.body);
    expect(got.record.current?.pq).toBe(false);
    expect(got.notes).toContainEqual({
      kind: "session_started",
      role: "responder",
      mode: "async",
      pq: false,
    });
  });
});

describe("hybrid online handshake (§8.2.6)", () => {
  const contactOf = (s: Side, name: string): Contact => ({
    username: name,
    identityKey: s.ik,
    verified: false,
    changedKey: null,
    pinnedAt: 0,
  });

  it("carries an ML-KEM encapsulation: both sides post-quantum; the ciphertext is signed", async () => {
    const a = await side("alice");
    const b = await side("bob");
    const init = await startOnline(emptyDm("bob"), contactOf(b, "bob"), a.ctx);
    const initBody = init.send[0] as Uint8Array;
    expect(initBody[1]).toBe(ENV.hsInitPq);
    const resp = await receiveDm(emptyDm("alice"), null, null, initBody, b.ctx);
    const respBody = resp.send[0] as Uint8Array;
    expect(respBody[1]).toBe(ENV.hsRespPq);
    // A relay altering the KEM ciphertext breaks the responder's signature over it.
    const bad = respBody.slice();
    bad[2 + 64 + 10] = (bad[2 + 64 + 10] as number) ^ 1;
    await expect(receiveDm(init.record, init.contact, null, bad, a.ctx)).rejects.toSatisfy((e) =>
      isCoreError(e, "bad_signature"),
    );
    const conf = await receiveDm(init.record, init.contact, null, respBody, a.ctx);
    expect(conf.record.current?.pq).toBe(true);
    expect(conf.notes).toContainEqual({
      kind: "session_started",
      role: "initiator",
      mode: "online",
      pq: true,
    });
    const done = await receiveDm(
      resp.record,
      resp.contact,
      null,
      conf.send[0] as Uint8Array,
      b.ctx,
    );
    expect(done.record.current?.pq).toBe(true);
    const m = await encryptDm(done.record, done.contact, text("hybrid"), b.ctx);
    expect(textOf(await receiveDm(conf.record, conf.contact, null, m.body, a.ctx))).toBe("hybrid");
  });

  it("a classical init (older peer) is answered classically and marked not post-quantum", async () => {
    const a = await side("alice");
    const b = await side("bob");
    const ephA = await newX25519(randomBytes);
    const eph = fromB64u(ephA.pub);
    const peerB = { name: "bob", identityKey: b.id.publicKey };
    const sigA = await a.ctx.sign(initTranscript("main", a.ctx.me, peerB, eph));
    const body = encodeHsInit({ ikA: a.id.publicKey, ikB: b.id.publicKey, ephA: eph, sigA });
    const resp = await receiveDm(emptyDm("alice"), null, null, body, b.ctx);
    expect((resp.send[0] as Uint8Array)[1]).toBe(ENV.hsResp);
    const p = resp.record.pending;
    expect(p?.kind === "responding" && p.session.pq).toBe(false);
    // ...and a classical response to our hybrid init is refused, never accepted as classical.
    const init = await startOnline(emptyDm("bob"), contactOf(b, "bob"), a.ctx);
    const hybrid = init.send[0] as Uint8Array;
    const env = decodeEnvelope(hybrid);
    if (env.type !== "hs_init") throw new Error("an init");
    const classical = await receiveDm(
      emptyDm("alice"),
      null,
      null,
      encodeHsInit({ ...env, kemPk: null }),
      b.ctx,
    ).catch((e) => e);
    // Stripping the KEM key from the init breaks alice's signature: bob answers nothing.
    expect(isCoreError(classical, "bad_signature")).toBe(true);
  });
});

describe("sparse KEM step in the Double Ratchet (§8.4.1)", () => {
  it("every KEM_STEP_EVERY-th chain sends a KEM key, answered on the next; healing needs that secret", async () => {
    const a = await side("alice");
    const b = await side("bob");
    const f = await firstFlight(a, await bundleOf(b, { opk: true, kemOpk: true }));
    const got = await open(b, b.prekeys, f.body);
    let ra = { record: f.record, contact: f.contact };
    let rb = { record: got.record, contact: got.contact };
    const types: number[] = [];
    let healed = false;
    for (let i = 0; i < 3 * KEM_STEP_EVERY && !healed; i++) {
      // bob → alice, then alice → bob: one round trip, two new sending chains.
      const mb = await encryptDm(rb.record, rb.contact, text(`b${i}`), b.ctx);
      rb = { ...rb, record: mb.record };
      types.push(mb.body[1] as number);
      const env = decodeEnvelope(mb.body);
      if (env.type === "message" && env.kem?.ct && ra.record.current) {
        // A quantum thief holds alice's whole state now — root key, every X25519 secret — but
        // not the KEM seed alice made after the theft. It cannot open bob's answer to it.
        const r = ra.record.current.ratchet;
        const stolen = { ...r, kem: r.kem ? { ...r.kem, own: toB64u(randomBytes(64)) } : r.kem };
        await expect(
          ratchetDecrypt(stolen, env.header, env.ciphertext, env.prefix, randomBytes, env.kem),
        ).rejects.toSatisfy((e) => isCoreError(e, "decrypt_failed"));
        healed = true;
      }
      const da = await receiveDm(ra.record, ra.contact, null, mb.body, a.ctx);
      expect(textOf(da)).toBe(`b${i}`);
      ra = { record: da.record, contact: da.contact };
      const ma = await encryptDm(ra.record, ra.contact, text(`a${i}`), a.ctx);
      ra = { ...ra, record: ma.record };
      types.push(ma.body[1] as number);
      const db = await receiveDm(rb.record, rb.contact, null, ma.body, b.ctx);
      expect(textOf(db)).toBe(`a${i}`);
      rb = { record: db.record, contact: db.contact };
    }
    expect(healed).toBe(true);
    // Sparse: most messages are plain `message` envelopes.
    expect(types.filter((t) => t === ENV.messageKem).length).toBeLessThan(types.length / 2);
    expect(types).toContain(ENV.message);
  });

  it("classical contrast: without the KEM step the same thief follows the conversation", async () => {
    const a = await side("alice");
    const b = await side("bob");
    const spkKey = fromB64u(b.prekeys.spk.pub);
    const v1: Bundle = {
      identityKey: b.ik,
      signedPrekey: {
        id: b.prekeys.spk.id,
        key: b.prekeys.spk.pub,
        sig: toB64u(await ed25519Sign(b.id.privateKey, spkMessage(b.prekeys.spk.id, spkKey))),
      },
      oneTimePrekey: null,
    };
    const f = await firstFlight(a, v1);
    const got = await open(b, b.prekeys, f.body);
    const mb = await encryptDm(got.record, got.contact, text("reply"), b.ctx);
    const env = decodeEnvelope(mb.body);
    const r = f.record.current?.ratchet;
    if (env.type !== "message" || !r) throw new Error("a message");
    expect(r.kem).toBeUndefined();
    const out = await ratchetDecrypt(r, env.header, env.ciphertext, env.prefix, randomBytes);
    expect(out.plaintext.length).toBeGreaterThan(0);
  });
});

describe("deleted KEM secrets leave the expansion cache (PROTOCOL.md §3.11)", () => {
  it("the handshake's KEM key once answered, a used one-time KEM prekey, an answered ratchet KEM key", async () => {
    const a = await side("alice");
    const b = await side("bob");
    // Online handshake: alice's KEM seed is expanded for hs_init and kept until the answer.
    const bobContact: Contact = {
      username: "bob",
      identityKey: b.ik,
      verified: false,
      changedKey: null,
      pinnedAt: 0,
    };
    const init = await startOnline(emptyDm("bob"), bobContact, a.ctx);
    const pending = init.record.pending;
    if (pending?.kind !== "initiating" || pending.kem === undefined) throw new Error("no hs kem");
    const hsSeed = fromB64u(pending.kem);
    expect(mlkemCached(hsSeed)).toBe(true);
    const resp = await receiveDm(emptyDm("alice"), null, null, init.send[0] as Uint8Array, b.ctx);
    const done = await receiveDm(init.record, bobContact, null, resp.send[0] as Uint8Array, a.ctx);
    expect(done.record.current?.pq).toBe(true);
    expect(mlkemCached(hsSeed)).toBe(false);

    // Asynchronous start on a one-time KEM prekey: bob deletes its seed, and its expansion.
    const f = await firstFlight(a, await bundleOf(b, { opk: true, kemOpk: true }));
    const used = b.prekeys.kopks?.at(-1);
    if (used === undefined) throw new Error("no one-time KEM prekey");
    const got = await open(b, b.prekeys, f.body);
    expect(got.prekeys?.kopks?.some((k) => k.id === used.id)).toBe(false);
    expect(mlkemCached(fromB64u(used.seed))).toBe(false);

    // Ratchet KEM step: each side's KEM key, once its ciphertext is in, is gone from the cache.
    let ra = { record: f.record, contact: f.contact };
    let rb = { record: got.record, contact: got.contact };
    const answered: Uint8Array[] = [];
    for (let i = 0; i < 2 * KEM_STEP_EVERY + 2; i++) {
      const ownA = ra.record.current?.ratchet.kem?.own ?? null;
      const mb = await encryptDm(rb.record, rb.contact, text(`b${i}`), b.ctx);
      rb = { ...rb, record: mb.record };
      const da = await receiveDm(ra.record, ra.contact, null, mb.body, a.ctx);
      ra = { record: da.record, contact: da.contact };
      if (ownA !== null && ra.record.current?.ratchet.kem?.own !== ownA)
        answered.push(fromB64u(ownA));
      const ma = await encryptDm(ra.record, ra.contact, text(`a${i}`), a.ctx);
      ra = { ...ra, record: ma.record };
      const db = await receiveDm(rb.record, rb.contact, null, ma.body, b.ctx);
      rb = { record: db.record, contact: db.contact };
    }
    expect(answered.length).toBeGreaterThan(0);
    for (const seed of answered) expect(mlkemCached(seed)).toBe(false);
  });
});
