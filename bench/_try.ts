import { runCrypto } from "./crypto";
import { table } from "./lib";
const r = await runCrypto((s) => console.error(s));
console.log(table("1:1", r.rows));
