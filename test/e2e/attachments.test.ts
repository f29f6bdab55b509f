/**
 * Attachments end to end (PROTOCOL.md §8.6.1, §7.10): two Chromium profiles against a real
 * `wrangler dev` whose R2 bucket is simulated on disk in PERSIST. A 10 MB file picked with the
 * attach button arrives byte-identical after the recipient's download; an image dropped on the
 * conversation shows its encrypted thumbnail and opens in the viewer (desktop and 390 px); a
 * file pasted into the composer is sent too, and one sent while replying carries the quote; a
 * byte flipped in the stored R2 object is refused with a clear message; an over-size file and an
 * upload past the quota are refused with clear errors; and no stored R2 object holds any
 * plaintext or file name.
 * Screenshots go to test-results/screenshots/attachments-*.png.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { BrowserUser } from "../support/browser";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { chatPair, closeUsers, send, shot } from "./ui";

const PORT = testPort(8814);
const PERSIST = mkdtempSync(join(tmpdir(), "parley-attach-"));
/** Small enough that a second large upload goes over it (the default is 500 MiB). */
const QUOTA = 24 * 1000 * 1000;
let relay: WranglerDev;
let alice: BrowserUser;
let bob: BrowserUser;

const MARKER = "PARLEY-PLAINTEXT-MARKER-7f3a";
const BIG_NAME = "holiday-video-secret-name.bin";
const NOTES_NAME = "tamper-test-notes.txt";
const NOTES = `${MARKER} these are the notes\n`.repeat(5000);
const MINUTES_NAME = "reply-minutes.txt";

/** Every file under the relay's simulated R2 state (blobs and their metadata). */
function r2Files(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk(join(PERSIST, "v3", "r2"));
  return out;
}

/** The stored blob file of exactly `size` bytes (one upload of that ciphertext size). */
function blobFileOfSize(size: number): string {
  const hits = r2Files().filter((f) => statSync(f).size === size);
  expect(hits.length).toBe(1);
  return hits[0] ?? "";
}

const ciphertextSize = (n: number) => 56 + n + (Math.floor(n / 16384) + 1) * 16;

async function composerReady(page: Page): Promise<void> {
  await page.waitForFunction(
    () => !(document.querySelector('[data-testid="composer"]') as HTMLTextAreaElement).disabled,
    undefined,
    { timeout: 30_000 },
  );
}

/** Paste a text file into `page`'s composer, as the clipboard of a file manager would. */
async function pasteFile(page: Page, name: string, text: string): Promise<void> {
  await page.evaluate(
    ([n, t]) => {
      const dt = new DataTransfer();
      dt.items.add(new File([t ?? ""], n ?? "", { type: "text/plain" }));
      const box = document.querySelector('[data-testid="composer"]');
      box?.dispatchEvent(
        new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }),
      );
    },
    [name, text],
  );
}

/** The file message named `name` on `page`. */
const fileMsg = (page: Page, name: string) =>
  page.locator(`[data-testid="file-message"][data-name="${name}"]`);

async function uploadsDone(page: Page): Promise<void> {
  await page.waitForFunction(() => !document.querySelector('[data-testid="uploads"]'), undefined, {
    timeout: 120_000,
  });
}

/** Download the file message `name` on `page`; the saved bytes. */
async function download(page: Page, name: string): Promise<Buffer> {
  const saved = page.waitForEvent("download", { timeout: 120_000 });
  await fileMsg(page, name).getByTestId("file-download").click();
  const d = await saved;
  const path = await d.path();
  return readFileSync(path);
}

beforeAll(async () => {
  relay = await startWranglerDev({
    port: PORT,
    persistTo: PERSIST,
    vars: { BLOB_QUOTA_BYTES: String(QUOTA), PRESENCE_EVERYONE_HUBS: "*" },
  });
  [alice, bob] = await chatPair(`${relay.url}/`, "files coming");
}, 180_000);

afterAll(async () => {
  await closeUsers([alice, bob]);
  await relay?.stop();
  rmSync(PERSIST, { recursive: true, force: true });
});

