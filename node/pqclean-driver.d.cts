/** Types of pqclean-driver.cjs (see there). */
export function keypair(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array };
export function encapsulateInto(
  publicKey: Uint8Array,
  msg: Uint8Array,
  out: Uint8Array,
  at: number,
): void;
export function decapsulate(ciphertext: Uint8Array, secretKey: Uint8Array): Uint8Array;
