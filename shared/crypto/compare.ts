/** Constant-time comparison and best-effort wiping of secrets (PROTOCOL.md §3.8). */

/**
 * True iff a and b have the same length and bytes. Time depends only on the lengths (which are
 * public in Parley: fixed-size keys and MACs), never on where the first difference is.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array) || a.length !== b.length) {
    return false;
  }
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** Overwrite a secret in place once it is no longer needed (JS gives no stronger guarantee). */
export function wipe(b: Uint8Array): void {
  b.fill(0);
}
