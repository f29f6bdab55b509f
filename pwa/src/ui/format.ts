/** Small display helpers shared by the views. */

import { type ConnView, type ConvView, isMember } from "../state/model";
import type { ConversationStatus } from "../state/status";

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
});

export function formatTime(ms: number): string {
  return timeFmt.format(ms);
}

export function formatDay(ms: number, now = Date.now()): string {
  const d = new Date(ms);
  const t = new Date(now);
  if (d.toDateString() === t.toDateString()) return "Today";
  t.setDate(t.getDate() - 1);
  if (d.toDateString() === t.toDateString()) return "Yesterday";
  return dayFmt.format(ms);
}

export const STATUS_LABEL: Record<ConversationStatus, string> = {
  offline: "Offline",
  connecting: "Connecting",
  handshaking: "Handshaking",
  secure: "Secure",
  verified: "Verified",
  key_changed: "Key changed",
};

/**
 * The chat status the top bar shows: the socket's state wins while it is not online (the
 * countdown to the next attempt is the connection notice's, see wording.ts). `conv` refines the
 * engine's status where it cannot tell the difference: a group we never joined is "offline" to
 * the engine but not a connection problem, nor is a name the relay does not know.
 */
export function chatStatusLabel(
  conn: ConnView,
  status: ConversationStatus | null,
  _now: number,
  conv?: Pick<ConvView, "kind" | "epoch" | "joining" | "missingUser"> & { leaving?: boolean },
): { label: string; tone: "ok" | "good" | "warn" | "bad" | "muted" } {
  switch (conn.kind) {
    case "waiting":
      return { label: "Offline", tone: "bad" };
    case "replaced":
      return { label: "Signed in elsewhere", tone: "bad" };
    case "retired":
      return { label: "Moved to another device", tone: "bad" };
    case "removed":
      return { label: "Removed from your account", tone: "bad" };
    case "stopped":
    case "idle":
      return { label: "Offline", tone: "bad" };
    case "connecting":
    case "authenticating":
      return { label: "Connecting", tone: "muted" };
    case "online":
      break;
  }
  if (conv?.kind === "direct" && conv.missingUser) return { label: "No such user", tone: "bad" };
  if (conv?.kind === "group" && status !== "key_changed") {
    if (conv.joining) return { label: "Joining", tone: "warn" };
    if (conv.leaving) return { label: "Leaving", tone: "warn" };
    if (!isMember(conv)) return { label: "Not joined", tone: "muted" };
  }
  if (status === null) return { label: "Online", tone: "ok" };
  const label = STATUS_LABEL[status];
  if (status === "verified") return { label, tone: "good" };
  if (status === "secure") return { label, tone: "ok" };
  if (status === "key_changed") return { label, tone: "bad" };
  if (status === "offline") return { label, tone: "bad" };
  return { label, tone: "warn" };
}

/** A stable hue per name so each person keeps one avatar colour. */
export function hueOf(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return (h >>> 0) % 360;
}

export function avatarClass(name: string): string {
  return `avatar hue-${hueOf(name) % 12}`;
}
