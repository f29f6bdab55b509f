#!/usr/bin/env node
/**
 * Make the git-ignored `.dev.vars` that `wrangler dev` reads, once: the relay's VAPID key pair for
 * Web Push (docs/PROTOCOL.md §7.9). An existing file is left alone, so the key — and with it every
 * browser's push subscription — stays the same across runs. In production the same variables are
 * Worker secrets (`wrangler secret put VAPID_PRIVATE_KEY`, README "Deploying").
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const file = join(dirname(fileURLToPath(import.meta.url)), "..", ".dev.vars");
const existing = existsSync(file) ? readFileSync(file, "utf8") : "";
if (/^VAPID_PRIVATE_KEY=/m.test(existing)) process.exit(0);

const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" });
const point = Buffer.concat([
  Buffer.from([4]),
  Buffer.from(jwk.x, "base64url"),
  Buffer.from(jwk.y, "base64url"),
]);
const lines = [
  "# Made by scripts/dev-vars.mjs for `wrangler dev`; never commit it (see .gitignore).",
  `VAPID_PUBLIC_KEY=${point.toString("base64url")}`,
  `VAPID_PRIVATE_KEY=${jwk.d}`,
  "VAPID_SUBJECT=mailto:admin@localhost.invalid",
];
writeFileSync(
  file,
  `${existing}${existing === "" || existing.endsWith("\n") ? "" : "\n"}${lines.join("\n")}\n`,
  {
    mode: 0o600,
  },
);
console.log("dev-vars: wrote a VAPID key pair to .dev.vars");
