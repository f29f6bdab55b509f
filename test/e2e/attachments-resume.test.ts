/**
 * Interrupted attachment transfers in Chromium (PROTOCOL.md §7.10, §12.3), alice and bob against
 * a real `wrangler dev` behind a loopback proxy (test/support/gate-proxy.ts) that can hold a blob
 * body at a known byte and cut every connection:
 * - an upload held mid-PUT, then the page reloaded: after the reload it is sent again from the
 *   ciphertext kept in IndexedDB, without picking the file again, and arrives byte-identical;
 * - a download held mid-GET, then the page reloaded: it continues with a `Range` from the last
 *   piece kept, and the saved file is byte-identical;
 * - the network lost mid-upload (every connection cut): the upload goes again by itself once the
 *   socket is back;
 * - a file in a conversation with a disappearing timer disappears on both sides with its
 *   decrypted copy (the blob: URL no longer opens) and its stored row; a file deleted for everyone
 *   leaves a tombstone without its key.
 * Desktop and 390 px; screenshots go to test-results/screenshots/attachments-resume-*.png.
 */
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { BrowserUser } from "../support/browser";
import { type GateProxy, startGateProxy } from "../support/gate-proxy";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { chatPair, closeUsers, openChat, seesOnline, shot } from "./ui";

const PORT = testPort(8871);
const PROXY_PORT = testPort(8873);
let relay: WranglerDev;
let gate: GateProxy;
let alice: BrowserUser;
let bob: BrowserUser;

const MB = 1000 * 1000;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

const fileMsg = (page: Page, name: string) =>
  page.locator(`[data-testid="file-message"][data-name="${name}"]`);

async function composerReady(page: Page): Promise<void> {
  await page.waitForFunction(
    () => !(document.querySelector('[data-testid="composer"]') as HTMLTextAreaElement).disabled,
    undefined,
    { timeout: 60_000 },
  );
}

/** Keys in the page's `transfers` store: description rows and piece rows (`<id>#<n>`). */
function transferKeys(p: Page): Promise<string[]> {
  return p.evaluate(
    () =>
      new Promise<string[]>((resolve, reject) => {
        const open = indexedDB.open("parley");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const req = open.result.transaction("transfers").objectStore("transfers").getAllKeys();
          req.onsuccess = () => {
            open.result.close();
            resolve(req.result.map(String));
          };
        };
      }),
  );
}

/**
 * What the page's `transfers` store holds at rest (descriptions and pieces together): its size
 * in bytes, and which of `needles` occur anywhere in it.
 */
function scanTransfers(p: Page, needles: string[]): Promise<{ bytes: number; found: boolean[] }> {
  return p.evaluate(
    (hex) =>
      new Promise<{ bytes: number; found: boolean[] }>((resolve, reject) => {
        const open = indexedDB.open("parley");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const req = open.result.transaction("transfers").objectStore("transfers").getAll();
          req.onsuccess = async () => {
            open.result.close();
            const parts: Uint8Array[] = [];
            for (const v of req.result as Array<{ data?: Blob; box?: { ct: Uint8Array } }>) {
              if (v.data) parts.push(new Uint8Array(await v.data.arrayBuffer()));
              if (v.box) parts.push(v.box.ct);
            }
            const all = new Uint8Array(await new Blob(parts as BlobPart[]).arrayBuffer());
            const has = (h: string) => {
              const n = Uint8Array.from(h.match(/../g) ?? [], (x) => Number.parseInt(x, 16));
              outer: for (let i = 0; i + n.length <= all.length; i++) {
                for (let j = 0; j < n.length; j++) if (all[i + j] !== n[j]) continue outer;
                return true;
              }
              return false;
            };
            resolve({ bytes: all.length, found: hex.map(has) });
          };
        };
      }),
    needles,
  );
}

async function attach(p: Page, name: string, data: Buffer): Promise<void> {
  await composerReady(p);
  await p
    .getByTestId("attach-input")
    .setInputFiles({ name, mimeType: "application/octet-stream", buffer: data });
}

