// Applies the theme before the first paint: the one chosen in Settings
// (pwa/src/platform/theme.ts writes it), else the system's, followed while the page is open.
// `data-theme` on <html> is always "light" or "dark", so styles.css holds each palette once.
// A classic script loaded from <head>: the CSP allows no inline script, and a module would
// run only after the page was painted.
(() => {
  const media = window.matchMedia("(prefers-color-scheme: dark)");
  const apply = () => {
    let t = null;
    try {
      t = localStorage.getItem("parley-theme");
    } catch {
      // Storage refused: follow the system theme.
    }
    if (t !== "light" && t !== "dark") t = media.matches ? "dark" : "light";
    document.documentElement.dataset.theme = t;
  };
  apply();
  media.addEventListener("change", apply);
})();
