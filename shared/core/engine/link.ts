/**
 * The link to the relay (PROTOCOL.md §4): a tagged union, so "online" carries what only exists
 * while authenticated, and nothing needs a pair of booleans to say where the connection is.
 * `socket` numbers the connection (the runner counts them): a frame made for one socket is
 * never handed to the next one, which has not authenticated yet.
 */

export type Link =
  /** No socket (or the socket closed): frames are not sent; write-ahead work waits (§10.1). */
  | { t: "offline" }
  /** The socket is open; `hello`/`auth` under way. Only `auth` may be sent (§4.3). */
  | { t: "authenticating"; socket: number }
  /** `welcome` received. `uploading`: a one-time prekey upload awaits its answer (§8.3.2). */
  | { t: "online"; socket: number; uploading: boolean };

export const OFFLINE: Link = { t: "offline" };

export const isOnline = (l: Link): l is Extract<Link, { t: "online" }> => l.t === "online";

/** May `frame` go out on socket number `socket`, given the link as the step left it? */
export function mayCarry(l: Link, socket: number, frameType: string): boolean {
  if (l.t === "offline" || l.socket !== socket) return false;
  return l.t === "online" || frameType === "auth";
}
