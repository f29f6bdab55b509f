/**
 * A member removed from a closed group cannot read a file sent after the removal (PROTOCOL.md
 * §8.6.1, §9.7; SECURITY.md), through the real relay: engines over WebSockets to a real
 * `wrangler dev`, files encrypted, uploaded with a ticket into its simulated R2 and downloaded
 * back, exactly as the PWA does.
 *
 * alice (admin) invites bob and carol to "club"; a file sent then reaches all three and opens for
 * each. alice removes carol; the next file reaches bob, and nothing the relay ever sent carol
 * holds its blob id or its key (the reference travels only inside the group message of an epoch
 * carol is not in). What the blob id alone gives anyone: the ciphertext (download ids are
 * capabilities, not access-checked, §7.10) — which no key carol holds opens.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import WebSocket from "ws";
import {
  AttachmentError,
  blobUrl,
  decryptAttachment,
  encryptAttachment,
  fetchResumable,
  fileRefOf,
} from "../../shared/core/attachments";
import type { ChatMessage } from "../../shared/core/client-api";
import type { FileRef, Invite } from "../../shared/core/content";
import { chunkedCiphertextLength, ed25519KeyPairFromSeed, randomBytes } from "../../shared/crypto";
import { attach, detach, newWireUser, until, type WireUser } from "../support/capture";
import { status } from "../support/clients";
import { startWranglerDev, testPort, type WranglerDev } from "../support/wrangler-dev";

// `wrangler dev` serves dist/pwa: like relay-wrangler.test.ts, run once `npm run build` has.
const built = existsSync(resolve(import.meta.dirname, "../../dist/pwa/index.html"));

const C = "group:club" as const;
let dev: WranglerDev | undefined;
const live: WireUser[] = [];

function relay(): WranglerDev {
  if (dev === undefined) throw new Error("relay not started");
  return dev;
}

async function user(name: string): Promise<WireUser> {
  const u = await newWireUser({
    hub: "files",
    origin: new URL(relay().url).origin,
    name,
    identity: await ed25519KeyPairFromSeed(randomBytes(32)),
  });
  const ws = new WebSocket(`${relay().wsUrl}?hub=files`, {
    headers: { Origin: new URL(relay().url).origin },
  });
  await attach(u, ws);
  live.push(u);
  return u;
}

const messagesOf = (u: WireUser, conv: string): ChatMessage[] =>
  u.events.flatMap((e) =>
    e.type === "message" && e.message.conversationId === conv && e.message.direction === "in"
      ? [e.message]
      : [],
  );

function inviteFor(u: WireUser, from: string): Invite | undefined {
  return messagesOf(u, `dm:${from}`).find((m) => m.invite !== undefined)?.invite;
}

const clubOf = (u: WireUser) => u.client.conversations().find((c) => c.id === C);
/** Our epoch in club, once we are in it (undefined before). */
const epochOf = (u: WireUser) => {
  const c = clubOf(u);
  return c?.epoch !== undefined && c.epoch >= 0 && c.members.some((m) => m.username === u.name)
    ? c.epoch
    : undefined;
};

/** Encrypt `data`, upload it with a ticket (PUT /blob/{id}), send it to `conv`; its reference. */
async function sendFile(from: WireUser, conv: typeof C, data: Uint8Array, name: string) {
  const enc = await encryptAttachment(
    (async function* () {
      yield data;
    })(),
    data.length,
  );
  const ticket = await from.client.requestBlobTicket(enc.length);
  const put = await fetch(blobUrl(relay().url, ticket.blob), {
    method: "PUT",
    headers: { Authorization: `Ticket ${ticket.ticket}` },
    body: new Blob(enc.parts as Uint8Array<ArrayBuffer>[]),
  });
  expect(put.status).toBe(201);
  const ref = fileRefOf(ticket.blob, enc, { size: data.length, type: "text/plain", name });
  await from.client.sendFile(conv, ref);
  return ref;
}

