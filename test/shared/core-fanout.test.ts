/**
 * Fan-out of 1:1 messages over devices (PROTOCOL.md §4.9): the targets of one message (only the
 * signed lists count, so a relay can neither add a device nor make one disappear), the `sync`
 * wrapper, the receiving device's classification, dedupe by (author, id) and the one timeline
 * order every device converges to.
 */
import { describe, expect, it } from "vitest";
import type { DmContent } from "../../shared/core/content";
import {
  applyDeviceList,
  deviceListVerifies,
  nextDeviceList,
  type PinnedDevices,
  signDeviceList,
} from "../../shared/core/devices";
import { type DmCtx, type DmRecord, emptyDm, encryptDm, receiveDm } from "../../shared/core/dm";
import { startFromBundle } from "../../shared/core/dm-start";
import { isCoreError } from "../../shared/core/errors";
import {
  classifyIncoming,
  compareTimeline,
  type DeviceContent,
  decodeDeviceContent,
  encodeSync,
  fanoutTargets,
  isSynced,
  MAX_SEEN_IDS,
  markSeen,
  type SeenIds,
  type TimelineKey,
  timelineIndex,
} from "../../shared/core/fanout";
import { pad } from "../../shared/core/padding";
import {
  addOneTimePrekeys,
  initialPrekeys,
  type PrekeyState,
  publicPq,
  publicSpk,
} from "../../shared/core/prekeys";
import type { Contact } from "../../shared/core/trust";
import {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  generateIdentityKeyPair,
  randomBytes,
  sha256,
} from "../../shared/crypto";
import { toB64u, utf8 } from "../../shared/encoding";
import type { DeviceEntry, DeviceList } from "../../shared/protocol";

const L = (label: string) => sha256(utf8(label));
const id16 = (label: string) => toB64u(L(label).slice(0, 16));

interface Identity {
  name: string;
  ik: CryptoKeyPair & { publicKey: Uint8Array };
  ikB64: string;
  devices: DeviceEntry[];
}

async function identity(name: string, deviceNames: string[]): Promise<Identity> {
  const ik = (await ed25519KeyPairFromSeed(L(`${name}-ik`))) as Identity["ik"];
  const devices: DeviceEntry[] = [];
  for (const d of deviceNames) {
    const dk = await ed25519KeyPairFromSeed(L(`${name}-${d}-key`));
    devices.push({ id: id16(`${name}-${d}`), key: toB64u(dk.publicKey), name: d, addedAt: 1 });
  }
  return { name, ik, ikB64: toB64u(ik.publicKey), devices };
}

async function sign(who: Identity, list: Omit<DeviceList, "sig">): Promise<DeviceList> {
  return signDeviceList(list, (m) => ed25519Sign(who.ik.privateKey, m));
}

/** Accept `list` on top of `pinned` exactly as a client does (§4.6). */
async function accept(who: Identity, pinned: PinnedDevices | null, list: DeviceList) {
  const d = applyDeviceList({
    identityKey: who.ikB64,
    pinned,
    list,
    verified: await deviceListVerifies(list),
  });
  if (d.kind !== "accepted") throw new Error(`list not accepted: ${JSON.stringify(d)}`);
  return d.pinned;
}

async function pinnedOf(who: Identity): Promise<PinnedDevices> {
  const list = await sign(who, {
    identityKey: who.ikB64,
    version: 1,
    devices: who.devices,
    removed: [],
  });
  return accept(who, null, list);
}

const entry = (who: Identity, name: string): DeviceEntry => {
  const d = who.devices.find((e) => e.name === name);
  if (d === undefined) throw new Error(name);
  return d;
};
const dev = (who: Identity, name: string): string => entry(who, name).id;

const text = (id: string, ts: number) => ({ t: "text" as const, id, ts, text: `hi ${id}` });
const plain = (c: unknown): DeviceContent => decodeDeviceContent(pad(utf8(JSON.stringify(c))));

