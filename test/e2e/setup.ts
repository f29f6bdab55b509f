/**
 * Set up for every end-to-end test file (vitest.config.ts, project `e2e`): when a test fails,
 * print what each open browser showed, so that a timeout waiting for one screen names the
 * screen that was there instead.
 */
import { beforeEach } from "vitest";
import { describeOpen } from "../support/browser";

beforeEach(({ onTestFailed, task }) => {
  onTestFailed(async () => {
    console.error(
      `What the open browsers showed when "${task.name}" failed:\n${await describeOpen()}`,
    );
  });
});
