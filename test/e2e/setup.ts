/**
 * Set up for every end-to-end test file (vitest.config.ts, project `e2e`): when a test fails,
 * add what each open browser showed to its error, so that a timeout waiting for one screen
 * names the screen that was there instead — in the error itself, which is what the end of a
 * run's log shows.
 */
import { beforeEach } from "vitest";
import { describeOpen } from "../support/browser";

beforeEach(({ onTestFailed, task }) => {
  onTestFailed(async () => {
    const seen = `What the open browsers showed when "${task.name}" failed:\n${await describeOpen()}`;
    const first = task.result?.errors?.[0];
    if (first) first.message = `${first.message}\n${seen}`;
    else console.error(seen);
  });
});