describe("fan-out targets (§4.9)", () => {
  it("sends to every device on the peer's list and to every other device on our own", async () => {
    const alice = await identity("alice", ["laptop", "phone"]);
    const bob = await identity("bob", ["laptop", "phone"]);
    const plan = fanoutTargets({
      me: "alice",
      myDevice: dev(alice, "laptop"),
      ownList: await pinnedOf(alice),
      peer: "bob",
      peerList: await pinnedOf(bob),
    });
    expect(plan.ok).toBe(true);
    if (!plan.ok) return;
    const bobIds = (await pinnedOf(bob)).list.devices.map((d) => d.id);
    expect(plan.targets).toEqual([
      ...bobIds.map((device) => ({ to: "bob", device, role: "peer" })),
      { to: "alice", device: dev(alice, "phone"), role: "own" },
    ]);
  });

  it("a contact without a list gets one send to its current device; no own copies without our list", async () => {
    const plan = fanoutTargets({
      me: "alice",
      myDevice: id16("x"),
      ownList: null,
      peer: "carol",
      peerList: null,
    });
    expect(plan).toEqual({ ok: true, targets: [{ to: "carol", role: "peer" }] });
  });

  it("a device missing from our own accepted list sends nothing", async () => {
    const alice = await identity("alice", ["laptop", "phone"]);
    const plan = fanoutTargets({
      me: "alice",
      myDevice: id16("alice-stranger"),
      ownList: await pinnedOf(alice),
      peer: "bob",
      peerList: null,
    });
    expect(plan).toEqual({ ok: false, reason: "removed" });
  });

  it("stops encrypting to a device once a list revoking it is accepted", async () => {
    const alice = await identity("alice", ["laptop"]);
    const bob = await identity("bob", ["laptop", "phone"]);
    const v1 = await pinnedOf(bob);
    const v2list = await sign(bob, nextDeviceList(v1.list, { remove: [dev(bob, "phone")] }));
    const v2 = await accept(bob, v1, v2list);
    const plan = fanoutTargets({
      me: "alice",
      myDevice: dev(alice, "laptop"),
      ownList: await pinnedOf(alice),
      peer: "bob",
      peerList: v2,
    });
    expect(plan.ok && plan.targets.map((t) => t.device)).toEqual([dev(bob, "laptop")]);
    // And the relay serving the old list again cannot bring the phone back: it is a rollback.
    expect(
      applyDeviceList({
        identityKey: bob.ikB64,
        pinned: v2,
        list: v1.list,
        verified: await deviceListVerifies(v1.list),
      }),
    ).toEqual({ kind: "refused", reason: "rollback" });
  });

  it("a device the relay invents gets nothing: a forged list is refused, the accepted one rules", async () => {
    const bob = await identity("bob", ["laptop"]);
    const mallory = await identity("mallory", ["evil"]);
    const v1 = await pinnedOf(bob);
    // The relay adds its own device to Bob's list and signs with its own key.
    const forged = await sign(
      mallory,
      nextDeviceList(v1.list, { add: [{ ...entry(mallory, "evil"), name: "bob's tablet" }] }),
    );
    const d = applyDeviceList({
      identityKey: bob.ikB64,
      pinned: v1,
      list: { ...forged, identityKey: bob.ikB64 },
      verified: await deviceListVerifies({ ...forged, identityKey: bob.ikB64 }),
    });
    expect(d).toEqual({ kind: "refused", reason: "signature" });
    const plan = fanoutTargets({
      me: "alice",
      myDevice: id16("a"),
      ownList: null,
      peer: "bob",
      peerList: v1,
    });
    expect(plan.ok && plan.targets).toEqual([
      { to: "bob", device: dev(bob, "laptop"), role: "peer" },
    ]);
  });
});

describe("sync content (§4.9)", () => {
  it("round-trips a sent text and a read state, and refuses what is never copied", () => {
    const sync = { t: "sync" as const, peer: "bob", c: text("m1", 5) };
    expect(decodeDeviceContent(encodeSync(sync))).toEqual({ kind: "sync", sync });
    const read = { t: "sync" as const, peer: "bob", c: { t: "read" as const, ids: ["m9"] } };
    expect(decodeDeviceContent(encodeSync(read))).toEqual({ kind: "sync", sync: read });
    const never: DmContent[] = [
      { t: "typing", on: true },
      { t: "receipt", ids: ["m1"] },
      { t: "retry" },
    ];
    for (const c of never) {
      expect(isSynced(c)).toBe(false);
      expect(() => encodeSync({ t: "sync", peer: "bob", c } as never)).toThrow();
      expect(() =>
        decodeDeviceContent(pad(utf8(JSON.stringify({ t: "sync", peer: "bob", c })))),
      ).toThrow(/malformed/);
    }
    expect(isSynced(text("m1", 1))).toBe(true);
  });

  it("refuses a sync with extra keys, a bad peer name or a nested sync", () => {
    for (const bad of [
      { t: "sync", peer: "bob", c: text("m1", 1), extra: 1 },
      { t: "sync", peer: "Bob!", c: text("m1", 1) },
      { t: "sync", peer: "bob", c: { t: "sync", peer: "carol", c: text("m1", 1) } },
      { t: "sync", c: text("m1", 1) },
    ])
      expect(() => decodeDeviceContent(pad(utf8(JSON.stringify(bad))))).toThrow(/malformed/);
  });

  it("leaves any other content to the usual DM parse", () => {
    expect(plain(text("m1", 1))).toEqual({ kind: "dm", content: text("m1", 1) });
  });
});

