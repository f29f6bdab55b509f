/**
 * Attachment transfers in the PWA (PROTOCOL.md §8.6.1, §7.10): the send pipeline (read the File
 * as a stream → encrypt under a fresh key → keep the ciphertext → ask the relay for a ticket →
 * PUT it with progress → send the reference in a message) and downloads (GET with byte ranges →
 * decrypt → a blob: URL to save or view). Each transfer is a row of a Solid store the UI renders
 * as a progress bar with cancel and retry.
 *
 * Interruptions (§12.3): a failed upload keeps its ciphertext and goes again when the connection
 * comes back; a broken download asks for the missing range. Both are also saved in IndexedDB
 * (storage/transfers.ts: the sealed description and the *ciphertext*, never the plaintext), so
 * after a reload an upload is sent again from its kept ciphertext — a fresh ticket and the PUT
 * from its first byte, since the relay keeps nothing of a PUT that did not finish — and a download
 * continues from the last piece stored, with `Range`. What is lost on reload: an upload still
 * being encrypted (its File is not kept; the user picks it again) and a finished download's
 * decrypted bytes (kept only in memory; downloaded again on demand).
 * Components call these actions; only this module does HTTP.
 */
import { createStore, produce } from "solid-js/store";
import {
  AttachmentError,
  blobResponseError,
  blobUrl,
  decryptAttachment,
  encryptAttachment,
  fetchResumable,
  fileRefOf,
} from "../../../shared/core/attachments";
import type {
  ConversationId,
  ParleyClientApi,
  SendTextOptions,
} from "../../../shared/core/client-api";
import { type FileRef, MAX_ATTACHMENT_BYTES } from "../../../shared/core/content";
import { isCoreError } from "../../../shared/core/errors";
import type { MessageRef } from "../../../shared/core/message-content";
import { chunkedCiphertextLength, randomBytes } from "../../../shared/crypto";
import { concatBytes, toB64u } from "../../../shared/encoding";
import type { SavedDownload, SavedUpload, TransferStore } from "../storage/transfers";

export type TransferState = "working" | "failed" | "done" | "cancelled";

export interface Transfer {
  id: string;
  kind: "upload" | "download";
  conversationId: ConversationId;
  name: string;
  /** Bytes done and total (plaintext for encryption, ciphertext on the wire). */
  done: number;
  total: number;
  phase: "encrypting" | "waiting" | "uploading" | "downloading" | "decrypting" | "finished";
  state: TransferState;
  error?: string;
  /** Downloads: the message this file belongs to (`${from}/${messageId}`). */
  key?: string;
}

export interface TransfersDeps {
  engine(): ParleyClientApi | null;
  online(): boolean;
  origin: string;
  onError(text: string): void;
  /** Where transfers are kept across a reload (null before the device key is known). */
  store(): TransferStore | null;
  /** The options a file sent now in `conv` carries: the conversation's timer (§8.6.1). */
  sendOptions(conv: ConversationId): SendTextOptions;
}

/** Largest thumbnail edge in CSS pixels, and the byte budget of its JPEG (§8.6.1). */
const THUMB_EDGE = 160;
const THUMB_MAX_BYTES = 12 * 1024;
/** A download's received ciphertext is stored in pieces of about this size. */
const PIECE_BYTES = 1024 * 1024;

interface UploadJob {
  /** The picked file; null for an upload restored after a reload (its ciphertext is kept). */
  file: File | null;
  caption: string;
  reply: MessageRef | undefined;
  /** Once encrypted: the description (everything but the blob id) and the ciphertext. */
  saved: SavedUpload | null;
  data: Blob | null;
  xhr: XMLHttpRequest | null;
  cancelled: boolean;
}

interface DownloadJob {
  saved: SavedDownload;
  abort: AbortController;
}

/** The key transfers and decrypted files go by: the message's author and id. */
export const fileKey = (m: { from: string; id: string }) => `${m.from}/${m.id}`;

const newId = (kind: "up" | "down") => `${kind}-${toB64u(randomBytes(12))}`;

