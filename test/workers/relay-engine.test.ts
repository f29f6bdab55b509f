/**
 * The real protocol engine (shared/core `ParleyClient`) against the real relay, both inside
 * workerd: every frame crosses an actual WebSocket through the Worker and the Durable Object.
 * This is where a divergence between the relay and the engine's expectations (frame order,
 * commit fanout, acks, receipts) shows up, which the engine's in-memory relay cannot catch.
 */
import { env, runInDurableObject, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ParleyClient } from "../../shared/core/client";
import type { ConversationId, ParleyEvent } from "../../shared/core/client-api";
import { MemoryStore } from "../../shared/core/store";
import { generateIdentityKeyPair } from "../../shared/crypto/ed25519";
import { parseServerFrame } from "../../shared/protocol";
import { BASE, freshHub, ORIGIN } from "./support/client";

const TUNING = { fallbackCommitDelayMs: 20 };

class EngineUser {
  readonly events: ParleyEvent[] = [];
  ws: WebSocket | null = null;
  #chain: Promise<void> = Promise.resolve();

  private constructor(
    readonly name: string,
    readonly hub: string,
    public client: ParleyClient,
  ) {}

  static async create(hub: string, name: string): Promise<EngineUser> {
    const holder: { u?: EngineUser } = {};
    const client = await ParleyClient.create({
      hub,
      origin: ORIGIN,
      username: name,
      identity: await generateIdentityKeyPair(),
      store: new MemoryStore(),
      transport: { send: (f) => holder.u?.ws?.send(JSON.stringify(f)) },
      now: () => Date.now(),
      tuning: TUNING,
    });
    const u = new EngineUser(name, hub, client);
    holder.u = u;
    client.subscribe((e) => u.events.push(e));
    return u;
  }

  async connect(): Promise<void> {
    const res = await SELF.fetch(`${BASE}/ws?hub=${this.hub}`, {
      headers: { Upgrade: "websocket", Origin: ORIGIN },
    });
    const ws = res.webSocket;
    if (ws === null) throw new Error(`upgrade failed: ${res.status}`);
    this.ws = ws;
    ws.addEventListener("message", (e) => {
      const r = parseServerFrame(e.data);
      if (!r.ok) {
        this.events.push({
          type: "error",
          code: "relay_error",
          message: `invalid frame ${r.code}`,
        });
        return;
      }
      // The engine's handlers are async; feed frames one at a time, in arrival order.
      this.#chain = this.#chain.then(() => this.client.onServerFrame(r.frame));
    });
    ws.addEventListener("close", () => {
      if (this.ws === ws) this.ws = null;
      this.client.onDisconnected();
    });
    ws.accept();
    this.client.onConnected();
    await this.until(() => this.events.some((e) => e.type === "ready"), "ready");
  }

