import { runPrimitives } from "./primitives";
import { measure, table } from "./lib";
console.log(table("prims", await runPrimitives(measure)));
