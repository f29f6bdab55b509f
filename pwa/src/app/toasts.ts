/** Transient notices ("new version — reload", errors): a tiny store with auto-dismiss. */
import { createStore } from "solid-js/store";

export interface Toast {
  id: number;
  kind: "info" | "error" | "update";
  text: string;
  /** Technical text (error code, engine message) behind a "Details" disclosure. */
  details?: string;
  action?: { label: string; run: () => void };
  /** Sticky toasts stay until acted on or dismissed. */
  sticky?: boolean;
}

export function createToasts() {
  const [toasts, setToasts] = createStore<Toast[]>([]);
  const timers = new Map<number, ReturnType<typeof setTimeout>>();
  let next = 1;
  const dismiss = (id: number) => {
    const t = timers.get(id);
    if (t !== undefined) clearTimeout(t);
    timers.delete(id);
    setToasts((list) => list.filter((x) => x.id !== id));
  };
  const show = (t: Omit<Toast, "id">): number => {
    const id = next++;
    // The same text twice in a row is one notice (e.g. repeated relay errors).
    if (toasts.some((x) => x.text === t.text)) return id;
    setToasts((list) => [...list.slice(-3), { ...t, id }]);
    // Errors stay longer than other notices: they may carry details worth opening.
    if (!t.sticky)
      timers.set(
        id,
        setTimeout(() => dismiss(id), t.kind === "error" ? 10_000 : 6000),
      );
    return id;
  };
  /** Keep a toast until dismissed (the user opened its details and is reading them). */
  const pin = (id: number) => {
    const t = timers.get(id);
    if (t !== undefined) clearTimeout(t);
    timers.delete(id);
  };
  return { toasts, show, dismiss, pin };
}
export type Toasts = ReturnType<typeof createToasts>;
