/**
 * Joining and leaving groups as steps (PROTOCOL.md §9.3, §9.4, §9.7.4): both write-ahead through
 * the in-flight registry, sent again at every welcome; our leaf keys for joins; being taken out
 * (`left`) and forgetting a group; the relay's answers to joins and leaves.
 */
import { ed25519Sign } from "../../crypto";
import { toB64u } from "../../encoding";
import { type ErrorCode, LEAF_QUEUE, userOfMember } from "../../protocol";
import { b64 } from "../codec";
import { CoreError } from "../errors";
import { emptyGroup, type GroupRecord, makeLeaves, type OwnLeaf, publicLeaf } from "../group";
import {
  checkRemoval,
  decodeGroupInfo,
  type GroupInfo,
  removalBy,
  signLeave,
} from "../group-access";
import { leftGroup } from "../group-record";
import { KEYS } from "../store";
import { system, type Tx } from "./effects";
import { groupId } from "./group-steps";
import { endFlight, joinOf, leaveOf, startFlight } from "./inflight";
import { loadGroup, selfMember } from "./load";
import { summarizeGroup } from "./summaries";

// ---------------------------------------------------------------------------------------------
// Join and leave (§9.3, §9.4): persisted before the frame leaves, sent again at every welcome

/**
 * Join `name`; `auth` is the invitation of a closed group (§9.7.3: a member's signed add, or a
 * join signed with an invite link's key), `draftInfo` the signed state of a group we create.
 */
export async function joinGroup(
  tx: Tx,
  name: string,
  auth?: string,
  draftInfo?: string,
): Promise<void> {
  const loaded = await loadGroup(tx, name);
  const rec: GroupRecord = draftInfo === undefined ? loaded : { ...loaded, draftInfo };
  // A leave still waiting to go is superseded: the join is what the user wants now.
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null && !leave.flight.rejoin) endFlight(tx, leave.id);
  const pending = joinOf(tx.state.flights, name);
  if (pending !== null) {
    if (auth === undefined) {
      if (rec !== loaded) tx.put(KEYS.group(name), rec);
      summarizeGroup(tx, rec);
      return;
    }
    // A join with an invitation replaces one without (the invitation is what lets it in).
    endFlight(tx, pending);
  }
  if (rec.status === "member" && rec.leaves.length > 0) {
    // Still a member (a leave was pressed and superseded): the join only keeps us in; the relay
    // leaves an active member's leaf keys alone.
    if (rec !== loaded) tx.put(KEYS.group(name), rec);
    startFlight(tx, {
      kind: "join",
      group: name,
      leaves: rec.leaves.map(publicLeaf),
      ...(auth === undefined ? {} : { auth }),
    });
    summarizeGroup(tx, rec);
    return;
  }
  await startJoin(tx, name, rec, auth);
}

/**
 * Persist a `joining` record with fresh leaf keys and send the join that publishes them
 * (§9.3): an adding commit is accepted only while we are joining, sealed to one of these keys.
 * Leaf keys of an earlier join are deleted: an old commit sealed to them cannot pull us back in.
 * `auth` is a closed group's invitation (§9.7.3).
 */
export async function startJoin(
  tx: Tx,
  name: string,
  rec: GroupRecord,
  auth?: string,
): Promise<GroupRecord> {
  return sendJoin(tx, name, rec, await joinLeaves(tx, name), auth);
}

/** The fresh leaf keys a `join` carries (§9.3). */
export function joinLeaves(tx: Tx, name: string): Promise<OwnLeaf[]> {
  return freshLeaves(tx, name, tx.state.relayGroups.get(name)?.epoch ?? 0, LEAF_QUEUE);
}

/** Send a `join` with leaf keys already made (write-ahead, as every flight). */
export function sendJoin(
  tx: Tx,
  name: string,
  rec: GroupRecord,
  leaves: OwnLeaf[],
  auth?: string,
): GroupRecord {
  const next: GroupRecord = { ...rec, status: "joining", leaves };
  tx.put(KEYS.group(name), next);
  startFlight(tx, {
    kind: "join",
    group: name,
    leaves: leaves.map(publicLeaf),
    ...(auth === undefined ? {} : { auth }),
  });
  summarizeGroup(tx, next);
  return next;
}

function freshLeaves(tx: Tx, group: string, epoch: number, count: number) {
  const { env } = tx;
  return makeLeaves({
    hub: env.hub,
    group,
    epoch,
    count,
    random: env.random,
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
  });
}

/**
 * After entering an epoch (§9.3): the leaf key that opened it is gone; make fresh ones so the
 * relay keeps LEAF_QUEUE of ours, and publish them (write-ahead, sent again at every welcome).
 */
