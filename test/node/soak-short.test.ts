/**
 * The CI-sized soak: 10 real ParleyClient engines over `ws` against a real `wrangler dev`,
 * 10 s of 1:1 and group traffic with every message sequence-numbered end to end, and the relay's
 * whole process group SIGKILLed at half time and restarted on the same --persist-to directory.
 * Asserts counts, never timings: nothing lost, nothing surfaced twice, nothing failed to decrypt.
 * It runs on both routes. `npm run soak` is the full version (50 clients, 60 s, with and without a
 * restart).
 */
import { describe, expect, it } from "vitest";
import { runSoak } from "../../scripts/soak-lib";
import { testPort } from "../support/wrangler-dev";

describe("soak (short)", () => {
  // Both routes: the hub's object, and users' own objects (docs/ARCHITECTURE.md "User objects"),
  // where a 1:1 item is held by the recipient's object and answered by the sender's.
  it.each([
    ["the hub's route", false],
    ["users' routes", true],
  ])(
    "10 clients, 1:1 + group, relay killed and restarted, %s: zero lost / duplicated / failed",
    async (_, routed) => {
      const c = await runSoak({
        clients: 10,
        seconds: 10,
        groupSize: 5,
        intervalMs: 500,
        restart: true,
        port: testPort(8798),
        routed,
      });
      // The run really exercised what it claims to.
      expect(c.restarts).toBe(1);
      expect(c.reconnects).toBeGreaterThanOrEqual(10);
      expect(c.sentDirect).toBeGreaterThan(0);
      expect(c.sentGroup).toBeGreaterThan(0);
      expect(c.expected).toBe(c.sentDirect + c.sentGroup * 4);
      // The properties.
      expect(
        {
          lost: c.lost,
          duplicated: c.duplicated,
          decryptFailures: c.decryptFailures,
          misattributed: c.misattributed,
        },
        `lost (receiver|sender|conversation|seq): ${c.lostKeys.join(", ")}; engine errors: ${JSON.stringify(c.errors)}`,
      ).toEqual({ lost: 0, duplicated: 0, decryptFailures: 0, misattributed: 0 });
      expect(c.received).toBe(c.expected);
    },
    240_000,
  );
});
