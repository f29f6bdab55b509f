/**
 * The PWA keeps and shows the engine's `missing` system line (PROTOCOL.md §8.8, §9.5, §12.6):
 * it becomes a history entry that survives the storage schema (history is re-parsed on load), and
 * is rendered with the warning class of unreadable messages.
 */
import { readFileSync } from "node:fs";
import * as v from "valibot";
import { expect, it } from "vitest";
import { systemEntry } from "../../pwa/src/state/model";
import { HistoryEntry } from "../../pwa/src/storage/schemas";

it("a missing line is a valid, persisted history entry", () => {
  const e = systemEntry({
    conversationId: "group:broadcast",
    kind: "missing",
    text: "1 message from carol did not arrive",
    username: "carol",
    at: 1_700_000_000_000,
  });
  const r = v.safeParse(HistoryEntry, JSON.parse(JSON.stringify(e)));
  expect(r.success).toBe(true);
  expect(r.success && r.output.kind === "sys" && r.output.sysKind).toBe("missing");
  expect(r.success && r.output.kind === "sys" && r.output.text).toBe(
    "1 message from carol did not arrive",
  );
});

it("is styled as a warning, like an unreadable message", () => {
  const css = readFileSync(new URL("../../pwa/src/styles.css", import.meta.url), "utf8");
  expect(css).toMatch(/\.sys-decrypt_failed,\s*\.sys-missing\s*\{[^}]*var\(--bad\)/);
});
