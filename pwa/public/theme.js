// Applies the theme chosen in Settings before the first paint (pwa/src/platform/theme.ts writes
// it). A classic script loaded from <head>: the CSP allows no inline script, and a module would
// run only after the page was painted.
(() => {
  try {
    const t = localStorage.getItem("parley-theme");
    if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
  } catch {
    // Storage refused: follow the system theme.
  }
})();
