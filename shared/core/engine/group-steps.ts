/**
 * Groups as steps (PROTOCOL.md §9): the relay's group state, receiving commits and messages,
 * and sending. Joining and leaving are in group-membership.ts, committing in group-commits.ts,
 * closed-group administration in group-admin.ts; the crypto is group.ts's pure transitions.
 */
import { ed25519Sign } from "../../crypto";
import { fromB64u, toB64u } from "../../encoding";
import { deviceOfMember, type GroupState, PROTOCOL_VERSION, userOfMember } from "../../protocol";
import type { ConversationId } from "../client-api";
import { b64 } from "../codec";
import type { Content } from "../content";
import { deviceMemberRefusal } from "../devices";
import { CoreError } from "../errors";
import { decryptGroup, encryptGroup, type GroupRecord, receiveCommit } from "../group";
import { AccessError, checkCommitAccess, decodeGroupInfo } from "../group-access";
import { phaseOf } from "../group-record";
import { KEYS } from "../store";
import { type Contact, checkKey } from "../trust";
import { loadPinnedDevices } from "./devices";
import {
  announceContent,
  announceOutgoing,
  announceReceived,
  learnDevices,
  outboxSend,
} from "./direct";
import { system, type Tx } from "./effects";
import { trackGroupGaps } from "./gaps";
import { evaluateGroup } from "./group-commits";
import { refillLeaves } from "./group-membership";
import { leaveOf, nextId } from "./inflight";
import { loadGroup, meInGroups, selfMember } from "./load";
import { summarizeGroup } from "./summaries";

export const groupId = (name: string): ConversationId => `group:${name}`;

// ---------------------------------------------------------------------------------------------
// Relay group state

/** A `group` frame: the relay's state of a group we are in or joining (§9.1). */
export async function onGroupState(tx: Tx, state: GroupState): Promise<void> {
  tx.state.relayGroups.set(state.group, state);
  await evaluateGroup(tx, state.group);
  // `removalPending` comes from the relay's state: a committer whose `accepted` arrived before
  // this frame would otherwise keep showing the pending removal.
  if (tx.state.summaries.has(groupId(state.group)))
    summarizeGroup(tx, await loadGroup(tx, state.group));
}

/**
 * How a member is named to people (§4.7): a username as it is, a linked device as its user with
 * the device's name from the list we hold ("alice (phone)"), ours as "your phone".
 */
export async function memberLabel(tx: Tx, member: string): Promise<string> {
  const device = deviceOfMember(member);
  const user = userOfMember(member);
  const own = user === tx.env.username;
  if (device === null) return own ? "you" : user;
  const pinned = await loadPinnedDevices(tx, user);
  const name =
    pinned?.list.devices.find((e) => e.id === device)?.name ??
    (pinned?.revoked.includes(device) ? "removed device" : "another device");
  return own ? `your ${name}` : `${user} (${name})`;
}

