/** Full-page states before the messenger: boot, another tab owns Parley, fatal storage error. */
import type { JSX } from "solid-js";
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
