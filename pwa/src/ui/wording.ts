/**
 * The words the user reads. The engine and the relay speak in typed events and error codes
 * (shared/core/client-api.ts `SystemLine.kind`, `CoreErrorCode`; shared/protocol.ts `ERRORS`);
 * their own texts are written for engineers ("New group key (epoch 4) from bob",
 * "unknown_user: No such user in this hub."). Here each kind and code becomes a plain sentence,
 * and the technical text stays available behind a "Details" disclosure. Pure, unit-tested.
 */
import { timerLineText } from "../../../shared/core/messages";
import type { ConnView } from "../state/model";
import type { HistoryEntry, HistorySystem } from "../storage/schemas";

export interface Worded {
  /** What the user reads. */
  text: string;
  /** The technical text, shown only on request; null when there is nothing more to say. */
  details: string | null;
}

/** The code in an engine message of the form "<relay code>: <wire text>", if there is one. */
export function relayCodeOf(message: string): string | null {
  const m = /^([a-z_]+): /.exec(message);
  return m?.[1] ?? null;
}

/** The engine's reason in parentheses at the end of a line ("… could not be read (replay)"). */
function reasonOf(text: string): string | null {
  return /\(([a-z_]+)\)\s*$/.exec(text)?.[1] ?? null;
}

/** The PWA writes this line itself (the engine has none), so there is nothing technical behind it. */
const ended = (who: string): Worded => ({
  text: `You ended the secure session with ${who}. The next message starts a new one.`,
  details: null,
});

/** "bob's" — names are lower-case ASCII (shared/protocol.ts Name), so no other rule is needed. */
const possessive = (name: string) => `${name}'s`;

/**
 * One system line in plain words. `me` is our username (lines about ourselves say "You").
 * The engine's own text becomes the details when it says more than the plain sentence.
 */
export function describeSystem(e: HistorySystem, me: string | null): Worded {
  const who = e.username ?? "Someone";
  const isMe = e.username !== undefined && e.username === me;
  const withDetails = (text: string): Worded => ({
    text,
    details: e.text.trim() === text ? null : e.text,
  });
  switch (e.sysKind) {
    case "joined":
      return withDetails(isMe ? "You joined" : `${who} joined`);
    case "left":
      return withDetails(isMe ? "You left" : `${who} left`);
    case "epoch":
      return withDetails(
        isMe
          ? "You renewed the group's encryption key"
          : `${who} renewed the group's encryption key`,
      );
    case "key_changed":
      return withDetails(
        `${possessive(who)} safety number changed. Compare it with them before you continue.`,
      );
    case "key_accepted":
      return withDetails(`You accepted ${possessive(who)} new safety number`);
    case "verified":
      return withDetails(`You marked ${who} as verified`);
    case "session_ended":
      return ended(who);
    case "session_started":
      return withDetails(`Messages with ${who} are end-to-end encrypted`);
    case "not_post_quantum":
      if (e.conversationId.startsWith("group:")) {
        const others = (e.count ?? 1) > 1 ? ` (and ${(e.count ?? 1) - 1} more)` : "";
        return withDetails(
          `This group is not protected against future quantum computers: ${possessive(who)} app is out of date${others}`,
        );
      }
      return withDetails(
        `This chat with ${who} is not protected against future quantum computers: ${possessive(who)} app is out of date`,
      );
    case "refused":
      // The engine's sentence names what was refused and why (PROTOCOL.md §9.7.5).
      return { text: e.text, details: null };
    case "device_added":
    case "device_removed":
      // The engine's sentence names the device (PROTOCOL.md §4.6).
      return { text: e.text, details: null };
    case "device_list_refused":
      return withDetails(
        `Parley ignored a list of ${possessive(who)} devices that ${who} did not sign`,
      );
    case "decrypt_failed": {
      const healing = reasonOf(e.text) === "unknown_session" && e.conversationId.startsWith("dm:");
      return withDetails(
        healing
          ? `A message from ${who} could not be decrypted — Parley is repairing the session`
          : `A message from ${who} could not be decrypted`,
      );
    }
    case "repairing":
      return withDetails(
        `A message from ${who} could not be decrypted on this device — Parley is setting up a new secure session and asking ${who} to send it again`,
      );
    case "resending": {
      const n = e.count ?? 0;
      const what = n === 1 ? "1 message" : `${n} messages`;
      return withDetails(
        `${who} could not read ${what} (a new or restored device) — sending ${n === 1 ? "it" : "them"} again`,
      );
    }
    case "missing": {
      const n = Number(/^(\d+) message/.exec(e.text)?.[1] ?? "0");
      const what = n === 1 ? "A message" : n > 1 ? `${n} messages` : "Some messages";
      return withDetails(`${what} from ${who} never arrived`);
    }
    case "timer":
      return {
        text: timerLineText(isMe || e.username === undefined ? null : who, e.ms ?? 0),
        details: null,
      };
  }
}

