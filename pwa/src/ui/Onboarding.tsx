/** First launch: pick a username; the identity is generated with visible progress. */
import { createSignal, For, Show } from "solid-js";
import { useParley } from "../app/context";
import { CREATE_STEPS } from "../app/controller";
import { Logo } from "./Logo";
import { Centered } from "./Screens";

function Restore() {
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

export function Onboarding(props: { error?: string }) {
  const { actions } = useParley();
  const [name, setName] = createSignal("");
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
        onSubmit={(e) => {
          e.preventDefault();
          void actions.onboard(name());
        }}
      >
        <label for="username">Choose a username</label>
        <input
          id="username"
          name="username"
          autocomplete="username"
          autocapitalize="none"
          spellcheck={false}
          maxLength={32}
          required
          pattern="[a-z0-9][a-z0-9_\-]*"
          aria-describedby="username-help"
          aria-invalid={props.error ? "true" : undefined}
          value={name()}
          onInput={(e) => setName(e.currentTarget.value.toLowerCase())}
        />
        <p id="username-help" class="help">
          Lower-case letters, digits, “-” and “_”. Others see it next to your key fingerprint.
        </p>
        <Show when={props.error}>
          <p class="error" role="alert">
            {props.error}
          </p>
        </Show>
        <button type="submit" class="primary">
          Create my identity
        </button>
      </form>
      <details class="restore-box">
        <summary>Restore from a backup file</summary>
        <Restore />
      </details>
    </Centered>
  );
}

export function Creating(props: { username: string; step: number }) {
  return (
    <Centered>
      <Logo size={64} />
      <h1>Setting up {props.username}</h1>
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
    </Centered>
  );
}
