/**
 * `step(state, input) → { state, effects }` (PROTOCOL.md §10.1): the one entry point for every
 * engine input — a relay frame, a user verb, a timer, the socket opening or closing. It works on
 * a draft of the state and a `Tx` that reads the durable state and collects effects; it never
 * writes, sends, emits or sets a timer itself. The runner (client.ts) commits the effects.
 * Which file handles what: connection.ts (hello, welcome, presence, prekey top-up), direct.ts
 * (1:1), group-steps.ts (groups), gaps.ts (delivery gaps), inflight.ts and answers.ts (answers
 * routed by frame id), summaries.ts (what the UI lists).
 */
import * as v from "valibot";
import { toB64u } from "../../encoding";
import {
  type DeviceList,
  deviceOfMember,
  type FrameOf,
  LIMITS,
  PROTOCOL_VERSION,
  type PresenceScope,
  type ServerFrame,
  userOfMember,
} from "../../protocol";
import type { ConversationId, OutgoingAction, SendTextOptions } from "../client-api";
import { b64 } from "../codec";
import {
  Content,
  checkTextFits,
  contentOf,
  DmContent,
  type FileRef,
  type Invite,
  type TextContent,
} from "../content";
import { REPAIRABLE } from "../dm";
import { CoreError, isCoreError } from "../errors";
import { AccessError, type GroupPolicy } from "../group-access";
import { ReadSchema } from "../message-content";
import { KEYS } from "../store";
import { onAccepted, onRelayError } from "./answers";
import { onDisconnected, onHello, onPresence, onWelcome, replenish } from "./connection";
import { seeDeviceList } from "./devices";
import * as direct from "./direct";
import { type Effect, error, guarded, type Reads, system, Tx } from "./effects";
import { reportGaps } from "./gaps";
import * as admin from "./group-admin";
import * as commits from "./group-commits";
import * as membership from "./group-membership";
import * as groups from "./group-steps";
import { isOnline } from "./link";
import { loadGroup } from "./load";
import { ownListStored } from "./own-devices";
import { draft, type EngineState, type Env } from "./state";
import { summarizeGroup } from "./summaries";

export type TimerInput =
  /** A grace ran out for these delivery gaps (gaps.ts). */
  | { t: "gap_check"; keys: string[] }
  /** A fallback committer's turn for a pending leave (group-policy.ts). */
  | { t: "fallback"; group: string; epoch: number }
  /** The wait after a commit refused for want of room is over (group-steps.ts). */
  | { t: "commit_retry"; group: string };

export type Verb =
  | { t: "start_chat"; username: string }
  | { t: "end_chat"; username: string }
  | { t: "reclaim_device" }
  | { t: "send_text"; conversationId: ConversationId; text: string; opts?: SendTextOptions }
  | { t: "send_action"; conversationId: ConversationId; action: OutgoingAction }
  /** An attachment already encrypted and uploaded (§8.6.1), with its caption. */
  | {
      t: "send_file";
      conversationId: ConversationId;
      text: string;
      file: FileRef;
      opts?: SendTextOptions;
    }
  | { t: "join_group"; name: string }
  | { t: "create_group"; name: string; title: string; description: string; policy: GroupPolicy }
  | { t: "invite"; group: string; username: string }
  | { t: "accept_invite"; invite: Invite }
  | { t: "join_with_link"; group: string; secret: string }
  | { t: "create_invite_link"; group: string }
  | { t: "revoke_invite_links"; group: string }
  | {
      t: "set_group_info";
      group: string;
      title?: string;
      description?: string;
      policy?: GroupPolicy;
    }
  | { t: "promote"; group: string; username: string }
  | { t: "demote"; group: string; username: string }
  | { t: "remove_member"; group: string; username: string }
  | { t: "leave_group"; name: string }
  | { t: "accept_key_change"; username: string }
  | { t: "mark_verified"; username: string }
  | { t: "accept_contact"; username: string }
  | { t: "block_contact"; username: string }
  | { t: "set_presence"; scope: PresenceScope }
  /** The relay stored a list of ours this device signed (linking, removal; §4.8.3, §4.7). */
  | { t: "own_list_stored"; list: DeviceList };

export type Input =
  | { t: "connected"; socket: number }
  | { t: "disconnected" }
  | { t: "frame"; frame: ServerFrame }
  | { t: "verb"; verb: Verb }
  | { t: "timer"; timer: TimerInput }
  /** Inputs drained: answer the texts decrypted meanwhile with receipts (§8.6). */
  | { t: "flush_receipts" };

