/**
 * First launch: pick a username (checked as it is typed, with a valid spelling offered),
 * restore an identity from a backup file, or link to a device already in use (Devices.tsx); the identity is generated with visible progress. A name
 * the relay refuses as taken may be the user's own from another browser or lost browser data, so
 * the refusal offers the restore right there.
 */
import { createSignal, For, Show } from "solid-js";
import { useParley } from "../app/context";
import { CREATE_STEPS } from "../app/controller";
import { nameProblem } from "../state/names";
import { Logo } from "./Logo";
import { LazyLinkStart } from "./lazy";
import { NameHint } from "./NameHint";
import { Centered } from "./Screens";
import { LINK_WORDS } from "./wording";

function Restore(props: { fileRef?: (el: HTMLInputElement) => void }) {
  const { actions } = useParley();
  const [file, setFile] = createSignal<File | null>(null);
  const [pass, setPass] = createSignal("");
  const [busy, setBusy] = createSignal(false);
  const [error, setError] = createSignal<string | null>(null);
  return (
    <form
      class="stack restore"
      onSubmit={async (e) => {
        e.preventDefault();
        const f = file();
        if (!f) {
          setError("Choose the identity file first.");
          return;
        }
        setBusy(true);
        setError(null);
        // Refuse big files before reading them: a real backup is well under 1 KB.
        const err =
          f.size > 16_384
            ? "This is not a Parley identity file."
            : await actions.restore(await f.text(), pass());
        setBusy(false);
        if (err) setError(err);
      }}
    >
      <label for="restore-file">Identity file</label>
      <input
        id="restore-file"
        ref={props.fileRef}
        type="file"
        accept="application/json,.json"
        data-testid="restore-file"
        onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)}
      />
      <label for="restore-pass">Passphrase</label>
      <input
        id="restore-pass"
        type="password"
        autocomplete="current-password"
        value={pass()}
        onInput={(e) => setPass(e.currentTarget.value)}
      />
      <Show when={error()}>
        <p class="error" role="alert">
          {error()}
        </p>
      </Show>
      <button type="submit" class="secondary" disabled={busy()} data-testid="restore-submit">
        {busy() ? "Decrypting…" : "Restore identity"}
      </button>
    </form>
  );
}

export function Onboarding(props: { error?: string; taken?: string | undefined }) {
  const { actions } = useParley();
  const [name, setName] = createSignal("");
  const [tried, setTried] = createSignal(false);
  const [restoreOpen, setRestoreOpen] = createSignal(false);
  /** The relay's refusal is about the name that was sent: once another is typed, it is stale. */
  const [edited, setEdited] = createSignal(false);
  let input: HTMLInputElement | undefined;
  let restoreFile: HTMLInputElement | undefined;
  const invalid = () => nameProblem(name()) !== null;
  const openRestore = () => {
    setRestoreOpen(true);
    queueMicrotask(() => restoreFile?.focus());
  };
  return (
    <Centered>
      <Logo size={64} />
      <h1>Welcome to Parley</h1>
      <p class="muted">
        Messages are encrypted on this device. The relay at <strong>{location.host}</strong> only
        ever sees ciphertext.
      </p>
      <form
        class="stack"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          if (invalid()) {
            setTried(true);
            input?.focus();
            return;
          }
          void actions.onboard(name());
        }}
      >
        <label for="username">Choose a username</label>
        <input
          id="username"
          ref={input}
          name="username"
          autocomplete="username"
          autocapitalize="none"
          spellcheck={false}
          maxLength={64}
          aria-describedby="username-help username-problem"
          aria-invalid={(props.error && !edited()) || (tried() && invalid()) ? "true" : undefined}
          value={name()}
          onInput={(e) => {
            setName(e.currentTarget.value);
            setEdited(true);
          }}
        />
        <p id="username-help" class="help">
          1–32 lower-case letters, digits, “-” or “_”, starting with a letter or digit. Others see
          it next to your key fingerprint.
        </p>
        <NameHint
          id="username-problem"
          value={name()}
          showEmpty={tried()}
          ruleShown
          onAccept={(n) => {
            setName(n);
            setEdited(true);
            input?.focus();
          }}
        />
        <Show when={!edited() && props.error}>
          <div class="onboard-error" role="alert" data-testid="onboard-error">
            <p class="error">{props.error}</p>
            <Show when={props.taken}>
              {(t) => (
                <>
                  <p class="help">
                    If “<span class="name-text">{t()}</span>” is yours — you used Parley in another
                    browser, or this browser’s data was cleared — restore it from the backup file
                    you exported in Settings.
                  </p>
                  <button
                    type="button"
                    class="secondary"
                    data-testid="taken-restore"
                    onClick={openRestore}
                  >
                    Restore from a backup file
                  </button>
                </>
              )}
            </Show>
          </div>
        </Show>
        <button type="submit" class="primary">
          Create my identity
        </button>
      </form>
      <details
        class="restore-box"
        open={restoreOpen()}
        onToggle={(e) => setRestoreOpen(e.currentTarget.open)}
      >
        <summary>Restore from a backup file</summary>
        <Restore
          fileRef={(el) => {
            restoreFile = el;
          }}
        />
      </details>
      <details class="link-box" data-testid="link-box">
        <summary>{LINK_WORDS.startTitle}</summary>
        <LazyLinkStart />
      </details>
    </Centered>
  );
}

export function Creating(props: { username: string; step: number; detail?: string | undefined }) {
  return (
    <Centered>
      <Logo size={64} />
      <h1 class="ellipsis" title={props.username}>
        Setting up {props.username}
      </h1>
      <progress max={CREATE_STEPS.length} value={props.step} aria-label="Identity setup progress" />
      <ol class="steps" aria-live="polite">
        <For each={CREATE_STEPS}>
          {(label, i) => (
            <li
              classList={{ done: i() < props.step, active: i() === props.step }}
              aria-current={i() === props.step ? "step" : undefined}
            >
              {label}
            </li>
          )}
        </For>
      </ol>
      <Show when={props.detail}>
        <p class="help" role="status" data-testid="creating-detail">
          {props.detail}
        </p>
      </Show>
    </Centered>
  );
}