export async function refillLeaves(tx: Tx, rec: GroupRecord): Promise<GroupRecord> {
  const missing = LEAF_QUEUE - rec.leaves.length;
  if (rec.status !== "member" || rec.current === null || missing <= 0) return rec;
  const fresh = await freshLeaves(tx, rec.group, rec.current.epoch, missing);
  const next = { ...rec, leaves: [...rec.leaves, ...fresh] };
  tx.put(KEYS.group(rec.group), next);
  startFlight(tx, { kind: "leaf", group: rec.group, leaves: fresh.map(publicLeaf) });
  return next;
}

/** The relay answered a leaf upload (stored, or not a member any more): done either way. */
export function onLeafAnswered(tx: Tx, id: string): void {
  endFlight(tx, id);
}

export async function leaveGroup(tx: Tx, name: string): Promise<void> {
  const rec = await loadGroup(tx, name);
  const join = joinOf(tx.state.flights, name);
  if (join !== null) endFlight(tx, join);
  if (leaveOf(tx.state.flights, name) === null) {
    startFlight(tx, { kind: "leave", group: name, rejoin: false, auth: await leaveAuth(tx, rec) });
  }
  // A person leaves with all of their devices (§4.7): each of our other devices in the group
  // goes too, with its signed leave, and is told so (`left` with that leave).
  for (const m of ownOtherMembers(tx, rec)) await leaveFor(tx, rec, m);
  summarizeGroup(tx, rec);
}

/** Our signed leave (§9.7.4), bound to the epoch we hold: every member checks it. */
export async function leaveAuth(tx: Tx, rec: GroupRecord): Promise<string> {
  const { env } = tx;
  return toB64u(
    await signLeave({
      hub: env.hub,
      group: rec.group,
      name: selfMember(tx),
      ik: env.identity.publicKey,
      // Without keys (a rejoin that dropped them) the relay's epoch is the best we know.
      epoch: rec.current?.epoch ?? tx.state.relayGroups.get(rec.group)?.epoch ?? 0,
      sign: (m) => ed25519Sign(env.identity.privateKey, m),
    }),
  );
}

/**
 * Take another device of ours (its member name, §4.7) out of `rec`'s group: a `leave{group,
 * member}` carrying that member's signed leave (every device of ours holds the identity key,
 * §4.6), which members need to commit it in a closed group (§9.7.4). Persisted like our own
 * leaves and sent again at every welcome until answered.
 */
async function leaveFor(tx: Tx, rec: GroupRecord, member: string): Promise<void> {
  const { env } = tx;
  for (const f of tx.state.flights.values())
    if (f.kind === "leave" && f.group === rec.group && f.member === member) return;
  const auth = await signLeave({
    hub: env.hub,
    group: rec.group,
    name: member,
    ik: env.identity.publicKey,
    epoch: rec.current?.epoch ?? tx.state.relayGroups.get(rec.group)?.epoch ?? 0,
    sign: (m) => ed25519Sign(env.identity.privateKey, m),
  });
  startFlight(tx, { kind: "leave", group: rec.group, rejoin: false, auth: toB64u(auth), member });
}

/** Our other devices (their member names) in `rec`'s group, committed or joining (§4.7). */
function ownOtherMembers(tx: Tx, rec: GroupRecord): string[] {
  const names = new Set([
    ...(rec.current?.roster.map((m) => m.name) ?? []),
    ...(tx.state.relayGroups.get(rec.group)?.members.map((m) => m.username) ?? []),
    ...(tx.state.relayGroups.get(rec.group)?.pendingJoins.map((m) => m.username) ?? []),
  ]);
  const self = selfMember(tx);
  return [...names].filter((n) => n !== self && userOfMember(n) === tx.env.username).sort();
}

/**
 * Devices our new list removed (§4.7) leave every group of ours they are in. The relay takes a
 * removed device out of all its groups on its own; this gives members the authorization. The
 * identity's current device is the member `username` (a linked device knows which device that is
 * from its `welcome`).
 */
export async function leaveForRemovedDevices(tx: Tx, devices: readonly string[]): Promise<void> {
  if (devices.length === 0) return;
  const { username } = tx.env;
  const current = tx.state.device.current;
  const gone = new Set(devices.map((d) => (d === current ? username : `${username}.${d}`)));
  for (const { key } of await tx.list("group/")) {
    const rec = await loadGroup(tx, key.slice("group/".length));
    if (rec.status !== "member" || rec.current === null) continue;
    for (const m of ownOtherMembers(tx, rec)) if (gone.has(m)) await leaveFor(tx, rec, m);
  }
}

/**
 * We were a linked device under `old` and are now the identity's current device, the member
 * `username` (§4.7): in every group we were in, our old member leaves (with its signed leave)
 * and we join again under the new name with fresh keys, committing our own re-addition (§9.4).
 */
export async function becameCurrent(tx: Tx, old: string): Promise<void> {
  for (const { key } of await tx.list("group/")) {
    const name = key.slice("group/".length);
    const rec = await loadGroup(tx, name);
    if (rec.status !== "member" && rec.status !== "joining") continue;
    await leaveFor(tx, rec, old);
    const fresh = emptyGroup(name);
    tx.put(KEYS.group(name), fresh);
    const auth = await leaveAuth(tx, fresh);
    const leaves = await joinLeaves(tx, name);
    startFlight(tx, { kind: "leave", group: name, rejoin: true, auth });
    sendJoin(tx, name, fresh, leaves);
  }
}

