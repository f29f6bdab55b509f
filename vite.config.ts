/**
 * Builds the Solid PWA into dist/pwa, which the Worker serves as static assets (wrangler.toml).
 * vite-plugin-pwa generates the service worker (precached app shell, offline navigation fallback)
 * and the web manifest; the page registers the worker from its own module — no inline script, as
 * the Worker's CSP is `script-src 'self'`.
 */
import { defineConfig } from "vite";
import { VitePWA } from "vite-plugin-pwa";
import solid from "vite-plugin-solid";

export default defineConfig({
  root: "pwa",
  plugins: [
    solid(),
    VitePWA({
      // "prompt": a new worker waits until the user accepts the "new version — reload" toast,
      // so an open conversation is never reloaded under the user's fingers.
      registerType: "prompt",
      injectRegister: null,
      strategies: "generateSW",
      includeAssets: ["icons/favicon-32.png", "icons/apple-touch-icon.png"],
      manifest: {
        id: "/",
        name: "Parley — end-to-end encrypted chat",
        short_name: "Parley",
        description: "Chat through a relay that cannot read your messages.",
        start_url: "/",
        scope: "/",
        display: "standalone",
        orientation: "any",
        background_color: "#0f1020",
        theme_color: "#4f46e5",
        categories: ["social", "communication"],
        icons: [
          { src: "icons/icon-192.png", sizes: "192x192", type: "image/png", purpose: "any" },
          { src: "icons/icon-512.png", sizes: "512x512", type: "image/png", purpose: "any" },
          {
            src: "icons/maskable-512.png",
            sizes: "512x512",
            type: "image/png",
            purpose: "maskable",
          },
        ],
      },
      workbox: {
        globPatterns: ["**/*.{js,css,html,png,svg,webmanifest}"],
        navigateFallback: "index.html",
        // The relay endpoints are never served from cache, and a file that is not there
        // (robots.txt, a stale /assets/ name) is the network's 404, not the app (worker/http.ts).
        navigateFallbackDenylist: [/^\/ws/, /^\/health/, /^\/assets\//, /\/[^/]+\.[A-Za-z0-9]+$/],
        cleanupOutdatedCaches: true,
        // The first worker takes control of the open page at once (so the app works offline
        // from the first visit); later versions still wait for the user's "reload" (prompt).
        clientsClaim: true,
      },
    }),
  ],
  build: { outDir: "../dist/pwa", emptyOutDir: true, target: "es2022" },
});
