/**
 * Builds the Solid PWA into dist/pwa, which the Worker serves as static assets (wrangler.toml).
 * vite-plugin-pwa builds the service worker from pwa/src/sw.ts (injectManifest: precached app shell,
 * offline navigation fallback, Web Push notifications) and the web manifest; the page registers the
 * worker from its own module — no inline script, as the Worker's CSP is `script-src 'self'`.
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
      // Our own worker source (pwa/src/sw.ts): the precache and navigation fallback as before,
      // plus the `push` and `notificationclick` handlers (PROTOCOL.md §12.7).
      strategies: "injectManifest",
      srcDir: "src",
      filename: "sw.ts",
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
      injectManifest: {
        globPatterns: ["**/*.{js,css,html,png,svg,webmanifest}"],
        // One classic script: the worker is registered without `type: "module"`.
        rollupFormat: "iife",
        // The worker runs the protocol engine (platform/push-receive.ts); allow its size.
        maximumFileSizeToCacheInBytes: 4 * 1024 * 1024,
      },
    }),
  ],
  build: { outDir: "../dist/pwa", emptyOutDir: true, target: "es2022" },
});
