/**
 * Closed groups as steps (PROTOCOL.md §9.7): creating a group with a signed state, changing that
 * state (title, policy, admins, invite links), inviting, joining by invitation or link, and an
 * admin's removal of a member.
 */
import { ed25519Sign } from "../../crypto";
import { toB64u } from "../../encoding";
import { PROTOCOL_VERSION, userOfMember } from "../../protocol";
import { b64 } from "../codec";
import type { Invite, TextContent } from "../content";
import { CoreError } from "../errors";
import type { GroupRecord } from "../group";
import {
  ADD_AUTH_TTL_MS,
  decodeGroupInfo,
  GROUP_INFO_LIMITS,
  type GroupInfo,
  type GroupPolicy,
  linkKeyPair,
  signAdd,
  signGroupInfo,
  signLinkJoin,
  signRemoval,
} from "../group-access";
import { KEYS } from "../store";
import { sendDm } from "./direct";
import type { Tx } from "./effects";
import { evaluateGroup } from "./group-commits";
import { joinGroup } from "./group-membership";
import { nextId } from "./inflight";
import { isOnline } from "./link";
import { loadGroup } from "./load";
import { summarizeGroup } from "./summaries";

// ---------------------------------------------------------------------------------------------
// Closed groups (§9.7): creating, inviting, invite links, admin changes and removals

const signer = (tx: Tx) => (m: Uint8Array) => ed25519Sign(tx.env.identity.privateKey, m);

/** Create `name` with a signed state (§9.7.1): we are its first admin; joining creates it. */
export async function createGroup(
  tx: Tx,
  name: string,
  opts: { title: string; description: string; policy: GroupPolicy },
): Promise<void> {
  const { env } = tx;
  const signed = await signGroupInfo(
    env.hub,
    name,
    {
      version: 1,
      title: opts.title,
      description: opts.description,
      policy: opts.policy,
      admins: [env.identityKey],
      links: [],
    },
    env.identity.publicKey,
    signer(tx),
  );
  await joinGroup(tx, name, undefined, signed.blob);
}

/** The group's state as we hold it, and whether we may change it (§9.7.1). */
async function adminState(tx: Tx, name: string): Promise<{ rec: GroupRecord; info: GroupInfo }> {
  const rec = await loadGroup(tx, name);
  if (rec.status !== "member" || rec.current === null || rec.info === undefined)
    throw new CoreError("not_member", `${name} has no signed state we hold`);
  const { hub } = tx.env;
  const cur = decodeGroupInfo(b64(rec.info, "info"), hub, name).info;
  if (!cur.admins.includes(tx.env.identityKey))
    throw new CoreError("not_authorized", `only an admin of ${name} can do that`);
  // A change not yet committed is built upon, keeping its version (one commit carries both).
  if (rec.draftInfo !== undefined) {
    const d = decodeGroupInfo(b64(rec.draftInfo, "info"), hub, name).info;
    if (d.version > cur.version) return { rec, info: d };
  }
  return { rec, info: { ...cur, version: cur.version + 1 } };
}

/**
 * Change the signed state (§9.7.1): rename, describe, set the policy, promote a member to admin,
 * add or revoke invite links. Signed now, carried by our next commit (made at once).
 */
export async function changeGroupInfo(
  tx: Tx,
  name: string,
  change: (info: GroupInfo, rec: GroupRecord) => GroupInfo,
): Promise<void> {
  const { rec, info } = await adminState(tx, name);
  const next = change(info, rec);
  const signed = await signGroupInfo(tx.env.hub, name, next, tx.env.identity.publicKey, signer(tx));
  const out: GroupRecord = { ...rec, draftInfo: signed.blob };
  tx.put(KEYS.group(name), out);
  summarizeGroup(tx, out);
  await evaluateGroup(tx, name);
}

/** A new invite link (§9.7.3): its key goes into the state; the secret only into the link. */
export async function createInviteLink(tx: Tx, name: string): Promise<string> {
  const secret = tx.env.random(32);
  const link = await linkKeyPair(secret);
  await changeGroupInfo(tx, name, (info) => {
    if (info.links.length >= GROUP_INFO_LIMITS.maxLinks)
      throw new CoreError("not_authorized", "too many invite links; revoke some first");
    return { ...info, links: [...info.links, toB64u(link.publicKey)] };
  });
  return toB64u(secret);
}

/** Promote `username` (a member) to admin (§9.7.1). */
export async function promoteMember(tx: Tx, name: string, username: string): Promise<void> {
  await changeGroupInfo(tx, name, (info, rec) => {
    // Admins are identities (§9.7.1): any of the user's devices (§4.7) names its key.
    const m = rec.current?.roster.find((x) => userOfMember(x.name) === username);
    if (m === undefined) throw new CoreError("not_member", `${username} is not a member`);
    if (info.admins.includes(m.ik)) return info;
    if (info.admins.length >= GROUP_INFO_LIMITS.maxAdmins)
      throw new CoreError("not_authorized", "too many admins");
    return { ...info, admins: [...info.admins, m.ik] };
  });
}

