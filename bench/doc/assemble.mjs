// Writes docs/PERFORMANCE.md from bench/doc/_performance-head.md (commands, method), the last full run
// (bench/results/last-run.md, Targets table first) and bench/doc/analysis.md (soak, limits).
// Run after `npm run bench`:  node bench/doc/assemble.mjs
import { readFileSync, writeFileSync } from "node:fs";

const head = readFileSync("bench/doc/_performance-head.md", "utf8").trimEnd();
const analysis = readFileSync("bench/doc/analysis.md", "utf8").trim();
const run = readFileSync("bench/results/last-run.md", "utf8").split("\n");
const title = (run[0] ?? "").replace(/^#\s*Parley benchmark run — /, "");
let body = run.slice(1).join("\n").trim();
const m = /### Targets\n\n(\|.*?\n)\n/s.exec(body);
const targets = m ? m[0] : "";
if (m) body = body.replace(targets, "");
const out = [
  head,
  "",
  "## Last full run",
  "",
  `\`npm run bench\`, ${title}. Plots written by that run: [group commit cost vs size](../bench/results/groups.svg), [relay latency vs load](../bench/results/relay.svg); raw figures in \`bench/results/last-run.json\`.`,
  "",
  targets.replace(
    "### Targets",
    "### Targets (every figure a ratio against a baseline measured in the same run, except the absolute commit target)",
  ),
  body.trim(),
  "",
  analysis,
  "",
].join("\n");
writeFileSync("docs/PERFORMANCE.md", out);
