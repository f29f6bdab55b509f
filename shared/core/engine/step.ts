/**
 * `step(state, input) → { state, effects }` (PROTOCOL.md §10.1): the one entry point for every
 * engine input — a relay frame, a user verb, a timer, the socket opening or closing. It works on
 * a draft of the state and a `Tx` that reads the durable state and collects effects; it never
 * writes, sends, emits or sets a timer itself. The runner (client.ts) commits the effects.
 * Which file handles what: direct.ts (1:1), group-steps.ts (groups), gaps.ts (delivery gaps),
 * inflight.ts (answers routed by frame id), summaries.ts (what the UI lists).
 */
import * as v from "valibot";
import { authTranscript } from "../../auth";
import { ed25519Sign } from "../../crypto";
import { fromB64u, toB64u } from "../../encoding";
import { type FrameOf, LIMITS, PROTOCOL_VERSION, type ServerFrame } from "../../protocol";
import type { ConversationId } from "../client-api";
import { b64 } from "../codec";
import { checkTextFits, type TextContent } from "../content";
import { parseDmRecord, REPAIRABLE } from "../dm";
import { CoreError, isCoreError } from "../errors";
import {
  addOneTimeKemPrekeys,
  addOneTimePrekeys,
  maintainSpk,
  publicPq,
  publicSpk,
} from "../prekeys";
import { KEYS } from "../store";
import { onAccepted, onRelayError, outboxEntry } from "./answers";
import * as direct from "./direct";
import { type Effect, error, type Reads, system, Tx } from "./effects";
import { reportGaps, scheduleGapCheck } from "./gaps";
import * as groups from "./group-steps";
import { dropTransient, FLIGHT_PREFIX, FlightRecordSchema, flightFrame } from "./inflight";
import { isOnline, OFFLINE } from "./link";
import { loadGroup, loadPrekeys } from "./load";
import { type Draft, draft, type EngineState, type Env } from "./state";
import { presenceList, resummarize, summarizeDm, summarizeGroup } from "./summaries";

/** Our own one-time prekey secrets kept at most (the relay stores up to 200 public halves). */
const MAX_OPK_SECRETS = 2 * LIMITS.maxOneTimePrekeysStored;

export type TimerInput =
  /** A grace ran out for these delivery gaps (gaps.ts). */
  | { t: "gap_check"; keys: string[] }
  /** A fallback committer's turn for a pending leave (group-policy.ts). */
  | { t: "fallback"; group: string; epoch: number };

export type Verb =
  | { t: "start_chat"; username: string }
  | { t: "end_chat"; username: string }
  | { t: "reclaim_device" }
  | { t: "send_text"; conversationId: ConversationId; text: string }
  | { t: "join_group"; name: string }
  | { t: "leave_group"; name: string }
  | { t: "accept_key_change"; username: string }
  | { t: "mark_verified"; username: string };

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
// Connection

async function onDisconnected(tx: Tx): Promise<void> {
  const s: Draft = tx.state;
  s.link = OFFLINE;
  s.online.clear();
  dropTransient(s.flights);
  tx.emit({ type: "connection", state: s.retired ? "retired" : "offline" });
  await resummarize(tx);
}

async function onHello(tx: Tx, f: FrameOf<ServerFrame, "hello">): Promise<void> {
  const { env } = tx;
  if (f.hub !== env.hub) {
    error(tx, "relay_error", "relay announced a different hub");
    return;
  }
  const m = await maintainSpk(
    await loadPrekeys(tx),
    env.identity,
    tx.now,
    env.random,
    env.tuning.signedPrekeyRotateMs,
    env.tuning.signedPrekeyGraceMs,
  );
  tx.put(KEYS.prekeys, m.state);
  const spk = publicSpk(m.state);
  const pq = publicPq(m.state);
  if (tx.state.retired) return;
  const device = tx.state.device;
  const sig = await ed25519Sign(
    env.identity.privateKey,
    authTranscript(
      { hub: env.hub, origin: env.origin, challenge: fromB64u(f.challenge) },
      env.username,
      env.identity.publicKey,
      { id: spk.id, key: fromB64u(spk.key), sig: fromB64u(spk.sig) },
      { id: fromB64u(device.id), claim: device.claim },
    ),
  );
  tx.send({
    v: PROTOCOL_VERSION,
    t: "auth",
    username: env.username,
    identityKey: env.identityKey,
    signedPrekey: spk,
    device: device.id,
    claim: device.claim,
    ...(pq === null ? {} : { pqPrekey: pq }),
    sig: toB64u(sig),
  });
}