describe("classifying what a device decrypted (§4.9)", () => {
  it("a contact's message from a listed device lands in the contact's conversation", async () => {
    const alice = await identity("alice", ["laptop", "phone"]);
    const bob = await identity("bob", ["laptop", "phone"]);
    expect(
      classifyIncoming({
        me: "alice",
        myDevice: dev(alice, "laptop"),
        from: "bob",
        fromDevice: dev(bob, "phone"),
        fromList: await pinnedOf(bob),
        decoded: plain(text("m1", 1)),
      }),
    ).toEqual({ ok: true, conversation: "bob", author: "bob", content: text("m1", 1) });
  });

  it("a sent-sync copy from our other device lands in the peer's conversation as ours", async () => {
    const alice = await identity("alice", ["laptop", "phone"]);
    const sync = { t: "sync" as const, peer: "bob", c: text("m1", 1) };
    expect(
      classifyIncoming({
        me: "alice",
        myDevice: dev(alice, "laptop"),
        from: "alice",
        fromDevice: dev(alice, "phone"),
        fromList: await pinnedOf(alice),
        decoded: decodeDeviceContent(encodeSync(sync)),
      }),
    ).toEqual({ ok: true, conversation: "bob", author: "alice", content: text("m1", 1) });
  });

  it("a group's read state from our other device lands in the group; nothing else may claim a group", async () => {
    const alice = await identity("alice", ["laptop", "phone"]);
    const own = await pinnedOf(alice);
    const read = { t: "read" as const, ids: ["m1"] };
    const from = (sync: Parameters<typeof encodeSync>[0], fromDevice = dev(alice, "phone")) =>
      classifyIncoming({
        me: "alice",
        myDevice: dev(alice, "laptop"),
        from: "alice",
        fromDevice,
        fromList: own,
        decoded: decodeDeviceContent(encodeSync(sync)),
      });
    expect(from({ t: "sync", peer: "alice", group: "club", c: read })).toEqual({
      ok: true,
      conversation: "alice",
      author: "alice",
      content: read,
      group: "club",
    });
    // Only a read, only naming ourselves, never from this very device.
    for (const bad of [
      from({ t: "sync", peer: "alice", group: "club", c: text("m1", 1) }),
      from({ t: "sync", peer: "bob", group: "club", c: read }),
      from({ t: "sync", peer: "alice", group: "club", c: read }, dev(alice, "laptop")),
    ])
      expect(bad).toEqual({ ok: false, reason: "bad_sync" });
    // From a contact it is a sync a contact may not send.
    const bob = await identity("bob", ["laptop"]);
    expect(
      classifyIncoming({
        me: "alice",
        myDevice: dev(alice, "laptop"),
        from: "bob",
        fromDevice: dev(bob, "laptop"),
        fromList: await pinnedOf(bob),
        decoded: decodeDeviceContent(
          encodeSync({ t: "sync", peer: "alice", group: "club", c: read }),
        ),
      }),
    ).toEqual({ ok: false, reason: "sync_from_peer" });
  });

  it("refuses a contact posing as our device, our device posing as a contact, and unlisted devices", async () => {
    const alice = await identity("alice", ["laptop", "phone"]);
    const bob = await identity("bob", ["laptop"]);
    const own = await pinnedOf(alice);
    const sync = decodeDeviceContent(encodeSync({ t: "sync", peer: "carol", c: text("m1", 1) }));
    const base = { me: "alice", myDevice: dev(alice, "laptop") };
    const cases: [Parameters<typeof classifyIncoming>[0], string][] = [
      // Bob cannot put words in our mouth.
      [
        {
          ...base,
          from: "bob",
          fromDevice: dev(bob, "laptop"),
          fromList: await pinnedOf(bob),
          decoded: sync,
        },
        "sync_from_peer",
      ],
      // Our devices only copy; a plain text from ourselves is nobody's message.
      [
        {
          ...base,
          from: "alice",
          fromDevice: dev(alice, "phone"),
          fromList: own,
          decoded: plain(text("m1", 1)),
        },
        "own_not_sync",
      ],
      // A device the relay invents for Bob, or for us.
      [
        {
          ...base,
          from: "bob",
          fromDevice: id16("relay-made"),
          fromList: await pinnedOf(bob),
          decoded: plain(text("m1", 1)),
        },
        "unlisted_device",
      ],
      [
        { ...base, from: "alice", fromDevice: id16("relay-made"), fromList: own, decoded: sync },
        "unlisted_device",
      ],
      // A listed sender must name its device.
      [
        {
          ...base,
          from: "bob",
          fromDevice: undefined,
          fromList: await pinnedOf(bob),
          decoded: plain(text("m1", 1)),
        },
        "unlisted_device",
      ],
      // Our own copies need our own list; without one there are no other devices of ours.
      [
        { ...base, from: "alice", fromDevice: undefined, fromList: null, decoded: sync },
        "unlisted_device",
      ],
      // A copy claiming to be from this very device, or about a conversation with ourselves.
      [
        { ...base, from: "alice", fromDevice: dev(alice, "laptop"), fromList: own, decoded: sync },
        "bad_sync",
      ],
      [
        {
          ...base,
          from: "alice",
          fromDevice: dev(alice, "phone"),
          fromList: own,
          decoded: decodeDeviceContent(encodeSync({ t: "sync", peer: "alice", c: text("m1", 1) })),
        },
        "bad_sync",
      ],
    ];
    for (const [input, reason] of cases)
      expect(classifyIncoming(input), reason).toEqual({ ok: false, reason });
  });

  it("refuses a device once a list that removed it is accepted", async () => {
    const alice = await identity("alice", ["laptop", "phone"]);
    const v1 = await pinnedOf(alice);
    const v2 = await accept(
      alice,
      v1,
      await sign(alice, nextDeviceList(v1.list, { remove: [dev(alice, "phone")] })),
    );
    const input = {
      me: "alice",
      myDevice: dev(alice, "laptop"),
      from: "alice",
      fromDevice: dev(alice, "phone"),
      decoded: decodeDeviceContent(encodeSync({ t: "sync", peer: "bob", c: text("m1", 1) })),
    };
    expect(classifyIncoming({ ...input, fromList: v1 }).ok).toBe(true);
    expect(classifyIncoming({ ...input, fromList: v2 })).toEqual({
      ok: false,
      reason: "unlisted_device",
    });
  });
});

