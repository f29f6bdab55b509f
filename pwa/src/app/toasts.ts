/** Transient notices ("new version — reload", errors): a tiny store with auto-dismiss. */
import { createStore } from "solid-js/store";

export interface Toast {
  id: number;
  kind: "info" | "error" | "update";
  text: string;
  action?: { label: string; run: () => void };
  /** Sticky toasts stay until acted on or dismissed. */
  sticky?: boolean;
}

export function createToasts() {
  const [toasts, setToasts] = createStore<Toast[]>([]);
  let next = 1;
  const dismiss = (id: number) => setToasts((list) => list.filter((t) => t.id !== id));
  const show = (t: Omit<Toast, "id">): number => {
    const id = next++;
    // The same text twice in a row is one notice (e.g. repeated relay errors).
    if (toasts.some((x) => x.text === t.text)) return id;
    setToasts((list) => [...list.slice(-3), { ...t, id }]);
    if (!t.sticky) setTimeout(() => dismiss(id), 6000);
    return id;
  };
  return { toasts, show, dismiss };
}
export type Toasts = ReturnType<typeof createToasts>;