export interface StepResult {
  state: EngineState;
  effects: Effect[];
  /** A verb's answer (a message id, a conversation id). */
  result?: string;
  /** A verb refused (its effects were undone): the caller's promise rejects with it. */
  error?: unknown;
}

export async function step(
  env: Env,
  reads: Reads,
  state: EngineState,
  input: Input,
): Promise<StepResult> {
  const tx = new Tx(env, draft(state), reads);
  switch (input.t) {
    case "connected":
      tx.state.link = { t: "authenticating", socket: input.socket };
      tx.emit({ type: "connection", state: "connecting" });
      break;
    case "disconnected":
      await onDisconnected(tx);
      break;
    case "frame":
      try {
        await tx.attempt(() => onFrame(tx, input.frame));
      } catch (e) {
        if (isCoreError(e)) error(tx, e.code, e.message);
        else error(tx, "malformed", e instanceof Error ? e.message : "engine failure");
      }
      break;
    case "timer":
      try {
        await tx.attempt(() => onTimer(tx, input.timer));
      } catch (e) {
        if (isCoreError(e)) error(tx, e.code, e.message);
      }
      break;
    case "flush_receipts":
      if (isOnline(tx.state.link)) {
        try {
          await tx.attempt(() => direct.flushReceipts(tx));
        } catch (e) {
          if (isCoreError(e)) error(tx, e.code, e.message);
        }
      }
      break;
    case "verb":
      try {
        const result = await tx.attempt(() => onVerb(tx, input.verb));
        return {
          state: tx.state,
          effects: tx.effects,
          ...(result !== undefined ? { result } : {}),
        };
      } catch (e) {
        return { state: tx.state, effects: tx.effects, error: e };
      }
  }
  return { state: tx.state, effects: tx.effects };
}

// ---------------------------------------------------------------------------------------------
// Frames

async function onFrame(tx: Tx, f: ServerFrame): Promise<void> {
  switch (f.t) {
    case "hello":
      return onHello(tx, f);
    case "welcome":
      return onWelcome(tx, f);
    case "presence":
    case "presence_delta":
      return onPresence(tx, f);
    case "bundle":
      return direct.onBundle(tx, f);
    case "accepted":
      return onAccepted(tx, f);
    case "deliver":
      return onDeliver(tx, f);
    case "receipt":
      // The relay's `receipt` only claims the recipient acknowledged the item: a lying relay can
      // forge it for a message it dropped (SECURITY.md L3). It changes no state (§6): "sent"
      // comes from `accepted`, "delivered" only from the end-to-end receipt (§8.6).
      return;
    case "group":
      return groups.onGroupState(tx, f.state);
    case "left":
      return membership.onLeft(tx, f.group, f.auth);
    case "prekeys_low":
      return replenish(tx);
    case "device_list":
      // Our own list, changed by another device of ours (§4.6).
      return seeDeviceList(tx, tx.env.username, tx.env.identityKey, f.list, null);
    case "error":
      return onRelayError(tx, f);
    case "pong":
    // Upload tickets are answered to the runner's request, outside the steps (client.ts).
    case "blob_ticket":
      return;
  }
}

async function onDeliver(tx: Tx, f: FrameOf<ServerFrame, "deliver">): Promise<void> {
  const item = f.item;
  if (item.kind === "direct" && deviceOfMember(f.from) !== null) {
    // A 1:1 sender is a username; its device comes in `fromDevice` (§4.9). Typed and dropped.
    error(tx, "malformed", "a direct message named a device address as its sender");
    tx.send({ v: PROTOCOL_VERSION, t: "ack", mids: [f.mid] });
    return;
  }
  let ack = true;
  try {
    await tx.attempt(async () => {
      if (item.kind === "direct")
        await direct.onDirect(tx, f.from, b64(item.body, "body"), f.fromDevice);
      else if (item.kind === "commit") await groups.onCommit(tx, item, f.from, f.fromKey);
      else await groups.onGroupMessage(tx, f.from, item.group, item.epoch, b64(item.body, "body"));
    });
  } catch (e) {
    // The relay delivers at least once: a message we already processed comes back as a replay
    // after a lost ack — acknowledge it silently.
    if (isCoreError(e, "replay")) return;
    // Only a typed failure of the item itself (CoreError) is final. Anything else is local (a
    // bug): the item was not stored, so it stays un-acknowledged and the relay delivers it again
    // on the next connection instead of it being lost (§10.1).
    if (!isCoreError(e)) {
      ack = false;
      throw e;
    }
    const conv = item.kind === "direct" ? direct.dmId(f.from) : groups.groupId(item.group);
    const code = e.code;
    if (item.kind === "commit") groups.noteRefusedCommit(tx, item.group, item.epoch);
    if (item.kind === "commit" && e instanceof AccessError) {
      // Refused for want of authorization (§9.7.5): shown, kept, never healed by rejoining.
      await guarded(tx, () => groups.onAccessRefused(tx, item.group, item.epoch, e), conv);
      error(tx, code, e.message, conv);
      return;
    }
    await guarded(
      tx,
      async () => {
        if (item.kind === "direct" && REPAIRABLE.has(code) && f.from !== tx.env.username) {
          await direct.repair(tx, f.from, code, f.fromDevice);
        } else {
          error(tx, code, e.message, conv);
          system(
            tx,
            conv,
            "decrypt_failed",
            code === "fork"
              ? `This group's history diverged: the new group key from ${f.from} was refused`
              : `A message from ${f.from} could not be read (${code})`,
            {
              username: userOfMember(f.from),
            },
          );
        }
        if (item.kind === "commit") await commits.evaluateGroup(tx, item.group);
      },
      conv,
    );
  } finally {
    if (ack) tx.send({ v: PROTOCOL_VERSION, t: "ack", mids: [f.mid] });
  }
}

