/**
 * A hostile relay, played by a proxy in front of the real relay (`wrangler dev`, ws on 8794;
 * proxy on 8789): it substitutes keys in bundles, reorders, replays, flips bits in, truncates
 * and relabels the frames it delivers. docs/SECURITY.md §4 maps each case to its property.
 *
 * For each: the typed rejection the engine raises, what happens to the connection (it stays up:
 * a lying relay is not a protocol error, PROTOCOL.md §11), and that honest users lose nothing —
 * the genuine messages still arrive exactly once and the conversation goes on afterwards.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { ConversationId } from "../../shared/core/client-api";
import { spkMessage } from "../../shared/core/prekeys";
import {
  ed25519KeyPairFromSeed,
  ed25519Sign,
  generateIdentityKeyPair,
  randomBytes,
  x25519PublicKey,
} from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import type { FrameOf, ServerFrame } from "../../shared/protocol";
import {
  attach,
  detach,
  errorCodes,
  inbox,
  newWireUser,
  sleep,
  until,
  type WireUser,
} from "../support/capture";
import { status as statusWord } from "../support/clients";
import { type HostileProxy, startHostileProxy } from "../support/hostile-proxy";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";

// `wrangler dev` serves dist/pwa: like relay-wrangler.test.ts, run once `npm run build` has.
const built = existsSync(resolve(import.meta.dirname, "../../dist/pwa/index.html"));

type Deliver = FrameOf<ServerFrame, "deliver">;

let dev: WranglerDev | undefined;
let proxy: HostileProxy | undefined;
let hubs = 0;
const live: WireUser[] = [];

function p(): HostileProxy {
  if (proxy === undefined) throw new Error("proxy not started");
  return proxy;
}

/** Added to every engine's clock: lets a test skip the handshake retry delay (§8.2.5). */
let clockSkew = 0;

async function user(hub: string, name: string): Promise<WireUser> {
  if (dev === undefined) throw new Error("relay not started");
  const u = await newWireUser({
    hub,
    origin: new URL(dev.url).origin,
    name,
    now: () => Date.now() + clockSkew,
    identity: await ed25519KeyPairFromSeed(randomBytes(32)),
  });
  await connect(u);
  return u;
}

async function connect(u: WireUser): Promise<void> {
  if (dev === undefined) throw new Error("relay not started");
  const ws = new WebSocket(`${p().wsUrl}?hub=${u.client.hub}`, {
    headers: { Origin: new URL(dev.url).origin },
  });
  await attach(u, ws);
  live.push(u);
}

async function users(...names: string[]): Promise<WireUser[]> {
  const hub = `hr-${Date.now().toString(36)}-${++hubs}`;
  const out: WireUser[] = [];
  for (const n of names) out.push(await user(hub, n));
  await until(
    () => out.every((u) => u.client.presence().length === names.length),
    `presence ${JSON.stringify(out.map((u) => [u.name, u.client.presence().map((x) => x.username)]))}`,
  );
  return out;
}

const statusOf = (u: WireUser, id: ConversationId) => statusWord(u, id);

async function secure(a: WireUser, b: WireUser): Promise<void> {
  await a.client.startChat(b.name);
  await until(
    () => statusOf(a, `dm:${b.name}`) === "secure" && statusOf(b, `dm:${a.name}`) === "secure",
    `${a.name}–${b.name} secure`,
  );
}

async function chat(a: WireUser, b: WireUser, text: string): Promise<void> {
  const before = inbox(b, `dm:${a.name}`).length;
  const id = await a.client.sendText(`dm:${b.name}`, text);
  await until(() => inbox(b, `dm:${a.name}`).length > before, `${b.name} reads "${text}"`);
  expect(inbox(b, `dm:${a.name}`).at(-1)).toBe(text);
  // ...and b's end-to-end receipt (PROTOCOL.md §8.6) is back, so no frame of this exchange is
  // still in flight when the test changes what the relay does next.
  await until(
    () =>
      a.events.some((e) => e.type === "delivery" && e.messageId === id && e.state === "delivered"),
    `${a.name} sees "${text}" delivered`,
  );
}

const G = "group:broadcast" as const;
const epochOf = (u: WireUser) => u.client.conversations().find((c) => c.id === G)?.epoch;

