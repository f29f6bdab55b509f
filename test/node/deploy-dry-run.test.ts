/**
 * The configuration deploys: `wrangler deploy --dry-run` bundles the relay's Worker with every
 * Durable Object class `wrangler.toml` binds and migrates, the R2 bucket and the service binding
 * to the PWA's Worker, and reads the built PWA as that Worker's assets (pwa/wrangler.toml),
 * without an account. Needs `npm run build` first (dist/pwa); `npm test` does that.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = resolve(__dirname, "../..");
const out = mkdtempSync(join(tmpdir(), "parley-dry-run-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** `[[durable_objects.bindings]]` class names and every class a migration creates. */
function declaredClasses(toml: string): { bound: string[]; migrated: string[] } {
  const bound = [...toml.matchAll(/^class_name\s*=\s*"(\w+)"/gm)].map((m) => m[1] ?? "");
  const migrated = [...toml.matchAll(/^new_sqlite_classes\s*=\s*\[([^\]]*)\]/gm)].flatMap((m) =>
    [...(m[1] ?? "").matchAll(/"(\w+)"/g)].map((c) => c[1] ?? ""),
  );
  return { bound, migrated };
}

describe("wrangler deploy --dry-run", () => {
  it("bundles the Worker with every bound and migrated Durable Object class exported", async () => {
    expect(existsSync(join(ROOT, "dist/pwa/index.html")), "run `npm run build` first").toBe(true);
    const r = await promisify(execFile)(
      join(ROOT, "node_modules/.bin/wrangler"),
      ["deploy", "--dry-run", "--outdir", out],
      { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" } },
    );
    const log = r.stdout + r.stderr;
    expect(log).toContain("--dry-run: exiting now.");
    const { bound, migrated } = declaredClasses(readFileSync(join(ROOT, "wrangler.toml"), "utf8"));
    // Every bound class has a migration creating it, and the bundle exports each.
    expect(bound.length).toBeGreaterThanOrEqual(4);
    expect([...migrated].sort()).toEqual([...bound].sort());
    const bundle = readFileSync(join(out, "index.js"), "utf8");
    for (const cls of bound) {
      expect(bundle).toMatch(new RegExp(`export\\s*\\{[^}]*\\b${cls}\\b`));
      expect(log).toContain(`env.${bindingOf(cls)} (${cls})`);
    }
    expect(log).toContain("env.BLOBS (parley-blobs)");
    expect(log).toContain("env.ASSETS (parley-pwa)");
  }, 120_000);

  it("deploys the PWA's Worker the relay's ASSETS binding names, with the built files", async () => {
    const r = await promisify(execFile)(
      join(ROOT, "node_modules/.bin/wrangler"),
      ["deploy", "--dry-run", "-c", "pwa/wrangler.toml"],
      { cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" } },
    );
    const log = r.stdout + r.stderr;
    expect(log).toContain("--dry-run: exiting now.");
    // Wrangler counts the directories too: every built file is among what it read.
    const files = readdirSync(join(ROOT, "dist/pwa"), { recursive: true, withFileTypes: true });
    const read = /Read (\d+) files from the assets directory (\S+)/.exec(log);
    expect(read?.[2]).toBe(join(ROOT, "dist/pwa"));
    expect(Number(read?.[1])).toBeGreaterThanOrEqual(files.filter((f) => f.isFile()).length);
    const name = /^name\s*=\s*"([\w-]+)"/m.exec(
      readFileSync(join(ROOT, "pwa/wrangler.toml"), "utf8"),
    );
    const service = /^service\s*=\s*"([\w-]+)"/m.exec(
      readFileSync(join(ROOT, "wrangler.toml"), "utf8"),
    );
    expect(name?.[1]).toBe("parley-pwa");
    expect(service?.[1]).toBe(name?.[1]);
  }, 120_000);
});

/** The binding name `wrangler.toml` gives a class. */
function bindingOf(cls: string): string {
  const toml = readFileSync(join(ROOT, "wrangler.toml"), "utf8");
  const m = toml.match(new RegExp(`name\\s*=\\s*"(\\w+)"\\s*\\nclass_name\\s*=\\s*"${cls}"`));
  return m?.[1] ?? "?";
}