// ---------------------------------------------------------------------------------------------
// Timers and verbs

async function onTimer(tx: Tx, t: TimerInput): Promise<void> {
  if (t.t === "fallback") return commits.onFallback(tx, t.group, t.epoch);
  if (t.t === "commit_retry") return commits.onCommitRetry(tx, t.group);
  // Offline, the missing message may still sit in our mailbox: decide after the next
  // connection's drain (onWelcome schedules a fresh check).
  if (isOnline(tx.state.link)) reportGaps(tx, t.keys);
}

async function onVerb(tx: Tx, verb: Verb): Promise<string | undefined> {
  switch (verb.t) {
    case "start_chat":
      return direct.startChat(tx, verb.username);
    case "end_chat":
      await direct.endChat(tx, verb.username);
      return;
    case "reclaim_device":
      tx.state.device = { ...tx.state.device, claim: true };
      tx.put(KEYS.device, tx.state.device);
      tx.state.retired = false;
      return;
    case "send_text":
      return sendText(tx, verb.conversationId, verb.text, verb.opts);
    case "send_action":
      return sendAction(tx, verb.conversationId, verb.action);
    case "send_file":
      return sendText(tx, verb.conversationId, verb.text, verb.opts, verb.file);
    case "join_group":
      await membership.joinGroup(tx, verb.name);
      return;
    case "leave_group":
      await membership.leaveGroup(tx, verb.name);
      return;
    case "create_group":
      await admin.createGroup(tx, verb.name, verb);
      return;
    case "invite":
      return admin.inviteToGroup(tx, verb.group, verb.username);
    case "accept_invite":
      await admin.acceptInvite(tx, verb.invite);
      return;
    case "join_with_link":
      await admin.joinWithLink(tx, verb.group, verb.secret);
      return;
    case "create_invite_link":
      return admin.createInviteLink(tx, verb.group);
    case "revoke_invite_links":
      await admin.changeGroupInfo(tx, verb.group, (i) => ({ ...i, links: [] }));
      return;
    case "set_group_info":
      await admin.changeGroupInfo(tx, verb.group, (i) => ({
        ...i,
        ...(verb.title === undefined ? {} : { title: verb.title }),
        ...(verb.description === undefined ? {} : { description: verb.description }),
        ...(verb.policy === undefined ? {} : { policy: verb.policy }),
      }));
      return;
    case "promote":
      await admin.promoteMember(tx, verb.group, verb.username);
      return;
    case "demote":
      await admin.demoteMember(tx, verb.group, verb.username);
      return;
    case "remove_member":
      await admin.removeMember(tx, verb.group, verb.username);
      return;
    case "accept_key_change":
      if (await direct.acceptKeyChange(tx, verb.username)) {
        for (const name of tx.state.relayGroups.keys())
          summarizeGroup(tx, await loadGroup(tx, name));
      }
      return;
    case "mark_verified":
      await direct.markContactVerified(tx, verb.username);
      return;
    case "accept_contact":
      await direct.acceptContact(tx, verb.username);
      return;
    case "block_contact":
      await direct.blockContact(tx, verb.username);
      return;
    case "own_list_stored":
      await ownListStored(tx, verb.list);
      return;
    case "set_presence": {
      // Kept by the relay (§6.3), not here: the next `welcome` reports it back.
      if (!isOnline(tx.state.link))
        throw new CoreError("not_connected", "not connected to the relay");
      tx.state.seq++;
      tx.send({
        v: PROTOCOL_VERSION,
        t: "settings",
        id: String(tx.state.seq),
        presence: verb.scope,
      });
      tx.state.presenceScope = verb.scope;
      tx.emit({ type: "settings", presence: verb.scope });
      return;
    }
  }
}

