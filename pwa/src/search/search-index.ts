/**
 * Full-text search over local history with MiniSearch (PROTOCOL.md §12.3): loaded on first use
 * (a dynamic import, kept out of the initial bundle), kept in step with the messages in memory,
 * and stored only sealed under the device key in the history store (storage/history.ts
 * SEARCH_KEY). Documents are keyed by the history row key, so a result names one message.
 */
import MiniSearch from "minisearch";
import * as v from "valibot";

/** One searchable message: its row key, conversation, text and author; `rev` changes on edit. */
export interface SearchDoc {
  key: string;
  conv: string;
  from: string;
  text: string;
  rev: number;
}

export interface SearchHit {
  key: string;
  conv: string;
  score: number;
}

const OPTIONS = {
  idField: "key",
  fields: ["text", "from"],
  storeFields: ["conv"],
  // Discarded documents leave their terms behind until a vacuum; `sync` vacuums before the
  // index is stored, so a deleted or expired message's words never stay at rest.
  autoVacuum: false,
  searchOptions: { prefix: true, fuzzy: 0.2, combineWith: "AND" as const, boost: { text: 2 } },
};

/** What is stored (sealed): the index and, per document, the revision it was indexed at. */
const Stored = v.strictObject({
  v: v.literal(1),
  index: v.unknown(),
  revs: v.array(v.tuple([v.pipe(v.string(), v.maxLength(200)), v.number()])),
});

export class SearchIndex {
  private constructor(
    private readonly ms: MiniSearch<SearchDoc>,
    private readonly revs: Map<string, number>,
  ) {}

  /** From the stored JSON (null, or anything that does not load: a fresh, empty index). */
  static open(json: string | null): SearchIndex {
    if (json !== null) {
      try {
        const s = v.parse(Stored, JSON.parse(json));
        const ms = MiniSearch.loadJSON<SearchDoc>(JSON.stringify(s.index), OPTIONS);
        return new SearchIndex(ms, new Map(s.revs));
      } catch {
        // Damaged or from another version: rebuilt from history below.
      }
    }
    return new SearchIndex(new MiniSearch<SearchDoc>(OPTIONS), new Map());
  }

  /**
   * Make the index hold exactly `docs`: add new ones, re-index edited ones, discard what is no
   * longer in history (deleted, expired), vacuumed so none of its terms remain. True when
   * anything changed (store it again).
   */
  async sync(docs: readonly SearchDoc[]): Promise<boolean> {
    let changed = false;
    let discarded = false;
    const want = new Map(docs.map((d) => [d.key, d]));
    for (const [key, rev] of this.revs) {
      const d = want.get(key);
      if (d !== undefined && d.rev === rev) continue;
      this.ms.discard(key);
      this.revs.delete(key);
      changed = true;
      discarded = true;
    }
    if (discarded) await this.ms.vacuum({ batchSize: 100_000, batchWait: 0 });
    for (const d of docs) {
      if (this.revs.has(d.key)) continue;
      this.ms.add(d);
      this.revs.set(d.key, d.rev);
      changed = true;
    }
    return changed;
  }

  search(query: string, limit = 50): SearchHit[] {
    const q = query.trim();
    if (q.length === 0) return [];
    return this.ms
      .search(q)
      .slice(0, limit)
      .map((r) => ({ key: String(r.id), conv: String(r.conv), score: r.score }));
  }

  get size(): number {
    return this.revs.size;
  }

  toJSON(): string {
    return JSON.stringify({ v: 1, index: this.ms.toJSON(), revs: [...this.revs] });
  }
}
