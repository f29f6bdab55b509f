/**
 * The new device's side of linking (PROTOCOL.md §4.8): it has no identity yet, so this runs
 * outside a ParleyClient, on a socket that has not authenticated. `NewDeviceLink` makes the code
 * and its keys, sends `link_offer` after the relay's `hello`, waits for `link_answered`, and
 * checks each answer with `openLinkAnswer`; a refused answer is reported and forgotten (the offer
 * stays, so the honest answer can still come, §4.8.3). On success it hands over what the caller
 * needs to make the store (`initLinkedStore`) and the ParleyClient, which then authenticates:
 * on the hub's route on the same socket with the `hello` kept here (its challenge still stands),
 * on a rendezvous's route (`&link=`) on a new socket to its user's route (§4.1).
 */
import { ed25519KeyPairFromSeed, randomBytes } from "../crypto";
import { fromB64u, toB64u } from "../encoding";
import {
  type ClientFrame,
  type DeviceList,
  type FrameOf,
  PROTOCOL_VERSION,
  type ServerFrame,
} from "../protocol";
import type { ClientStore } from "./client-api";
import type { FileRef } from "./content";
import { applyDeviceList, deviceListVerifies } from "./devices";
import { emptyDm } from "./dm-record";
import {
  createLinkOffer,
  formatLinkCode,
  LinkError,
  type LinkErrorCode,
  openLinkAnswer,
  type PendingLink,
} from "./linking";
import { KEYS } from "./store";

/** What a linked device starts from: its identity, its own device, and what it trusts. */
export interface LinkedIdentity {
  username: string;
  /** The identity's Ed25519 seed (the caller seals it in its profile and wipes this copy). */
  identitySeed: Uint8Array;
  /** This device: its id and its device signing key's seed (base64url). */
  device: { id: string; seed: string };
  /** The signed list naming this device (§4.6), pinned as our own. */
  devices: DeviceList;
  /**
   * The linking device's pinned contacts, pinned here too (verified ones stay verified, §8.7),
   * with the conversation's contact decision when it has one (§8.11).
   */
  contacts: Array<{
    username: string;
    identityKey: string;
    verified: boolean;
    decision?: "accepted" | "request" | "blocked";
  }>;
  /** The relay's hello on the waiting socket: the client authenticates with its challenge. */
  hello: FrameOf<ServerFrame, "hello">;
  /** The encrypted history archive the other device uploaded, if the person chose one (§4.8.5). */
  history?: FileRef;
  /** The linking device's groups, which this device joins as its own member (§4.7). */
  groups?: string[];
}

export type LinkProgress =
  /** Nothing yet (before hello, or a frame that is not for us). */
  | { t: "waiting" }
  /** The relay holds our offer: show the code and wait. */
  | { t: "offered" }
  /** An answer came and was refused (nothing kept); still waiting for the right one. */
  | { t: "refused"; code: LinkErrorCode }
  /** The relay refused the offer (e.g. `link_taken`): make a new code. */
  | { t: "failed"; code: string }
  | { t: "linked"; linked: LinkedIdentity };

export class NewDeviceLink {
  private hello: FrameOf<ServerFrame, "hello"> | null = null;
  private done = false;
  private readonly offerId = `link-${toB64u(randomBytes(9))}`;

  private constructor(
    private readonly pending: PendingLink,
    private readonly send: (f: ClientFrame) => void,
  ) {}

  /** A fresh code and keys for `hub`; the device calls itself `name` (§4.6). */
  static async start(
    hub: string,
    name: string,
    send: (f: ClientFrame) => void,
  ): Promise<NewDeviceLink> {
    return new NewDeviceLink(await createLinkOffer(hub, name), send);
  }

  /** The code's rendezvous: the route the device waits on (`/ws?hub=h&link=`, §4.8.3). */
  get rendezvous(): string {
    return this.pending.code.rendezvous;
  }

  /** The code to show, in groups of four (and as a QR code of the same text). */
  get code(): string {
    return formatLinkCode(this.pending.code);
  }

