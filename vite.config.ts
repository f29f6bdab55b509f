import { defineConfig } from "vite";
import solid from "vite-plugin-solid";

export default defineConfig({
  root: "pwa",
  plugins: [solid()],
  build: { outDir: "../dist/pwa", emptyOutDir: true, target: "es2022" },
});
