/**
 * One tab owns Parley at a time (PROTOCOL.md §10, nonce safety): two tabs driving the same
 * ratchet state could encrypt two messages under one message key. The owner holds the Web Lock
 * "parley-owner" for as long as it lives; another tab sees `blocked` and may take over with
 * `steal`, which makes the previous owner's lock promise reject — it then shows `lost` and drops
 * its connection before the new owner opens one.
 */
export type Ownership = "pending" | "owner" | "blocked" | "lost" | "unsupported";

export const LOCK_NAME = "parley-owner";

export interface TabLock {
  /** Try to become the owner (queued behind the current owner unless `steal`). */
  acquire(steal: boolean): void;
  release(): void;
}

export function createTabLock(onChange: (o: Ownership) => void): TabLock {
  let releaseHeld: (() => void) | null = null;
  let controller: AbortController | null = null;

  const hold = (steal: boolean, ifAvailable: boolean) => {
    controller?.abort();
    const ac = new AbortController();
    controller = ac;
    const options: LockOptions = steal
      ? { steal: true }
      : ifAvailable
        ? { ifAvailable: true }
        : { signal: ac.signal };
    navigator.locks
      .request(LOCK_NAME, options, (lock) => {
        if (!lock) {
          // Held by another tab: say so, and queue a normal request so this tab takes over
          // by itself when the other one closes.
          onChange("blocked");
          hold(false, false);
          return undefined;
        }
        onChange("owner");
        return new Promise<void>((resolve) => {
          releaseHeld = resolve;
        });
      })
      .catch((e: unknown) => {
        // AbortError: our queued request was cancelled (we are stealing) — not a loss.
        if (e instanceof DOMException && e.name === "AbortError" && ac.signal.aborted) return;
        releaseHeld = null;
        onChange("lost");
      });
  };

  return {
    acquire(steal) {
      if (typeof navigator === "undefined" || !("locks" in navigator)) {
        // Without Web Locks (very old browsers) we cannot coordinate; run alone and say so.
        onChange("unsupported");
        return;
      }
      hold(steal, !steal);
    },
    release() {
      controller?.abort();
      releaseHeld?.();
      releaseHeld = null;
    },
  };
}
