/**
 * The colour theme the user picked in Settings: follow the system, or always light or dark.
 * Kept in localStorage (a display preference, nothing private) so that pwa/public/theme.js can
 * apply it synchronously from <head>, before the first paint: no flash of the other theme.
 * The styles read `data-theme` on <html>, always "light" or "dark": for "system" it is the
 * system's current choice, which theme.js also follows when it changes.
 */
export type ThemeChoice = "system" | "light" | "dark";

export const THEME_CHOICES: readonly ThemeChoice[] = ["system", "light", "dark"];

/** Also spelled out in pwa/public/theme.js, which cannot import modules. */
export const THEME_KEY = "parley-theme";

/** What is stored, parsed: anything unknown (or storage refused) means "system". */
export function parseTheme(raw: string | null | undefined): ThemeChoice {
  return raw === "light" || raw === "dark" ? raw : "system";
}

export function readTheme(): ThemeChoice {
  try {
    return parseTheme(localStorage.getItem(THEME_KEY));
  } catch {
    return "system";
  }
}

export function applyTheme(choice: ThemeChoice): void {
  const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = choice === "system" ? (dark ? "dark" : "light") : choice;
  try {
    if (choice === "system") localStorage.removeItem(THEME_KEY);
    else localStorage.setItem(THEME_KEY, choice);
  } catch {
    // Storage refused (private mode): the choice still holds for this page.
  }
}
