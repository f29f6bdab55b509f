/**
 * Four test projects: `node` (crypto, protocol core, wire contract, integration against a real
 * `wrangler dev`), `node-routed` (the group stories on users' routes), `workers` (the same crypto plus the relay, inside workerd via Miniflare) and
 * `e2e` (the built PWA in Chromium against a real `wrangler dev`; needs `npm run build` first).
 */

import { generateKeyPairSync } from "node:crypto";
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

/** A VAPID key pair for this run, as base64url raw point and scalar (PROTOCOL.md §7.9). */
function testVapid(): { publicKey: string; privateKey: string } {
  const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
    format: "jwk",
  });
  const point = Buffer.concat([
    Buffer.from([4]),
    Buffer.from(jwk.x ?? "", "base64url"),
    Buffer.from(jwk.y ?? "", "base64url"),
  ]);
  return { publicKey: point.toString("base64url"), privateKey: jwk.d ?? "" };
}
const TEST_VAPID = testVapid();

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
        test: {
          // The group, device and linking stories again with every client on its user's route:
          // groups then live in their homes and members' objects, and a new device waits on its
          // rendezvous's object (docs/ARCHITECTURE.md "Groups on users' routes").
          name: "node-routed",
          include: [
            "test/node/scenario-group-*.test.ts",
            "test/node/scenario-device-*.test.ts",
            "test/node/scenario-linking.test.ts",
          ],
          environment: "node",
          setupFiles: ["test/support/node-crypto-backend.ts"],
          env: { PARLEY_TEST_ROUTED: "1" },
          testTimeout: 30_000,
        },
      },
      {
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            // Web Push against the local push service of test/support/push-service-global.ts:
            // fresh VAPID keys per run, loopback endpoints admitted (PROTOCOL.md §7.9).
            miniflare: {
              // The PWA's static files (pwa/wrangler.toml), which the relay's ASSETS service
              // binding serves: the same assets-only Worker `npm start` runs beside the relay.
              workers: [
                {
                  name: "parley-pwa",
                  modules: true,
                  script: "export default {}",
                  compatibilityDate: "2026-04-20",
                  assets: {
                    directory: "./dist/pwa",
                    routerConfig: { has_user_worker: false },
                    assetConfig: { not_found_handling: "none" },
                  },
                },
              ],
              bindings: {
                VAPID_PUBLIC_KEY: TEST_VAPID.publicKey,
                VAPID_PRIVATE_KEY: TEST_VAPID.privateKey,
                VAPID_SUBJECT: "mailto:ops@parley.test",
                PUSH_ALLOW_LOOPBACK: "1",
                PUSH_SERVICE: inject("pushServiceOrigin"),
                // One hub whose users see each other unless they choose otherwise (§6.3).
                PRESENCE_EVERYONE_HUBS: "presence-open",
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts", "test/shared/**/*.test.ts"],
          globalSetup: ["test/support/push-service-global.ts"],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          setupFiles: ["test/e2e/setup.ts"],
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
