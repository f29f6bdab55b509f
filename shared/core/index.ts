/** The Parley protocol core: engine, API types and the pure modules it is built from. */

export { DEFAULT_TUNING, ParleyClient } from "./client";
export * from "./client-api";
export { CoreError, isCoreError } from "./errors";
export { KEYS, MemoryStore } from "./store";