async function groupOf(...us: WireUser[]): Promise<void> {
  for (const [i, u] of us.entries()) {
    const base = epochOf(us[0] as WireUser) ?? 0;
    await u.client.joinGroup("broadcast");
    await until(
      () => us.slice(0, i + 1).every((x) => (epochOf(x) ?? -1) > (i === 0 ? 0 : base)),
      `${u.name} in group`,
    );
    await until(() => new Set(us.slice(0, i + 1).map(epochOf)).size === 1, "same epoch");
  }
}

type Item<K extends Deliver["item"]["kind"]> = Extract<Deliver["item"], { kind: K }>;

function isDeliver<K extends Deliver["item"]["kind"]>(
  f: ServerFrame | null,
  kind: K,
): f is Deliver & { item: Item<K> } {
  return f !== null && f.t === "deliver" && f.item.kind === kind;
}

function flip(body: string, at: (len: number) => number): string {
  const b = fromB64u(body);
  const i = at(b.length);
  b[i] = (b[i] as number) ^ 0x01;
  return toB64u(b);
}

function withBody(f: Deliver, body: string, mid?: string): string {
  return JSON.stringify({ ...f, mid: mid ?? f.mid, item: { ...f.item, body } });
}

// Generous per-test timeout: the CPU is shared with other test runs.
describe.skipIf(!built).sequential(
  "security: hostile relay (proxy in front of wrangler dev)",
  {
    timeout: 90_000,
  },
  () => {
    beforeAll(async () => {
      // Every hub shows everyone online (a hub default, PROTOCOL.md §6.3): these stories start
      // online handshakes between users who never wrote to each other.
      dev = await startWranglerDev({ port: testPort(8794), vars: { PRESENCE_EVERYONE_HUBS: "*" } });
      proxy = await startHostileProxy({ port: testPort(8789), target: dev.wsUrl });
    }, 180_000);

    afterAll(async () => {
      for (const u of live) await detach(u);
      await proxy?.stop();
      await dev?.stop();
    }, 60_000);

    it("substituted identity key in a bundle → key change shown, sending refused", async () => {
      const [alice, bob, carol] = (await users("alice", "bob", "carol")) as [
        WireUser,
        WireUser,
        WireUser,
      ];
      await secure(alice, bob);
      await chat(alice, bob, "first contact pins bob's key");
      const bobKey = toB64u(bob.identity.publicKey);
      expect(alice.client.contact("bob")?.identityKey).toBe(bobKey);
      await alice.client.endChat("bob");
      await detach(bob);
      await until(() => alice.client.presence().length === 2, "bob offline");
      // The relay answers alice's next bundle request with mallory's identity and prekey, validly
      // signed by mallory: only the pin can tell (PROTOCOL.md §8.7).
      const mallory = await generateIdentityKeyPair();
      const spkKey = await x25519PublicKey(randomBytes(32));
      const spk = {
        id: 1,
        key: toB64u(spkKey),
        sig: toB64u(await ed25519Sign(mallory.privateKey, spkMessage(1, spkKey))),
      };
      p().down = ({ frame, text }) =>
        frame?.t === "bundle" && frame.username === "bob"
          ? [
              JSON.stringify({
                ...frame,
                identityKey: toB64u(mallory.publicKey),
                signedPrekey: spk,
                oneTimePrekey: null,
              }),
            ]
          : [text];
      const mark = p().log.length;
      await alice.client.sendText("dm:bob", "for bob only");
      await until(() => statusOf(alice, "dm:bob") === "key_changed", "key change shown");
      await sleep(200);
      const sent = p()
        .log.slice(mark)
        .filter((x) => x.user === "alice" && x.dir === "up" && x.text.includes('"t":"send"'));
      expect(sent).toEqual([]);
      await expect(alice.client.sendText("dm:bob", "again")).rejects.toMatchObject({
        code: "key_changed",
      });
      expect(alice.events.some((e) => e.type === "system" && e.line.kind === "key_changed")).toBe(
        true,
      );
      // The pin is untouched: accepting is the user's decision, never the relay's.
      expect(alice.client.contact("bob")?.identityKey).toBe(bobKey);
      // Honest users lose nothing: carol and alice still talk through the same relay.
      p().reset();
      await secure(carol, alice);
      await chat(carol, alice, "carol is unaffected");
      expect(alice.ws).not.toBeNull();
    });

    it("substituted signed prekey (bad signature) → typed error, no session, nothing sent", async () => {
      const [alice, bob] = (await users("alice", "bob")) as [WireUser, WireUser];
      await secure(alice, bob);
      await chat(alice, bob, "pinned");
      await alice.client.endChat("bob");
      const spkKey = await x25519PublicKey(randomBytes(32));
      p().down = ({ frame, text }) =>
        frame?.t === "bundle"
          ? [
              JSON.stringify({
                ...frame,
                signedPrekey: { id: 7, key: toB64u(spkKey), sig: toB64u(randomBytes(64)) },
                oneTimePrekey: null,
              }),
            ]
          : [text];
      await detach(bob);
      // bob offline: alice's engine starts asynchronously from a bundle (PROTOCOL.md §8.3).
      await until(() => alice.client.presence().length === 1, "bob offline");
      const mark = p().log.length;
      await alice.client.sendText("dm:bob", "must not go out under a forged prekey");
      await until(() => errorCodes(alice).includes("bad_signature"), "bad_signature");
      await sleep(200);
      expect(
        p()
          .log.slice(mark)
          .filter((x) => x.dir === "up" && x.text.includes('"t":"send"')),
      ).toEqual([]);
      expect(statusOf(alice, "dm:bob")).not.toBe("secure");
      expect(alice.ws).not.toBeNull();
      // Honest path afterwards: the relay honest again, bob back online. The failed start is
      // retried after HANDSHAKE_RETRY_MS (§8.2.5); the queued text then reaches the real bob.
      p().reset();
      await connect(bob);
      await until(() => alice.client.presence().length === 2, "bob online");
      clockSkew += 31_000;
      await alice.client.sendText("dm:bob", "after the retry");
      await until(() => inbox(bob, "dm:alice").length === 3, "bob reads the queue");
      expect(inbox(bob, "dm:alice")).toEqual([
        "pinned",
        "must not go out under a forged prekey",
        "after the retry",
      ]);
      await chat(bob, alice, "back to normal");
    });

    it("stripped post-quantum prekey (downgrade) → refused, nothing sent; honest retry is post-quantum", async () => {
      const [alice, bob] = (await users("alice", "bob")) as [WireUser, WireUser];
      await secure(alice, bob);
      await chat(alice, bob, "pinned");
      await alice.client.endChat("bob");
      // bob publishes a PQ prekey (his signed prekey is signed as v2, PROTOCOL.md §8.3.5); the
      // relay hands out his bundle without it, as if bob were a classical client.
      p().down = ({ frame, text }) =>
        frame?.t === "bundle"
          ? [JSON.stringify({ ...frame, pqPrekey: null, oneTimeKemPrekey: null })]
          : [text];
      await detach(bob);
      await until(() => alice.client.presence().length === 1, "bob offline");
      const mark = p().log.length;
      await alice.client.sendText("dm:bob", "must not go out without post-quantum keys");
      await until(() => errorCodes(alice).includes("downgrade"), "downgrade");
      await sleep(200);
      expect(
        p()
          .log.slice(mark)
          .filter((x) => x.dir === "up" && x.text.includes('"t":"send"')),
      ).toEqual([]);
      expect(statusOf(alice, "dm:bob")).not.toBe("secure");
      // The relay honest again: the retried start (§8.2.5) is post-quantum, and no side shows
      // a "not post-quantum" line.
      p().reset();
      clockSkew += 31_000;
      await alice.client.sendText("dm:bob", "after the retry");
      await until(
        () =>
          p()
            .log.slice(mark)
            .some((x) => x.dir === "up" && x.text.includes('"t":"send"')),
        "sent",
      );
      await connect(bob);
      await until(() => inbox(bob, "dm:alice").length === 3, "bob reads the queue");
      expect(inbox(bob, "dm:alice")).toEqual([
        "pinned",
        "must not go out without post-quantum keys",
        "after the retry",
      ]);
      const notPq = (u: WireUser) =>
        u.events.some((e) => e.type === "system" && e.line.kind === "not_post_quantum");
      expect(notPq(alice) || notPq(bob)).toBe(false);
      await chat(bob, alice, "back to normal");
    });

    it("reordering: held deliveries released in reverse each decrypt exactly once", async () => {
      const [alice, bob] = (await users("alice", "bob")) as [WireUser, WireUser];
      await secure(alice, bob);
      const held: Deliver[] = [];
      p().down = ({ user, frame, text }) => {
        if (user !== "bob" || !isDeliver(frame, "direct")) return [text];
        held.push(frame);
        return [];
      };
      const texts = ["r0", "r1", "r2", "r3"].map((t) => `ordered ${t}`);
      for (const t of texts) await alice.client.sendText("dm:bob", t);
      await until(() => held.length === 4, "four held");
      p().reset();
      for (const f of [...held].reverse()) p().inject("bob", JSON.stringify(f));
      await until(() => inbox(bob, "dm:alice").length === 4, "all four read");
      expect([...inbox(bob, "dm:alice")].sort()).toEqual([...texts].sort());
      expect(inbox(bob, "dm:alice")[0]).toBe("ordered r3");
      expect(errorCodes(bob)).toEqual([]);
      await chat(bob, alice, "after the shuffle");
      await chat(alice, bob, "still in sync");
    });

    it("replay of a 1:1 delivery (same mid, new mid) yields nothing new", async () => {
      const [alice, bob] = (await users("alice", "bob")) as [WireUser, WireUser];
      await secure(alice, bob);
      p().down = ({ user, frame, text }) =>
        user === "bob" && isDeliver(frame, "direct")
          ? [text, text, JSON.stringify({ ...frame, mid: "8000000" })]
          : [text];
      await alice.client.sendText("dm:bob", "say it once");
      await until(() => inbox(bob, "dm:alice").length === 1, "bob reads");
      await sleep(300);
      p().reset();
      expect(inbox(bob, "dm:alice")).toEqual(["say it once"]);
      // Replays of an already-read message are dropped silently (at-least-once, §7.3/§8.4).
      expect(errorCodes(bob)).toEqual([]);
      await chat(alice, bob, "next one");
      expect(inbox(bob, "dm:alice")).toEqual(["say it once", "next one"]);
    });

    it("replay of a group delivery yields nothing new", async () => {
      const [alice, bob, carol] = (await users("alice", "bob", "carol")) as [
        WireUser,
        WireUser,
        WireUser,
      ];
      await groupOf(alice, bob, carol);
      p().down = ({ user, frame, text }) =>
        user === "bob" && isDeliver(frame, "group")
          ? [text, text, JSON.stringify({ ...frame, mid: "8000001" })]
          : [text];
      await alice.client.sendText(G, "group once");
      await until(() => inbox(bob, G).length === 1 && inbox(carol, G).length === 1, "fan-out");
      await sleep(300);
      p().reset();
      expect(inbox(bob, G)).toEqual(["group once"]);
      await carol.client.sendText(G, "group next");
      await until(() => inbox(bob, G).length === 2, "next");
      expect(inbox(bob, G)).toEqual(["group once", "group next"]);
    });

    it("bit flips in header, ciphertext and tag, and a truncated body: typed errors, no loss", async () => {
      const [alice, bob] = (await users("alice", "bob")) as [WireUser, WireUser];
      await secure(alice, bob);
      await chat(alice, bob, "warm-up");
      await chat(bob, alice, "warm-up reply");
      // 0x05 envelope: [0] version, [1] type, [2..18) sid, [18..58) header, [58..) ct||tag
      const spots: Array<[string, (n: number) => number]> = [
        ["header dh", () => 20],
        ["header n", () => 57],
        ["ciphertext", () => 60],
        ["tag", (n) => n - 3],
      ];
      let forged = 0;
      p().down = ({ user, frame, text }) => {
        if (user !== "bob" || !isDeliver(frame, "direct")) return [text];
        const body = frame.item.body;
        const out = spots.map(([, at], i) =>
          withBody(frame, flip(body, at), String(7_000_000 + i)),
        );
        // Truncated by one byte and by everything past the header.
        const b = fromB64u(body);
        out.push(withBody(frame, toB64u(b.subarray(0, b.length - 1)), "7000010"));
        out.push(withBody(frame, toB64u(b.subarray(0, 58)), "7000011"));
        forged += out.length;
        return [...out, text]; // the forgeries first, then the genuine frame
      };
      await alice.client.sendText("dm:bob", "the genuine one");
      await until(() => inbox(bob, "dm:alice").length === 2, "genuine read");
      await until(() => errorCodes(bob).length >= 3, "errors");
      await sleep(300);
      p().reset();
      expect(forged).toBe(6);
      expect(inbox(bob, "dm:alice")).toEqual(["warm-up", "the genuine one"]);
      const codes = new Set(errorCodes(bob));
      for (const c of codes) expect(["decrypt_failed", "malformed", "replay"]).toContain(c);
      expect(codes.has("decrypt_failed")).toBe(true);
      expect(codes.has("malformed")).toBe(true);
      expect(bob.ws).not.toBeNull();
      await chat(bob, alice, "session intact");
      await chat(alice, bob, "both ways");
    });

    it("a member forges another's group message (with a relay relabelling it) → bad_signature", async () => {
      const [alice, bob, carol] = (await users("alice", "bob", "carol")) as [
        WireUser,
        WireUser,
        WireUser,
      ];
      await groupOf(alice, bob, carol);
      // carol sends a genuine group message; the colluding relay tells bob it came from alice.
      p().down = ({ user, frame, text }) =>
        user === "bob" && isDeliver(frame, "group") && frame.from === "carol"
          ? [JSON.stringify({ ...frame, from: "alice", fromKey: toB64u(alice.identity.publicKey) })]
          : [text];
      await carol.client.sendText(G, "I am alice, trust me");
      await until(() => errorCodes(bob).includes("bad_signature"), "bad_signature at bob");
      p().reset();
      expect(inbox(bob, G)).toEqual([]);
      expect(inbox(alice, G)).toEqual(["I am alice, trust me"]); // alice got it, correctly as carol's
      const fromCarol = alice.events.find(
        (e) => e.type === "message" && e.message.conversationId === G,
      );
      expect(fromCarol?.type === "message" && fromCarol.message.from).toBe("carol");
      await alice.client.sendText(G, "the real alice");
      await until(() => inbox(bob, G).includes("the real alice"), "bob reads alice");
    });

    it("a dropped delivery with a forged receipt: never shown as delivered (only bob's end-to-end receipt counts), redelivered on reconnect", async () => {
      const [alice, bob] = (await users("alice", "bob")) as [WireUser, WireUser];
      await secure(alice, bob);
      let dropped: string | null = null;
      p().down = ({ user, frame, text }) => {
        if (user === "bob" && isDeliver(frame, "direct") && dropped === null) {
          dropped = frame.mid;
          // The lying relay tells alice it was delivered.
          p().inject("alice", JSON.stringify({ v: 1, t: "receipt", mid: frame.mid, by: "bob" }));
          return [];
        }
        return [text];
      };
      const id = await alice.client.sendText("dm:bob", "swallowed by the relay");
      const deliveredTo = () =>
        alice.events.some(
          (e) => e.type === "delivery" && e.messageId === id && e.state === "delivered",
        );
      await until(() => dropped !== null, "relay dropped the delivery");
      await sleep(200);
      expect(inbox(bob, "dm:alice")).toEqual([]);
      // SECURITY.md §8 L3 (fixed): the relay's receipt changes no delivery state; "delivered"
      // comes only from bob's receipt inside the Double Ratchet (PROTOCOL.md §6, §8.6).
      expect(deliveredTo()).toBe(false);
      // The real relay still holds the unacknowledged item: on reconnect bob gets it, once,
      // and only then does his end-to-end receipt mark it delivered.
      p().reset();
      await detach(bob);
      await connect(bob);
      await until(() => inbox(bob, "dm:alice").length === 1, "redelivered");
      expect(inbox(bob, "dm:alice")).toEqual(["swallowed by the relay"]);
      await until(deliveredTo, "bob's end-to-end receipt");
      await chat(alice, bob, "and on we go");
    });

    it("a truncated or garbled relay frame is refused by the boundary parser, nothing breaks", async () => {
      const [alice, bob] = (await users("alice", "bob")) as [WireUser, WireUser];
      await secure(alice, bob);
      p().inject("bob", '{"v":1,"t":"deliver","mid":"1","from":"alice"');
      p().inject("bob", '{"v":1,"t":"teleport"}');
      p().inject("bob", JSON.stringify({ v: 1, t: "presence", users: "everyone" }));
      await until(() => bob.invalid.length === 3, "three refused");
      expect(bob.ws).not.toBeNull();
      await chat(alice, bob, "parser held");
    });
  },
);
