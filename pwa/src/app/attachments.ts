/**
 * Attachment transfers in the PWA (PROTOCOL.md §8.6.1, §7.10): the send pipeline (read the File
 * as a stream → encrypt under a fresh key → ask the relay for a ticket → PUT the ciphertext with
 * progress → send the reference in a message) and downloads (GET with byte ranges → decrypt →
 * a blob: URL to save or view). Each transfer is a row of a Solid store the UI renders as a
 * progress bar with cancel and retry; a failed upload keeps its ciphertext and is tried again
 * when the connection comes back. Components call these actions; only this module does HTTP.
 */
import { createStore, produce } from "solid-js/store";
import {
  AttachmentError,
  blobResponseError,
  blobUrl,
  decryptAttachment,
  type EncryptedAttachment,
  encryptAttachment,
  fetchResumable,
  fileRefOf,
} from "../../../shared/core/attachments";
import type { ConversationId, ParleyClientApi } from "../../../shared/core/client-api";
import { type FileRef, MAX_ATTACHMENT_BYTES } from "../../../shared/core/content";
import { isCoreError } from "../../../shared/core/errors";
import { chunkedCiphertextLength } from "../../../shared/crypto";
import { toB64u } from "../../../shared/encoding";

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
}

/** Largest thumbnail edge in CSS pixels, and the byte budget of its JPEG (§8.6.1). */
const THUMB_EDGE = 160;
const THUMB_MAX_BYTES = 12 * 1024;

interface UploadJob {
  file: File;
  caption: string;
  enc: EncryptedAttachment | null;
  thumb: { thumb: string; width: number; height: number } | null;
  xhr: XMLHttpRequest | null;
  cancelled: boolean;
}

interface DownloadJob {
  ref: FileRef;
  abort: AbortController;
}

export function createTransfers(deps: TransfersDeps) {
  const [transfers, setTransfers] = createStore<{ list: Transfer[]; urls: Record<string, string> }>(
    { list: [], urls: {} },
  );
  const uploads = new Map<string, UploadJob>();
  const downloads = new Map<string, DownloadJob>();
  let seq = 0;

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

  /** Send each file as its own message, the caption with the first. */
  function sendFiles(files: File[], conversationId: ConversationId, caption = ""): void {
    files.forEach((file, i) => {
      if (file.size > MAX_ATTACHMENT_BYTES) {
        deps.onError(`“${file.name}” is larger than 100 MB, the most Parley can send.`);
        return;
      }
      const id = `up-${++seq}`;
      setTransfers(
        produce((s) => {
          s.list.push({
            id,
            kind: "upload",
            conversationId,
            name: file.name,
            done: 0,
            total: file.size,
            phase: "encrypting",
            state: "working",
          });
        }),
      );
      uploads.set(id, {
        file,
        caption: i === 0 ? caption : "",
        enc: null,
        thumb: null,
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
      if (job.enc === null) {
        update(id, { phase: "encrypting", done: 0, total: job.file.size });
        job.thumb = await thumbnailOf(job.file);
        job.enc = await encryptAttachment(readFile(job.file), job.file.size, (done) =>
          update(id, { done }),
        );
      }
      if (job.cancelled) return;
      const engine = deps.engine();
      if (engine === null) throw new AttachmentError("network", "Not signed in.");
      update(id, { phase: "waiting", done: 0, total: job.enc.length });
      const ticket = await ticketFor(engine, job.enc.length);
      if (job.cancelled) return;
      update(id, { phase: "uploading" });
      await put(job, ticket.blob, ticket.ticket, (done) => update(id, { done }));
      if (job.cancelled) return;
      const ref = fileRefOf(ticket.blob, job.enc, {
        size: job.file.size,
        type: job.file.type,
        name: job.file.name,
        ...(job.thumb ?? {}),
      });
      await engine.sendFile(t.conversationId, ref, job.caption);
      uploads.delete(id);
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
    blob: string,
    ticket: string,
    onProgress: (n: number) => void,
  ): Promise<void> {
    const enc = job.enc;
    if (enc === null) return Promise.reject(new Error("not encrypted"));
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
      xhr.send(new Blob(enc.parts as Uint8Array<ArrayBuffer>[]));
    });
  }

  /** Download (once) and decrypt the file of message `key`; resolves with a blob: URL. */
  async function fetchFile(key: string, conversationId: ConversationId, ref: FileRef) {
    const have = transfers.urls[key];
    if (have !== undefined) return have;
    const running = transfers.list.find((x) => x.key === key && x.state === "working");
    if (running !== undefined) return null;
    const id = `down-${++seq}`;
    const total = chunkedCiphertextLength(ref.size);
    setTransfers(
      produce((s) => {
        s.list = s.list.filter((x) => x.key !== key);
        s.list.push({
          id,
          kind: "download",
          conversationId,
          name: ref.name,
          done: 0,
          total,
          phase: "downloading",
          state: "working",
          key,
        });
      }),
    );
    const abort = new AbortController();
    downloads.set(id, { ref, abort });
    try {
      const parts: Uint8Array<ArrayBuffer>[] = [];
      const source = fetchResumable(blobUrl(deps.origin, ref.blob), {
        fetch: (u, i) => fetch(u, i),
        length: total,
        signal: abort.signal,
        onProgress: (done) => update(id, { done }),
      });
      for await (const p of decryptAttachment(ref, source))
        parts.push(p as Uint8Array<ArrayBuffer>);
      const url = URL.createObjectURL(
        new Blob(parts, { type: ref.type || "application/octet-stream" }),
      );
      setTransfers("urls", key, url);
      downloads.delete(id);
      remove(id);
      return url;
    } catch (e) {
      if (abort.signal.aborted) {
        remove(id);
        return null;
      }
      update(id, { state: "failed", error: failText(e) });
      return null;
    }
  }

  /** Save the file of message `key` to the device (download, decrypt, then the browser's save). */
  async function save(key: string, conversationId: ConversationId, ref: FileRef) {
    const url = await fetchFile(key, conversationId, ref);
    if (url === null) return;
    const a = document.createElement("a");
    a.href = url;
    a.download = ref.name;
    a.rel = "noopener";
    document.body.append(a);
    a.click();
    a.remove();
  }

  function cancel(id: string): void {
    const up = uploads.get(id);
    if (up !== undefined) {
      up.cancelled = true;
      up.xhr?.abort();
      uploads.delete(id);
      remove(id);
      return;
    }
    downloads.get(id)?.abort.abort();
    downloads.delete(id);
    remove(id);
  }

  function retry(id: string): void {
    const t = transfers.list.find((x) => x.id === id);
    if (t === undefined) return;
    if (t.kind === "upload") {
      void runUpload(id);
      return;
    }
    const job = downloads.get(id);
    if (job !== undefined && t.key !== undefined) {
      downloads.delete(id);
      void fetchFile(t.key, t.conversationId, job.ref);
    }
  }

  /** The connection is back: failed uploads go again (their ciphertext is kept). */
  function resume(): void {
    for (const t of transfers.list) {
      if (t.kind === "upload" && t.state === "failed" && uploads.has(t.id)) void runUpload(t.id);
    }
  }

  return { transfers, sendFiles, fetchFile, save, cancel, retry, resume };
}

export type Transfers = ReturnType<typeof createTransfers>;

/** The file's bytes as a stream of pieces, without reading it whole. */
async function* readFile(file: File): AsyncGenerator<Uint8Array> {
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