export function createTransfers(deps: TransfersDeps) {
  const [transfers, setTransfers] = createStore<{ list: Transfer[]; urls: Record<string, string> }>(
    { list: [], urls: {} },
  );
  const uploads = new Map<string, UploadJob>();
  const downloads = new Map<string, DownloadJob>();
  let restored = false;

  const update = (id: string, patch: Partial<Transfer>) =>
    setTransfers(
      produce((s) => {
        const t = s.list.find((x) => x.id === id);
        if (t) Object.assign(t, patch);
      }),
    );
  const remove = (id: string) =>
    setTransfers(
      produce((s) => {
        s.list = s.list.filter((x) => x.id !== id);
      }),
    );
  const add = (t: Transfer) =>
    setTransfers(
      produce((s) => {
        s.list = s.list.filter((x) => x.id !== t.id && (t.key === undefined || x.key !== t.key));
        s.list.push(t);
      }),
    );
  /** Storage failures never stop a transfer: it goes on in memory, only without a reload's resume. */
  const kept = (p: Promise<unknown> | undefined) =>
    void p?.catch((e: unknown) => console.warn("could not keep transfer state", e));

  function failText(e: unknown): string {
    if (e instanceof AttachmentError) return e.message;
    if (isCoreError(e, "relay_error")) {
      if (e.message === "blob_quota")
        return "Attachment storage is full: your quota on this relay is used up until older attachments expire.";
      if (e.message === "blob_too_large") return "The file is larger than the relay accepts.";
      if (e.message === "blob_unavailable") return "This relay does not store attachments.";
      return `The relay refused the upload (${e.message}).`;
    }
    if (isCoreError(e, "not_connected")) return "Offline: the upload continues when back online.";
    return "The transfer failed.";
  }

  /** Send each file as its own message, the caption (and a reply) with the first. */
  function sendFiles(
    files: File[],
    conversationId: ConversationId,
    caption = "",
    reply?: MessageRef,
  ): void {
    files.forEach((file, i) => {
      if (file.size > MAX_ATTACHMENT_BYTES) {
        deps.onError(`“${file.name}” is larger than 100 MB, the most Parley can send.`);
        return;
      }
      const id = newId("up");
      add({
        id,
        kind: "upload",
        conversationId,
        name: file.name,
        done: 0,
        total: file.size,
        phase: "encrypting",
        state: "working",
      });
      uploads.set(id, {
        file,
        caption: i === 0 ? caption : "",
        reply: i === 0 ? reply : undefined,
        saved: null,
        data: null,
        xhr: null,
        cancelled: false,
      });
      void runUpload(id);
    });
  }

  async function runUpload(id: string): Promise<void> {
    const job = uploads.get(id);
    const t = transfers.list.find((x) => x.id === id);
    if (job === undefined || t === undefined) return;
    update(id, { state: "working", error: undefined });
    try {
      if (job.saved === null || job.data === null) {
        const file = job.file;
        if (file === null) throw new AttachmentError("network", "The file is no longer here.");
        update(id, { phase: "encrypting", done: 0, total: file.size });
        const thumb = await thumbnailOf(file);
        const enc = await encryptAttachment(readFile(file), file.size, (done) =>
          update(id, { done }),
        );
        const { blob: _none, ...ref } = fileRefOf("", enc, {
          size: file.size,
          type: file.type,
          name: file.name,
          ...(thumb ?? {}),
        });
        job.data = new Blob(enc.parts as Uint8Array<ArrayBuffer>[]);
        job.saved = {
          kind: "upload",
          id,
          conversationId: t.conversationId,
          caption: job.caption,
          file: ref,
          length: enc.length,
          ...(job.reply !== undefined ? { reply: job.reply } : {}),
          at: Date.now(),
        };
        // Kept before anything goes out, so a reload from here on sends it without the File.
        if (!job.cancelled) kept(deps.store()?.putUpload(job.saved, job.data));
      }
      if (job.cancelled) return;
      const engine = deps.engine();
      if (engine === null) throw new AttachmentError("network", "Not signed in.");
      update(id, { phase: "waiting", done: 0, total: job.saved.length });
      const ticket = await ticketFor(engine, job.saved.length);
      if (job.cancelled) return;
      update(id, { phase: "uploading" });
      await put(job, job.data, ticket.blob, ticket.ticket, (done) => update(id, { done }));
      if (job.cancelled) return;
      const ref: FileRef = { blob: ticket.blob, ...job.saved.file };
      await engine.sendFile(t.conversationId, ref, job.caption, {
        ...deps.sendOptions(t.conversationId),
        ...(job.saved.reply !== undefined ? { reply: job.saved.reply } : {}),
      });
      // The message is in the engine's outbox (persisted): the kept copy can go.
      uploads.delete(id);
      kept(deps.store()?.remove(id));
      update(id, { phase: "finished", state: "done" });
      remove(id);
    } catch (e) {
      if (job.cancelled) return;
      update(id, { state: "failed", error: failText(e) });
    }
  }

  /**
   * A ticket; while the socket is up but the engine not yet authenticated on it (a reconnect
   * under way), wait a little and ask again rather than fail.
   */
  async function ticketFor(engine: ParleyClientApi, size: number) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await engine.requestBlobTicket(size);
      } catch (e) {
        if (!isCoreError(e, "not_connected") || !deps.online() || attempt >= 10) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  function put(
    job: UploadJob,
    data: Blob,
    blob: string,
    ticket: string,
    onProgress: (n: number) => void,
  ): Promise<void> {
    // XHR, not fetch: upload progress events (fetch has none), and abort() for cancel.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      job.xhr = xhr;
      xhr.open("PUT", blobUrl(deps.origin, blob));
      xhr.setRequestHeader("Authorization", `Ticket ${ticket}`);
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        job.xhr = null;
        if (xhr.status === 201) resolve();
        else
          void blobResponseError(new Response(xhr.response, { status: xhr.status })).then(reject);
      };
      xhr.onerror = () => {
        job.xhr = null;
        reject(new AttachmentError("network", "The upload was interrupted; it will be retried."));
      };
      xhr.onabort = () => {
        job.xhr = null;
        reject(new AttachmentError("cancelled", "Upload cancelled."));
      };
      xhr.send(data);
    });
  }

  /**
   * Download (once) and decrypt the file of message `key`; resolves with a blob: URL, or null
   * when it did not finish (failed, cancelled, or already under way — `save` then applies to
   * the running one).
   */
  async function fetchFile(
    key: string,
    conversationId: ConversationId,
    ref: FileRef,
    save = false,
  ): Promise<string | null> {
    const have = transfers.urls[key];
    if (have !== undefined) return have;
    for (const [id, job] of downloads) {
      if (job.saved.key !== key) continue;
      const running = transfers.list.find((x) => x.id === id && x.state === "working");
      if (running !== undefined) {
        if (save && !job.saved.save) {
          job.saved = { ...job.saved, save: true };
          kept(deps.store()?.putDownload(job.saved));
        }
        return null;
      }
      // A failed attempt: go again from what it kept.
      job.saved = { ...job.saved, save: job.saved.save || save };
      return runDownload(id);
    }
    const id = newId("down");
    const saved: SavedDownload = {
      kind: "download",
      id,
      conversationId,
      key,
      file: ref,
      received: 0,
      pieces: 0,
      save,
      at: Date.now(),
    };
    downloads.set(id, { saved, abort: new AbortController() });
    kept(deps.store()?.putDownload(saved));
    return runDownload(id);
  }

  async function runDownload(id: string): Promise<string | null> {
    const job = downloads.get(id);
    if (job === undefined) return null;
    if (job.abort.signal.aborted) job.abort = new AbortController();
    const { key, file: ref, conversationId } = job.saved;
    const total = chunkedCiphertextLength(ref.size);
    add({
      id,
      kind: "download",
      conversationId,
      name: ref.name,
      done: job.saved.received,
      total,
      phase: "downloading",
      state: "working",
      key,
    });
    const store = deps.store();
    try {
      // What an earlier attempt (this page's or one before a reload) kept; it must add up.
      let held: Blob[] = [];
      if (job.saved.received > 0) {
        held = store === null ? [] : await store.pieces(id);
        if (held.reduce((n, b) => n + b.size, 0) !== job.saved.received) {
          held = [];
          job.saved = { ...job.saved, received: 0, pieces: 0 };
          await store?.remove(id);
          await store?.putDownload(job.saved);
        }
      }
      const pending: Uint8Array<ArrayBuffer>[] = [];
      let pendingBytes = 0;
      const flush = async () => {
        if (pendingBytes === 0) return;
        const piece = new Blob(pending.splice(0));
        job.saved = {
          ...job.saved,
          received: job.saved.received + pendingBytes,
          pieces: job.saved.pieces + 1,
        };
        pendingBytes = 0;
        if (store !== null && !job.abort.signal.aborted) await store.appendPiece(job.saved, piece);
      };
      async function* source(): AsyncGenerator<Uint8Array> {
        for (const b of held) yield* readFile(b);
        const start = job?.saved.received ?? 0;
        for await (const p of fetchResumable(blobUrl(deps.origin, ref.blob), {
          fetch: (u, i) => fetch(u, i),
          length: total,
          start,
          ...(job ? { signal: job.abort.signal } : {}),
          onProgress: (done) => update(id, { done }),
        })) {
          pending.push(p as Uint8Array<ArrayBuffer>);
          pendingBytes += p.length;
          if (pendingBytes >= PIECE_BYTES) await flush().catch(() => undefined);
          yield p;
        }
      }
      const parts: Uint8Array<ArrayBuffer>[] = [];
      for await (const p of decryptAttachment(ref, source()))
        parts.push(p as Uint8Array<ArrayBuffer>);
      const url = URL.createObjectURL(
        new Blob(parts, { type: ref.type || "application/octet-stream" }),
      );
      setTransfers("urls", key, url);
      downloads.delete(id);
      kept(store?.remove(id));
      remove(id);
      if (job.saved.save) saveUrl(url, ref.name);
      return url;
    } catch (e) {
      if (job.abort.signal.aborted) return null;
      // Bytes that failed their check are worth nothing: a retry starts from the first byte.
      if (e instanceof AttachmentError && (e.code === "tampered" || e.code === "not_found")) {
        job.saved = { ...job.saved, received: 0, pieces: 0 };
        const reset = job.saved;
        kept(store?.remove(id).then(() => store.putDownload(reset)));
      }
      update(id, { state: "failed", error: failText(e) });
      return null;
    }
  }

  function saveUrl(url: string, name: string): void {
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    a.rel = "noopener";
    document.body.append(a);
    a.click();
    a.remove();
  }

  /** Save the file of message `key` to the device (download, decrypt, then the browser's save). */
  async function save(key: string, conversationId: ConversationId, ref: FileRef) {
    const have = transfers.urls[key];
    if (have !== undefined) {
      saveUrl(have, ref.name);
      return;
    }
    await fetchFile(key, conversationId, ref, true);
  }

  function cancel(id: string): void {
    const up = uploads.get(id);
    if (up !== undefined) {
      up.cancelled = true;
      up.xhr?.abort();
      uploads.delete(id);
    }
    const down = downloads.get(id);
    if (down !== undefined) {
      down.abort.abort();
      downloads.delete(id);
    }
    kept(deps.store()?.remove(id));
    remove(id);
  }

  function retry(id: string): void {
    const t = transfers.list.find((x) => x.id === id);
    if (t === undefined || t.state === "working") return;
    if (t.kind === "upload") void runUpload(id);
    else void runDownload(id);
  }

  /** The connection is back: failed transfers go again (uploads keep their ciphertext). */
  function resume(): void {
    void restore();
    for (const t of transfers.list) {
      if (t.state !== "failed") continue;
      if (t.kind === "upload" && uploads.has(t.id)) void runUpload(t.id);
      // A download that failed for want of a network (not one refused or altered) goes on too.
      if (t.kind === "download" && downloads.has(t.id) && isNetworkFailure(t)) {
        void runDownload(t.id);
      }
    }
  }

  const isNetworkFailure = (t: Transfer) => t.error === "The download failed.";

  /**
   * After a reload, once online: pick up what the last page left (storage/transfers.ts). Runs
   * once per page; a transfer already known in memory is left as it is.
   */
  async function restore(): Promise<void> {
    const store = deps.store();
    if (restored || store === null) return;
    restored = true;
    let saved: Awaited<ReturnType<TransferStore["loadAll"]>>;
    try {
      saved = await store.loadAll();
    } catch (e) {
      console.warn("could not read kept transfers", e);
      return;
    }
    for (const s of saved) {
      if (uploads.has(s.id) || downloads.has(s.id)) continue;
      if (s.kind === "upload") {
        const pieces = await store.pieces(s.id).catch(() => [] as Blob[]);
        const data = new Blob(pieces);
        if (data.size !== s.length) {
          kept(store.remove(s.id));
          continue;
        }
        uploads.set(s.id, {
          file: null,
          caption: s.caption,
          reply: s.reply,
          saved: s,
          data,
          xhr: null,
          cancelled: false,
        });
        add({
          id: s.id,
          kind: "upload",
          conversationId: s.conversationId,
          name: s.file.name,
          done: 0,
          total: s.length,
          phase: "waiting",
          state: "working",
        });
        void runUpload(s.id);
      } else {
        if (transfers.urls[s.key] !== undefined) {
          kept(store.remove(s.id));
          continue;
        }
        downloads.set(s.id, { saved: s, abort: new AbortController() });
        void runDownload(s.id);
      }
    }
  }

  /**
   * Encrypt and upload bytes that are not a message's file (the history archive a linking
   * device hands over, PROTOCOL.md §4.8.5) and resolve with their reference: the same
   * encryption, ticket and PUT as an attachment, without a transfer row (the caller shows its own
   * progress) and without a kept copy (nothing resumes it after a reload: linking starts again).
   */
  async function uploadBytes(bytes: Uint8Array, meta: { name: string; type: string }) {
    const engine = deps.engine();
    if (engine === null) throw new AttachmentError("network", "Not signed in.");
    const enc = await encryptAttachment(
      (async function* () {
        yield bytes;
      })(),
      bytes.length,
    );
    const ticket = await ticketFor(engine, enc.length);
    const job: UploadJob = {
      file: null,
      caption: "",
      reply: undefined,
      saved: null,
      data: null,
      xhr: null,
      cancelled: false,
    };
    await put(
      job,
      new Blob(enc.parts as Uint8Array<ArrayBuffer>[]),
      ticket.blob,
      ticket.ticket,
      () => undefined,
    );
    return fileRefOf(ticket.blob, enc, { size: bytes.length, ...meta });
  }

  /** Download and open `ref` whole, in memory (the counterpart of uploadBytes). */
  async function downloadBytes(ref: FileRef): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    const source = fetchResumable(blobUrl(deps.origin, ref.blob), {
      fetch: (u, i) => fetch(u, i),
      length: chunkedCiphertextLength(ref.size),
      start: 0,
    });
    for await (const p of decryptAttachment(ref, source)) parts.push(p);
    return concatBytes(...parts);
  }

  /**
   * A message left this device (its disappearing timer ran out, or it was deleted): its file
   * goes too — the decrypted copy in memory, a download under way and what it kept (§8.6.1).
   */
  function forget(key: string): void {
    const url = transfers.urls[key];
    if (url !== undefined) {
      URL.revokeObjectURL(url);
      setTransfers(
        produce((s) => {
          delete s.urls[key];
        }),
      );
    }
    for (const [id, job] of downloads) if (job.saved.key === key) cancel(id);
  }

  return {
    transfers,
    sendFiles,
    fetchFile,
    save,
    cancel,
    retry,
    resume,
    restore,
    forget,
    uploadBytes,
    downloadBytes,
  };
}

