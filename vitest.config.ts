/**
 * Three test projects: `node` (crypto, protocol core, wire contract, integration against a real
 * `wrangler dev`), `workers` (the same crypto plus the relay, inside workerd via Miniflare) and
 * `e2e` (the built PWA in Chromium against a real `wrangler dev`; needs `npm run build` first).
 */
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "node",
          include: ["test/node/**/*.test.ts", "test/shared/**/*.test.ts"],
          environment: "node",
          // Node clients run shared/crypto on node:crypto (node/crypto-backend.ts); the workers
          // project keeps the default WebCrypto/noble backend, so the shared vectors cover both.
          setupFiles: ["test/support/node-crypto-backend.ts"],
          testTimeout: 30_000,
        },
      },
      {
        plugins: [cloudflareTest({ wrangler: { configPath: "./wrangler.toml" } })],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts", "test/shared/**/*.test.ts"],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          // One story per file, each with three browsers and a relay: run them one at a time.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
