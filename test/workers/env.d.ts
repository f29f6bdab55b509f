/** Bindings the workers test project sees through `cloudflare:test` (wrangler.toml). */
declare namespace Cloudflare {
  interface Env {
    RELAY: DurableObjectNamespace<import("../../worker/relay").Relay>;
    ASSETS: Fetcher;
    BLOB_OWNER: DurableObjectNamespace<import("../../worker/blobs").BlobOwner>;
    DIRECTORY: DurableObjectNamespace<import("../../worker/directory").Directory>;
    GROUP: DurableObjectNamespace<import("../../worker/group").Group>;
    BLOBS: R2Bucket;
    ALLOWED_ORIGINS?: string;
    VAPID_PUBLIC_KEY?: string;
    VAPID_PRIVATE_KEY?: string;
    VAPID_SUBJECT?: string;
    PUSH_ALLOW_LOOPBACK?: string;
    /** Origin of the tests' local Web Push service (vitest.config.ts). */
    PUSH_SERVICE: string;
  }
}
