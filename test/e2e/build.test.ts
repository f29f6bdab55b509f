/**
 * The production build (`npm run build` → dist/pwa) as shipped: the initial JavaScript budget
 * (≤ 150 KB gzipped), no inline script (the Worker's CSP is `script-src 'self'`), and a
 * manifest that makes the app installable (name, short name, icons incl. maskable, standalone).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, test } from "vitest";

const DIST = join(process.cwd(), "dist", "pwa");
const BUDGET_GZIP_BYTES = 150 * 1024;

function html(): string {
  return readFileSync(join(DIST, "index.html"), "utf8");
}

describe("PWA build", () => {
  test("initial JavaScript is within 150 KB gzipped", () => {
    const page = html();
    // Everything the page loads before first render: the entry module and its preloads.
    const srcs = [
      ...page.matchAll(/<script[^>]*type="module"[^>]*src="([^"]+)"/g),
      ...page.matchAll(/<link[^>]*rel="modulepreload"[^>]*href="([^"]+)"/g),
    ].map((m) => m[1] as string);
    expect(srcs.length).toBeGreaterThan(0);
    let total = 0;
    for (const src of srcs) {
      const bytes = readFileSync(join(DIST, src.replace(/^\//, "")));
      total += gzipSync(bytes, { level: 9 }).length;
    }
    console.log(`initial JS: ${(total / 1024).toFixed(1)} KB gzipped (${srcs.join(", ")})`);
    expect(total).toBeLessThanOrEqual(BUDGET_GZIP_BYTES);
  });

  test("index.html has no inline script or inline style attribute", () => {
    const page = html();
    for (const m of page.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)) {
      expect(m[1]).toMatch(/\bsrc="/);
      expect((m[2] ?? "").trim()).toBe("");
    }
    expect(page).not.toMatch(/\sstyle="/);
    expect(page).not.toMatch(/\son[a-z]+="/);
  });

  test("the manifest is complete for installation", () => {
    const m = JSON.parse(readFileSync(join(DIST, "manifest.webmanifest"), "utf8")) as {
      name: string;
      short_name: string;
      display: string;
      start_url: string;
      theme_color: string;
      background_color: string;
      icons: { src: string; sizes: string; purpose?: string }[];
    };
    expect(m.name).toContain("Parley");
    expect(m.short_name).toBe("Parley");
    expect(m.display).toBe("standalone");
    expect(m.start_url).toBe("/");
    expect(m.theme_color).toMatch(/^#[0-9a-f]{6}$/i);
    expect(m.background_color).toMatch(/^#[0-9a-f]{6}$/i);
    const sizes = m.icons.map((i) => i.sizes);
    expect(sizes).toContain("192x192");
    expect(sizes).toContain("512x512");
    expect(m.icons.some((i) => i.purpose === "maskable")).toBe(true);
    for (const icon of m.icons) {
      const png = readFileSync(join(DIST, icon.src));
      // PNG signature, then IHDR width/height must match the declared size.
      expect(png.subarray(1, 4).toString("latin1")).toBe("PNG");
      const [w, h] = icon.sizes.split("x").map(Number);
      expect(png.readUInt32BE(16)).toBe(w);
      expect(png.readUInt32BE(20)).toBe(h);
    }
    expect(html()).toContain('rel="manifest"');
  });

  test("the service worker precaches the app shell", () => {
    const sw = readFileSync(join(DIST, "sw.js"), "utf8");
    expect(sw).toContain("index.html");
    expect(sw).toMatch(/assets\/index-[^"]+\.js/);
    expect(sw).toMatch(/assets\/index-[^"]+\.css/);
  });
});
