/** Full-page states before the messenger: boot, another tab owns Parley, fatal storage error. */
import { createSignal, type JSX, Show } from "solid-js";
import { useParley } from "../app/context";
import { Logo } from "./Logo";

export function Centered(props: { children: JSX.Element }) {
  return (
    <main class="centered">
      <div class="card">{props.children}</div>
    </main>
  );
}

export function BootScreen() {
  return (
    <Centered>
      <Logo size={56} />
      <p class="muted" role="status">
        Opening Parley…
      </p>
    </Centered>
  );
}

export function OtherTabScreen(props: { lost: boolean }) {
  const { actions } = useParley();
  return (
    <Centered>
      <Logo size={56} />
      <h1>{props.lost ? "Parley moved to another tab" : "Parley is open in another tab"}</h1>
      <p class="muted">
        Only one tab at a time can hold your keys and connection, so two tabs never encrypt with the
        same message key.
      </p>
      <button type="button" class="primary" onClick={() => actions.takeOver()}>
        Use Parley in this tab
      </button>
    </Centered>
  );
}

export function FatalScreen(props: { message: string }) {
  return (
    <Centered>
      <Logo size={56} />
      <h1>Parley cannot start</h1>
      <p class="muted">Local storage could not be opened or read: {props.message}</p>
      <button type="button" class="primary" onClick={() => location.reload()}>
        Try again
      </button>
    </Centered>
  );
}

export function LockScreen(props: { error?: string }) {
  const { actions } = useParley();
  const [pass, setPass] = createSignal("");
  const [busy, setBusy] = createSignal(false);
  return (
    <Centered>
      <Logo size={56} />
      <h1>Parley is locked</h1>
      <p class="muted">Your keys and messages on this device are sealed with your passphrase.</p>
      <form
        class="stack"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          await actions.unlock(pass());
          setBusy(false);
          setPass("");
        }}
      >
        <label for="unlock-pass">Passphrase</label>
        <input
          id="unlock-pass"
          type="password"
          autocomplete="current-password"
          required
          aria-invalid={props.error ? "true" : undefined}
          value={pass()}
          onInput={(e) => setPass(e.currentTarget.value)}
        />
        <Show when={props.error}>
          <p class="error" role="alert">
            {props.error}
          </p>
        </Show>
        <button type="submit" class="primary" disabled={busy()} data-testid="unlock">
          {busy() ? "Unlocking…" : "Unlock"}
        </button>
      </form>
    </Centered>
  );
}
