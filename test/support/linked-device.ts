/**
 * A second device of an identity in the Node harness, linked for real (PROTOCOL.md §4.8): the new
 * device offers on its own unauthenticated socket (NewDeviceLink), the existing device fetches the
 * offer by code and approves it (ParleyClient.fetchLinkOffer / approveLink), and the new device
 * makes its store from the transfer and authenticates on the same socket as a linked device.
 */
import { ParleyClient } from "../../shared/core/client";
import type { ParleyEvent } from "../../shared/core/client-api";
import { initLinkedStore, type LinkProgress, NewDeviceLink } from "../../shared/core/link-device";
import { MemoryStore } from "../../shared/core/store";
import { ed25519KeyPairFromSeed, randomBytes } from "../../shared/crypto";
import { connect, newUser, online, type TestUser, timers } from "./clients";
import { type Conn, NodeRelay } from "./node-relay";

/** Settle the relay until `p` is done (a request that takes several round trips). */
export async function through<T>(relay: NodeRelay, p: Promise<T>): Promise<T> {
  let done = false;
  p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  for (let i = 0; i < 50 && !done; i++) await relay.settle();
  return p;
}

export interface Phone {
  conn: Conn;
  link: NewDeviceLink;
  progress: LinkProgress[];
  store: MemoryStore;
  client: ParleyClient | null;
  events: ParleyEvent[];
}

/** A new device waiting under a fresh code on its own unauthenticated socket. */
export async function newPhone(relay: NodeRelay, name = "phone"): Promise<Phone> {
  const phone = {
    progress: [],
    store: new MemoryStore(),
    client: null,
    events: [],
  } as unknown as Phone;
  phone.link = await NewDeviceLink.start(relay.hub, name, (f) => phone.conn.fromClient(f));
  const end: Parameters<NodeRelay["connect"]>[0] = {
    onConnected: () => phone.client?.onConnected(),
    onServerFrame: async (f) => {
      if (phone.client !== null) return phone.client.onServerFrame(f);
      const p = await phone.link.onServerFrame(f);
      phone.progress.push(p);
      if (p.t !== "linked") return;
      // The transfer becomes the store; the client authenticates with the kept hello.
      await initLinkedStore(phone.store, p.linked, relay.now());
      const client = await ParleyClient.create({
        hub: relay.hub,
        origin: relay.origin,
        username: p.linked.username,
        identity: await ed25519KeyPairFromSeed(p.linked.identitySeed),
        store: phone.store,
        transport: { send: (fr) => phone.conn.fromClient(fr) },
        now: () => relay.now(),
        schedule: timers.schedule,
      });
      client.subscribe((e) => phone.events.push(e));
      if (relay.routed) {
        // The rendezvous's object holds no user: the device connects on its user's route.
        relay.disconnect(phone.conn);
        phone.client = client;
        phone.conn = relay.connect(end, p.linked.username);
        return;
      }
      phone.client = client;
      client.onConnected();
      await client.onServerFrame(p.linked.hello);
    },
    onDisconnected: () => phone.client?.onDisconnected(),
    whenIdle: async () => phone.client?.whenIdle(),
  };
  phone.conn = relay.connect(end, { link: phone.link.rendezvous });
  await relay.settle();
  return phone;
}

/** alice with an identity from a seed (the laptop's profile keeps it), and bob, her contact. */
export async function setupAliceAndBob(routed?: boolean) {
  const relay = new NodeRelay();
  if (routed !== undefined) relay.routed = routed;
  const seed = randomBytes(32);
  const alice = await newUser(relay, "alice", { identity: await ed25519KeyPairFromSeed(seed) });
  const [bob] = (await online(relay, "bob")) as [TestUser];
  await connect(alice);
  await alice.client.startChat("bob");
  await relay.settle();
  await alice.client.markVerified("bob");
  return { relay, alice, bob, seed };
}

export async function link(relay: NodeRelay, alice: TestUser, seed: Uint8Array, phone: Phone) {
  const request = await through(relay, alice.client.fetchLinkOffer(phone.link.code));
  return through(
    relay,
    alice.client.approveLink(request, { identitySeed: seed, thisDeviceName: "laptop" }),
  );
}
