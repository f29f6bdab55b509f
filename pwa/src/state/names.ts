/**
 * Name rules as the user meets them: usernames and group names are `Name` on the wire
 * (shared/protocol.ts: NAME_RE, 1–LIMITS.maxNameLength characters). Instead of the browser's
 * generic "match the requested format", say exactly what is wrong and offer a valid spelling.
 */
import { LIMITS, NAME_RE } from "../../../shared/protocol";

export const MAX_NAME = LIMITS.maxNameLength;

export const NAME_RULE = `Use 1–${MAX_NAME} lower-case letters, digits, “-” or “_”, starting with a letter or digit.`;

/**
 * Why `raw` is not a valid name (one sentence naming every problem), or null when it is. The
 * rule itself (NAME_RULE) is not repeated: the caller shows it where it is not already on screen.
 */
export function nameProblem(raw: string): string | null {
  if (raw.length === 0) return "Type a name.";
  if (raw.length <= MAX_NAME && NAME_RE.test(raw)) return null;
  const problems: string[] = [];
  if (/\s/.test(raw)) problems.push("no spaces");
  if (/[A-Z]/.test(raw)) problems.push("only lower-case letters");
  // Characters outside the allowed set, each named once (spaces and capitals are said above).
  const odd = [...new Set([...raw].filter((c) => !/[a-zA-Z0-9_\-\s]/.test(c)))];
  if (odd.length > 0) {
    const shown = odd.slice(0, 3).map((c) => `“${c}”`);
    problems.push(`${shown.join(" ")}${odd.length > 3 ? " and others" : ""} not allowed`);
  }
  if (/^[-_]/.test(raw.trimStart())) problems.push("start with a letter or digit");
  if (raw.length > MAX_NAME)
    problems.push(`at most ${MAX_NAME} characters (this is ${raw.length})`);
  const list = problems.length > 0 ? problems.join(", ") : "not a valid name";
  return `${list.charAt(0).toUpperCase()}${list.slice(1)}.`;
}

/**
 * A valid name close to what was typed ("Alice Smith" → "alice-smith", "José" → "jose"), or null
 * when nothing usable is left. Never returns `raw` itself unless it is already valid.
 */
export function suggestName(raw: string): string | null {
  const s = raw
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "") // combining marks: "é" → "e"
    .toLowerCase()
    .replace(/[\s.·,;:/\\+&'’"]+/g, "-")
    .replace(/[^a-z0-9_-]/g, "")
    .replace(/-{2,}/g, "-")
    .replace(/^[-_]+/, "")
    .slice(0, MAX_NAME)
    .replace(/-+$/, "");
  return s.length > 0 && NAME_RE.test(s) ? s : null;
}