  async disconnect(): Promise<void> {
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "bye");
    this.client.onDisconnected();
    await this.#chain;
  }

  async until(pred: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (Date.now() > deadline) {
        const errs = this.errors().map((e) => `${e.code}: ${e.message}`);
        throw new Error(`${this.name}: timeout waiting for ${what}; errors: ${errs.join("; ")}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  messages(id: ConversationId): string[] {
    return this.events.flatMap((e) =>
      e.type === "message" && e.message.conversationId === id && e.message.direction === "in"
        ? [e.message.text]
        : [],
    );
  }

  errors() {
    return this.events.filter(
      (e): e is Extract<ParleyEvent, { type: "error" }> => e.type === "error",
    );
  }

  status(id: ConversationId): string | undefined {
    return this.client.conversations().find((c) => c.id === id)?.status;
  }
}

describe("engine ↔ relay", () => {
  it("1:1 online: handshake, messages both ways, delivery receipts", async () => {
    const hub = freshHub("e");
    const alice = await EngineUser.create(hub, "alice");
    const bob = await EngineUser.create(hub, "bob");
    await alice.connect();
    await bob.connect();
    await alice.client.startChat("bob");
    await alice.until(() => alice.status("dm:bob") === "secure", "secure");
    await alice.client.sendText("dm:bob", "hello bob");
    await bob.until(() => bob.messages("dm:alice").includes("hello bob"), "bob reads");
    await bob.client.sendText("dm:alice", "hi alice");
    await alice.until(() => alice.messages("dm:bob").includes("hi alice"), "alice reads");
    await alice.until(
      () => alice.events.some((e) => e.type === "delivery" && e.state === "delivered"),
      "delivered",
    );
    expect(alice.errors()).toEqual([]);
    expect(bob.errors()).toEqual([]);
    expect(await alice.client.safetyNumber("bob")).toBe(await bob.client.safetyNumber("alice"));
    await alice.disconnect();
    await bob.disconnect();
  });

  it("1:1 offline: a message to an offline user waits in the mailbox", async () => {
    const hub = freshHub("e");
    const alice = await EngineUser.create(hub, "alice");
    const bob = await EngineUser.create(hub, "bob");
    await bob.connect();
    // Wait until the engine has published bob's one-time prekeys, then take bob offline.
    const stub = env.RELAY.get(env.RELAY.idFromName(hub));
    const stored = () =>
      runInDurableObject(stub, (_i, state) =>
        Number(
          state.storage.sql
            .exec("SELECT COUNT(*) AS n FROM one_time_prekeys WHERE username = 'bob'")
            .one().n,
        ),
      );
    for (let i = 0; i < 100 && (await stored()) === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await stored()).toBeGreaterThan(0);
    await bob.disconnect();
    await alice.connect();
    await alice.client.startChat("bob");
    await alice.client.sendText("dm:bob", "while you were out");
    await new Promise((r) => setTimeout(r, 200));
    await bob.connect();
    await bob.until(() => bob.messages("dm:alice").includes("while you were out"), "bob reads");
    expect(alice.errors()).toEqual([]);
    expect(bob.errors()).toEqual([]);
    await alice.disconnect();
    await bob.disconnect();
  });

  it("groups: join, talk, leave with a removal commit", async () => {
    const hub = freshHub("e");
    const users = await Promise.all(
      ["alice", "bob", "carol"].map((n) => EngineUser.create(hub, n)),
    );
    const [alice, bob, carol] = users as [EngineUser, EngineUser, EngineUser];
    for (const u of users) await u.connect();
    const id: ConversationId = "group:team";
    for (const u of users) {
      await u.client.joinGroup("team");
      await u.until(() => u.status(id) === "secure", `${u.name} in team`);
    }
    const epochOf = (u: EngineUser) => u.client.conversations().find((c) => c.id === id)?.epoch;
    await alice.until(() => epochOf(alice) === epochOf(carol), "alice at carol's epoch");
    await bob.until(() => epochOf(bob) === epochOf(carol), "bob at carol's epoch");
    await alice.client.sendText(id, "hello team");
    await bob.until(() => bob.messages(id).includes("hello team"), "bob reads");
    await carol.until(() => carol.messages(id).includes("hello team"), "carol reads");
    await carol.client.leaveGroup("team");
    // A remaining member commits the removal; then the group can talk again without carol.
    await alice.until(() => {
      const c = alice.client.conversations().find((x) => x.id === id);
      return (
        c !== undefined &&
        c.removalPending !== true &&
        !c.members.some((m) => m.username === "carol")
      );
    }, "removal committed");
    await bob.until(() => epochOf(bob) === epochOf(alice), "bob follows");
    await bob.client.sendText(id, "just us");
    await alice.until(() => alice.messages(id).includes("just us"), "alice reads");
    await new Promise((r) => setTimeout(r, 100));
    expect(carol.messages(id)).not.toContain("just us");
    for (const u of users) expect(u.errors()).toEqual([]);
    for (const u of users) await u.disconnect();
  });
});
