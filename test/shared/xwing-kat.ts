/**
 * X-Wing known answers through shared/crypto/xwing.ts and HPKE with the X-Wing KEM
 * (hpke-xwing.ts), as one function that returns what disagreed, so the same check runs in Node
 * and workerd (crypto-xwing.test.ts) and inside Chromium (test/node/crypto-chromium.test.ts).
 *
 * File (test/vectors/SOURCES.md): the draft's 3 vectors {seed, eseed, ss, sk, pk, ct}:
 * GenerateKeyPairDerand(sk) → pk, EncapsulateDerand(pk, eseed) → (ct, ss), Decapsulate(ct, sk) = ss.
 */
import {
  hpkeOpenXWing,
  hpkeSealXWing,
  xwingDecapsulate,
  xwingEncapsulate,
  xwingPublicKey,
} from "../../shared/crypto";
import { fromHex, toHex } from "./crypto-util";

export interface XWingVector {
  seed: string;
  eseed: string;
  ss: string;
  sk: string;
  pk: string;
  ct: string;
}

export async function runXWingKats(
  vectors: readonly XWingVector[],
): Promise<{ failures: string[]; count: number }> {
  const failures: string[] = [];
  let count = 0;
  for (const [i, t] of vectors.entries()) {
    count++;
    const sk = fromHex(t.sk);
    const pk = await xwingPublicKey(sk);
    if (toHex(pk) !== t.pk) failures.push(`${i}: pk`);
    const e = await xwingEncapsulate(pk, fromHex(t.eseed));
    if (toHex(e.ciphertext) !== t.ct) failures.push(`${i}: ct`);
    if (toHex(e.sharedSecret) !== t.ss) failures.push(`${i}: encaps ss`);
    if (toHex(await xwingDecapsulate(fromHex(t.ct), sk)) !== t.ss) failures.push(`${i}: decaps ss`);
    // HPKE over the vector's key: EncapsulateDerand's enc is the vector's ct, and the recipient
    // opens what was sealed; a flipped bit in either half of enc fails to open.
    const info = new TextEncoder().encode(`xwing-kat-${i}`);
    const aad = new Uint8Array([i]);
    const pt = new Uint8Array(32).fill(i + 1);
    const sealed = await hpkeSealXWing(pk, pt, info, aad, fromHex(t.eseed));
    if (toHex(sealed.enc) !== t.ct) failures.push(`${i}: hpke enc`);
    const opened = await hpkeOpenXWing(sk, sealed.enc, sealed.ciphertext, info, aad);
    if (toHex(opened) !== toHex(pt)) failures.push(`${i}: hpke open`);
    for (const at of [0, 1087, 1088, 1119]) {
      const bad = sealed.enc.slice();
      bad[at] = (bad[at] as number) ^ 1;
      const ok = await hpkeOpenXWing(sk, bad, sealed.ciphertext, info, aad).then(
        () => true,
        () => false,
      );
      if (ok) failures.push(`${i}: hpke opened with enc bit ${at} flipped`);
    }
  }
  return { failures, count };
}
