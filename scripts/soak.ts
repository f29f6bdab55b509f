/**
 * `npm run soak`: 50 protocol clients for 60 s of 1:1 and group traffic against a real
 * `wrangler dev` on 127.0.0.1:8797, then the same again with the relay killed and restarted mid-run.
 * Prints the counts; exits non-zero unless lost, duplicated and failed are all zero.
 *
 * Environment: SOAK_CLIENTS (50), SOAK_SECONDS (60), SOAK_GROUP_SIZE (10), SOAK_INTERVAL_MS (1000),
 * SOAK_PORT (8797), SOAK_ROUTED (1: every client on its user's route, docs/ARCHITECTURE.md "User
 * objects", each group in its home).
 */
import { installNodeCryptoBackend } from "../node/crypto-backend";
import { runSoak, type SoakCounts } from "./soak-lib";

// Protocol clients in Node run shared/crypto on node:crypto (node/crypto-backend.ts).
installNodeCryptoBackend();

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const base = {
  clients: env("SOAK_CLIENTS", 50),
  seconds: env("SOAK_SECONDS", 60),
  groupSize: env("SOAK_GROUP_SIZE", 10),
  intervalMs: env("SOAK_INTERVAL_MS", 1000),
  port: env("SOAK_PORT", 8797),
  routed: process.env.SOAK_ROUTED === "1",
  log: (s: string) => process.stdout.write(`${s}\n`),
};

function print(title: string, c: SoakCounts): boolean {
  const ok = c.lost === 0 && c.duplicated === 0 && c.decryptFailures === 0 && c.misattributed === 0;
  process.stdout.write(
    [
      `### ${title}`,
      `clients ${c.clients}, ${c.seconds} s, relay restarts ${c.restarts}, reconnects ${c.reconnects}`,
      `sent: ${c.sentDirect} direct + ${c.sentGroup} group messages (${c.refusedSends} sends refused and retried)`,
      `deliveries expected ${c.expected}, received ${c.received}`,
      `LOST ${c.lost}   DUPLICATED ${c.duplicated}   DECRYPT FAILURES ${c.decryptFailures}   MISATTRIBUTED ${c.misattributed}`,
      `engine error events: ${JSON.stringify(c.errors)}`,
      ...(c.lostKeys.length > 0
        ? [`lost (receiver|sender|conversation|seq): ${c.lostKeys.join(", ")}`]
        : []),
      ok ? "result: OK" : "result: FAILED",
      "",
    ].join("\n"),
  );
  return ok;
}

process.stdout.write("soak 1/2: steady traffic\n");
const steady = await runSoak({ ...base, restart: false });
process.stdout.write("soak 2/2: relay killed and restarted mid-run\n");
const restart = await runSoak({ ...base, restart: true });
const ok1 = print("steady", steady);
const ok2 = print("relay killed and restarted", restart);
process.exit(ok1 && ok2 ? 0 : 1);
