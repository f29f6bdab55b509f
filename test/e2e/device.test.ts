/**
 * The device side of the PWA (storage): keys at rest are non-extractable, history is
 * ciphertext in IndexedDB and a tampered row is refused, only one tab owns the keys (Web Locks
 * take-over), and an identity moves to a new profile through a passphrase-encrypted file.
 * Users dave and erin in their own `wrangler dev` on 127.0.0.1:8792.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { onboard, openChat, seesMessage, send, shot } from "./ui";

const PORT = testPort(8792);
/** The people of these stories find each other in the online list: a hub whose users see
 * everyone online (PROTOCOL.md §6.3); that strangers see nothing is tested in relay-presence. */
const EVERYONE_ONLINE = { PRESENCE_EVERYONE_HUBS: "*" };
let relay: WranglerDev;
const users: BrowserUser[] = [];
let dave: BrowserUser;
let erin: BrowserUser;
const CANARY = "at-rest canary 4711: meet at the old mill";

beforeAll(async () => {
  relay = await startWranglerDev({ port: PORT, vars: EVERYONE_ONLINE });
  dave = await launchUser("dave", `${relay.url}/`);
  erin = await launchUser("erin", `${relay.url}/`);
  users.push(dave, erin);
  await onboard(dave.page, "dave");
  await onboard(erin.page, "erin");
});

afterAll(async () => {
  for (const x of users) {
    await x.close();
    removeProfile(x.dir);
  }
  await relay?.stop();
});

/** Read one IndexedDB store of the page's "parley" database (runs in the page). */
function readStore(user: BrowserUser, store: string) {
  return user.page.evaluate(
    (name) =>
      new Promise<Array<{ key: IDBValidKey; value: unknown }>>((resolve, reject) => {
        const open = indexedDB.open("parley");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const tx = open.result.transaction(name, "readonly");
          const out: Array<{ key: IDBValidKey; value: unknown }> = [];
          const cur = tx.objectStore(name).openCursor();
          cur.onsuccess = () => {
            const c = cur.result;
            if (!c) {
              open.result.close();
              resolve(out);
              return;
            }
            out.push({ key: c.key, value: c.value });
            c.continue();
          };
        };
      }),
    store,
  );
}