/**
 * `left` (§9.4): the relay took us out. The keys go, unless this was the leave of a rejoin. In a
 * closed group (§9.7.4) a `left` we did not ask for must come with an admin's signed removal; one
 * without is the relay's word alone, and is shown as such (the relay stops our traffic either way).
 */
export async function onLeft(tx: Tx, name: string, auth?: string): Promise<void> {
  const leave = leaveOf(tx.state.flights, name);
  if (leave !== null) endFlight(tx, leave.id);
  // The leave half of a rejoin: we hold no keys and wait for our join.
  if (leave?.flight.rejoin) return;
  const rec = await loadGroup(tx, name);
  if (leave === null && rec.status === "member") {
    const who = await removedBy(tx, rec, auth);
    const text =
      who === "self"
        ? `You left ${name} on another of your devices`
        : who === null
          ? `The relay took you out of ${name}, but you did not leave and no admin removed you`
          : `${who} (an admin) removed you from ${name}`;
    // A valid removal reads as our leaving (its details name the admin); one without, as refused.
    system(tx, groupId(name), who === null ? "refused" : "left", text, {
      username: tx.env.username,
    });
  }
  await forget(tx, name);
}

/** The rules a removal of an open group is read with: no admins, so only a leave verifies. */
const OPEN_GROUP_RULES: GroupInfo = {
  version: 0,
  title: "",
  description: "",
  policy: "open",
  admins: [],
  links: [],
};

/**
 * Who took us out with `auth` (§9.7.4): "self" for our own signed leave (another device of ours
 * left for the person, §4.7), an admin's name for a valid removal, else null.
 */
async function removedBy(tx: Tx, rec: GroupRecord, auth: string | undefined) {
  if (rec.current === null || auth === undefined) return null;
  const { env } = tx;
  try {
    // An open group has no admins (§9.7.1): only our own leave can check out there.
    const info =
      rec.info === undefined
        ? OPEN_GROUP_RULES
        : decodeGroupInfo(b64(rec.info, "info"), env.hub, rec.group).info;
    const bytes = b64(auth, "auth");
    const how = await checkRemoval({
      hub: env.hub,
      group: rec.group,
      info,
      member: { name: selfMember(tx), ik: env.identityKey },
      auth: bytes,
      since: rec.since?.[selfMember(tx)] ?? 0,
    });
    // Our own signed leave, sent by another device of ours (§4.7): we left there.
    if (how === "leave") return "self";
    if (how !== "remove") return null;
    const admin = removalBy(bytes);
    return rec.current.roster.find((m) => m.ik === admin)?.name ?? "someone";
  } catch (e) {
    if (e instanceof CoreError) return null;
    throw e;
  }
}

/** Forget every key of the group: a departed member must not read later epochs (§9.4). */
export async function forget(tx: Tx, name: string, text = `You left ${name}`): Promise<void> {
  const rec = await loadGroup(tx, name);
  const next = leftGroup(name);
  tx.put(KEYS.group(name), next);
  if (rec.status !== "left") system(tx, groupId(name), "left", text, { username: tx.env.username });
  summarizeGroup(tx, next);
}

/** The relay answered our join (`accepted`): the group state follows in a `group` frame. */
export function onJoinAccepted(tx: Tx, id: string): void {
  endFlight(tx, id);
}

/** The relay answered our leave (`accepted`): `left` follows and ends the flight. */
export function onLeaveAccepted(_tx: Tx, _id: string): void {}

/** Refusals that leave a frame worth sending again on the next connection (§10.1). */
export const TRANSIENT: ReadonlySet<ErrorCode> = new Set([
  "rate_limited",
  "internal",
  "not_authenticated",
]);

export async function onJoinRefused(tx: Tx, id: string, name: string, code: ErrorCode) {
  if (TRANSIENT.has(code)) return; // kept: the next welcome sends it again
  endFlight(tx, id);
  const rec = await loadGroup(tx, name);
  if (rec.status === "joining") {
    const next = { ...rec, status: "none" as const };
    tx.put(KEYS.group(name), next);
    summarizeGroup(tx, next);
  }
}

export async function onLeaveRefused(tx: Tx, id: string, name: string, code: ErrorCode) {
  if (TRANSIENT.has(code)) return;
  const f = tx.state.flights.get(id);
  endFlight(tx, id);
  // not_member: the relay holds no membership to end — we are out already; keep no keys.
  const rec = await loadGroup(tx, name);
  const held = rec.status === "member" || rec.status === "joining";
  if (code === "not_member" && f?.kind === "leave" && !f.rejoin && held) await forget(tx, name);
  else summarizeGroup(tx, rec);
}
