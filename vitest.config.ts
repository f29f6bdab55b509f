/**
 * Two test projects: `node` (crypto, protocol core, wire contract, integration against a real
 * `wrangler dev`) and `workers` (the same crypto plus the relay, inside workerd via Miniflare).
 * Browser end-to-end tests have their own config (vitest.e2e.config.ts).
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
    ],
  },
});