/**
 * Take admin rights from `username` (§9.7.1), or step down ourselves: any admin may, as long as
 * one admin remains (a state with none cannot be signed or accepted). The next version is signed
 * by us, an admin of the current one, like every change; from it on, the demoted admin's removals
 * and state changes are refused by every member.
 */
export async function demoteMember(tx: Tx, name: string, username: string): Promise<void> {
  await changeGroupInfo(tx, name, (info, rec) => {
    const ik =
      username === tx.env.username
        ? tx.env.identityKey
        : rec.current?.roster.find((x) => userOfMember(x.name) === username)?.ik;
    if (ik === undefined) throw new CoreError("not_member", `${username} is not a member`);
    if (!info.admins.includes(ik)) return info;
    if (info.admins.length === 1)
      throw new CoreError("not_authorized", "a group keeps at least one admin: make another first");
    return { ...info, admins: info.admins.filter((k) => k !== ik) };
  });
}

/** Join with an invite link's secret (§9.7.3): the join is signed with the link's key. */
export async function joinWithLink(tx: Tx, name: string, secret: string): Promise<void> {
  const { env } = tx;
  const link = await linkKeyPair(b64(secret, "invite link"));
  const auth = await signLinkJoin({
    hub: env.hub,
    group: name,
    joiner: env.username,
    joinerIk: env.identity.publicKey,
    link,
    sign: ed25519Sign,
  });
  await joinGroup(tx, name, toB64u(auth));
}

/**
 * Invite `username` (§9.7.3): our signed add for its pinned key, sent to it end to end as a 1:1
 * text carrying the invitation. Its `join` carries the add; the committer and every member check it.
 */
export async function inviteToGroup(tx: Tx, name: string, username: string): Promise<string> {
  const { env } = tx;
  const rec = await loadGroup(tx, name);
  if (rec.status !== "member" || rec.current === null)
    throw new CoreError("not_member", `not a member of ${name}`);
  const c = tx.state.contacts.get(username);
  if (c === undefined) throw new CoreError("unknown_session", `no key for ${username} yet`);
  const expiry = tx.now + ADD_AUTH_TTL_MS;
  const auth = await signAdd({
    hub: env.hub,
    group: name,
    inviter: env.username,
    inviterIk: env.identity.publicKey,
    invitee: username,
    inviteeIk: b64(c.identityKey, "ik"),
    expiry,
    sign: signer(tx),
  });
  const title =
    rec.info === undefined
      ? name
      : decodeGroupInfo(b64(rec.info, "info"), env.hub, name).info.title;
  const content: TextContent = {
    t: "text",
    id: toB64u(env.random(12)),
    ts: tx.now,
    text: `${env.username} invited you to join the group “${title || name}”`,
    invite: { group: name, title, auth: toB64u(auth), expiry },
  };
  await sendDm(tx, username, content);
  return content.id;
}

/** Accept an invitation received in a 1:1 text (§9.7.3): join with the inviter's add. */
export async function acceptInvite(tx: Tx, invite: Invite): Promise<void> {
  await joinGroup(tx, invite.group, invite.auth);
}

/**
 * Remove `username` (§9.7.4): our signed removal (admins only) goes to the relay with a `remove`;
 * the relay takes the member out and the next commit carries the removal for every member to check.
 * A person is removed with every device of theirs (§4.7): one signed removal per member name.
 */
export async function removeMember(tx: Tx, name: string, username: string): Promise<void> {
  const { env } = tx;
  const { rec } = await adminState(tx, name);
  const user = userOfMember(username);
  const ms = (rec.current?.roster ?? []).filter((x) =>
    username === user ? userOfMember(x.name) === user : x.name === username,
  );
  if (ms.length === 0 || user === env.username)
    throw new CoreError("not_member", `${username} is not another member`);
  if (!isOnline(tx.state.link)) throw new CoreError("not_connected", "offline");
  for (const m of ms) {
    const auth = await signRemoval({
      hub: env.hub,
      group: name,
      adminIk: env.identity.publicKey,
      member: { name: m.name, ik: b64(m.ik, "ik") },
      epoch: rec.current?.epoch ?? 0,
      sign: signer(tx),
    });
    const { id } = nextId(tx);
    tx.state.flights.set(id, { kind: "remove", group: name, user: m.name });
    tx.send({
      v: PROTOCOL_VERSION,
      t: "remove",
      id,
      group: name,
      user: m.name,
      auth: toB64u(auth),
    });
  }
}
