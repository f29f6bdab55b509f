/**
 * The one place the PWA constructs the protocol engine (shared/core). Everything else sees only
 * `ParleyClientApi`, so the UI never depends on engine internals.
 */

import { ParleyClient } from "../../../shared/core/client";
import type { ParleyClientApi, ParleyClientOptions } from "../../../shared/core/client-api";

export function createEngine(opts: ParleyClientOptions): Promise<ParleyClientApi> {
  return ParleyClient.create(opts);
}
