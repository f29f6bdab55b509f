/**
 * The relay's WebSocket URL: ws: or wss: to match the page, same host — the relay serves the app
 * (PROTOCOL.md §4). A device opens its user's route (`&user=`, §4.1), so its user's mailbox,
 * groups and presence are its own object's; a new device waiting to be linked has no user yet
 * and opens its code's rendezvous's route (`&link=`, §4.8.3).
 */
export function relayUrl(
  loc: { protocol: string; host: string },
  hub: string,
  route: { user: string } | { link: string },
): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const to = "user" in route ? `&user=${route.user}` : `&link=${route.link}`;
  return `${scheme}//${loc.host}/ws?hub=${encodeURIComponent(hub)}${to}`;
}
