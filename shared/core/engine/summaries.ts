/**
 * What the engine tells the UI about each conversation (PROTOCOL.md §11.1): facts derived from
 * the records (session phase, pins, membership), emitted as `conversation` events whenever they
 * change. How those facts read to a person (a status word, a tone, whether sending is blocked) is
 * the PWA view model's decision, not the engine's.
 */

import { identityFingerprint } from "../../crypto";
import { fromB64u } from "../../encoding";
import { userOfMember } from "../../protocol";
import type {
  ContactInfo,
  ConversationSummary,
  GroupAccessSummary,
  SessionPhase,
} from "../client-api";
import { canSendNow, type DmRecord, emptyDm, parseDmRecord } from "../dm";
import { emptyGroup, type GroupRecord, parseGroupRecord } from "../group";
import { decodeGroupInfo, type GroupInfo } from "../group-access";
import { phaseOf } from "../group-record";
import { KEYS } from "../store";
import type { Tx } from "./effects";
import { leaveOf } from "./inflight";
import type { EngineState, Env } from "./state";

export function contactInfo(s: EngineState, username: string, identityKey: string): ContactInfo {
  const c = s.contacts.get(username);
  return {
    username,
    identityKey,
    fingerprint: identityFingerprint(fromB64u(identityKey)),
    verified: c !== undefined && c.identityKey === identityKey && c.verified,
  };
}

/** A group's members as people (§4.7): each user once, with how many of its devices are in. */
function people(s: EngineState, roster: readonly { name: string; ik: string }[]): ContactInfo[] {
  const out = new Map<string, ContactInfo>();
  for (const m of roster) {
    const user = userOfMember(m.name);
    const had = out.get(user);
    if (had === undefined) out.set(user, contactInfo(s, user, m.ik));
    else out.set(user, { ...had, devices: (had.devices ?? 1) + 1 });
  }
  return [...out.values()];
}

export function presenceList(s: EngineState): ContactInfo[] {
  return [...s.online.entries()].map(([u, k]) => contactInfo(s, u, k));
}

function sessionPhase(rec: DmRecord): SessionPhase {
  if (canSendNow(rec) || rec.current !== null) return "ready";
  if (rec.pending?.kind === "fetching") return "fetching";
  if (rec.pending !== null) return "handshaking";
  return "none";
}

export function dmSummary(s: EngineState, rec: DmRecord): ConversationSummary {
  const c = s.contacts.get(rec.peer);
  return {
    id: `dm:${rec.peer}`,
    kind: "direct",
    name: rec.peer,
    keyChanged: (c?.changedKey ?? null) !== null,
    session: sessionPhase(rec),
    ...(rec.contact === "request" || rec.contact === "blocked" ? { contact: rec.contact } : {}),
    members: c ? [contactInfo(s, rec.peer, c.identityKey)] : [],
  };
}

export function groupSummary(
  s: EngineState,
  rec: GroupRecord,
  env: Pick<Env, "hub" | "identityKey">,
): ConversationSummary {
  const state = s.relayGroups.get(rec.group);
  const p = phaseOf(rec);
  const roster = rec.current?.roster ?? [];
  const changed = roster.some(
    (m) => (s.contacts.get(userOfMember(m.name))?.changedKey ?? null) !== null,
  );
  const leave = leaveOf(s.flights, rec.group);
  const leaving = leave !== null && !leave.flight.rejoin;
  return {
    id: `group:${rec.group}`,
    kind: "group",
    name: rec.group,
    keyChanged: changed,
    members: people(s, roster),
    epoch: p.t === "member" ? p.current.epoch : -1,
    ...(p.t === "member" ? { authenticator: authenticatorDigits(p.current.authenticator) } : {}),
    removalPending: (state?.pendingLeaves.length ?? 0) > 0,
    joining: p.t === "joining",
    leaving,
    ...accessSummary(env, rec),
  };
}

/** The signed state as the UI shows it (§9.7.1); a stored state that no longer parses: none. */
function accessSummary(
  env: Pick<Env, "hub" | "identityKey">,
  rec: GroupRecord,
): { access?: GroupAccessSummary } {
  const blob = rec.info ?? rec.draftInfo;
  if (blob === undefined) return {};
  let info: GroupInfo;
  try {
    info = decodeGroupInfo(fromB64u(blob), env.hub, rec.group).info;
  } catch {
    return {};
  }
  const roster = rec.current?.roster ?? [];
  const byKey = new Map(roster.map((m) => [m.ik, userOfMember(m.name)]));
  const admins = info.admins.flatMap((k) => {
    const n = byKey.get(k);
    return n === undefined ? [] : [n];
  });
  return {
    access: {
      title: info.title,
      description: info.description,
      policy: info.policy,
      version: info.version,
      admins,
      isAdmin: info.admins.includes(env.identityKey),
      links: info.links.length,
      ...(rec.refused === undefined ? {} : { refused: rec.refused.text }),
    },
  };
}

/** 25 digits in groups of five from the first 15 bytes (as a safety number is shown, §8.7). */
function authenticatorDigits(b64: string): string {
  const bytes = fromB64u(b64);
  const groups: string[] = [];
  for (let i = 0; i < 15; i += 3) {
    const n = ((bytes[i] ?? 0) << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    groups.push(String(n % 100000).padStart(5, "0"));
  }
  return groups.join(" ");
}

export function summarizeDm(tx: Tx, rec: DmRecord): void {
  const sum = dmSummary(tx.state, rec);
  tx.state.summaries.set(sum.id, sum);
  tx.emit({ type: "conversation", conversation: sum });
}

export function summarizeGroup(tx: Tx, rec: GroupRecord): void {
  const sum = groupSummary(tx.state, rec, tx.env);
  tx.state.summaries.set(sum.id, sum);
  tx.emit({ type: "conversation", conversation: sum });
}

/** Summarise every listed conversation again (the link or a pin changed). */
export async function resummarize(tx: Tx): Promise<void> {
  for (const sum of [...tx.state.summaries.values()]) {
    try {
      if (sum.kind === "direct") {
        const x = await tx.get(KEYS.dm(sum.name));
        summarizeDm(tx, x === undefined ? emptyDm(sum.name) : parseDmRecord(x));
      } else {
        const x = await tx.get(KEYS.group(sum.name));
        summarizeGroup(tx, x === undefined ? emptyGroup(sum.name) : parseGroupRecord(x));
      }
    } catch {
      // A record that no longer parses keeps its last summary; its own input reports it.
    }
  }
}
