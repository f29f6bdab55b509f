import { runCrypto } from "./crypto";
process.env.BENCH_ONLY = process.argv[2] ?? "";
const r = await runCrypto();
console.log(JSON.stringify(r.pairs));
