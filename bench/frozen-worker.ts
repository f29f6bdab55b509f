/**
 * A frozen copy of the Worker for the relay bench. `wrangler dev` rebuilds and restarts workerd
 * whenever a source file changes, and other people edit the tree while the bench runs; a restart
 * mid-run drops every connection and spoils the figures. So the bench bundles the Worker once
 * (`wrangler deploy --dry-run --outdir`) and serves that bundle with `no_bundle`, from a config
 * that is the project's wrangler.toml with `main` pointed at the copy, beside a copy of the PWA's
 * config (pwa/wrangler.toml) whose assets directory is the built PWA's absolute path.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** Returns the paths of the frozen configs: the relay's, then the PWA's. */
export function freezeWorker(root: string, outDir: string): string[] {
  const dir = resolve(root, outDir);
  mkdirSync(dir, { recursive: true });
  execFileSync("npx", ["wrangler", "deploy", "--dry-run", "--outdir", dir], {
    cwd: root,
    stdio: "ignore",
    env: { ...process.env, CI: "1", WRANGLER_SEND_METRICS: "false" },
  });
  const toml = readFileSync(join(root, "wrangler.toml"), "utf8").replace(
    /^main\s*=.*$/m,
    'main = "index.js"\nno_bundle = true',
  );
  const pwa = readFileSync(join(root, "pwa/wrangler.toml"), "utf8").replace(
    /^directory\s*=\s*"\.\.\/dist\/pwa"/m,
    `directory = ${JSON.stringify(join(root, "dist/pwa"))}`,
  );
  if (!toml.includes('main = "index.js"') || !pwa.includes(join(root, "dist/pwa"))) {
    throw new Error("frozen worker: the configs did not have the expected main/assets lines");
  }
  const config = join(dir, "wrangler.toml");
  writeFileSync(config, toml);
  const pwaConfig = join(dir, "pwa.wrangler.toml");
  writeFileSync(pwaConfig, pwa);
  return [config, pwaConfig];
}