describe("Parley PWA on the device", () => {
  test("identity and device keys are non-extractable CryptoKeys", async () => {
    const r = await dave.page.evaluate(
      () =>
        new Promise<Record<string, unknown>>((resolve) => {
          const open = indexedDB.open("parley");
          open.onsuccess = () => {
            const tx = open.result.transaction("meta", "readonly");
            const meta = tx.objectStore("meta");
            const p = meta.get("profile");
            const d = meta.get("deviceKey");
            tx.oncomplete = async () => {
              const id = p.result.identityPrivateKey as CryptoKey;
              const dk = d.result.key as CryptoKey;
              let exported = "refused";
              try {
                await crypto.subtle.exportKey("pkcs8", id);
                exported = "EXPORTED";
              } catch {
                // expected: non-extractable
              }
              resolve({
                idType: id.type,
                idAlg: id.algorithm.name,
                idExtractable: id.extractable,
                dkAlg: dk.algorithm.name,
                dkExtractable: dk.extractable,
                exported,
              });
            };
          };
        }),
    );
    expect(r).toEqual({
      idType: "private",
      idAlg: "Ed25519",
      idExtractable: false,
      dkAlg: "AES-GCM",
      dkExtractable: false,
      exported: "refused",
    });
  });

  test("a username bound to another identity is refused; the user picks another", async () => {
    const other = await launchUser("imposter", `${relay.url}/`);
    users.push(other);
    const p = other.page;
    await p.locator("#username").waitFor({ timeout: 30_000 });
    await p.fill("#username", "dave");
    await p.getByRole("button", { name: "Create my identity" }).click();
    await p.getByText("That username is taken in this hub. Pick another one.").waitFor({
      timeout: 30_000,
    });
    await onboard(p, "not-dave");
    // The real dave is untouched: still online under his own key.
    await p.getByTestId("user-dave").waitFor({ timeout: 30_000 });
    await other.close();
  });

  test("message history is stored as ciphertext only", async () => {
    await openChat(dave.page, "erin");
    await send(dave.page, CANARY);
    await openChat(erin.page, "dave");
    await seesMessage(erin.page, CANARY);
    for (const user of [dave, erin]) {
      const rows = await readStore(user, "history");
      expect(rows.length).toBeGreaterThan(0);
      // Decode every ciphertext in the page (bytes stay bytes) and look for the plaintext.
      const r = await user.page.evaluate((needle) => {
        return new Promise<{ ctBytes: number; hits: number }>((resolve) => {
          const open = indexedDB.open("parley");
          open.onsuccess = () => {
            const req = open.result.transaction("history").objectStore("history").getAll();
            req.onsuccess = () => {
              let ctBytes = 0;
              let hits = 0;
              for (const row of req.result as { key: string; box: { ct: Uint8Array } }[]) {
                ctBytes += row.box.ct.length;
                const latin1 = String.fromCharCode(...row.box.ct);
                const asUtf8 = new TextDecoder().decode(row.box.ct);
                if (latin1.includes(needle) || asUtf8.includes(needle)) hits++;
                if (JSON.stringify(row).includes(needle)) hits++;
              }
              resolve({ ctBytes, hits });
            };
          };
        });
      }, "canary");
      expect(r.ctBytes).toBeGreaterThan(CANARY.length);
      expect(r.hits).toBe(0);
      // The engine's state (ratchets, pins, outbox) is sealed the same way: boxes only.
      const engine = await readStore(user, "engine");
      expect(engine.length).toBeGreaterThan(3);
      for (const row of engine) {
        expect(Object.keys(row.value as object).sort(), String(row.key)).toEqual(["ct", "iv"]);
      }
    }
  });

  test("a tampered history row is refused, not shown", async () => {
    await dave.page.evaluate(
      () =>
        new Promise<void>((resolve, reject) => {
          const open = indexedDB.open("parley");
          open.onsuccess = () => {
            const tx = open.result.transaction("history", "readwrite");
            const store = tx.objectStore("history");
            const cur = store.openCursor();
            cur.onsuccess = () => {
              const c = cur.result;
              if (!c) return;
              const row = c.value as { key: string; box: { ct: Uint8Array } };
              // Flip one bit of the first outgoing-message row's ciphertext.
              if (row.key.startsWith("dm:erin|") && !row.key.includes("|sys-")) {
                const ct = new Uint8Array(row.box.ct);
                ct[0] = (ct[0] ?? 0) ^ 1;
                c.update({ ...row, box: { ...row.box, ct } });
                return;
              }
              c.continue();
            };
            tx.oncomplete = () => resolve();
            tx.onerror = () => reject(tx.error);
          };
        }),
    );
    await dave.page.reload();
    await dave.page.getByText(/1 stored message could not be read/).waitFor({ timeout: 30_000 });
    await openChat(dave.page, "erin");
    expect(await dave.page.locator(".log").textContent()).not.toContain(CANARY);
  });

  test("a second tab waits; take-over moves the keys and connection to it", async () => {
    const second = await dave.context.newPage();
    await second.goto(`${relay.url}/`);
    await second.getByText("Parley is open in another tab").waitFor({ timeout: 30_000 });
    await shot(second, "desktop-other-tab");
    await second.getByRole("button", { name: "Use Parley in this tab" }).click();
    await second.getByTestId("my-username").filter({ hasText: "dave" }).waitFor();
    await dave.page.getByText("Parley moved to another tab").waitFor({ timeout: 30_000 });
    // The new owner works: it sends, erin receives.
    await openChat(second, "erin");
    await send(second, "sent from the second tab");
    await seesMessage(erin.page, "sent from the second tab");
    await second.close();
    // With the owner gone, the first tab may take back over and continue.
    await dave.page.getByRole("button", { name: "Use Parley in this tab" }).click();
    await dave.page.getByTestId("my-username").filter({ hasText: "dave" }).waitFor();
    await openChat(dave.page, "erin");
    await seesMessage(dave.page, "sent from the second tab");
  });

  test("identity export → restore on a fresh profile keeps the same identity", async () => {
    const p = dave.page;
    const fingerprint = await p.getByTestId("my-fingerprint").textContent();
    await p.getByTestId("open-settings").click();
    await p.fill("#export-pass", "correct horse battery staple");
    await p.fill("#export-pass2", "correct horse battery staple");
    const [download] = await Promise.all([
      p.waitForEvent("download"),
      p.getByTestId("export-identity").click(),
    ]);
    const file = await download.path();
    const backup = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    expect(backup.format).toBe("parley-identity");
    expect(backup.username).toBe("dave");
    expect(JSON.stringify(backup)).not.toMatch(/correct horse/);
    await shot(p, "desktop-settings");
    await p.keyboard.press("Escape");

    const fresh = await launchUser("dave2", `${relay.url}/`);
    users.push(fresh);
    const q = fresh.page;
    await q.getByText("Restore from a backup file").click();
    await q.getByTestId("restore-file").setInputFiles(file);
    await q.fill("#restore-pass", "wrong passphrase!!");
    await q.getByTestId("restore-submit").click();
    await q.getByText("Wrong passphrase, or the file was altered.").waitFor({ timeout: 30_000 });
    await q.fill("#restore-pass", "correct horse battery staple");
    await q.getByTestId("restore-submit").click();
    await q.getByTestId("my-username").filter({ hasText: "dave" }).waitFor({ timeout: 30_000 });
    expect(await q.getByTestId("my-fingerprint").textContent()).toBe(fingerprint);
  });

  test("passphrase lock: seals keys and history, asks at every start, and turns off again", async () => {
    const p = erin.page;
    await p.getByTestId("open-settings").click();
    await p.fill("#lock-pass", "erin's long passphrase");
    await p.fill("#lock-pass2", "erin's long passphrase");
    await p.getByTestId("lock-on").click();
    await p.getByText("Lock is on.").waitFor({ timeout: 30_000 });
    // On disk: no usable key left — the device key is sealed, the identity CryptoKey is gone.
    const meta = await readStore(erin, "meta");
    const keys = meta.map((m) => String(m.key)).sort();
    expect(keys).toEqual(["lock", "profile"]);
    const profile = meta.find((m) => m.key === "profile")?.value as Record<string, unknown>;
    expect("identityPrivateKey" in profile).toBe(false);
    // Still working while unlocked: the engine restarted on the new key.
    await p.keyboard.press("Escape");
    await openChat(p, "dave");
    await send(p, "written after locking");
    await p.getByTestId("open-settings").click();
    await p.getByTestId("lock-now").click();
    await p.getByText("Parley is locked").waitFor({ timeout: 30_000 });
    await shot(p, "desktop-locked");
    await p.fill("#unlock-pass", "not the passphrase");
    await p.getByTestId("unlock").click();
    await p.getByText("Wrong passphrase.").waitFor({ timeout: 30_000 });
    await p.fill("#unlock-pass", "erin's long passphrase");
    await p.getByTestId("unlock").click();
    await p.getByTestId("my-username").filter({ hasText: "erin" }).waitFor({ timeout: 30_000 });
    await openChat(p, "dave");
    await seesMessage(p, CANARY);
    await seesMessage(p, "written after locking");
    // Turn it off: opens without a passphrase again, history intact.
    await p.getByTestId("open-settings").click();
    await p.getByTestId("lock-off").click();
    await p.getByText("Lock is off.").waitFor({ timeout: 30_000 });
    await p.reload();
    await p.getByTestId("my-username").filter({ hasText: "erin" }).waitFor({ timeout: 30_000 });
    await openChat(p, "dave");
    await seesMessage(p, "written after locking");
  });

  test("a new service worker version shows the reload toast; Reload switches to it", async () => {
    const p = erin.page;
    await p.waitForFunction(() => navigator.serviceWorker.controller !== null, undefined, {
      timeout: 30_000,
    });
    // Deploy a new version: wrangler dev serves dist/pwa live, so change sw.js on disk (restored
    // below) and ask the browser to check for updates, as it does on every navigation.
    const swPath = join(process.cwd(), "dist", "pwa", "sw.js");
    const original = readFileSync(swPath, "utf8");
    writeFileSync(swPath, `${original}\n// next version ${Date.now()}\n`);
    try {
      await p.evaluate(async () => {
        const reg = await navigator.serviceWorker.getRegistration();
        await reg?.update();
      });
      const toast = p.getByText("A new version of Parley is available.");
      await toast.waitFor({ timeout: 30_000 });
      await shot(p, "desktop-update-toast");
      await Promise.all([
        p.waitForEvent("framenavigated", { timeout: 30_000 }),
        p.getByRole("button", { name: "Reload" }).click(),
      ]);
      await p.getByTestId("my-username").filter({ hasText: "erin" }).waitFor({ timeout: 30_000 });
      expect(await toast.count()).toBe(0);
    } finally {
      writeFileSync(swPath, original);
    }
  });

  test("no Content-Security-Policy violation or page error in any browser", () => {
    for (const user of users) {
      const bad = user.errors.filter((e) => /Content Security Policy|Refused to|Uncaught/i.test(e));
      expect(bad, user.name).toEqual([]);
    }
  });
});