export type Transfers = ReturnType<typeof createTransfers>;

/** A file's (or kept Blob's) bytes as a stream of pieces, without reading it whole. */
async function* readFile(file: Blob): AsyncGenerator<Uint8Array> {
  const reader = file.stream().getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    yield value;
  }
}

/**
 * A small JPEG preview of an image, sent inside the (encrypted) message so the recipient sees it
 * before downloading anything (§8.6.1). Null for anything that is not a decodable image.
 */
async function thumbnailOf(
  file: File,
): Promise<{ thumb: string; width: number; height: number } | null> {
  if (!file.type.startsWith("image/") || typeof createImageBitmap !== "function") return null;
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return null;
  }
  const { width, height } = bitmap;
  try {
    for (let edge = THUMB_EDGE, quality = 0.7; edge >= 40; edge = Math.floor(edge * 0.75)) {
      const scale = Math.min(1, edge / Math.max(width, height));
      const w = Math.max(1, Math.round(width * scale));
      const h = Math.max(1, Math.round(height * scale));
      const canvas = new OffscreenCanvas(w, h);
      const ctx = canvas.getContext("2d");
      if (ctx === null) return null;
      ctx.drawImage(bitmap, 0, 0, w, h);
      const jpeg = new Uint8Array(
        await (await canvas.convertToBlob({ type: "image/jpeg", quality })).arrayBuffer(),
      );
      if (jpeg.length <= THUMB_MAX_BYTES) {
        return {
          thumb: toB64u(jpeg),
          width: Math.min(65_535, width),
          height: Math.min(65_535, height),
        };
      }
      quality = Math.max(0.4, quality - 0.1);
    }
    return null;
  } finally {
    bitmap.close();
  }
}