/**
 * Plain words for every system line of a conversation, in one pass. A membership change is one
 * commit that the engine reports as "X joined" + "New group key (epoch N) from Y": the key line
 * is folded into the membership line's details (null in the map = not shown on its own).
 */
export function describeLog(entries: readonly HistoryEntry[], me: string | null) {
  const out = new Map<string, Worded | null>();
  let host: { id: string; at: number } | null = null;
  for (const e of entries) {
    if (e.kind !== "sys") {
      host = null;
      continue;
    }
    if (e.sysKind === "epoch" && host && e.at - host.at < 5_000) {
      const h = out.get(host.id);
      if (h) out.set(host.id, { ...h, details: [h.details, e.text].filter(Boolean).join("\n") });
      out.set(e.id, null);
      continue;
    }
    out.set(e.id, describeSystem(e, me));
    host = e.sysKind === "joined" || e.sysKind === "left" ? { id: e.id, at: e.at } : null;
  }
  return out;
}

/** Wire error codes (shared/protocol.ts ERRORS) in plain words. */
const RELAY_ERRORS: Readonly<Record<string, string>> = {
  bad_frame: "The relay did not understand a request from this app. Reloading Parley may help.",
  unknown_type: "The relay did not understand a request from this app. Reloading Parley may help.",
  unsupported_version: "This version of Parley does not match the relay. Reload to update.",
  too_large: "That was too large for the relay to carry.",
  invite_required:
    "That group is invite only. Ask a member for an invitation, or an admin for an invite link.",
  not_admin: "Only an admin of that group can remove a member.",
  not_authenticated: "Not signed in to the relay yet. Parley will try again.",
  already_authenticated: "Parley was already signed in to the relay.",
  auth_failed: "The relay could not confirm your identity.",
  bad_signature: "The relay could not confirm your identity.",
  name_taken: "That username belongs to someone else on this relay.",
  identity_bound: "Your identity already uses another username on this relay.",
  unknown_user: "There is no one with that username on this relay. Check the spelling.",
  rate_limited: "You are sending very fast. Wait a moment and try again.",
  mailbox_full:
    "Their mailbox on the relay is full. They need to come online before more can reach them.",
  not_member: "You are not a member of that group.",
  stale_epoch: "The group changed just now. Parley is catching up; try again in a moment.",
  roster_mismatch: "The group changed just now. Parley is catching up; try again in a moment.",
  removal_pending: "Someone left the group. Parley is waiting for the new group key.",
  leaf_changed: "A member renewed their keys just now. Parley is making the new group key again.",
  group_full: "That group is full.",
  limit_reached: "A relay limit was reached (for example, how many groups one person may create).",
  registration_limited:
    "Too many new usernames were made from your network today. Try again tomorrow, or from another network.",
  replaced: "Parley was opened in another tab or on another device.",
  device_replaced:
    "Your identity was restored on another device, which now receives your messages.",
  internal: "The relay had a problem. Try again.",
  push_unavailable: "This relay does not send notifications while Parley is closed.",
  push_endpoint: "This browser's notification service is not one the relay will contact.",
  push_key_changed:
    "The relay's notification key changed. Parley is setting notifications up again.",
  blob_unavailable: "This relay does not store attachments.",
  blob_too_large: "That file is larger than the relay accepts (100 MB).",
  blob_quota:
    "Your attachment storage on the relay is full. Older attachments expire and free it up.",
  request_limit:
    "Not delivered: they have not accepted your message request yet, and the relay holds only a few messages from new contacts. Try again after they reply.",
  stale_device_list: "Your list of devices changed on another device just now. Try again.",
  unknown_device: "That device is no longer one of theirs.",
  device_removed: "This device was removed from your account on another device.",
  unknown_link:
    "No device is waiting under that code. Check the code on the new device; it lasts ten minutes.",
  link_taken: "That link code is in use. Make a new code on the new device.",
  wrong_route:
    "This app version connected in a way the relay does not serve for that action. Reload the app.",
};