describe("attachments", () => {
  test("a 10 MB file arrives byte-identical", async () => {
    const data = Buffer.concat([
      Buffer.from(MARKER),
      randomBytes(10 * 1000 * 1000 - MARKER.length),
    ]);
    await composerReady(alice.page);
    await alice.page
      .getByTestId("attach-input")
      .setInputFiles({ name: BIG_NAME, mimeType: "application/octet-stream", buffer: data });
    await alice.page.getByTestId("transfer-upload").first().waitFor({ timeout: 30_000 });
    await shot(alice.page, "attachments-uploading");
    await uploadsDone(alice.page);
    await fileMsg(bob.page, BIG_NAME).waitFor({ timeout: 60_000 });
    await shot(bob.page, "attachments-file-card");
    const got = await download(bob.page, BIG_NAME);
    expect(got.length).toBe(data.length);
    expect(createHash("sha256").update(got).digest("hex")).toBe(
      createHash("sha256").update(data).digest("hex"),
    );
    // What R2 holds is the ciphertext: exactly the size chunked encryption gives.
    blobFileOfSize(ciphertextSize(data.length));
  });

  test("an image dropped on the conversation shows its thumbnail and opens in the viewer", async () => {
    await alice.page.evaluate(async () => {
      const c = new OffscreenCanvas(640, 400);
      const g = c.getContext("2d");
      if (g === null) throw new Error("no 2d context");
      const grad = g.createLinearGradient(0, 0, 640, 400);
      grad.addColorStop(0, "#4f46e5");
      grad.addColorStop(1, "#f59e0b");
      g.fillStyle = grad;
      g.fillRect(0, 0, 640, 400);
      g.fillStyle = "#fff";
      g.font = "bold 64px sans-serif";
      g.fillText("Parley", 200, 220);
      const blob = await c.convertToBlob({ type: "image/png" });
      const dt = new DataTransfer();
      dt.items.add(new File([blob], "sunset.png", { type: "image/png" }));
      const target = document.querySelector("section.conversation");
      target?.dispatchEvent(
        new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }),
      );
      target?.dispatchEvent(
        new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }),
      );
    });
    await uploadsDone(alice.page);
    const thumb = fileMsg(bob.page, "sunset.png").getByTestId("file-thumb");
    await thumb.waitFor({ timeout: 60_000 });
    await shot(bob.page, "attachments-thumbnail");
    await thumb.click();
    await bob.page.getByTestId("viewer-img").waitFor({ timeout: 60_000 });
    const natural = await bob.page
      .getByTestId("viewer-img")
      .evaluate((img: HTMLImageElement) => [img.naturalWidth, img.naturalHeight]);
    expect(natural).toEqual([640, 400]);
    await shot(bob.page, "attachments-viewer");
    await bob.page.keyboard.press("Escape");
    // The same at phone width.
    await bob.page.setViewportSize({ width: 390, height: 844 });
    await fileMsg(bob.page, "sunset.png").scrollIntoViewIfNeeded();
    const wide = await bob.page.evaluate(() => document.documentElement.scrollWidth);
    expect(wide).toBeLessThanOrEqual(390);
    await shot(bob.page, "attachments-phone");
    await bob.page.setViewportSize({ width: 1280, height: 800 });
  });

  test("a file pasted into the composer is sent; a byte flipped in R2 is refused clearly", async () => {
    await pasteFile(alice.page, NOTES_NAME, NOTES);
    await uploadsDone(alice.page);
    await fileMsg(bob.page, NOTES_NAME).waitFor({ timeout: 60_000 });
    // Flip one byte in the middle of the stored object (wrangler's local R2 state).
    const file = blobFileOfSize(ciphertextSize(Buffer.byteLength(NOTES)));
    const stored = readFileSync(file);
    const mid = Math.floor(stored.length / 2);
    stored[mid] = (stored[mid] ?? 0) ^ 0x01;
    writeFileSync(file, stored);
    await fileMsg(bob.page, NOTES_NAME).getByTestId("file-download").click();
    const bar = fileMsg(bob.page, NOTES_NAME).locator(
      '[data-testid="transfer-download"][data-state="failed"]',
    );
    await bar.waitFor({ timeout: 60_000 });
    expect(await bar.getByTestId("transfer-label").textContent()).toContain("was altered");
    await shot(bob.page, "attachments-tampered");
  });

  test("a file sent while replying carries the quote, and the composer leaves reply mode", async () => {
    await send(bob.page, "can you send the minutes?");
    const asked = alice.page.locator('[data-testid="message"]', {
      hasText: "can you send the minutes?",
    });
    await asked.first().waitFor({ timeout: 30_000 });
    await asked.first().getByTestId("message-actions").click();
    await alice.page.getByTestId("message-menu").getByTestId("action-reply").click();
    await alice.page.getByTestId("compose-mode").filter({ hasText: "Replying to bob" }).waitFor();
    await pasteFile(alice.page, MINUTES_NAME, "minutes: nothing decided\n");
    await uploadsDone(alice.page);
    await alice.page.getByTestId("compose-mode").waitFor({ state: "detached" });
    const got = bob.page.locator('[data-testid="message"]', {
      has: fileMsg(bob.page, MINUTES_NAME),
    });
    await got.waitFor({ timeout: 60_000 });
    expect(await got.getByTestId("quote").textContent()).toContain("can you send the minutes?");
    await shot(bob.page, "attachments-reply-with-file");
  });

  test("over-size and over-quota uploads are refused with clear errors", async () => {
    // 10 MB is stored already; 15 MB more is past the 24 MB quota.
    await alice.page.evaluate(() => {
      const bytes = new Uint8Array(15 * 1000 * 1000);
      for (let i = 0; i < bytes.length; i += 65_536)
        crypto.getRandomValues(bytes.subarray(i, i + 65_536));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], "one-too-many.bin"));
      document
        .querySelector("section.conversation")
        ?.dispatchEvent(
          new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }),
        );
    });
    const failed = alice.page.locator('[data-testid="transfer-upload"][data-state="failed"]');
    await failed.waitFor({ timeout: 60_000 });
    expect(await failed.getByTestId("transfer-label").textContent()).toContain("quota");
    await shot(alice.page, "attachments-over-quota");
    await failed.getByTestId("transfer-cancel").click();
    // Over 100 MB: refused before anything is read or sent (dropped, as from a file manager).
    await alice.page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(100 * 1024 * 1024 + 1)], "too-big.iso"));
      document
        .querySelector("section.conversation")
        ?.dispatchEvent(
          new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }),
        );
    });
    await alice.page
      .locator(".toast", { hasText: "larger than 100 MB" })
      .waitFor({ timeout: 30_000 });
  });

  test("no R2 object holds any plaintext or file name", () => {
    const needles = [
      MARKER,
      BIG_NAME,
      NOTES_NAME,
      MINUTES_NAME,
      "sunset.png",
      "these are the notes",
      "nothing decided",
    ].map((s) => Buffer.from(s));
    const files = r2Files();
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const bytes = readFileSync(f);
      for (const n of needles) expect(bytes.includes(n), `${f} holds ${n}`).toBe(false);
    }
  });
});