/** Run `fn` as a unit; a typed failure is reported and the rest of the step goes on. */
async function guarded(tx: Tx, fn: () => Promise<void>, conversationId?: ConversationId) {
  try {
    await tx.attempt(fn);
  } catch (e) {
    if (!isCoreError(e)) throw e;
    error(tx, e.code, e.message, conversationId);
  }
}

async function onWelcome(tx: Tx, f: FrameOf<ServerFrame, "welcome">): Promise<void> {
  const { env } = tx;
  const s = tx.state;
  if (f.username !== env.username || f.identityKey !== env.identityKey) {
    error(tx, "relay_error", "relay welcomed a different identity");
    return;
  }
  if (s.link.t === "offline") return;
  s.link = { t: "online", socket: s.link.socket, uploading: false };
  if (s.device.claim) {
    // The relay made us the current device; later connections need not claim again (§4.3).
    s.device = { ...s.device, claim: false };
    tx.put(KEYS.device, s.device);
  }
  tx.emit({ type: "ready", username: env.username, fingerprint: env.fingerprint });
  tx.emit({ type: "connection", state: "online" });
  if (f.oneTimePrekeysRemaining < LIMITS.oneTimePrekeysLowWatermark) await replenish(tx);
  await resendRegistry(tx);
  for (const { value } of await tx.list("dm/")) {
    const rec = parseDmRecord(value);
    await guarded(
      tx,
      async () => {
        if (rec.queue.length > 0 || rec.pending?.kind === "fetching") {
          await direct.ensureSession(tx, {
            ...rec,
            pending: rec.pending?.kind === "fetching" ? null : rec.pending,
          });
        } else summarizeDm(tx, rec);
      },
      direct.dmId(rec.peer),
    );
  }
  for (const g of f.groups) s.relayGroups.set(g.group, g);
  for (const g of f.groups)
    await guarded(tx, () => groups.evaluateGroup(tx, g.group), groups.groupId(g.group));
  await resummarize(tx);
  // Gaps whose grace ran out while we were offline: decide after this connection's mailbox
  // drain, one grace from now (§8.8).
  if (s.gaps.size > 0) scheduleGapCheck(tx, [...s.gaps.keys()]);
}

/**
 * Send again everything the registry holds (§10.1), oldest first: the outbox's frames with
 * their same bytes (no nonce is reused) and the persisted joins and leaves. Each entry stands
 * alone: one that no longer parses is set aside, never blocking the rest.
 */
async function resendRegistry(tx: Tx): Promise<void> {
  const rows = [
    ...(await tx.list("outbox/")).map((r) => ({ ...r, seq: Number(r.key.slice(7)) })),
    ...(await tx.list(FLIGHT_PREFIX)).map((r) => ({
      ...r,
      seq: Number(r.key.slice(FLIGHT_PREFIX.length)),
    })),
  ].sort((a, b) => a.seq - b.seq);
  for (const { key, value } of rows) {
    if (key.startsWith("outbox/")) {
      const entry = outboxEntry(tx, key, value);
      if (entry !== null) tx.send(entry.frame);
      continue;
    }
    const r = v.safeParse(FlightRecordSchema, value);
    if (r.success) tx.send(flightFrame(r.output));
    else {
      tx.del(key);
      error(
        tx,
        "outbox_entry_invalid",
        "a stored join or leave could not be sent and was set aside",
      );
    }
  }
}