/** Engine error codes (CoreErrorCode) in plain words. */
const CORE_ERRORS: Readonly<Record<string, string>> = {
  malformed: "Parley received something it could not understand, and ignored it.",
  not_authorized:
    "A change to a group was refused: it was not authorized by a member's invitation or an admin.",
  bad_signature: "A message failed its authenticity check and was not shown.",
  identity_mismatch: "A message was meant for a different key than yours and was not shown.",
  key_changed: "A safety number changed. Compare it before you continue.",
  replay: "A message arrived twice; the copy was ignored.",
  too_far: "A message arrived too far out of order to be decrypted.",
  decrypt_failed: "A message could not be decrypted.",
  unknown_session:
    "A message arrived for a secure session this device does not have. Parley is repairing it.",
  stale_state: "Parley is active in another tab, so this one stopped.",
  stale_epoch: "The group key is being renewed. Try again in a moment.",
  not_member: "You are not a member of this group.",
  roster_mismatch: "The group's member list did not match. Parley is catching up.",
  fork: "This group's history diverged: a new group key that does not follow ours was refused.",
  removal_pending: "Someone left the group. Parley is waiting for the new group key.",
  no_prekey: "A message used a key this device no longer has, so it could not be read.",
  prekey_limit: "Too many new conversations started at once. Try again later.",
  downgrade:
    "The relay left out this contact's post-quantum keys, so no weaker chat was started. Parley will try again.",
  not_connected: "Not connected to the relay. Parley will try again.",
  too_long: "That message is too long to send in one piece. Split it into several messages.",
  outbox_entry_invalid:
    "A message saved for sending was damaged and could not be sent. It is marked as not sent.",
};

/** A typed error (engine code + message) as a plain sentence, the raw text as details. */
export function describeError(code: string, message: string): Worded {
  const details = `${code}: ${message}`;
  if (code === "relay_error") {
    const relay = relayCodeOf(message);
    const text = relay !== null ? RELAY_ERRORS[relay] : undefined;
    return { text: text ?? "The relay refused a request.", details };
  }
  return { text: CORE_ERRORS[code] ?? "Something went wrong.", details };
}

/** Whatever an action threw, worded: typed errors by code, anything else generically. */
export function describeThrown(err: unknown): Worded {
  if (err instanceof Error && "code" in err && typeof err.code === "string") {
    return describeError(err.code, err.message);
  }
  return {
    text: "Something went wrong.",
    details: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
  };
}

/** The relay has no user by the name we asked for (the engine's failed `fetch_bundle`). */
export function isUnknownUser(code: string, message: string): boolean {
  return code === "relay_error" && relayCodeOf(message) === "unknown_user";
}

export function unknownUserText(name: string): string {
  return `There is no one called “${name}” on this relay. Check the spelling.`;
}

/** The notice under the top bar while the connection needs the user's attention. */
export function connectionNotice(
  conn: ConnView,
  now: number,
): { text: string; action: "retry" | "use_here"; seconds: number | null } | null {
  if (conn.kind === "waiting") {
    const s = Math.max(0, Math.ceil((conn.retryAt - now) / 1000));
    return {
      text: s > 0 ? `Reconnecting in ${s} s…` : "Reconnecting…",
      action: "retry",
      seconds: s,
    };
  }
  if (conn.kind === "replaced") {
    return {
      text: "Signed in elsewhere: Parley was opened in another tab or on another device, and messages go there now.",
      action: "use_here",
      seconds: null,
    };
  }
  return null;
}

/** The tab title, with the unread count first so it shows in a narrow tab: "(3) Parley". */
export function tabTitle(unread: number): string {
  return unread > 0 ? `(${unread > 999 ? "999+" : unread}) Parley` : "Parley";
}

// ---------------------------------------------------------------------------------------------
// Linked devices (PROTOCOL.md §4.6–§4.8)

