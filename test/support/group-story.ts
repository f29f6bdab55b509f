/**
 * Closed-group stories against the real relay (PROTOCOL.md §9.7), shared by the scenario tests of
 * the group key schedule: create an invite-only group, invite and add a member, read a member's
 * group record, and find what the relay delivered.
 */
import type { ChatMessage, ConversationId } from "../../shared/core/client-api";
import type { Invite } from "../../shared/core/content";
import { type GroupRecord, parseGroupRecord } from "../../shared/core/group";
import { fromB64u } from "../../shared/encoding";
import type { ServerFrame } from "../../shared/protocol";
import type { TestUser } from "./clients";
import type { NodeRelay } from "./node-relay";

export function inviteFor(u: TestUser, from: string): Invite {
  const m = u.events
    .filter((e): e is { type: "message"; message: ChatMessage } => e.type === "message")
    .map((e) => e.message)
    .filter((x) => x.conversationId === `dm:${from}` && x.invite !== undefined)
    .at(-1);
  if (m?.invite === undefined) throw new Error(`${u.name} got no invitation from ${from}`);
  return m.invite;
}

/** `admin` (a member) invites `u` into `group` by a 1:1 invitation, `u` accepts; settled. */
export async function addByInvite(
  relay: NodeRelay,
  group: string,
  admin: TestUser,
  u: TestUser,
): Promise<void> {
  await admin.client.startChat(u.name);
  await relay.settle();
  await admin.client.inviteToGroup(group, u.name);
  await relay.settle();
  await u.client.acceptInvite(inviteFor(u, admin.name));
  await relay.settle();
}

export async function recordOf(u: TestUser, group: string): Promise<GroupRecord> {
  return parseGroupRecord(await u.store.get(`group/${group}`));
}

export const summaryOf = (u: TestUser, id: ConversationId) =>
  u.client.conversations().find((c) => c.id === id);

export interface Delivered {
  /** Index in relay.log. */
  at: number;
  to: string;
  from: string;
  fromKey: string;
  item: Extract<ServerFrame, { t: "deliver" }>["item"];
}

/** Every item the relay delivered (a hostile relay keeps a copy of each), in order. */
export function delivered(relay: NodeRelay): Delivered[] {
  const out: Delivered[] = [];
  relay.log.forEach((e, at) => {
    if (e.frame.t === "deliver" && e.to !== null)
      out.push({ at, to: e.to, from: e.frame.from, fromKey: e.frame.fromKey, item: e.frame.item });
  });
  return out;
}

/** Every 32-byte value found in `x` (base64url strings at any depth, and byte arrays). */
export function values32(x: unknown, out = new Set<string>()): Set<string> {
  if (typeof x === "string") {
    try {
      const b = fromB64u(x);
      if (b.length === 32) out.add(x);
    } catch {
      // Not base64url: a name, a label, JSON text.
      if (x.startsWith("[") || x.startsWith("{")) {
        try {
          values32(JSON.parse(x), out);
        } catch {
          // Not JSON either.
        }
      }
    }
  } else if (x instanceof Uint8Array) {
    if (x.length === 32) out.add(Buffer.from(x).toString("base64url"));
  } else if (Array.isArray(x)) {
    for (const y of x) values32(y, out);
  } else if (x !== null && typeof x === "object") {
    for (const y of Object.values(x)) values32(y, out);
  }
  return out;
}
