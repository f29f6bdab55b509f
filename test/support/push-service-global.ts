/**
 * Vitest global setup for the workers project: one local Web Push service (push-service.ts) for
 * the run, on 127.0.0.1; its origin is provided to the Miniflare bindings (vitest.config.ts) and
 * to the tests, which drive it over its HTTP control routes.
 */
import type { TestProject } from "vitest/node";
import { PushService } from "./push-service";

declare module "vitest" {
  export interface ProvidedContext {
    pushServiceOrigin: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const service = await PushService.start();
  project.provide("pushServiceOrigin", service.origin);
  return () => service.stop();
}
