/** The toast region: service-worker updates ("new version — reload") and errors. */
import { For, Show } from "solid-js";
import type { Toasts as ToastStore } from "../app/toasts";

export function Toasts(props: { store: ToastStore }) {
  return (
    <div class="toasts" aria-live="polite">
      <For each={props.store.toasts}>
        {(t) => (
          <div
            class={`toast toast-${t.kind}`}
            role={t.kind === "error" ? "alert" : "status"}
            data-testid="toast"
          >
            <div class="toast-main">
              <span class="toast-text">{t.text}</span>
              <Show when={t.details}>
                {(d) => (
                  <details class="toast-details" onToggle={() => props.store.pin(t.id)}>
                    <summary>Details</summary>
                    <code>{d()}</code>
                  </details>
                )}
              </Show>
            </div>
            <Show when={t.action}>
              {(a) => (
                <button
                  type="button"
                  class="small primary"
                  onClick={() => {
                    props.store.dismiss(t.id);
                    a().run();
                  }}
                >
                  {a().label}
                </button>
              )}
            </Show>
            <button
              type="button"
              class="icon-button"
              aria-label="Dismiss"
              onClick={() => props.store.dismiss(t.id)}
            >
              ×
            </button>
          </div>
        )}
      </For>
    </div>
  );
}
