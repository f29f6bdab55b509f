/**
 * Browser entry for the primitive table (bundled as an IIFE by bench/build.mjs and loaded into
 * headless Chromium by bench/chromium.ts): exposes `runParleyPrimitives()` on the page.
 */
import { runPrimitives } from "./primitives";

(globalThis as unknown as { runParleyPrimitives: typeof runPrimitives }).runParleyPrimitives =
  runPrimitives;
