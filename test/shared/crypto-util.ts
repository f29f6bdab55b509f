/** Helpers for the crypto known-answer tests (test/shared/crypto-*.test.ts). */

export function fromHex(h: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(h)) throw new Error(`bad hex in vector: ${h.slice(0, 20)}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

export type WycheproofResult = "valid" | "acceptable" | "invalid";

/** Narrows a vector's result; anything else is a broken or updated vector file and must fail loudly. */
export function wycheproofResult(r: string, tcId: number): WycheproofResult {
  if (r === "valid" || r === "acceptable" || r === "invalid") return r;
  throw new Error(`tcId ${tcId}: unknown Wycheproof result ${JSON.stringify(r)}`);
}

/** What an implementation did with a vector, as one comparable value. */
export async function outcome<T>(f: () => Promise<T> | T): Promise<T | { error: string }> {
  try {
    return await f();
  } catch (e) {
    return { error: e instanceof Error ? e.name : String(e) };
  }
}

/** Counts per label, to pin deliberate strictness after a test.each run. */
export class Tally {
  readonly counts: Record<string, number> = {};
  add(label: string): void {
    this.counts[label] = (this.counts[label] ?? 0) + 1;
  }
}
