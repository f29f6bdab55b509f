import { runGroups } from "./groups";
import { table } from "./lib";
const r = await runGroups((s) => console.error(s));
console.log(table("groups", r.rows));
