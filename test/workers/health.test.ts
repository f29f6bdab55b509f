import { SELF } from "cloudflare:test";
import { expect, it } from "vitest";

it("serves /health", async () => {
  const res = await SELF.fetch("http://example.com/health");
  expect(res.status).toBe(200);
});
