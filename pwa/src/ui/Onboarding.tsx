/** First launch: pick a username; the identity is generated with visible progress. */
import { createSignal, For, Show } from "solid-js";
import { useParley } from "../app/context";
import { CREATE_STEPS } from "../app/controller";
import { Logo } from "./Logo";
import { Centered } from "./Screens";

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
    </Centered>
  );
}

export function Creating(props: { username: string; step: number }) {
  return (
    <Centered>
      <Logo size={64} />
      <h1>Setting up {props.username}</h1>
      <progress
        max={CREATE_STEPS.length}
        value={props.step}
        aria-label="Identity setup progress"
      />
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