/** The words of a refused link or removal, by the engine's LinkError code (linking.ts). */
export const LINK_ERROR_TEXT: Record<string, string> = {
  bad_code: "That is not a link code: it has 20 letters and digits, like 7K3D-9QXA-M2PW-T4HC-0B8N.",
  code_mismatch:
    "This code does not match the device asking to be linked. Check the code on the new device and type it again.",
  unknown_link:
    "No device is waiting with that code. Codes last 10 minutes: make a new one on the new device.",
  malformed: "The answer from your other device could not be read. Try again with a new code.",
  not_listed: "The answer does not add this device to an account. Try again with a new code.",
  already_linked: "That device is already linked to your account.",
  too_many_devices: "An account can have at most 5 devices. Remove one first.",
  unknown_device: "That device is not one of your other devices.",
};

/** A link or removal failure in plain words (a LinkError's code, else the generic wording). */
export function describeLinkError(err: unknown): Worded {
  if (err instanceof Error && "code" in err && typeof err.code === "string") {
    const text = LINK_ERROR_TEXT[err.code];
    if (text !== undefined) return { text, details: null };
  }
  return describeThrown(err);
}

export const LINK_WORDS = {
  startTitle: "Link to a device you already use",
  startHelp:
    "Your account, its contacts and their verified safety numbers come over from a device where you already use Parley, and as many earlier messages as you choose there.",
  nameLabel: "Name this device",
  nameHelp: "Your other devices show this name.",
  showCode: "Show a link code",
  waitingTitle: "Link this device",
  waitingHelp:
    "On a device where you already use Parley, open Settings → Devices → “Link a new device”, then scan this code or type it.",
  waiting: "Waiting for your other device…",
  expired: "This code expired. Make a new one.",
  newCode: "Make a new code",
  cancel: "Cancel",
  devicesTitle: "Devices",
  devicesHelp:
    "Every device here holds your identity. Remove one you lost: it is closed at once and reads nothing sent afterwards.",
  noList: "Only this device so far. Link your phone or another computer to use Parley on it too.",
  thisDevice: "This device",
  linkNew: "Link a new device",
  codeLabel: "Link code shown on the new device",
  scan: "Scan the code",
  stopScan: "Stop scanning",
  check: "Continue",
  confirmTitle: "Link this device?",
  confirmName: (name: string) => `“${name}” asks to join your account.`,
  confirmHelp:
    "It will hold your identity and see your contacts. Only link a device you have in front of you.",
  thisNameLabel: "Name of this device, shown on the other one",
  historyLabel: "Bring over earlier messages",
  historyRanges: {
    none: "None",
    week: "The last 7 days",
    month: "The last 30 days",
    all: "All of them",
  },
  historyHelp:
    "They are encrypted on this device; the relay holds them only as an encrypted file for the new device.",
  historyComing: "Bringing over your earlier messages…",
  historyFailed:
    "Your earlier messages could not be brought over from your other device. Everything else is linked.",
  historyRejected: (n: number) =>
    `${n} earlier message${n === 1 ? "" : "s"} from your other device could not be read and ${n === 1 ? "was" : "were"} left out.`,
  approve: "Link device",
  linked: (name: string) => `${name} is linked. It now uses your account.`,
  removeTitle: (name: string) => `Remove ${name}?`,
  removeHelp:
    "It is signed out at once and reads nothing sent afterwards. Messages it already has stay on it.",
  remove: "Remove",
  removed: (name: string) => `${name} was removed from your account.`,
  removedBanner:
    "This device was removed from your account on another device. It no longer sends or receives anything.",
} as const;

/** A default name for this device from the browser's user agent: "Chrome on Android". */
export function guessDeviceName(userAgent: string): string {
  const browser = /Edg\//.test(userAgent)
    ? "Edge"
    : /Firefox\//.test(userAgent)
      ? "Firefox"
      : /Chrome\//.test(userAgent)
        ? "Chrome"
        : /Safari\//.test(userAgent)
          ? "Safari"
          : "Browser";
  const os = /Android/.test(userAgent)
    ? "Android"
    : /iPhone|iPad/.test(userAgent)
      ? "iOS"
      : /Mac OS X/.test(userAgent)
        ? "macOS"
        : /Windows/.test(userAgent)
          ? "Windows"
          : /Linux/.test(userAgent)
            ? "Linux"
            : null;
  return os === null ? browser : `${browser} on ${os}`;
}
