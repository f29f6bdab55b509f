// Bundles the bench and soak for Node 20 (which cannot run TypeScript) and the primitive table
// for the browser, with the pinned esbuild. `--need-pwa` also builds the PWA (vite) when
// dist/pwa is missing: `wrangler dev` serves it as the Worker's static assets.
import { execSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
import { build } from "esbuild";

if (process.argv.includes("--need-pwa") && !existsSync("dist/pwa/index.html")) {
  execSync("npx vite build", { stdio: "inherit" });
}
await build({
  entryPoints: {
    main: "bench/main.ts",
    "bare-server": "bench/bare-server.ts",
    soak: "scripts/soak.ts",
    "profile-relay": "bench/profile-relay.ts",
    "relay-ab": "bench/relay-ab.ts",
    attachments: "bench/attachments.ts",
    "idle-memory": "bench/idle-memory.ts",
  },
  outdir: "dist/bench",
  outExtension: { ".js": ".mjs" },
  bundle: true,
  platform: "node",
  format: "esm",
  packages: "external",
  target: "node20",
  logLevel: "warning",
});
// The Node crypto backend loads these at run time from beside its module (node/mlkem-pqclean.ts,
// node/crypto-thread.ts): in a bundle, beside the bundle.
mkdirSync("dist/bench", { recursive: true });
for (const f of ["pqclean-driver.cjs", "crypto-thread.cjs"])
  copyFileSync(`node/${f}`, `dist/bench/${f}`);
// ts-mls, the group bench's RFC 9420 baseline, lives in its own package (bench/mls): it pins other
// @noble/* versions than Parley's. Installed from its lock file on first use, bundled whole.
if (!existsSync("bench/mls/node_modules/ts-mls")) {
  execSync("npm ci --prefix bench/mls --no-audit --no-fund", { stdio: "inherit" });
}
await build({
  entryPoints: { "ts-mls": "bench/mls/ts-mls.ts" },
  outdir: "dist/bench",
  outExtension: { ".js": ".mjs" },
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  logLevel: "warning",
});
await build({
  entryPoints: { "browser-primitives": "bench/browser-primitives.ts" },
  outdir: "dist/bench",
  bundle: true,
  platform: "browser",
  format: "iife",
  target: "es2022",
  logLevel: "warning",
});