describe("dedupe and order across devices (§4.9)", () => {
  it("drops a second copy of (author, id), keeps the same id from another author", () => {
    let seen: SeenIds = [];
    const a = markSeen(seen, "bob", "m1");
    expect(a).not.toBeNull();
    seen = a ?? [];
    expect(markSeen(seen, "bob", "m1")).toBeNull();
    expect(markSeen(seen, "alice", "m1")).not.toBeNull();
  });

  it("remembers the newest MAX_SEEN_IDS ids", () => {
    let seen: SeenIds = [];
    for (let i = 0; i <= MAX_SEEN_IDS; i++) seen = markSeen(seen, "bob", `m${i}`) ?? seen;
    expect(seen.length).toBe(MAX_SEEN_IDS);
    expect(markSeen(seen, "bob", `m${MAX_SEEN_IDS}`)).toBeNull();
    expect(markSeen(seen, "bob", "m0")).not.toBeNull();
  });

  it("every arrival order gives the same timeline", () => {
    const msgs: TimelineKey[] = [
      { ts: 10, from: "alice", id: "a1" },
      { ts: 10, from: "bob", id: "b1" },
      { ts: 10, from: "bob", id: "b0" },
      { ts: 5, from: "bob", id: "b2" },
      { ts: 20, from: "alice", id: "a0" },
    ];
    const sorted = [...msgs].sort(compareTimeline);
    // Deterministic permutations: every rotation of every reversal.
    const orders: TimelineKey[][] = [];
    for (const base of [msgs, [...msgs].reverse()])
      for (let r = 0; r < base.length; r++) orders.push([...base.slice(r), ...base.slice(0, r)]);
    for (const order of orders) {
      const timeline: TimelineKey[] = [];
      for (const m of order) timeline.splice(timelineIndex(timeline, m), 0, m);
      expect(timeline).toEqual(sorted);
    }
    expect(sorted.map((m) => m.id)).toEqual(["b2", "a1", "b0", "b1", "a0"]);
  });
});