async function onPresence(tx: Tx, f: FrameOf<ServerFrame, "presence">): Promise<void> {
  const s = tx.state;
  s.online.clear();
  let changed = false;
  for (const u of f.users) {
    s.online.set(u.username, u.identityKey);
    const c = s.contacts.get(u.username);
    // Presence is relay-asserted: it never pins, but a key different from the pin is shown.
    if (c && c.identityKey !== u.identityKey && c.changedKey !== u.identityKey) {
      const next = { ...c, changedKey: u.identityKey, verified: false };
      tx.put(KEYS.contact(u.username), next);
      s.contacts.set(u.username, next);
      changed = true;
      system(tx, direct.dmId(u.username), "key_changed", `${u.username}'s safety number changed`, {
        username: u.username,
      });
    }
  }
  tx.emit({ type: "presence", users: presenceList(s) });
  for (const name of [...s.relayGroups.keys()])
    await guarded(tx, () => groups.evaluateGroup(tx, name), groups.groupId(name));
  if (changed) await resummarize(tx);
}

/** Top up the relay's one-time prekeys (§8.3.2); one upload at a time. */
async function replenish(tx: Tx): Promise<void> {
  const l = tx.state.link;
  if (l.t !== "online" || l.uploading) return;
  const r = await addOneTimePrekeys(
    await loadPrekeys(tx),
    tx.env.tuning.oneTimePrekeyBatch,
    tx.env.random,
  );
  // One-time KEM prekeys go with them (§8.3.5): handed out together, they run low together.
  const k = await addOneTimeKemPrekeys(
    r.state,
    Math.min(tx.env.tuning.oneTimePrekeyBatch, LIMITS.maxOneTimeKemPrekeysPerUpload),
    tx.env.identity,
    tx.env.random,
  );
  const opks = k.state.opks.slice(-MAX_OPK_SECRETS);
  tx.put(KEYS.prekeys, { ...k.state, opks });
  tx.state.seq++;
  const id = String(tx.state.seq);
  tx.state.link = { ...l, uploading: true };
  tx.state.flights.set(id, { kind: "upload" });
  tx.send({
    v: PROTOCOL_VERSION,
    t: "upload_prekeys",
    id,
    oneTimePrekeys: r.upload,
    ...(k.upload.length > 0 ? { oneTimeKemPrekeys: k.upload } : {}),
  });
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
      return groups.onLeft(tx, f.group);
    case "prekeys_low":
      return replenish(tx);
    case "error":
      return onRelayError(tx, f);
    case "pong":
      return;
  }
}

async function onDeliver(tx: Tx, f: FrameOf<ServerFrame, "deliver">): Promise<void> {
  const item = f.item;
  let ack = true;
  try {
    await tx.attempt(async () => {
      if (item.kind === "direct") await direct.onDirect(tx, f.from, b64(item.body, "body"));
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
    await guarded(
      tx,
      async () => {
        if (item.kind === "direct" && REPAIRABLE.has(code) && f.from !== tx.env.username) {
          await direct.repair(tx, f.from, code);
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
              username: f.from,
            },
          );
        }
        if (item.kind === "commit") await groups.evaluateGroup(tx, item.group);
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
  if (t.t === "fallback") return groups.onFallback(tx, t.group, t.epoch);
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
      return sendText(tx, verb.conversationId, verb.text);
    case "join_group":
      await groups.joinGroup(tx, verb.name);
      return;
    case "leave_group":
      await groups.leaveGroup(tx, verb.name);
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
  }
}

async function sendText(tx: Tx, conversationId: ConversationId, text: string): Promise<string> {
  const content: TextContent = { t: "text", id: toB64u(tx.env.random(12)), ts: tx.now, text };
  // Before anything is encrypted or queued: an entry the wire cannot carry must never reach the
  // outbox (§8.6, §10.1). The caller keeps the text and can split it.
  checkTextFits(content, LIMITS.maxBodyChars);
  if (conversationId.startsWith("dm:")) await direct.sendDm(tx, conversationId.slice(3), content);
  else if (conversationId.startsWith("group:"))
    await groups.sendGroup(tx, conversationId.slice(6), content);
  else throw new CoreError("malformed", "unknown conversation");
  return content.id;
}
