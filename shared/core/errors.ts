/** Typed protocol-engine errors (PROTOCOL.md §11): one class, a stable `code` per failure. */
import type { CoreErrorCode } from "./client-api";

export class CoreError extends Error {
  override name = "CoreError";
  readonly code: CoreErrorCode;
  constructor(code: CoreErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** Message could not be parsed (wrong length, unknown version/type, bad field). */
export const malformed = (what: string) => new CoreError("malformed", `malformed ${what}`);

export function isCoreError(e: unknown, code?: CoreErrorCode): e is CoreError {
  return e instanceof CoreError && (code === undefined || e.code === code);
}
