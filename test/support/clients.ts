/**
 * Test users (alice, bob, carol, dave) wired to a NodeRelay (the real relay in Node): each has a
 * real identity, a MemoryStore, a ParleyClient and a log of the events it emitted. Helpers read the log the way
 * the UI would (messages per conversation, system lines, statuses).
 */

import { ParleyClient } from "../../shared/core/client";
import type {
  ChatMessage,
  ConversationId,
  ParleyEvent,
  SystemLine,
  Tuning,
} from "../../shared/core/client-api";
import { MemoryStore } from "../../shared/core/store";
import { generateIdentityKeyPair, type IdentityKeyPair } from "../../shared/crypto";
import { type ClientFrame, LIMITS } from "../../shared/protocol";
import type { Conn, NodeRelay } from "./node-relay";

export interface TestUser {
  name: string;
  identity: IdentityKeyPair;
  store: MemoryStore;
  client: ParleyClient;
  events: ParleyEvent[];
  conn: Conn | null;
  relay: NodeRelay;
  tuning: Partial<Tuning>;
}

/** A manual scheduler: timers fire only when the test calls `fire()`. */
export class ManualTimers {
  readonly pending: Array<{ ms: number; fn: () => void; cancelled: boolean }> = [];
  schedule = (ms: number, fn: () => void) => {
    const t = { ms, fn, cancelled: false };
    this.pending.push(t);
    return () => {
      t.cancelled = true;
    };
  };
  fire(): number {
    const due = this.pending.splice(0).filter((t) => !t.cancelled);
    for (const t of due) t.fn();
    return due.length;
  }
}

export const timers = new ManualTimers();

async function makeClient(u: Omit<TestUser, "client">): Promise<ParleyClient> {
  const client = await ParleyClient.create({
    hub: u.relay.hub,
    origin: u.relay.origin,
    username: u.name,
    identity: u.identity,
    store: u.store,
    transport: { send: (f: ClientFrame) => (u as TestUser).conn?.fromClient(f) },
    now: () => u.relay.now(),
    schedule: timers.schedule,
    tuning: u.tuning,
  });
  client.subscribe((e) => u.events.push(e));
  return client;
}

export async function newUser(
  relay: NodeRelay,
  name: string,
  opts: { tuning?: Partial<Tuning>; identity?: IdentityKeyPair; store?: MemoryStore } = {},
): Promise<TestUser> {
  const base = {
    name,
    identity: opts.identity ?? (await generateIdentityKeyPair()),
    store: opts.store ?? new MemoryStore(),
    events: [] as ParleyEvent[],
    conn: null,
    relay,
    tuning: opts.tuning ?? {},
  };
  const u = base as unknown as TestUser;
  u.client = await makeClient(u);
  return u;
}

export async function connect(...users: TestUser[]): Promise<void> {
  for (const u of users) {
    u.conn = u.relay.connect(u.client, u.name);
    await u.relay.settle();
  }
}

export async function disconnect(...users: TestUser[]): Promise<void> {
  for (const u of users) {
    if (u.conn) u.relay.disconnect(u.conn);
    u.conn = null;
  }
  await users[0]?.relay.settle();
  // Presence deltas go out at most once per LIMITS.presenceDeltaIntervalMs per viewer
  // (PROTOCOL.md §6.3): let that much time pass so peers see the user gone, as they would.
  await users[0]?.relay.advance(LIMITS.presenceDeltaIntervalMs);
}

/** Replace the engine with a fresh one loaded from a store (restart / restore). */
export async function restart(u: TestUser, store?: MemoryStore): Promise<void> {
  if (u.conn) u.relay.disconnect(u.conn);
  u.conn = null;
  if (store) u.store = store;
  u.client = await makeClient(u);
}

export async function online(relay: NodeRelay, ...names: string[]): Promise<TestUser[]> {
  const users: TestUser[] = [];
  for (const n of names) users.push(await newUser(relay, n));
  await connect(...users);
  return users;
}

export function messages(
  u: TestUser,
  id: ConversationId,
  direction: "in" | "out" = "in",
): string[] {
  return u.events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .filter((m) => m.conversationId === id && m.direction === direction)
    .map((m) => m.text);
}

export function lines(u: TestUser, id: ConversationId): SystemLine[] {
  return u.events
    .filter((e): e is { type: "system"; line: SystemLine } => e.type === "system")
    .map((e) => e.line)
    .filter((l) => l.conversationId === id);
}

export function errors(u: TestUser): Array<Extract<ParleyEvent, { type: "error" }>> {
  return u.events.filter((e): e is Extract<ParleyEvent, { type: "error" }> => e.type === "error");
}

export { statusOf as status } from "./status";

export async function say(u: TestUser, id: ConversationId, text: string): Promise<string> {
  const mid = await u.client.sendText(id, text);
  await u.relay.settle();
  return mid;
}
