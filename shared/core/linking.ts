/**
 * Linking a new device to an identity (PROTOCOL.md §4.8): the link code, the new device's offer,
 * the existing device's sealed answer, and the checks each side makes. Byte-in/byte-out and
 * pure apart from randomness; the relay only carries the offer and the answer (§4.8.3), and
 * learns nothing it could use: the code's secret half never leaves the two devices.
 *
 * The code is 20 Crockford base32 characters (100 bits): 8 name a rendezvous at the relay (public),
 * 12 are a 60-bit secret. Both MACs are keyed from the secret, so a relay that substitutes the
 * offer (its own link key, to read the transfer) or the answer (its own identity, to capture the
 * new device) is refused unless it finds the secret; its only handle is the offer's MAC, an
 * offline search of 2^60 HMACs that must finish within the offer's lifetime (LIMITS.linkTtlSec).
 */
import * as v from "valibot";
import {
  constantTimeEqual,
  ed25519KeyPairFromSeed,
  hkdfSha256,
  hmacSha256,
  hpkeOpenXWing,
  hpkeSealXWing,
  randomBytes,
  sha256,
  xwingGenerateKeyPair,
} from "../crypto";
import { fromB64u, lp, toB64u, utf8 } from "../encoding";
import {
  b64Bytes,
  DEVICE_ID_BYTES,
  type DeviceEntry,
  DeviceList,
  LIMITS,
  LINK_RENDEZVOUS_CHARS,
  LINK_SECRET_CHARS,
  type LinkAnswer,
  type LinkOffer,
  Name,
  PublicKey,
} from "../protocol";
import { FileRef } from "./content";
import { deviceListVerifies, nextDeviceList, type UnsignedDeviceList } from "./devices";

/** Crockford's base32 alphabet (no I, L, O, U): what a person can read aloud and type. */
export const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

export const LINK_KEYS_LABEL = "parley/v1/link";
export const LINK_OFFER_LABEL = "parley/v1/link-offer";
export const LINK_ANSWER_LABEL = "parley/v1/link-answer";
export const LINK_TRANSFER_LABEL = "parley/v1/link-transfer";

/** A link code: `rendezvous` goes to the relay, `secret` only between the two devices. */
export interface LinkCode {
  rendezvous: string;
  secret: string;
}

export type LinkErrorCode =
  /** The text is not a link code (length, characters). */
  | "bad_code"
  /** The offer or answer was not made with this code: another code, or altered on the way. */
  | "code_mismatch"
  /** The answer's transfer cannot be opened or parsed. */
  | "malformed"
  /** The transfer does not make this device a device of the identity it carries. */
  | "not_listed"
  /** No device waits under that code at the relay (expired, already linked, or mistyped). */
  | "unknown_link"
  /** The device to remove is not on our list, or is this device itself. */
  | "unknown_device"
  /** The offered device id is already on our list (an old offer shown again). */
  | "already_linked"
  /** The list already names LIMITS.maxDevicesPerUser devices. */
  | "too_many_devices";

export class LinkError extends Error {
  constructor(
    readonly code: LinkErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "LinkError";
  }
}

