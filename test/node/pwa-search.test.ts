/**
 * Search over local history (pwa/src/search/search-index.ts, PROTOCOL.md §12.3): results name one
 * message by its row key; edits are re-indexed; a deleted or expired message leaves no term in
 * the stored index; a damaged stored index is rebuilt, not trusted.
 */
import { describe, expect, it } from "vitest";
import { type SearchDoc, SearchIndex } from "../../pwa/src/search/search-index";

const doc = (key: string, text: string, rev = 1, from = "alice"): SearchDoc => ({
  key,
  conv: "dm:alice",
  from,
  text,
  rev,
});

describe("search index", () => {
  it("finds messages by word and prefix, and names each by its row key", async () => {
    const ix = SearchIndex.open(null);
    expect(
      await ix.sync([doc("k1", "lunch at the harbour"), doc("k2", "meeting moved to friday")]),
    ).toBe(true);
    expect(ix.search("harb").map((h) => h.key)).toEqual(["k1"]);
    expect(ix.search("meeting friday").map((h) => h.key)).toEqual(["k2"]);
    expect(ix.search("")).toEqual([]);
    expect(
      await ix.sync([doc("k1", "lunch at the harbour"), doc("k2", "meeting moved to friday")]),
    ).toBe(false);
  });

  it("re-indexes an edit and forgets deleted or expired messages, also at rest", async () => {
    const ix = SearchIndex.open(null);
    await ix.sync([doc("k1", "secret pineapple plan"), doc("k2", "hello")]);
    await ix.sync([doc("k1", "secret mango plan", 2), doc("k2", "hello")]);
    expect(ix.search("pineapple")).toEqual([]);
    expect(ix.search("mango").map((h) => h.key)).toEqual(["k1"]);
    expect(await ix.sync([doc("k2", "hello")])).toBe(true);
    const json = ix.toJSON();
    expect(json).not.toContain("mango");
    expect(json).not.toContain("secret");
    expect(json).not.toContain("k1");
    const again = SearchIndex.open(json);
    expect(again.search("hello").map((h) => h.key)).toEqual(["k2"]);
    expect(again.size).toBe(1);
  });

  it("a damaged stored index is replaced by an empty one (rebuilt from history)", () => {
    for (const bad of [
      "{",
      "null",
      '{"v":2,"index":{},"revs":[]}',
      '{"v":1,"index":7,"revs":[]}',
    ]) {
      const ix = SearchIndex.open(bad);
      expect(ix.size).toBe(0);
    }
  });
});
