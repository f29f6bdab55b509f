/** The relay's WebSocket URL: ws: or wss: to match the page, same host — the relay serves the app (PROTOCOL.md §4). */
export function relayUrl(loc: { protocol: string; host: string }, hub: string): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws?hub=${encodeURIComponent(hub)}`;
}