/** Download file `name` on `p` (click, then the browser's save): the saved bytes. */
async function download(p: Page, name: string): Promise<Buffer> {
  const saved = p.waitForEvent("download", { timeout: 120_000 });
  await fileMsg(p, name).getByTestId("file-download").click();
  return readFileSync(await (await saved).path());
}

async function reopen(p: Page, who: string): Promise<void> {
  await p.getByTestId("my-username").waitFor({ timeout: 60_000 });
  await seesOnline(p, who);
  await openChat(p, who);
}

beforeAll(async () => {
  relay = await startWranglerDev({
    port: PORT,
    vars: {
      PRESENCE_EVERYONE_HUBS: "*",
      // The browser's origin is the proxy's: let it open the socket (§4.1).
      ALLOWED_ORIGINS: `http://127.0.0.1:${PROXY_PORT}`,
    },
  });
  gate = await startGateProxy({ port: PROXY_PORT, target: relay.url });
  [alice, bob] = await chatPair(`${gate.url}/`, "files coming, the network is bad today");
}, 180_000);

afterAll(async () => {
  await closeUsers([alice, bob]);
  await gate?.stop();
  await relay?.stop();
});

describe("interrupted transfers", () => {
  test("an upload interrupted by a reload is sent from its kept ciphertext after it", async () => {
    const name = "reloaded-upload.bin";
    const data = randomBytes(6 * MB);
    gate.holdUpload = 3 * MB;
    await attach(alice.page, name, data);
    await gate.held("put");
    const bar = alice.page.getByTestId("transfer-upload").first();
    await bar.waitFor();
    await shot(alice.page, "attachments-resume-upload-progress");
    // Kept at rest before anything went out: a sealed description and the ciphertext only.
    const keys = await transferKeys(alice.page);
    expect(keys.some((k) => k.startsWith("up-") && !k.includes("#"))).toBe(true);
    const atRest = await scanTransfers(alice.page, [
      data.subarray(0, 32).toString("hex"),
      data.subarray(4 * MB, 4 * MB + 32).toString("hex"),
      Buffer.from(name).toString("hex"),
    ]);
    expect(atRest.bytes).toBeGreaterThan(data.length);
    expect(atRest.found).toEqual([false, false, false]);

    await alice.page.reload();
    gate.release();
    await reopen(alice.page, "bob");
    await fileMsg(bob.page, name).waitFor({ timeout: 120_000 });
    // Sent once, and nothing kept once it was.
    await expect.poll(() => transferKeys(alice.page), { timeout: 30_000 }).toEqual([]);
    expect(await fileMsg(bob.page, name).count()).toBe(1);
    expect(sha(await download(bob.page, name))).toBe(sha(data));
  });

  test("a download interrupted by a reload continues from the last piece kept", async () => {
    const name = "reloaded-download.bin";
    const data = randomBytes(8 * MB);
    await attach(alice.page, name, data);
    await fileMsg(bob.page, name).waitFor({ timeout: 120_000 });
    gate.ranges.length = 0;
    gate.holdDownload = 6 * MB;
    await fileMsg(bob.page, name).getByTestId("file-download").click();
    await gate.held("get");
    await fileMsg(bob.page, name).getByTestId("transfer-download").waitFor();
    await shot(bob.page, "attachments-resume-download-progress");
    // Pieces of about 1 MiB are kept as they arrive: at least four of the 6 MB before the hold.
    // Received ciphertext is kept in pieces as it arrives (about 1 MiB or what the browser hands
    // over at once): wait until most of what came before the hold is at rest.
    await expect
      .poll(() => scanTransfers(bob.page, []).then((x) => x.bytes), { timeout: 30_000 })
      .toBeGreaterThanOrEqual(2 * 1024 * 1024);
    const stored = await scanTransfers(bob.page, [data.subarray(0, 32).toString("hex")]);
    // ...and it is ciphertext: the file's first bytes are nowhere in it.
    expect(stored.found).toEqual([false]);
    const saved = bob.page.waitForEvent("download", { timeout: 120_000 });
    await bob.page.reload();
    gate.release();
    await reopen(bob.page, "alice");
    const got = readFileSync(await (await saved).path());
    expect(sha(got)).toBe(sha(data));
    // The first request after the reload asked only for the rest.
    expect(gate.ranges[0]).toBe("");
    const resumed = /^bytes=(\d+)-$/.exec(gate.ranges[1] ?? "");
    expect(Number(resumed?.[1])).toBeGreaterThanOrEqual(2 * 1024 * 1024);
    expect(gate.ranges.length).toBe(2);
    await expect.poll(() => transferKeys(bob.page), { timeout: 30_000 }).toEqual([]);
  });

  test("the network lost mid-upload: the upload goes again once the socket is back", async () => {
    const name = "lost-network.bin";
    const data = randomBytes(4 * MB);
    gate.holdUpload = 2 * MB;
    await attach(alice.page, name, data);
    await gate.held("put");
    gate.cut();
    gate.release();
    await fileMsg(bob.page, name).waitFor({ timeout: 120_000 });
    expect(sha(await download(bob.page, name))).toBe(sha(data));
    await expect.poll(() => transferKeys(alice.page), { timeout: 30_000 }).toEqual([]);
  });

  test("a refused download offers Retry, and Retry fetches it", async () => {
    const name = "retry-me.bin";
    const data = randomBytes(1 * MB);
    await attach(alice.page, name, data);
    await fileMsg(bob.page, name).waitFor({ timeout: 120_000 });
    gate.refuseDownloads = true;
    await fileMsg(bob.page, name).getByTestId("file-download").click();
    const failed = fileMsg(bob.page, name).locator(
      '[data-testid="transfer-download"][data-state="failed"]',
    );
    await failed.waitFor({ timeout: 60_000 });
    expect(await failed.getByTestId("transfer-label").textContent()).toContain("503");
    await shot(bob.page, "attachments-resume-retry");
    gate.refuseDownloads = false;
    const saved = bob.page.waitForEvent("download", { timeout: 60_000 });
    await failed.getByTestId("transfer-retry").click();
    expect(sha(readFileSync(await (await saved).path()))).toBe(sha(data));
  });

  test("at 390 px: a file card and a progress bar fit the phone", async () => {
    const name = "phone-progress.bin";
    for (const p of [alice.page, bob.page]) await p.setViewportSize({ width: 390, height: 844 });
    gate.holdUpload = 1 * MB;
    await attach(alice.page, name, randomBytes(3 * MB));
    await gate.held("put");
    await alice.page.getByTestId("transfer-upload").first().waitFor();
    await shot(alice.page, "attachments-resume-phone-progress");
    expect(
      await alice.page.evaluate(() => document.documentElement.scrollWidth),
    ).toBeLessThanOrEqual(390);
    gate.release();
    await fileMsg(bob.page, name).waitFor({ timeout: 120_000 });
    await fileMsg(bob.page, name).scrollIntoViewIfNeeded();
    await shot(bob.page, "attachments-resume-phone-file-card");
    expect(await bob.page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(
      390,
    );
    // The phone's camera or photo picker: an image-only input that asks for the rear camera.
    const camera = alice.page.getByTestId("camera-input");
    expect(await camera.getAttribute("accept")).toBe("image/*");
    expect(await camera.getAttribute("capture")).toBe("environment");
    const png = Buffer.from(
      "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
      "base64",
    );
    await camera.setInputFiles({ name: "from-camera.png", mimeType: "image/png", buffer: png });
    await fileMsg(bob.page, "from-camera.png").waitFor({ timeout: 60_000 });
    await fileMsg(bob.page, "from-camera.png").scrollIntoViewIfNeeded();
    await shot(bob.page, "attachments-resume-phone-photo");
    for (const p of [alice.page, bob.page]) await p.setViewportSize({ width: 1280, height: 800 });
  });
});

describe("a file leaves with its message", () => {
  /** Open the image `name` on `p` in the viewer; the blob: URL of its decrypted bytes. */
  async function viewed(p: Page, name: string): Promise<string> {
    await fileMsg(p, name).getByTestId("file-thumb").click();
    const img = p.getByTestId("viewer-img");
    await img.waitFor({ timeout: 60_000 });
    const src = (await img.getAttribute("src")) ?? "";
    await p.keyboard.press("Escape");
    return src;
  }

  /** Does the blob: URL still open? (As an image: the page's CSP lets img-src load blob:.) */
  const opens = (p: Page, url: string) =>
    p.evaluate(
      (u) =>
        new Promise<boolean>((resolve) => {
          const img = new Image();
          img.onload = () => resolve(true);
          img.onerror = () => resolve(false);
          img.src = u;
        }),
      url,
    );

  async function dropImage(p: Page, name: string): Promise<void> {
    await composerReady(p);
    await p.evaluate(async (n) => {
      const c = new OffscreenCanvas(320, 200);
      const g = c.getContext("2d");
      if (g === null) throw new Error("no 2d context");
      g.fillStyle = "#0e7490";
      g.fillRect(0, 0, 320, 200);
      const blob = await c.convertToBlob({ type: "image/png" });
      const dt = new DataTransfer();
      dt.items.add(new File([blob], n, { type: "image/png" }));
      document
        .querySelector("section.conversation")
        ?.dispatchEvent(
          new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }),
        );
    }, name);
  }

  test("a disappearing timer removes the file, its decrypted copy and its row on both sides", async () => {
    const a = alice.page;
    const b = bob.page;
    await b.getByTestId("open-conv-options").click();
    await b.getByTestId("timer-select").selectOption("30000");
    await b.keyboard.press("Escape");
    await a
      .getByTestId("system-line")
      .filter({ hasText: "bob set messages to disappear after 30 seconds" })
      .waitFor({ timeout: 30_000 });
    await dropImage(a, "vanishing.png");
    await fileMsg(b, "vanishing.png").getByTestId("file-thumb").waitFor({ timeout: 60_000 });
    const url = await viewed(b, "vanishing.png");
    expect(await opens(b, url)).toBe(true);
    await shot(b, "attachments-resume-disappearing-file");
    for (const p of [a, b]) {
      await fileMsg(p, "vanishing.png").waitFor({ state: "detached", timeout: 60_000 });
    }
    expect(await opens(b, url)).toBe(false);
    for (const p of [a, b]) expect(await transferKeys(p)).toEqual([]);
    await a.getByTestId("open-conv-options").click();
    await a.getByTestId("timer-select").selectOption("0");
    await a.keyboard.press("Escape");
    await b
      .getByTestId("system-line")
      .filter({ hasText: "alice turned off disappearing messages" })
      .waitFor({ timeout: 30_000 });
  }, 120_000);

  test("a file deleted for everyone leaves a tombstone without its key", async () => {
    const a = alice.page;
    const b = bob.page;
    await dropImage(a, "regret.png");
    await fileMsg(b, "regret.png").getByTestId("file-thumb").waitFor({ timeout: 60_000 });
    const url = await viewed(b, "regret.png");
    const msg = a.locator('[data-testid="message"]', { has: fileMsg(a, "regret.png") });
    await msg.getByTestId("message-actions").click();
    await a.getByTestId("message-menu").getByTestId("action-delete-everyone").click();
    for (const p of [a, b]) {
      await fileMsg(p, "regret.png").waitFor({ state: "detached", timeout: 30_000 });
    }
    await b
      .locator('[data-testid="message-text"]', { hasText: "This message was deleted" })
      .last()
      .waitFor();
    await shot(b, "attachments-resume-deleted-file");
    expect(await opens(b, url)).toBe(false);
  });
});