export async function commitLines(
  tx: Tx,
  name: string,
  rec: GroupRecord,
  added: string[],
  removed: string[],
  by: string,
): Promise<void> {
  const id = groupId(name);
  for (const n of removed)
    if (!added.includes(n))
      system(tx, id, "left", `${await memberLabel(tx, n)} left`, { username: userOfMember(n) });
  for (const n of added)
    system(tx, id, "joined", `${await memberLabel(tx, n)} joined`, { username: userOfMember(n) });
  const epoch = rec.current?.epoch ?? 0;
  system(tx, id, "epoch", `New group key (epoch ${epoch}) from ${await memberLabel(tx, by)}`, {
    epoch,
    username: userOfMember(by),
  });
  // §9.3: an epoch with a classical leaf key is not post-quantum; said whenever the set of
  // members without a hybrid leaf key changes to a non-empty one (on joining: if there is any).
  const classical = (
    e: { roster: readonly { name: string; leafKem?: string | undefined }[] } | null,
  ) => (e?.roster ?? []).filter((m) => m.leafKem === undefined).map((m) => userOfMember(m.name));
  const now = classical(rec.current);
  if (now.length > 0 && now.join("\n") !== classical(rec.previous).join("\n")) {
    system(
      tx,
      id,
      "not_post_quantum",
      `This group is not post-quantum: ${now.join(", ")} publish${now.length === 1 ? "es" : ""} no post-quantum keys`,
      { username: now[0] as string, count: now.length },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Receiving

export async function onCommit(
  tx: Tx,
  item: { group: string; epoch: number; core: string; wrap: string },
  from: string,
  fromKey: string,
): Promise<void> {
  const name = item.group;
  const { env } = tx;
  const rec = await loadGroup(tx, name);
  // Our own commit echoed back (self-wrap), or an old duplicate: nothing to do.
  if (rec.status === "member" && rec.current && item.epoch <= rec.current.epoch) return;
  const received = await receiveCommit({
    record: rec,
    hub: env.hub,
    me: meInGroups(tx),
    itemEpoch: item.epoch,
    core: b64(item.core, "core"),
    wrap: b64(item.wrap, "wrap"),
    now: tx.now,
    from: { name: from, identityKey: fromKey },
  });
  // Closed groups (§9.7.2): the state change, every add and every removal must be authorized,
  // or the whole commit is refused (AccessError), never applied.
  const joining = !(rec.status === "member" && rec.current !== null);
  const c = received.view.core;
  const info = await checkCommitAccess({
    hub: env.hub,
    group: name,
    prev: {
      info: rec.info,
      roster: joining ? [] : (rec.current?.roster ?? []),
      since: rec.since ?? {},
    },
    commit: c,
    joining,
  });
  const r = {
    ...received,
    record: withAccess(env.hub, received.record, rec, {
      info: info?.blob,
      epoch: c.epoch,
      added: c.added,
      removed: c.removed,
      joining,
      self: selfMember(tx),
    }),
  };
  // Device members (§4.7, §9.7.2): a device its user's list removed is never let in (a stolen
  // device holds the identity key and could sign its own leaf keys), nor, for our own identity,
  // one our list does not name. Shown and kept like any refused authorization (§9.7.5).
  for (const n of joining ? r.view.core.roster.map((m) => m.name) : c.added) {
    const refusal = await deviceMemberCheck(tx, n);
    if (refusal !== null)
      throw new AccessError("device_not_listed", n, `${await memberLabel(tx, n)} ${refusal}`);
  }
  // A roster key that contradicts a pin, or the relay's own record of that name, refuses the
  // whole commit (§8.7, §9.4 step 5): applying it would switch the group to a key someone else
  // holds. Nothing is re-pinned or flagged, so a forged commit cannot poison contacts; only
  // names we have no pin for are pinned (TOFU), once the commit is otherwise valid.
  const state = tx.state.relayGroups.get(name);
  const relayKeys = new Map(
    [...(state?.members ?? []), ...(state?.pendingJoins ?? [])].map((m) => [
      m.username,
      m.identityKey,
    ]),
  );
  const pins: Contact[] = [];
  for (const m of r.view.core.roster) {
    if (m.name === selfMember(tx)) continue;
    const known = relayKeys.get(m.name);
    if (known !== undefined && known !== m.ik) {
      throw new CoreError("key_changed", `commit gives ${m.name} a key the relay does not list`);
    }
    // A member is a device (§4.7): its key is its user's — ours, for our own other devices.
    const user = userOfMember(m.name);
    if (user === env.username) {
      if (m.ik !== env.identityKey)
        throw new CoreError("key_changed", `commit gives your device ${m.name} another key`);
      continue;
    }
    const check = checkKey(tx.state.contacts.get(user) ?? null, user, m.ik, tx.now);
    if (check.result === "changed") {
      throw new CoreError("key_changed", `commit gives ${user} a key other than the pinned one`);
    }
    if (check.result === "pinned") pins.push(check.contact);
  }
  tx.put(KEYS.group(name), r.record);
  for (const c of pins) {
    tx.put(KEYS.contact(c.username), c);
    tx.state.contacts.set(c.username, c);
  }
  const next = await refillLeaves(tx, r.record);
  trackGroupGaps(tx, next);
  const core = r.view.core;
  await commitLines(tx, name, next, core.added, core.removed, core.committer);
  summarizeGroup(tx, next);
  await evaluateGroup(tx, name);
}

/**
 * Why the device member `member` may not be in a roster (§4.7, §9.7.2), or null if it may: a
 * username is its identity's current device; a linked device's address must not be revoked by
 * its user's list we hold, and for our own identity must be on our list.
 */
export async function deviceMemberCheck(tx: Tx, member: string): Promise<string | null> {
  const device = deviceOfMember(member);
  if (device === null) return null;
  const user = userOfMember(member);
  const own = user === tx.env.username;
  const pinned = await loadPinnedDevices(tx, user);
  const r = deviceMemberRefusal(pinned, device, own);
  if (r === "revoked") return "is not let back in: its owner removed it";
  if (r === "unlisted") return "is not on your device list";
  // A contact's device newer than the list we hold, or a contact whose list we never saw: fetch
  // it, so later checks have it (§4.6), even without a live 1:1 session to carry it (§4.9).
  if (pinned === null || !pinned.list.devices.some((d) => d.id === device)) learnDevices(tx, user);
  return null;
}

/**
 * Carry the closed-group part of a record into its next epoch (§9.7): the state the commit set,
 * `since` for the members it added (ours too when it added us), and a draft of ours still ahead of
 * the new state's version. A refusal notice ends with a valid commit.
 */
export function withAccess(
  hub: string,
  next: GroupRecord,
  before: GroupRecord,
  c: {
    info: string | undefined;
    epoch: number;
    added: readonly string[];
    removed: readonly string[];
    joining: boolean;
    self: string;
  },
): GroupRecord {
  const { info, epoch, added, removed, joining, self } = c;
  const { info: _i, since: _s, draftInfo: _d, refused: _r, ...base } = next;
  const since: Record<string, number> = joining ? {} : { ...(before.since ?? {}) };
  for (const n of removed) delete since[n];
  for (const n of added) since[n] = epoch;
  if (joining) since[self] = epoch;
  const out: GroupRecord = { ...base, since };
  if (info !== undefined) out.info = info;
  const draft = before.draftInfo;
  if (draft !== undefined && draft !== info && info !== undefined) {
    // Kept only if it is a later version than the one now in force (another admin's change won).
    const v = (b: string) => {
      try {
        return decodeGroupInfo(fromB64u(b), hub, next.group).info.version;
      } catch {
        return -1;
      }
    };
    if (v(draft) > v(info)) out.draftInfo = draft;
  }
  return out;
}

/** A commit we refused for want of authorization (§9.7.5): kept and shown; we do not rejoin. */
export async function onAccessRefused(
  tx: Tx,
  name: string,
  epoch: number,
  e: AccessError,
): Promise<void> {
  const rec = await loadGroup(tx, name);
  const text = `Refused a change to ${name}: ${e.message}`;
  const next: GroupRecord = { ...rec, refused: { epoch, text } };
  tx.put(KEYS.group(name), next);
  system(tx, groupId(name), "refused", text, e.subject === "" ? {} : { username: e.subject });
  summarizeGroup(tx, next);
}

/** A delivered commit we refused: remembered, so a group stuck on it can heal (§9.4). */
export function noteRefusedCommit(tx: Tx, group: string, epoch: number): void {
  const prev = tx.state.refusedEpochs.get(group) ?? -1;
  tx.state.refusedEpochs.set(group, Math.max(prev, epoch));
}

export async function onGroupMessage(
  tx: Tx,
  from: string,
  name: string,
  epoch: number,
  body: Uint8Array,
): Promise<void> {
  const rec = await loadGroup(tx, name);
  const r = await decryptGroup({ record: rec, hub: tx.env.hub, sender: from, epoch, body });
  tx.put(KEYS.group(name), r.record);
  trackGroupGaps(tx, r.record);
  // Shown as its user's (§4.7): what another device of ours sent is ours, sent.
  const user = userOfMember(from);
  const own = user === tx.env.username;
  // A text is a message; anything else (§8.6.1) goes to the UI to apply or show.
  if (r.content.t === "text" || r.content.t === "file") {
    if (own) announceOutgoing(tx, groupId(name), r.content, "sent");
    else announceReceived(tx, groupId(name), user, r.content);
  } else announceContent(tx, groupId(name), user, own ? "out" : "in", r.content);
}

// ---------------------------------------------------------------------------------------------
// Sending

export async function sendGroup(tx: Tx, name: string, content: Content): Promise<void> {
  const { env } = tx;
  const rec = await loadGroup(tx, name);
  const p = phaseOf(rec);
  const state = tx.state.relayGroups.get(name);
  if (p.t !== "member") throw new CoreError("not_member", `not a member of ${name}`);
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null && !leave.flight.rejoin) throw new CoreError("not_member", `leaving ${name}`);
  // Nothing may be sent under an epoch a leaver still knows (§9.4).
  if (state && state.pendingLeaves.length > 0)
    throw new CoreError("removal_pending", "a removal is pending");
  // A relay state behind our epoch is one our own accepted commit outran (its `group` frame is
  // still on its way, PROTOCOL §9.2.1): the relay is at our epoch, and a message under it is
  // accepted. Only a relay state ahead of us is a commit we have not processed yet.
  if (state && state.epoch > p.current.epoch)
    throw new CoreError("stale_epoch", "waiting for the new epoch");
  if (p.current.roster.some((m) => tx.state.contacts.get(userOfMember(m.name))?.changedKey)) {
    throw new CoreError("key_changed", "a member's key changed; accept it first");
  }
  const enc = await encryptGroup({
    record: rec,
    hub: env.hub,
    me: meInGroups(tx),
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
    content,
  });
  const { id, seq } = nextId(tx);
  const frame = {
    v: PROTOCOL_VERSION,
    t: "group_send",
    id,
    group: name,
    epoch: enc.epoch,
    body: toB64u(enc.body),
  } as const;
  tx.put(KEYS.group(name), enc.record);
  if (content.t === "text" || content.t === "file") {
    announceOutgoing(tx, groupId(name), content);
    outboxSend(tx, frame, seq, { conversationId: groupId(name), messageId: content.id });
  } else {
    announceContent(tx, groupId(name), env.username, "out", content);
    outboxSend(tx, frame, seq);
  }
  await evaluateGroup(tx, name);
}