describe("removal on real ciphertext (§4.9)", () => {
  interface Dev {
    rec: DmRecord;
    contact: Contact | null;
    prekeys: PrekeyState;
    ctx: DmCtx;
  }
  const ctxOf = (name: string, id: { publicKey: Uint8Array; privateKey: CryptoKey }): DmCtx => ({
    hub: "main",
    me: { name, identityKey: id.publicKey },
    sign: (m) => ed25519Sign(id.privateKey, m),
    random: randomBytes,
    now: 1_000,
  });
  async function device(
    name: string,
    peer: string,
    id: Awaited<ReturnType<typeof generateIdentityKeyPair>>,
  ): Promise<Dev> {
    const prekeys = (
      await addOneTimePrekeys(await initialPrekeys(id, 1_000, randomBytes), 2, randomBytes)
    ).state;
    return { rec: emptyDm(peer), contact: null, prekeys, ctx: ctxOf(name, id) };
  }
  const bundleOf = (d: Dev, ik: Uint8Array) => {
    const opk = d.prekeys.opks[0];
    return {
      identityKey: toB64u(ik),
      signedPrekey: publicSpk(d.prekeys),
      oneTimePrekey: opk ? { id: opk.id, key: opk.pub } : null,
      pqPrekey: publicPq(d.prekeys),
    };
  };
  const open = async (d: Dev, body: Uint8Array) => {
    const r = await receiveDm(d.rec, d.contact, d.prekeys, body, d.ctx);
    d.rec = r.record;
    d.contact = r.contact;
    if (r.prekeys) d.prekeys = r.prekeys;
    const c = r.received[0];
    return c?.t === "text" ? c.text : undefined;
  };

  it("the removed device's full stored state opens nothing sent after the list that removed it", async () => {
    // Alice's two devices hold her identity key (SECURITY L25) but each its own prekeys.
    const aliceIk = await generateIdentityKeyPair();
    const alice = await identity("alice", ["laptop", "phone"]);
    const devices = {
      laptop: await device("alice", "bob", aliceIk),
      phone: await device("alice", "bob", aliceIk),
    };
    const bobIk = await generateIdentityKeyPair();
    const bobCtx = ctxOf("bob", bobIk);
    const bobPrekeys = await initialPrekeys(bobIk, 1_000, randomBytes);
    // Bob's pairwise session with each of Alice's devices, from that device's bundle.
    const toAlice = new Map<string, { rec: DmRecord; contact: Contact }>();
    for (const name of ["laptop", "phone"] as const) {
      const st = await startFromBundle(
        emptyDm("alice"),
        null,
        bundleOf(devices[name], aliceIk.publicKey),
        bobCtx,
        bobPrekeys,
      );
      if (st.contact === null) throw new Error("no contact");
      toAlice.set(dev(alice, name), { rec: st.record, contact: st.contact });
    }
    const send = async (pinned: PinnedDevices, t: string) => {
      const plan = fanoutTargets({
        me: "bob",
        myDevice: id16("bob-only"),
        ownList: null,
        peer: "alice",
        peerList: pinned,
      });
      if (!plan.ok) throw new Error("plan");
      const out = new Map<string, Uint8Array>();
      for (const target of plan.targets) {
        const s = target.device === undefined ? undefined : toAlice.get(target.device);
        if (s === undefined || target.device === undefined) throw new Error("no session");
        const r = await encryptDm(
          s.rec,
          s.contact,
          { t: "text", id: toB64u(randomBytes(9)), ts: 5, text: t },
          bobCtx,
        );
        toAlice.set(target.device, { ...s, rec: r.record });
        out.set(target.device, r.body);
      }
      return out;
    };
    const v1 = await pinnedOf(alice);
    const before = await send(v1, "before");
    const phoneBefore = before.get(dev(alice, "phone"));
    const laptopBefore = before.get(dev(alice, "laptop"));
    if (phoneBefore === undefined || laptopBefore === undefined) throw new Error("fan-out");
    expect(await open(devices.phone, phoneBefore)).toBe("before");
    expect(await open(devices.laptop, laptopBefore)).toBe("before");
    // Alice's laptop removes the phone; Bob accepts the new list.
    const v2 = await accept(
      alice,
      v1,
      await sign(alice, nextDeviceList(v1.list, { remove: [dev(alice, "phone")] })),
    );
    const stolen = structuredClone({
      rec: devices.phone.rec,
      contact: devices.phone.contact,
      prekeys: devices.phone.prekeys,
    });
    const after = await send(v2, "after");
    expect([...after.keys()]).toEqual([dev(alice, "laptop")]);
    const body = after.get(dev(alice, "laptop"));
    if (body === undefined) throw new Error("fan-out");
    // Whatever the relay hands it, the phone's whole stored state cannot open the one copy sent.
    const thief: Dev = { ...devices.phone, ...structuredClone(stolen) };
    await expect(open(thief, body)).rejects.toSatisfy((e) => isCoreError(e));
    expect(await open(devices.laptop, body)).toBe("after");
  });
});
