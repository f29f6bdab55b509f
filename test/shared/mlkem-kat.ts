/**
 * ML-KEM-768 known answers through shared/crypto/mlkem.ts, as one function that returns what
 * disagreed, so the same check runs in Node and workerd (crypto-mlkem.test.ts) and inside Chromium
 * (test/node/crypto-chromium.test.ts, which bundles this file with shared/crypto).
 *
 * Files (test/vectors/SOURCES.md): Wycheproof mlkem_768 (KeyGen from seed + Decaps incl. implicit
 * rejection), mlkem_768_encaps (Encaps_internal, modulus-check refusals), mlkem_768_keygen_seed,
 * mlkem_768_semi_expanded_decaps (expanded dk, §7.3 hash check), and C2SP CCTV's "unlucky" sample.
 */
import {
  mlkemDecapsulate,
  mlkemDecapsulateSeed,
  mlkemEncapsulate,
  mlkemKeyPairFromSeed,
} from "../../shared/crypto";
import { fromHex, toHex } from "./crypto-util";

interface Group<T> {
  tests: T[];
}
export interface MlKemFiles {
  /** ek, c, K are absent or "" in invalid cases. */
  combined: {
    testGroups: Group<{
      tcId: number;
      seed?: string;
      ek?: string;
      c?: string;
      K?: string;
      result: string;
    }>[];
  };
  encaps: {
    testGroups: Group<{
      tcId: number;
      m?: string;
      ek?: string;
      c?: string;
      K?: string;
      result: string;
    }>[];
  };
  keygen: {
    testGroups: Group<{ tcId: number; seed?: string; ek?: string; dk?: string; result: string }>[];
  };
  decaps: {
    testGroups: Group<{ tcId: number; dk?: string; c?: string; K?: string; result: string }>[];
  };
  unlucky: {
    ipd: { ek?: string; dk?: string; m?: string; c?: string; K?: string };
    final: { d: string; z: string; ek?: string; dk?: string; m?: string; c?: string; K?: string };
  };
}

export interface KatReport {
  /** Cases checked per file: valid and invalid. */
  counts: Record<string, { valid: number; invalid: number }>;
  failures: string[];
}

/** Absent fields of invalid vectors read as "". */
const h = (x: string | undefined) => fromHex(x ?? "");

function errorName(f: () => unknown): string | null {
  try {
    f();
    return null;
  } catch (e) {
    return e instanceof Error ? e.name : String(e);
  }
}

export function runMlKemKats(files: MlKemFiles): KatReport {
  const counts: KatReport["counts"] = {};
  const failures: string[] = [];
  const count = (file: string, valid: boolean) => {
    const c = counts[file] ?? { valid: 0, invalid: 0 };
    counts[file] = c;
    if (valid) c.valid++;
    else c.invalid++;
  };
  const expectError = (file: string, tcId: number, f: () => unknown, names: string[]) => {
    const got = errorName(f);
    if (got === null || !names.includes(got))
      failures.push(`${file} ${tcId}: expected ${names}, got ${got}`);
  };

  for (const g of files.combined.testGroups)
    for (const t of g.tests) {
      const file = "mlkem_768";
      count(file, t.result === "valid");
      if (t.result === "valid") {
        const kp = mlkemKeyPairFromSeed(h(t.seed));
        if (toHex(kp.publicKey) !== t.ek) failures.push(`${file} ${t.tcId}: ek`);
        if (toHex(mlkemDecapsulate(h(t.c), kp.secretKey)) !== t.K)
          failures.push(`${file} ${t.tcId}: K (expanded)`);
        if (toHex(mlkemDecapsulateSeed(h(t.c), h(t.seed))) !== t.K)
          failures.push(`${file} ${t.tcId}: K (seed)`);
      } else {
        // Wrong seed or ciphertext length: refused with a typed error, never a secret.
        expectError(file, t.tcId, () => mlkemDecapsulateSeed(h(t.c), h(t.seed)), [
          "InvalidLengthError",
        ]);
      }
    }

  for (const g of files.encaps.testGroups)
    for (const t of g.tests) {
      const file = "mlkem_768_encaps";
      count(file, t.result === "valid");
      if (t.result === "valid") {
        const out = mlkemEncapsulate(h(t.ek), h(t.m));
        if (toHex(out.ciphertext) !== t.c) failures.push(`${file} ${t.tcId}: c`);
        if (toHex(out.sharedSecret) !== t.K) failures.push(`${file} ${t.tcId}: K`);
      } else {
        // Wrong length or a coefficient ≥ q (FIPS 203 §7.2): not a usable encapsulation key.
        expectError(file, t.tcId, () => mlkemEncapsulate(h(t.ek), h(t.m)), ["InvalidKeyError"]);
      }
    }

  for (const g of files.keygen.testGroups)
    for (const t of g.tests) {
      const file = "mlkem_768_keygen_seed";
      count(file, t.result === "valid");
      const kp = mlkemKeyPairFromSeed(h(t.seed));
      if (t.result !== "valid" || toHex(kp.publicKey) !== t.ek || toHex(kp.secretKey) !== t.dk)
        failures.push(`${file} ${t.tcId}`);
    }

  for (const g of files.decaps.testGroups)
    for (const t of g.tests) {
      const file = "mlkem_768_semi_expanded_decaps";
      count(file, t.result === "valid");
      if (t.result === "valid") {
        if (toHex(mlkemDecapsulate(h(t.c), h(t.dk))) !== t.K) failures.push(`${file} ${t.tcId}: K`);
      } else {
        expectError(file, t.tcId, () => mlkemDecapsulate(h(t.c), h(t.dk)), [
          "InvalidLengthError",
          "InvalidKeyError",
        ]);
      }
    }

  // CCTV "unlucky" sample: ρ makes SampleNTT read past the usual 3 × 168 bytes of SHAKE-128.
  const u = files.unlucky.final;
  count("cctv_unlucky_final", true);
  const kp = mlkemKeyPairFromSeed(h((u.d ?? "") + (u.z ?? "")));
  if (toHex(kp.publicKey) !== u.ek || toHex(kp.secretKey) !== u.dk)
    failures.push("cctv_unlucky_final: keygen");
  const enc = mlkemEncapsulate(h(u.ek), h(u.m));
  if (toHex(enc.ciphertext) !== u.c || toHex(enc.sharedSecret) !== u.K)
    failures.push("cctv_unlucky_final: encaps");
  if (toHex(mlkemDecapsulate(h(u.c), h(u.dk))) !== u.K) failures.push("cctv_unlucky_final: decaps");
  // The original (FIPS 203 ipd) sample: only its Encaps/Decaps part holds under final FIPS 203.
  const i = files.unlucky.ipd;
  count("cctv_unlucky_ipd", true);
  const enc2 = mlkemEncapsulate(h(i.ek), h(i.m));
  if (toHex(enc2.ciphertext) !== i.c || toHex(enc2.sharedSecret) !== i.K)
    failures.push("cctv_unlucky_ipd: encaps");
  if (toHex(mlkemDecapsulate(h(i.c), h(i.dk))) !== i.K) failures.push("cctv_unlucky_ipd: decaps");
  return { counts, failures };
}
