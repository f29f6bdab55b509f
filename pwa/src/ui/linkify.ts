/**
 * Message text as runs of plain text and http(s) links. The view turns each run into a DOM node
 * (a text node or an <a>), never into HTML, so a message cannot inject markup; only `http:` and
 * `https:` URLs that the URL parser accepts become links (no `javascript:`, `data:` or the like).
 */

export type Run = { kind: "text"; text: string } | { kind: "link"; text: string; href: string };

/** A URL candidate: scheme, then everything up to whitespace or a character never in a URL. */
const CANDIDATE = /\bhttps?:\/\/[^\s<>"'`]+/gi;

const CLOSERS: Readonly<Record<string, string>> = { ")": "(", "]": "[", "}": "{" };

const count = (s: string, c: string) => s.split(c).length - 1;

/** Punctuation that ends a sentence rather than the URL ("see https://x.org/a." → no dot). */
function trimTrailing(url: string): string {
  let u = url;
  for (;;) {
    const last = u.charAt(u.length - 1);
    if (/[.,;:!?*'’”]/.test(last)) {
      u = u.slice(0, -1);
      continue;
    }
    // A closing bracket belongs to the URL only when it closes one opened inside it
    // ("https://en.wikipedia.org/wiki/Foo_(bar)" keeps it, "(see https://x.org)" drops it).
    const open = CLOSERS[last];
    if (open !== undefined && count(u, last) > count(u, open)) {
      u = u.slice(0, -1);
      continue;
    }
    return u;
  }
}

/** The safe href for `candidate`, or null when it is not an http(s) URL with a host. */
export function safeHref(candidate: string): string | null {
  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  if (url.hostname === "") return null;
  return url.href;
}

export function linkify(text: string): Run[] {
  const runs: Run[] = [];
  let at = 0;
  for (const m of text.matchAll(CANDIDATE)) {
    const start = m.index ?? 0;
    const raw = trimTrailing(m[0]);
    const href = safeHref(raw);
    if (href === null) continue;
    if (start > at) runs.push({ kind: "text", text: text.slice(at, start) });
    runs.push({ kind: "link", text: raw, href });
    at = start + raw.length;
  }
  if (at < text.length) runs.push({ kind: "text", text: text.slice(at) });
  return runs;
}