  /** Feed one relay frame of the waiting socket. */
  async onServerFrame(f: ServerFrame): Promise<LinkProgress> {
    if (this.done) return { t: "waiting" };
    switch (f.t) {
      case "hello":
        if (f.hub !== this.pending.hub) return { t: "failed", code: "wrong_hub" };
        this.hello = f;
        this.send({
          v: PROTOCOL_VERSION,
          t: "link_offer",
          id: this.offerId,
          rendezvous: this.pending.code.rendezvous,
          offer: this.pending.offer,
        });
        return { t: "waiting" };
      case "accepted":
        return f.id === this.offerId ? { t: "offered" } : { t: "waiting" };
      case "error":
        return f.id === this.offerId ? { t: "failed", code: f.code } : { t: "waiting" };
      case "link_answered":
        return this.onAnswer(f);
      default:
        return { t: "waiting" };
    }
  }

  private async onAnswer(f: FrameOf<ServerFrame, "link_answered">): Promise<LinkProgress> {
    if (this.hello === null || f.rendezvous !== this.pending.code.rendezvous)
      return { t: "refused", code: "code_mismatch" };
    let linked: LinkedIdentity;
    try {
      const transfer = await openLinkAnswer(this.pending, f.answer);
      linked = {
        username: transfer.username,
        identitySeed: fromB64u(transfer.identitySeed),
        device: { id: this.pending.offer.device, seed: toB64u(this.pending.deviceSeed) },
        devices: transfer.devices,
        contacts: transfer.contacts,
        hello: this.hello,
        ...(transfer.history !== undefined ? { history: transfer.history } : {}),
        ...(transfer.groups !== undefined ? { groups: transfer.groups } : {}),
      };
    } catch (e) {
      if (e instanceof LinkError) return { t: "refused", code: e.code };
      throw e;
    }
    // One answer links; the link key opens nothing more.
    this.done = true;
    this.pending.linkSeed.fill(0);
    return { t: "linked", linked };
  }

  /** Give up (the socket closes): the keys of this offer are wiped. */
  cancel(): void {
    this.done = true;
    this.pending.linkSeed.fill(0);
    this.pending.deviceSeed.fill(0);
  }
}

/**
 * Make a linked device's store (PROTOCOL.md §10.1 layout) from what the transfer gave: this
 * device (never claiming the identity: the list admits it as a linked device, §4.7), our own
 * list pinned, and the contacts pinned. Written in one batch into an empty store; the caller then
 * creates the ParleyClient over it.
 */
export async function initLinkedStore(
  store: ClientStore,
  linked: LinkedIdentity,
  now: number,
): Promise<void> {
  if ((await store.get(KEYS.device)) !== undefined)
    throw new LinkError("malformed", "this store already belongs to a device");
  const identityKey = toB64u((await ed25519KeyPairFromSeed(linked.identitySeed)).publicKey);
  const pin = applyDeviceList({
    identityKey,
    pinned: null,
    list: linked.devices,
    verified: await deviceListVerifies(linked.devices),
  });
  if (pin.kind !== "accepted")
    throw new LinkError("not_listed", "the transferred list is not valid");
  await store.batch([
    { op: "expect", key: KEYS.device, value: undefined },
    {
      op: "put",
      key: KEYS.device,
      value: { id: linked.device.id, claim: false, seed: linked.device.seed },
    },
    { op: "put", key: KEYS.devices(linked.username), value: pin.pinned },
    ...(linked.groups === undefined || linked.groups.length === 0
      ? []
      : [{ op: "put" as const, key: KEYS.linkGroups, value: linked.groups }]),
    ...linked.contacts
      .filter((c) => c.username !== linked.username)
      .map((c) => ({
        op: "put" as const,
        key: KEYS.contact(c.username),
        value: {
          username: c.username,
          identityKey: c.identityKey,
          verified: c.verified,
          changedKey: null,
          pinnedAt: now,
        },
      })),
    // A conversation the other device had: the same decision here, so a contact's next message
    // is not a message request on this device (§8.11). No session: those are per device (§4.9).
    ...linked.contacts
      .filter((c) => c.username !== linked.username && c.decision !== undefined)
      .map((c) => ({
        op: "put" as const,
        key: KEYS.dm(c.username),
        value: { ...emptyDm(c.username), contact: c.decision },
      })),
  ]);
}