async function sendText(
  tx: Tx,
  conversationId: ConversationId,
  text: string,
  opts: SendTextOptions = {},
  file?: FileRef,
): Promise<string> {
  const content: TextContent = contentOf({
    id: toB64u(tx.env.random(12)),
    ts: tx.now,
    text,
    ...direct.textExtras(opts),
    file,
  });
  // Before anything is encrypted or queued: an entry the wire cannot carry must never reach the
  // outbox (§8.6, §10.1). The caller keeps the text and can split it.
  checkTextFits(content, LIMITS.maxBodyChars);
  await sendContent(tx, conversationId, outgoing(conversationId, content));
  return content.id;
}

/**
 * A reaction, edit, delete, timer, typing state or read receipt (§8.6.1), checked against the
 * same schema receivers apply, so nothing a peer would refuse is encrypted. Typing and read are
 * dropped ("") when they cannot go now; in a group, `read` goes to our own devices only (§4.9).
 */
async function sendAction(
  tx: Tx,
  conversationId: ConversationId,
  action: OutgoingAction,
): Promise<string> {
  if (action.t === "read" && conversationId.startsWith("group:")) {
    // Read state in a group goes to our own devices only (§4.9): there are no group receipts.
    const r = v.safeParse(ReadSchema, { t: "read", ids: action.ids });
    if (!r.success) throw new CoreError("malformed", "not a read state");
    await direct.syncGroupRead(tx, conversationId.slice("group:".length), r.output.ids);
    return "";
  }
  if (action.t === "read" && action.ownDevicesOnly === true) {
    // Read receipts off (§8.6.1): only our own devices hear of it, as a sync copy (§4.9).
    if (!conversationId.startsWith("dm:")) throw new CoreError("malformed", "read is 1:1 only");
    const content = outgoing(conversationId, { t: "read", ids: action.ids });
    if (content.t !== "read") throw new CoreError("malformed", "not a read state");
    await direct.sendDm(tx, conversationId.slice(3), content, { peers: false });
    return "";
  }
  const stamped =
    action.t === "read"
      ? { t: "read" as const, ids: action.ids }
      : action.t === "typing"
        ? action
        : { ...action, id: toB64u(tx.env.random(12)), ts: tx.now };
  if (stamped.t === "edit") checkTextFits(stamped, LIMITS.maxBodyChars);
  const content = outgoing(conversationId, stamped);
  if (content.t === "typing") {
    // Best effort: a typing state that cannot go now (no session, a pending removal) is moot.
    try {
      await tx.attempt(() => sendContent(tx, conversationId, content));
    } catch {
      // Nothing staged is left behind (tx.attempt).
    }
    return "";
  }
  const sent = await sendContent(tx, conversationId, content);
  return sent && "id" in content ? content.id : "";
}

/** The content as receivers will parse it (§8.6, §8.6.1), or `malformed`. */
function outgoing(conversationId: ConversationId, c: unknown): DmContentOut {
  const schema = conversationId.startsWith("group:") ? Content : DmContent;
  const r = v.safeParse(schema, c);
  // Receipts, repair asks and sync copies are the engine's own (§8.6, §8.10, §4.9).
  if (
    !r.success ||
    r.output.t === "receipt" ||
    r.output.t === "retry" ||
    r.output.t === "sync" ||
    r.output.t === "devices"
  )
    throw new CoreError("malformed", "content does not fit its schema");
  return r.output;
}

type DmContentOut = Exclude<DmContent, { t: "receipt" | "retry" | "sync" | "devices" }>;

async function sendContent(
  tx: Tx,
  conversationId: ConversationId,
  content: DmContentOut,
): Promise<boolean> {
  if (conversationId.startsWith("dm:")) return direct.sendDm(tx, conversationId.slice(3), content);
  if (conversationId.startsWith("group:")) {
    if (content.t === "read") throw new CoreError("malformed", "read receipts are 1:1 only");
    await groups.sendGroup(tx, conversationId.slice(6), content);
    return true;
  }
  throw new CoreError("malformed", "unknown conversation");
}
