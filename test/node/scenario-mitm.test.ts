/**
 * Stories where the relay lies about keys (§8.7): substituting an identity key or a signed
 * prekey in a bundle, injecting a handshake in someone's name, or showing a new key in presence.
 * Each surfaces as a key change (sending blocked) or a signature failure — never a silent new
 * session. A legitimate key change (re-installed device) is accepted explicitly and resets
 * verification.
 */
import { expect, it } from "vitest";
import { encodeHsInit } from "../../shared/core/envelope";
import { makeLeaves, type OwnLeaf, publicLeaf } from "../../shared/core/group";
import { initTranscript } from "../../shared/core/handshake";
import { spkMessage } from "../../shared/core/prekeys";
import {
  ed25519Sign,
  generateIdentityKeyPair,
  randomBytes,
  x25519PublicKey,
} from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";
import { LIMITS } from "../../shared/protocol";
import {
  connect,
  disconnect,
  errors,
  lines,
  messages,
  newUser,
  online,
  say,
  status,
  type TestUser,
} from "../support/clients";
import { NodeRelay } from "../support/node-relay";

async function mallorySpk(signer: CryptoKey | null) {
  const key = await x25519PublicKey(randomBytes(32));
  const sig = signer ? await ed25519Sign(signer, spkMessage(1, key)) : randomBytes(64);
  return { id: 1, key: toB64u(key), sig: toB64u(sig) };
}

async function pinnedPair() {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "first");
  await alice.client.markVerified("bob");
  await disconnect(bob);
  await alice.client.endChat("bob");
  return { relay, alice, bob };
}

it("relay substitutes the identity key in a bundle → key change, sending blocked", async () => {
  const { relay, alice } = await pinnedPair();
  const mallory = await generateIdentityKeyPair();
  const spk = await mallorySpk(mallory.privateKey);
  relay.intercept = (_to, f) =>
    f.t === "bundle"
      ? { ...f, identityKey: toB64u(mallory.publicKey), signedPrekey: spk, oneTimePrekey: null }
      : f;
  await expect(alice.client.sendText("dm:bob", "secret")).resolves.toBeTypeOf("string");
  await relay.settle();
  expect(status(alice, "dm:bob")).toBe("key_changed");
  expect(lines(alice, "dm:bob").some((l) => l.kind === "key_changed")).toBe(true);
  // nothing went to bob: the queued text stays queued, no session was made with mallory's key
  expect(relay.stored("bob")).toBe(0);
  await expect(alice.client.sendText("dm:bob", "again")).rejects.toMatchObject({
    code: "key_changed",
  });
  expect(alice.client.contact("bob")?.verified).toBe(false);
});

it("relay substitutes only the signed prekey → signature failure, no session", async () => {
  const { relay, alice } = await pinnedPair();
  const spk = await mallorySpk(null);
  relay.intercept = (_to, f) =>
    f.t === "bundle" ? { ...f, signedPrekey: spk, oneTimePrekey: null } : f;
  await alice.client.sendText("dm:bob", "secret");
  await relay.settle();
  expect(errors(alice).map((e) => e.code)).toContain("bad_signature");
  expect(relay.stored("bob")).toBe(0);
  expect(status(alice, "dm:bob")).not.toBe("secure");
});

it("relay injects a handshake in alice's name with its own key → bob sees a key change", async () => {
  const { relay, alice, bob } = await pinnedPair();
  await disconnect(alice);
  await connect(bob);
  const sentBefore = relay.clientLog.filter((x) => x.from === "bob" && x.frame.t === "send").length;
  const mallory = await generateIdentityKeyPair();
  const eph = await x25519PublicKey(randomBytes(32));
  const me = { name: "alice", identityKey: mallory.publicKey };
  const bobParty = { name: "bob", identityKey: bob.identity.publicKey };
  const sig = await ed25519Sign(mallory.privateKey, initTranscript("main", me, bobParty, eph));
  const body = encodeHsInit({
    ikA: mallory.publicKey,
    ikB: bob.identity.publicKey,
    ephA: eph,
    sigA: sig,
  });
  await bob.client.onServerFrame({
    v: 1,
    t: "deliver",
    mid: "5000",
    from: "alice",
    fromKey: toB64u(mallory.publicKey),
    ts: 1,
    item: { kind: "direct", body: toB64u(body) },
  });
  await relay.settle();
  expect(status(bob, "dm:alice")).toBe("key_changed");
  // bob did not answer the forged handshake
  expect(relay.clientLog.filter((x) => x.from === "bob" && x.frame.t === "send").length).toBe(
    sentBefore,
  );
});

