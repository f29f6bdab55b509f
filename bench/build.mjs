// Bundles the bench and soak for Node 20 (which cannot run TypeScript) and the primitive table
// for the browser, with the pinned esbuild. `--need-pwa` also builds the PWA (vite) when
// dist/pwa is missing: `wrangler dev` serves it as the Worker's static assets.
import { execSync } from "node:child_process";
import { existsSync } from "node:fs";
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
await build({
  entryPoints: { "browser-primitives": "bench/browser-primitives.ts" },
  outdir: "dist/bench",
  bundle: true,
  platform: "browser",
  format: "iife",
  target: "es2022",
  logLevel: "warning",
});
