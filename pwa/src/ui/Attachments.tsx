/**
 * Attachments in the conversation (PROTOCOL.md §8.6.1): a message's file as an image preview
 * (the small encrypted thumbnail it carries) or a file card with name, size and a download
 * button; an image viewer; progress bars with cancel and retry for every transfer of the
 * conversation; and the composer's attach and photo buttons. Transfers run in app/attachments.ts.
 */
import { createSignal, For, Show } from "solid-js";
import type { FileRef } from "../../../shared/core/content";
import { fileKey, type Transfer } from "../app/attachments";
import { useParley } from "../app/context";
import type { HistoryMessage } from "../storage/schemas";
import { Modal } from "./Dialogs";

/** 1 234 567 bytes → "1.2 MB" (decimal units, as file managers show them). */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB"];
  let x = n / 1000;
  let i = 0;
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i++;
  }
  return `${x < 10 ? x.toFixed(1) : Math.round(x)} ${units[i]}`;
}

const isImage = (f: FileRef) => /^image\/(png|jpeg|gif|webp|avif|bmp)$/.test(f.type);

/** The thumbnail as a data: URL (CSP allows data: images; the bytes were in the message). */
const thumbUrl = (f: FileRef) =>
  f.thumb === undefined
    ? undefined
    : `data:image/jpeg;base64,${f.thumb.replace(/-/g, "+").replace(/_/g, "/")}`;

export function FileMessage(props: { entry: HistoryMessage & { file: FileRef } }) {
  const { transfers } = useParley();
  const [viewing, setViewing] = createSignal<string | null>(null);
  const key = () => fileKey(props.entry);
  const file = () => props.entry.file;
  const transfer = () => transfers.transfers.list.find((t) => t.key === key());
  const view = async () => {
    const url = await transfers.fetchFile(key(), props.entry.conversationId, file());
    if (url !== null) setViewing(url);
  };
  return (
    <div class="file-msg" data-testid="file-message" data-name={file().name}>
      <Show
        when={isImage(file()) && thumbUrl(file())}
        fallback={
          <div class="file-card">
            <span class="file-icon">
              <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
                <path class="icon-stroke" d="M6 3h8l4 4v14H6zM14 3v4h4" />
              </svg>
            </span>
            <span class="file-info">
              <span class="file-name ellipsis" title={file().name} data-testid="file-name">
                {file().name}
              </span>
              <span class="file-size muted">{formatBytes(file().size)}</span>
            </span>
          </div>
        }
      >
        {(src) => (
          <button
            type="button"
            class="thumb"
            aria-label={`View ${file().name}`}
            data-testid="file-thumb"
            onClick={() => void view()}
          >
            <img
              src={src()}
              alt={file().name}
              width={file().width}
              height={file().height}
              style={{ "aspect-ratio": `${file().width ?? 4} / ${file().height ?? 3}` }}
            />
          </button>
        )}
      </Show>
      <Show
        when={transfer()}
        fallback={
          <button
            type="button"
            class="small secondary file-download"
            data-testid="file-download"
            onClick={() => void transfers.save(key(), props.entry.conversationId, file())}
          >
            {transfers.transfers.urls[key()] ? "Save" : `Download (${formatBytes(file().size)})`}
          </button>
        }
      >
        {(t) => <TransferBar t={t()} />}
      </Show>
      <Show when={viewing()}>
        {(url) => (
          <Modal title={file().name} testid="image-viewer" onClose={() => setViewing(null)}>
            <img class="viewer-img" src={url()} alt={file().name} data-testid="viewer-img" />
            <div class="modal-actions">
              <a class="button secondary" href={url()} download={file().name}>
                Save
              </a>
            </div>
          </Modal>
        )}
      </Show>
    </div>
  );
}

/** One transfer: what it does, a progress bar, and cancel or retry. */
export function TransferBar(props: { t: Transfer }) {
  const { transfers } = useParley();
  const pct = () => (props.t.total > 0 ? Math.floor((props.t.done / props.t.total) * 100) : 0);
  const label = () => {
    if (props.t.state === "failed") return props.t.error ?? "Failed";
    switch (props.t.phase) {
      case "encrypting":
        return "Encrypting…";
      case "waiting":
        return "Waiting for the relay…";
      case "uploading":
        return `Uploading ${formatBytes(props.t.done)} of ${formatBytes(props.t.total)}`;
      case "downloading":
        return `Downloading ${formatBytes(props.t.done)} of ${formatBytes(props.t.total)}`;
      default:
        return "";
    }
  };
  return (
    <div
      class="transfer"
      classList={{ failed: props.t.state === "failed" }}
      data-testid={`transfer-${props.t.kind}`}
      data-state={props.t.state}
    >
      <span class="transfer-label" role="status" data-testid="transfer-label">
        {label()}
      </span>
      <progress max={100} value={pct()} aria-label={`${props.t.name}: ${pct()}%`} />
      <span class="transfer-actions">
        <Show when={props.t.state === "failed"}>
          <button
            type="button"
            class="small secondary"
            data-testid="transfer-retry"
            onClick={() => transfers.retry(props.t.id)}
          >
            Retry
          </button>
        </Show>
        <button
          type="button"
          class="small secondary"
          data-testid="transfer-cancel"
          onClick={() => transfers.cancel(props.t.id)}
        >
          {props.t.state === "failed" ? "Dismiss" : "Cancel"}
        </button>
      </span>
    </div>
  );
}

/** Uploads of this conversation, above the composer. */
export function UploadList(props: { conversationId: string }) {
  const { transfers } = useParley();
  const ups = () =>
    transfers.transfers.list.filter(
      (t) => t.kind === "upload" && t.conversationId === props.conversationId,
    );
  return (
    <Show when={ups().length > 0}>
      <ul class="uploads" aria-label="Uploads" data-testid="uploads">
        <For each={ups()}>
          {(t) => (
            <li>
              <span class="file-name ellipsis" title={t.name}>
                {t.name}
              </span>
              <TransferBar t={t} />
            </li>
          )}
        </For>
      </ul>
    </Show>
  );
}

/** The composer's attach button (any file) and, on phones, the camera/photo picker. */
export function AttachButtons(props: { disabled: boolean; onFiles: (files: File[]) => void }) {
  const pick = (e: Event & { currentTarget: HTMLInputElement }) => {
    const files = [...(e.currentTarget.files ?? [])];
    e.currentTarget.value = "";
    if (files.length > 0) props.onFiles(files);
  };
  return (
    <>
      <label
        class="icon-button attach"
        classList={{ disabled: props.disabled }}
        title="Attach files"
      >
        <input
          type="file"
          multiple
          class="visually-hidden"
          data-testid="attach-input"
          disabled={props.disabled}
          onChange={pick}
        />
        <span class="visually-hidden">Attach files</span>
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
          <path
            class="icon-stroke"
            d="M20 11.5l-8 8a5 5 0 01-7-7l8.5-8.5a3.5 3.5 0 015 5L10 17.5a2 2 0 01-3-3l7.5-7.5"
          />
        </svg>
      </label>
      <label
        class="icon-button camera"
        classList={{ disabled: props.disabled }}
        title="Take a photo"
      >
        <input
          type="file"
          accept="image/*"
          capture="environment"
          class="visually-hidden"
          data-testid="camera-input"
          disabled={props.disabled}
          onChange={pick}
        />
        <span class="visually-hidden">Take a photo</span>
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
          <path class="icon-stroke" d="M4 7h3l2-3h6l2 3h3v13H4zM12 17a4 4 0 100-8 4 4 0 000 8z" />
        </svg>
      </label>
    </>
  );
}
