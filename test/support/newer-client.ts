/**
 * A stand-in for a newer client's encoder (PROTOCOL.md §8.6.1, "Unknown types"): while `fn`
 * runs, a reaction with the emoji 🧪 that this process's engine encrypts is encoded as a content
 * type this version does not know (a "poll"), the JSON a newer client would send. Everything else
 * is encoded as usual. The engine encodes content with JSON.stringify (shared/core/content.ts), so
 * this swaps that one call's output and nothing else of the protocol.
 */
export async function asNewerClient<T>(fn: () => Promise<T>): Promise<T> {
  const original = JSON.stringify;
  JSON.stringify = ((value: unknown, ...rest: unknown[]) => {
    if (
      typeof value === "object" &&
      value !== null &&
      "t" in value &&
      value.t === "react" &&
      "emoji" in value &&
      value.emoji === "🧪"
    ) {
      return original({ t: "poll", id: "poll-1", question: "lunch?", options: ["a", "b"] });
    }
    return (original as (v: unknown, ...r: unknown[]) => string)(value, ...rest);
  }) as typeof JSON.stringify;
  try {
    return await fn();
  } finally {
    JSON.stringify = original;
  }
}
