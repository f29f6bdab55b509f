/** The Worker's HTTP surface: routes, security headers, Origin check, error handler. */
import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { isAppRoute } from "../../worker/http";
import app from "../../worker/index";

const WS = { Upgrade: "websocket" };

function expectSecurityHeaders(res: Response, https = false) {
  const csp = res.headers.get("Content-Security-Policy") ?? "";
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("script-src 'self'");
  expect(csp).not.toContain("unsafe-inline");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).toContain("worker-src 'self'");
  expect(csp).toContain("manifest-src 'self'");
  expect(csp).toMatch(/connect-src 'self' (ws:\/\/[^ ]+ )?wss:\/\//);
  expect(res.headers.get("X-Content-Type-Options")).toBe("nosniff");
  expect(res.headers.get("Referrer-Policy")).toBe("no-referrer");
  expect(res.headers.get("Permissions-Policy")).toContain("geolocation=()");
  expect(res.headers.has("Strict-Transport-Security")).toBe(https);
}

describe("worker http", () => {
  it("/health answers 200 with the security headers", async () => {
    const res = await SELF.fetch("http://relay.test/health");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    expectSecurityHeaders(res);
  });

  it("/ws without an upgrade is 426", async () => {
    const res = await SELF.fetch("http://relay.test/ws");
    expect(res.status).toBe(426);
    expectSecurityHeaders(res);
  });

  it("/ws with a bad hub name is 400", async () => {
    for (const hub of ["UPPER", "a/b", "x".repeat(33), ""]) {
      const res = await SELF.fetch(`http://relay.test/ws?hub=${encodeURIComponent(hub)}`, {
        headers: { ...WS, Origin: "http://relay.test" },
      });
      expect(res.status).toBe(400);
    }
  });

  it("/ws from a foreign or missing Origin is 403", async () => {
    for (const headers of [{ ...WS, Origin: "http://evil.test" }, WS, { ...WS, Origin: "null" }]) {
      const res = await SELF.fetch("http://relay.test/ws", { headers });
      expect(res.status).toBe(403);
    }
  });

  it("ALLOWED_ORIGINS admits a listed origin", async () => {
    const req = () =>
      new Request("http://relay.test/ws?hub=allowed", {
        headers: { ...WS, Origin: "https://phone.lan:8787" },
      });
    const refused = await app.fetch(req(), env);
    expect(refused.status).toBe(403);
    const ok = await app.fetch(req(), { ...env, ALLOWED_ORIGINS: "https://phone.lan:8787" });
    expect(ok.status).toBe(101);
    expect(ok.headers.get("X-Content-Type-Options")).toBe("nosniff");
    ok.webSocket?.accept();
    ok.webSocket?.close(1000);
  });

  it("serves the app at / with the security headers, HSTS on https", async () => {
    const res = await SELF.fetch("https://relay.test/");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toContain("text/html");
    expect(await res.text()).toContain("<html");
    expectSecurityHeaders(res, true);
    expect(res.headers.get("Content-Security-Policy")).toContain(
      "connect-src 'self' wss://relay.test;",
    );
  });

  it("falls back to the app for client-side routes", async () => {
    const res = await SELF.fetch("http://relay.test/chat/bob", {
      headers: { Accept: "text/html" },
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("<html");
    expectSecurityHeaders(res);
  });

  it("serves a real robots.txt that keeps crawlers out", async () => {
    const res = await SELF.fetch("http://relay.test/robots.txt");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toContain("text/plain");
    const text = await res.text();
    expect(text).toMatch(/^User-agent: \*$/m);
    expect(text).toMatch(/^Disallow: \/$/m);
    expect(text).not.toContain("<html");
    expectSecurityHeaders(res);
  });

  it("a missing file is 404, never the app's HTML; app routes still get the app", async () => {
    for (const path of [
      "/assets/index-missing.js",
      "/assets/gone",
      "/favicon.ico",
      "/icons/nope.png",
      "/wp-login.php",
      "/deep/path/file.txt",
    ]) {
      const res = await SELF.fetch(`http://relay.test${path}`, {
        headers: { Accept: "text/html" },
      });
      expect(res.status, path).toBe(404);
      expect(await res.text(), path).not.toContain("<html");
      expectSecurityHeaders(res);
    }
    for (const path of ["/", "/chat", "/settings/", "/a.b/c"]) {
      const res = await SELF.fetch(`http://relay.test${path}`, {
        headers: { Accept: "text/html" },
      });
      expect(res.status, path).toBe(200);
      expect(await res.text(), path).toContain("<html");
    }
    // Files that exist are served as themselves.
    const icon = await SELF.fetch("http://relay.test/icons/favicon-32.png");
    expect(icon.status).toBe(200);
    expect(icon.headers.get("Content-Type")).toContain("image/png");
    await icon.arrayBuffer();
    // Only reads fall back to the app.
    const post = await SELF.fetch("http://relay.test/chat/bob", { method: "POST" });
    expect(post.status).toBe(404);
  });

  it("isAppRoute: extension-less paths outside /assets/ are the app's", () => {
    expect(isAppRoute("/")).toBe(true);
    expect(isAppRoute("/chat/bob")).toBe(true);
    expect(isAppRoute("/v1.2/thing")).toBe(true);
    expect(isAppRoute("/robots.txt")).toBe(false);
    expect(isAppRoute("/assets/x")).toBe(false);
    expect(isAppRoute("/assets")).toBe(false);
    expect(isAppRoute("/a/b.webmanifest")).toBe(false);
  });

  it("an internal failure is a bare 500 without detail", async () => {
    const broken = {
      ...env,
      ASSETS: {
        fetch: () => {
          throw new Error("secret internal detail");
        },
      },
    };
    const res = await app.fetch(new Request("http://relay.test/x"), broken);
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(text).not.toContain("secret");
    expect(text).not.toContain("at ");
    expectSecurityHeaders(res);
  });
});