/** A fresh code: 100 random bits as 20 Crockford characters. */
export function newLinkCode(): LinkCode {
  const bytes = randomBytes(13);
  let text = "";
  // 20 characters of 5 bits each, from the first 100 bits.
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5 && text.length < LINK_RENDEZVOUS_CHARS + LINK_SECRET_CHARS) {
      bits -= 5;
      text += CROCKFORD[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  return {
    rendezvous: text.slice(0, LINK_RENDEZVOUS_CHARS),
    secret: text.slice(LINK_RENDEZVOUS_CHARS),
  };
}

/** As shown and typed: five groups of four, e.g. `7K3D-9QXA-M2PW-T4HC-0B8N`. */
export function formatLinkCode(c: LinkCode): string {
  const all = c.rendezvous + c.secret;
  return all.match(/.{4}/g)?.join("-") ?? all;
}

/**
 * Read a typed or scanned code: case, spaces and dashes are ignored, and the letters people
 * confuse with digits are read as Crockford says (I and L as 1, O as 0). LinkError `bad_code`.
 */
export function parseLinkCode(text: string): LinkCode {
  const t = text.toUpperCase().replace(/[\s-]/g, "").replace(/[IL]/g, "1").replace(/O/g, "0");
  if (
    t.length !== LINK_RENDEZVOUS_CHARS + LINK_SECRET_CHARS ||
    ![...t].every((ch) => CROCKFORD.includes(ch))
  ) {
    throw new LinkError("bad_code", "That is not a link code: it has 20 letters and digits.");
  }
  return { rendezvous: t.slice(0, LINK_RENDEZVOUS_CHARS), secret: t.slice(LINK_RENDEZVOUS_CHARS) };
}

/** kOffer || kAnswer = HKDF-SHA256(ikm = ASCII secret, salt = none, info = lp(label, hub, rendezvous), 64). */
export function linkKeys(hub: string, code: LinkCode): { offer: Uint8Array; answer: Uint8Array } {
  const okm = hkdfSha256(
    utf8(code.secret),
    new Uint8Array(0),
    lp(LINK_KEYS_LABEL, hub, code.rendezvous),
    64,
  );
  return { offer: okm.slice(0, 32), answer: okm.slice(32) };
}

/** lp("parley/v1/link-offer", hub, rendezvous, device, deviceKey, linkKey, UTF-8 name). */
export function linkOfferTranscript(
  hub: string,
  rendezvous: string,
  o: Omit<LinkOffer, "mac">,
): Uint8Array {
  return lp(
    LINK_OFFER_LABEL,
    hub,
    rendezvous,
    fromB64u(o.device),
    fromB64u(o.deviceKey),
    fromB64u(o.linkKey),
    o.name,
  );
}

/** What the new device keeps while it waits for the answer (never sent anywhere). */
export interface PendingLink {
  hub: string;
  code: LinkCode;
  offer: LinkOffer;
  /** The device's Ed25519 signing key seed (its DeviceEntry.key is the public half). */
  deviceSeed: Uint8Array;
  /** X-Wing seed of the link key: opens the one answer, then forgotten. */
  linkSeed: Uint8Array;
}

/** The new device: a code, its own device keys and a one-time link key, and the MAC'd offer. */
export async function createLinkOffer(hub: string, name: string): Promise<PendingLink> {
  const code = newLinkCode();
  const deviceSeed = randomBytes(32);
  const device = await ed25519KeyPairFromSeed(deviceSeed);
  const link = await xwingGenerateKeyPair();
  const body = {
    device: toB64u(randomBytes(DEVICE_ID_BYTES)),
    deviceKey: toB64u(device.publicKey),
    linkKey: toB64u(link.publicKey),
    name,
  };
  const mac = hmacSha256(
    linkKeys(hub, code).offer,
    linkOfferTranscript(hub, code.rendezvous, body),
  );
  return { hub, code, offer: { ...body, mac: toB64u(mac) }, deviceSeed, linkSeed: link.secretKey };
}

/** The existing device: was this offer made by the device showing `code`? LinkError `code_mismatch`. */
export function checkLinkOffer(hub: string, code: LinkCode, offer: LinkOffer): void {
  const want = hmacSha256(
    linkKeys(hub, code).offer,
    linkOfferTranscript(hub, code.rendezvous, offer),
  );
  if (!constantTimeEqual(want, fromB64u(offer.mac))) {
    throw new LinkError(
      "code_mismatch",
      "This code does not match the device asking to be linked. Check the code and try again.",
    );
  }
}

/** The device entry the offer asks for, as the existing device adds it to the list (§4.6). */
export function offeredDevice(offer: LinkOffer, addedAt: number): DeviceEntry {
  return { id: offer.device, key: offer.deviceKey, name: offer.name, addedAt };
}

/**
 * What the existing device hands over (end to end; the relay sees only its ciphertext): the
 * identity (its seed, PROTOCOL §4.6 key custody), the list that names the new device, the
 * contacts it pinned and, if the person chose to bring messages over, the reference of the
 * encrypted history archive (§4.8.5): a blob like an attachment's, whose key and digest travel
 * only here, so the relay holding the blob can neither read nor alter it unnoticed.
 */
export const LinkTransfer = v.strictObject({
  v: v.literal(1),
  username: Name,
  identitySeed: b64Bytes(32),
  devices: DeviceList,
  contacts: v.pipe(
    v.array(
      v.strictObject({
        username: Name,
        identityKey: PublicKey,
        verified: v.boolean(),
        /** The conversation's contact decision (§8.11), so the new device treats them alike. */
        decision: v.optional(v.picklist(["accepted", "request", "blocked"])),
      }),
    ),
    v.maxLength(LIMITS.maxLinkContacts),
  ),
  history: v.optional(FileRef),
  /**
   * The groups the existing device is a member of (§4.7): the new device joins each as its own
   * member; members let another device of a member in without an invitation (§9.7.2).
   */
  groups: v.optional(v.pipe(v.array(Name), v.maxLength(LIMITS.maxGroupsPerUser))),
});
export type LinkTransfer = v.InferOutput<typeof LinkTransfer>;

function transferInfo(hub: string, rendezvous: string, offer: LinkOffer): Uint8Array {
  return lp(
    LINK_TRANSFER_LABEL,
    hub,
    rendezvous,
    sha256(linkOfferTranscript(hub, rendezvous, offer)),
  );
}

function answerTranscript(
  hub: string,
  rendezvous: string,
  enc: string,
  ciphertext: string,
): Uint8Array {
  return lp(LINK_ANSWER_LABEL, hub, rendezvous, fromB64u(enc), fromB64u(ciphertext));
}

/**
 * The existing device, after checkLinkOffer and the user's yes: the transfer sealed to the
 * offer's link key (HPKE, X-Wing, §3.13) and MAC'd with the code.
 */
export async function sealLinkAnswer(
  hub: string,
  code: LinkCode,
  offer: LinkOffer,
  transfer: LinkTransfer,
): Promise<LinkAnswer> {
  const plain = utf8(JSON.stringify(transfer));
  const sealed = await hpkeSealXWing(
    fromB64u(offer.linkKey),
    plain,
    transferInfo(hub, code.rendezvous, offer),
    new Uint8Array(0),
  );
  const enc = toB64u(sealed.enc);
  const ciphertext = toB64u(sealed.ciphertext);
  const mac = hmacSha256(
    linkKeys(hub, code).answer,
    answerTranscript(hub, code.rendezvous, enc, ciphertext),
  );
  return { enc, ciphertext, mac: toB64u(mac) };
}

/**
 * The new device: the answer's MAC (made with the code: from the device that scanned it), then the
 * transfer, then that the transfer's list is signed by the identity it carries and names this
 * device with this device's key. LinkError on any failure; nothing is kept from a refused answer.
 */
export async function openLinkAnswer(
  pending: PendingLink,
  answer: LinkAnswer,
): Promise<LinkTransfer> {
  const { hub, code, offer } = pending;
  const want = hmacSha256(
    linkKeys(hub, code).answer,
    answerTranscript(hub, code.rendezvous, answer.enc, answer.ciphertext),
  );
  if (!constantTimeEqual(want, fromB64u(answer.mac))) {
    throw new LinkError(
      "code_mismatch",
      "The answer did not come from the device that scanned this code.",
    );
  }
  let transfer: LinkTransfer;
  try {
    const plain = await hpkeOpenXWing(
      pending.linkSeed,
      fromB64u(answer.enc),
      fromB64u(answer.ciphertext),
      transferInfo(hub, code.rendezvous, offer),
      new Uint8Array(0),
    );
    transfer = v.parse(
      LinkTransfer,
      JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain)),
    );
  } catch {
    throw new LinkError("malformed", "The linked device's transfer could not be read.");
  }
  const identity = await ed25519KeyPairFromSeed(fromB64u(transfer.identitySeed));
  const listed = transfer.devices.devices.find((d) => d.id === offer.device);
  if (
    toB64u(identity.publicKey) !== transfer.devices.identityKey ||
    listed === undefined ||
    listed.key !== offer.deviceKey ||
    !(await deviceListVerifies(transfer.devices))
  ) {
    throw new LinkError("not_listed", "The transfer does not add this device to the account.");
  }
  return transfer;
}