it("first contact through a lying relay: safety numbers disagree", async () => {
  const relay = new NodeRelay();
  const mallory = await generateIdentityKeyPair();
  const lie = <U extends { username: string; identityKey: string }>(u: U): U =>
    u.username === "bob" ? { ...u, identityKey: toB64u(mallory.publicKey) } : u;
  relay.intercept = (to, f) =>
    to !== "alice"
      ? f
      : f.t === "presence"
        ? { ...f, users: f.users.map(lie) }
        : f.t === "presence_delta"
          ? { ...f, online: f.online.map(lie) }
          : f;
  const alice = await newUser(relay, "alice");
  const bob = await newUser(relay, "bob");
  await connect(alice, bob);
  await alice.client.startChat("bob");
  await relay.settle();
  // alice pinned mallory's key (TOFU) and her init is bound to it: bob refuses it ...
  expect(errors(bob).map((e) => e.code)).toContain("identity_mismatch");
  expect(status(alice, "dm:bob")).toBe("handshaking");
  // ... and comparing safety numbers exposes the substitution
  expect(await alice.client.safetyNumber("bob")).not.toBe(
    await bob.client.safetyNumber("alice").catch(() => ""),
  );
});

it("legitimate key change (re-installed device): accept, fresh session, verification reset", async () => {
  const relay = new NodeRelay();
  const [alice, bob] = (await online(relay, "alice", "bob")) as [TestUser, TestUser];
  await alice.client.startChat("bob");
  await relay.settle();
  await say(alice, "dm:bob", "before");
  await alice.client.markVerified("bob");
  expect(status(alice, "dm:bob")).toBe("verified");
  await disconnect(bob);
  // bob re-installs: new identity; the relay operator released his name
  relay.releaseName("bob");
  const bob2 = await newUser(relay, "bob");
  await connect(bob2);
  // alice hears of bob's new key in her next presence delta, at most one a second (§6.3).
  await relay.advance(LIMITS.presenceDeltaIntervalMs);
  expect(status(alice, "dm:bob")).toBe("key_changed");
  await expect(alice.client.sendText("dm:bob", "blocked")).rejects.toMatchObject({
    code: "key_changed",
  });
  // bob2 writes first: his prekey message is held until alice accepts
  await say(bob2, "dm:alice", "it's me, new phone");
  expect(messages(alice, "dm:bob")).toEqual([]);
  await alice.client.acceptKeyChange("bob");
  await relay.settle();
  expect(messages(alice, "dm:bob")).toEqual(["it's me, new phone"]);
  expect(alice.client.contact("bob")?.verified).toBe(false);
  expect(status(alice, "dm:bob")).toBe("secure");
  await say(alice, "dm:bob", "welcome back");
  expect(messages(bob2, "dm:alice")).toEqual(["welcome back"]);
  expect(await alice.client.safetyNumber("bob")).toBe(await bob2.client.safetyNumber("alice"));
});

it("relay substitutes a member's key in the group roster → the committer refuses to wrap to it", async () => {
  const relay = new NodeRelay();
  const [alice, bob, carol] = (await online(relay, "alice", "bob", "carol")) as [
    TestUser,
    TestUser,
    TestUser,
  ];
  for (const u of [alice, bob, carol]) {
    await u.client.joinGroup("broadcast");
    await relay.settle();
  }
  const mallory = await generateIdentityKeyPair();
  // a leaf key validly signed by mallory (PROTOCOL.md §9.3): only the pin can tell
  const spk = publicLeaf(
    (
      await makeLeaves({
        hub: relay.hub,
        group: "broadcast",
        epoch: 0,
        count: 1,
        random: randomBytes,
        sign: (m) => ed25519Sign(mallory.privateKey, m),
      })
    )[0] as OwnLeaf,
  );
  relay.intercept = (to, f) =>
    to === "alice" && f.t === "group"
      ? {
          ...f,
          state: {
            ...f.state,
            members: f.state.members.map((m) =>
              m.username === "bob"
                ? { ...m, identityKey: toB64u(mallory.publicKey), leaf: spk }
                : m,
            ),
          },
        }
      : f;
  const commitsBefore = relay.clientLog.filter(
    (x) => x.from === "alice" && x.frame.t === "commit",
  ).length;
  await carol.client.leaveGroup("broadcast");
  await relay.settle();
  // alice (rank 0) noticed bob's "new" key and made no commit
  expect(relay.clientLog.filter((x) => x.from === "alice" && x.frame.t === "commit").length).toBe(
    commitsBefore,
  );
  expect(errors(alice).map((e) => e.code)).toContain("key_changed");
  expect(status(alice, "group:broadcast")).toBe("key_changed");
  expect(relay.group("broadcast")?.pendingLeaves).toEqual(["carol"]);
});
