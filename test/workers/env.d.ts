/** Bindings the workers test project sees through `cloudflare:test` (wrangler.toml). */
declare namespace Cloudflare {
  interface Env {
    RELAY: DurableObjectNamespace<import("../../worker/relay").Relay>;
    ASSETS: Fetcher;
    ALLOWED_ORIGINS?: string;
  }
}
