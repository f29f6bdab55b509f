/** Top bar: who I am (username + fingerprint) and the status of the selected chat (§4.7). */
import { createMemo, createSignal, onCleanup, Show } from "solid-js";
import { useParley } from "../app/context";
import { chatStatusLabel } from "./format";
import { Logo } from "./Logo";

export function TopBar(props: { onSettings: () => void }) {
  const { state, notifyPerm, actions } = useParley();
  const [now, setNow] = createSignal(Date.now());
  // Tick once a second so "reconnecting in N s" counts down.
  const timer = setInterval(() => setNow(Date.now()), 1000);
  onCleanup(() => clearInterval(timer));

  const selected = createMemo(() => (state.selected ? state.convs[state.selected] : undefined));
  const status = createMemo(() => chatStatusLabel(state.conn, selected()?.status ?? null, now()));

  return (
    <header class="topbar">
      <div class="brand">
        <Logo size={28} />
        <span class="brand-name">Parley</span>
      </div>
      <div class="me">
        <span class="me-name" data-testid="my-username">
          {state.me?.username}
        </span>
        <span class="fingerprint" title="Your key fingerprint" data-testid="my-fingerprint">
          {state.me?.fingerprint}
        </span>
      </div>
      <div class="topbar-right">
        <div class="chat-status" role="status" aria-live="polite" data-testid="chat-status">
          <Show when={selected()}>
            {(c) => (
              <span class="status-chat">
                {c().kind === "group" ? "#" : ""}
                {c().name}:
              </span>
            )}
          </Show>
          <span class={`pill tone-${status().tone}`} data-tone={status().tone}>
            {status().label}
          </span>
          <Show when={state.conn.kind === "waiting"}>
            <button type="button" class="link" onClick={() => actions.retryNow()}>
              Retry now
            </button>
          </Show>
        </div>
        <Show when={notifyPerm() === "default"}>
          <button
            type="button"
            class="icon-button"
            title="Notify me about messages while Parley is in the background"
            aria-label="Enable notifications"
            onClick={() => void actions.enableNotifications()}
          >
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
              <path class="icon-stroke" d="M6 16V11a6 6 0 1 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0" />
            </svg>
          </button>
        </Show>
        <button
          type="button"
          class="icon-button"
          aria-label="Settings"
          title="Settings"
          data-testid="open-settings"
          onClick={() => props.onSettings()}
        >
          <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
            <circle class="icon-stroke" cx="12" cy="12" r="3" />
            <path
              class="icon-stroke"
              d="M12 2v3M12 19v3M4.2 4.2l2.1 2.1M17.7 17.7l2.1 2.1M2 12h3M19 12h3M4.2 19.8l2.1-2.1M17.7 6.3l2.1-2.1"
            />
          </svg>
        </button>
      </div>
    </header>
  );
}