/** Download the blob of `ref` and open it with `key` (base64url); the plaintext. */
async function open(ref: FileRef, key = ref.key): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const source = fetchResumable(blobUrl(relay().url, ref.blob), {
    fetch,
    length: chunkedCiphertextLength(ref.size),
  });
  for await (const p of decryptAttachment({ ...ref, key }, source)) parts.push(p);
  return Buffer.concat(parts);
}

beforeAll(async () => {
  if (!built) return;
  dev = await startWranglerDev({ port: testPort(8875) });
}, 120_000);

afterAll(async () => {
  for (const u of live) await detach(u);
  await dev?.stop();
});

it.skipIf(!built)(
  "a member removed from a group gets no reference to a later file; its blob id alone opens nothing",
  async () => {
    const alice = await user("alice");
    const bob = await user("bob");
    const carol = await user("carol");
    await alice.client.createGroup("club", { title: "Club", policy: "invite" });
    await until(() => epochOf(alice) !== undefined, "club created");
    for (const u of [bob, carol]) {
      await alice.client.startChat(u.name);
      await until(() => status(alice, `dm:${u.name}`) === "secure", `alice–${u.name} secure`);
      await alice.client.inviteToGroup("club", u.name);
      await until(() => inviteFor(u, "alice") !== undefined, `${u.name} invited`);
      await u.client.acceptInvite(inviteFor(u, "alice") as Invite);
      await until(
        () => epochOf(u) !== undefined && epochOf(u) === epochOf(alice),
        `${u.name} in club`,
      );
    }
    await until(
      () => [bob, carol].every((u) => epochOf(u) === epochOf(alice)),
      "everyone on one epoch",
    );

    // Before the removal: carol receives the file, and it opens for her.
    const beforeData = Buffer.from("minutes of the first meeting ".repeat(2000));
    const before = await sendFile(alice, C, beforeData, "minutes.txt");
    await until(
      () => [bob, carol].every((u) => messagesOf(u, C).some((m) => m.file?.blob === before.blob)),
      "first file delivered",
    );
    const carolsRef = messagesOf(carol, C).find((m) => m.file?.blob === before.blob)?.file;
    expect(carolsRef).toEqual(before);
    expect(Buffer.from(await open(before))).toEqual(beforeData);

    const e0 = epochOf(alice) as number;
    await alice.client.removeMember("club", "carol");
    // The relay tells carol at once; the removal is in force once alice committed it.
    await until(
      () =>
        (epochOf(alice) ?? 0) > e0 &&
        epochOf(bob) === epochOf(alice) &&
        carol.events.some(
          (e) => e.type === "system" && e.line.text === "alice (an admin) removed you from club",
        ),
      "carol removed",
    );

    const afterData = Buffer.from("the surprise is on friday ".repeat(3000));
    const after = await sendFile(alice, C, afterData, "plans.txt");
    await until(
      () => messagesOf(bob, C).some((m) => m.file?.blob === after.blob),
      "second file to bob",
    );
    expect(Buffer.from(await open(after))).toEqual(afterData);
    // Let anything still in flight reach carol before looking at what she got.
    const marker = await alice.client.sendText(C, "end of test");
    await until(() => messagesOf(bob, C).some((m) => m.id === marker), "marker to bob");

    // carol: no message with the file, and no frame the relay sent her holds its id or key.
    expect(messagesOf(carol, C).map((m) => m.file?.blob)).toEqual([before.blob]);
    const toCarol = JSON.stringify(carol.received);
    expect(toCarol.includes(after.blob)).toBe(false);
    expect(toCarol.includes(after.key)).toBe(false);

    // The blob id alone (leaked, or guessed — 32 random bytes): the relay serves the ciphertext,
    // but no key carol holds opens it; the file stays unreadable.
    const raw = Buffer.from(await (await fetch(blobUrl(relay().url, after.blob))).arrayBuffer());
    expect(raw.length).toBe(chunkedCiphertextLength(afterData.length));
    expect(raw.includes(Buffer.from("surprise"))).toBe(false);
    await expect(open(after, before.key)).rejects.toBeInstanceOf(AttachmentError);
    await expect(open(after, before.key)).rejects.toMatchObject({ code: "tampered" });
  },
  120_000,
);