/**
 * The list the existing device signs to link `added` (§4.8.3): the next version of our accepted
 * list, or — for an identity that has none yet — version 1 naming this device (`self`) too, so
 * the relay keeps this device as the current one and admits the new one as linked (§4.7).
 */
export function listLinking(
  current: DeviceList | null,
  identityKey: string,
  self: DeviceEntry,
  added: DeviceEntry,
): UnsignedDeviceList {
  const base: DeviceList | null = current?.identityKey === identityKey ? current : null;
  const listed = base?.devices ?? [];
  if (listed.some((d) => d.id === added.id) || added.id === self.id)
    throw new LinkError("already_linked", "That device is already linked to this account.");
  const add = listed.some((d) => d.id === self.id) ? [added] : [self, added];
  if (listed.length + add.length > LIMITS.maxDevicesPerUser)
    throw new LinkError(
      "too_many_devices",
      `An account can have at most ${LIMITS.maxDevicesPerUser} devices: remove one first.`,
    );
  if (base === null)
    return nextDeviceList({ identityKey, version: 0, devices: [], removed: [], sig: "" }, { add });
  return nextDeviceList(base, { add });
}

/**
 * The list that removes device `id` (§4.7 "Removal"): the next version without it, its id in
 * `removed`. This device cannot remove itself this way (another device of ours does).
 */
export function listRemoving(
  current: DeviceList | null,
  id: string,
  selfId: string,
): UnsignedDeviceList {
  if (current === null || id === selfId || !current.devices.some((d) => d.id === id))
    throw new LinkError(
      "unknown_device",
      "That device is not one of this account's other devices.",
    );
  return nextDeviceList(current, { remove: [id] });
}
