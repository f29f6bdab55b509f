/**
 * HTTP policy for every response the Worker gives (PROTOCOL.md §4.1, docs/ARCHITECTURE.md):
 * security headers and the WebSocket Origin check, as pure functions of the request URL.
 */

/** Hub used when /ws has no `?hub=` (PROTOCOL.md §4.1). */
export const DEFAULT_HUB = "main";

/**
 * Content-Security-Policy for the PWA: scripts, styles, the service worker and the manifest only
 * from our own origin (no inline script), images also from data:/blob: (QR codes), and sockets
 * only to our own host. Everything else is denied.
 */
export function contentSecurityPolicy(url: URL): string {
  const ws = url.protocol === "https:" ? `wss://${url.host}` : `ws://${url.host} wss://${url.host}`;
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    `connect-src 'self' ${ws}`,
    "worker-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "object-src 'none'",
  ].join("; ");
}

export function securityHeaders(url: URL): Record<string, string> {
  const h: Record<string, string> = {
    "Content-Security-Policy": contentSecurityPolicy(url),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=(), usb=()",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
  };
  // HSTS only means something over TLS (RFC 6797 §7.2: ignored on plain http anyway).
  if (url.protocol === "https:") {
    h["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains";
  }
  return h;
}

/**
 * Is a path the assets do not hold one of the app's own routes (answered with the app, which
 * routes on the client) rather than a missing file (answered 404)? Files have an extension in
 * their last segment, and everything under /assets/ is a build output: a stale or mistyped one
 * must fail loudly, not come back as HTML with status 200 (a script or image that is HTML breaks
 * in confusing ways, and crawlers index it as a page).
 */
export function isAppRoute(pathname: string): boolean {
  if (pathname === "/assets" || pathname.startsWith("/assets/")) return false;
  const last = pathname.slice(pathname.lastIndexOf("/") + 1);
  return !/\.[A-Za-z0-9]+$/.test(last);
}

/** Parse the ALLOWED_ORIGINS var: comma- or space-separated origins; anything malformed is dropped. */
export function parseAllowedOrigins(raw: string | undefined): Set<string> {
  const out = new Set<string>();
  for (const part of (raw ?? "").split(/[\s,]+/)) {
    if (part === "") continue;
    try {
      const u = new URL(part);
      if (u.protocol === "http:" || u.protocol === "https:") out.add(u.origin);
    } catch {
      // Not a URL: ignore rather than allow something unintended.
    }
  }
  return out;
}

/**
 * Cross-site WebSocket hijacking defence: the upgrade must come from a page of our own origin or
 * one explicitly allowed. Browsers always send Origin on a WebSocket handshake; its absence means
 * a non-browser client, which must then send one deliberately (it is also bound into the auth
 * signature, PROTOCOL.md §4.2).
 */
export function isAllowedOrigin(
  origin: string | undefined,
  requestUrl: URL,
  allowed: Set<string>,
): boolean {
  if (origin === undefined || origin === "null") return false;
  let o: string;
  try {
    o = new URL(origin).origin;
  } catch {
    return false;
  }
  if (o !== origin) return false; // only the bare scheme://host[:port] form
  return o === requestUrl.origin || allowed.has(o);
}
