/**
 * The status word of a conversation (PROTOCOL.md §11.1): the PWA's reading of the engine's facts
 * (session phase, pins, membership) together with the link state. It lives here, not in the
 * engine, because it is presentation: the engine reports what is true; the view decides what a
 * person is told.
 */

import type { ConversationSummary } from "../../../shared/core/client-api";

export type ConversationStatus =
  /** Not connected to the relay (or not yet authenticated). */
  | "offline"
  /** Connected, waiting for the peer's bundle / the group's first commit. */
  | "connecting"
  /** Handshake messages in flight (online handshake, or prekey message not yet answered). */
  | "handshaking"
  /** Keys agreed and confirmed (or async start: first message can go out). */
  | "secure"
  /** Secure and the user compared safety numbers. */
  | "verified"
  /** The peer's identity key differs from the pinned one: sending is blocked until accepted. */
  | "key_changed";

/** The facts the status is read from: an engine summary or the PWA's view of one. */
export type StatusFacts = Pick<
  ConversationSummary,
  "kind" | "keyChanged" | "session" | "members"
> & {
  epoch?: number | undefined;
  joining?: boolean | undefined;
  leaving?: boolean | undefined;
};

export function conversationStatus(c: StatusFacts, online: boolean): ConversationStatus {
  if (c.keyChanged) return "key_changed";
  if (!online) return "offline";
  if (c.kind === "direct") {
    switch (c.session ?? "none") {
      case "ready":
        return c.members[0]?.verified ? "verified" : "secure";
      case "handshaking":
        return "handshaking";
      default:
        return "connecting";
    }
  }
  if ((c.epoch ?? -1) >= 0 && !c.leaving) return "secure";
  if (c.joining) return "connecting";
  return "offline";
}
