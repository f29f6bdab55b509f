import * as N from "../shared/encoding";
import * as O from "/tmp/eb/encoding.orig";
const rnd = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. é";
let bad = 0;
for (let k = 0; k < 200000; k++) {
  const n = k % 3000 === 0 ? 60001 : Math.floor(Math.random() * 70);
  const b = rnd(n);
  if (N.toB64u(b) !== O.toB64u(b)) bad++;
  const len = Math.floor(Math.random() * 12);
  let s = "";
  for (let i = 0; i < len; i++) s += A[Math.floor(Math.random() * (Math.random() < 0.9 ? 64 : A.length))];
  const r = (f: (s: string) => Uint8Array) => { try { return O.toB64u(f(s)); } catch (e) { return `E:${(e as Error).name}:${(e as Error).message}`; } };
  if (r(N.fromB64u) !== r(O.fromB64u)) { bad++; if (bad < 5) console.log(JSON.stringify(s), r(N.fromB64u), r(O.fromB64u)); }
  const enc = O.toB64u(b);
  if (O.toB64u(N.fromB64u(enc)) !== enc) bad++;
}
console.log("mismatches", bad);
