/** The app controller provided to every component through context (one store per domain + actions). */
import { createContext, useContext } from "solid-js";
import type { Parley } from "./controller";

export const ParleyContext = createContext<Parley>();

export function useParley(): Parley {
  const p = useContext(ParleyContext);
  if (!p) throw new Error("useParley outside <ParleyContext.Provider>");
  return p;
}
