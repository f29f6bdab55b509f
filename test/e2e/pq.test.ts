/**
 * Post-quantum stories seen from the PWA (PROTOCOL.md §8.3.5; SECURITY.md §2.1): hank writes in
 * Chromium to peers that are offline, so each start is asynchronous from a bundle the relay hands
 * out — and Playwright routes hank's WebSocket through a rewriting proxy that plays the relay's
 * part in each story:
 * - a hostile relay strips olga's post-quantum prekey from her bundle: hank's screen says the
 *   relay left the keys out, nothing is sent, and no weaker chat exists;
 * - pete is a classical client (his bundle as one from before post-quantum prekeys: his signed
 *   prekey signed under the v1 label by pete's own key, no PQ prekey): the chat works, and hank's
 *   screen says it is not protected against future quantum computers.
 * olga and pete are engines in Node (test/support/capture.ts) on the same relay, so the test holds
 * their identity keys.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import WebSocket from "ws";
import { spkMessage } from "../../shared/core/prekeys";
import { ed25519KeyPairFromSeed, ed25519Sign, randomBytes } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";
import { type BrowserUser, launchUser, removeProfile } from "../support/browser";
import { attach, detach, inbox, newWireUser, until, type WireUser } from "../support/capture";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";
import { onboard, shot } from "./ui";

const PORT = testPort(8814);
let relay: WranglerDev;
let hank: BrowserUser;
let olga: WireUser;
let pete: WireUser;
/** What the proxy does to a `bundle` frame on its way to hank. */
let rewriteBundle: ((frame: Record<string, unknown>) => Promise<Record<string, unknown>>) | null =
  null;

async function engine(name: string): Promise<WireUser> {
  const u = await newWireUser({
    hub: "main",
    origin: new URL(relay.url).origin,
    name,
    identity: await ed25519KeyPairFromSeed(randomBytes(32)),
  });
  await online(u);
  return u;
}

async function online(u: WireUser): Promise<void> {
  const origin = new URL(relay.url).origin;
  // On its user's route, where the PWA's users are (PROTOCOL.md §4.1).
  const ws = new WebSocket(`${origin.replace(/^http/, "ws")}/ws?hub=main&user=${u.name}`, {
    headers: { Origin: origin },
  });
  await attach(u, ws);
}

/** Types (§8.1 byte 1) of the `send` frames hank's page sent since `from`. */
function sentTypes(from: number): number[] {
  return hank.framesSent
    .slice(from)
    .map((f) => JSON.parse(f) as { t?: string; body?: string })
    .filter((f) => f.t === "send" && typeof f.body === "string")
    .map((f) => Buffer.from(f.body as string, "base64url")[1] as number);
}

/** Opens a chat by username (the "New chat" dialog): no presence needed, the peer is offline. */
async function newChat(name: string): Promise<void> {
  const p = hank.page;
  await p.getByTestId("new-chat").click();
  await p.getByTestId("new-chat-dialog").waitFor();
  await p.fill("#new-chat-name", name);
  await p.getByTestId("new-chat-open").click();
  await p.getByTestId("conv-title").filter({ hasText: name }).waitFor({ timeout: 30_000 });
}

async function write(text: string): Promise<void> {
  const box = hank.page.getByTestId("composer");
  await box.waitFor();
  await hank.page.waitForFunction(
    () => !(document.querySelector('[data-testid="composer"]') as HTMLTextAreaElement).disabled,
    undefined,
    { timeout: 30_000 },
  );
  await box.fill(text);
  await box.press("Enter");
}

beforeAll(async () => {
  relay = await startWranglerDev({ port: PORT });
  hank = await launchUser("hank", `${relay.url}/`);
  await hank.context.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => server.send(m));
    // One frame at a time, in order: a rewrite may wait for a signature.
    let queue = Promise.resolve();
    server.onMessage((m) => {
      queue = queue.then(async () => {
        const rewrite = rewriteBundle;
        if (rewrite === null || typeof m !== "string") return ws.send(m);
        const frame = JSON.parse(m) as Record<string, unknown>;
        ws.send(frame.t === "bundle" ? JSON.stringify(await rewrite(frame)) : m);
      });
    });
  });
  await onboard(hank.page, "hank");
  olga = await engine("olga");
  pete = await engine("pete");
});

afterAll(async () => {
  for (const u of [olga, pete]) if (u) await detach(u);
  await hank?.close();
  if (hank) removeProfile(hank.dir);
  await relay?.stop();
});

describe("post-quantum starts from the PWA", () => {
  test("a relay stripping olga's post-quantum prekey is refused: a clear notice, nothing sent", async () => {
    rewriteBundle = async (f) => ({ ...f, pqPrekey: null, oneTimeKemPrekey: null });
    await detach(olga);
    await newChat("olga");
    const mark = hank.framesSent.length;
    await write("must not leave without post-quantum keys");
    await hank.page
      .getByTestId("toast")
      .filter({ hasText: "left out this contact's post-quantum keys" })
      .first()
      .waitFor({ timeout: 30_000 });
    await shot(hank.page, "desktop-pq-downgrade-refused");
    expect(sentTypes(mark)).toEqual([]);
    expect(await hank.page.getByText(/not protected against future quantum/i).count()).toBe(0);
    rewriteBundle = null;
  });

  test("pete is a classical client: the chat works and says it is not post-quantum", async () => {
    // pete's bundle as a client from before §8.3.5 publishes it, signed by pete's own key.
    rewriteBundle = async (f) => {
      const spk = f.signedPrekey as { id: number; key: string; sig: string };
      const sig = await ed25519Sign(
        pete.identity.privateKey,
        spkMessage(spk.id, fromB64u(spk.key)),
      );
      return {
        ...f,
        signedPrekey: { ...spk, sig: toB64u(sig) },
        pqPrekey: null,
        oneTimeKemPrekey: null,
      };
    };
    await detach(pete);
    await newChat("pete");
    const mark = hank.framesSent.length;
    await write("hello from a post-quantum client");
    await hank.page
      .getByTestId("system-line")
      .filter({ hasText: "not protected against future quantum computers" })
      .waitFor({ timeout: 30_000 });
    await until(() => sentTypes(mark).length > 0, "hank sent the first flight");
    expect(sentTypes(mark)[0]).toBe(0x04); // classical prekey envelope (§8.1)
    rewriteBundle = null;
    await online(pete);
    await until(() => inbox(pete, "dm:hank").length === 1, "pete reads hank");
    expect(inbox(pete, "dm:hank")).toEqual(["hello from a post-quantum client"]);
    await shot(hank.page, "desktop-pq-classical-peer");
  });
});
