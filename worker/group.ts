/**
 * `Group`: one Durable Object per group of a hub (`idFromName(hub + "/g/" + group)`), the single
 * writer of the group's roster, epoch and pending joins and leaves (worker/relay/group-object.ts,
 * PROTOCOL.md §7.5). Only the hub's object calls it, through these RPC methods; it has no
 * `fetch`, and the Worker routes no request to it.
 */
import { DurableObject } from "cloudflare:workers";
import { type GroupCallResult, type GroupOp, GroupSequencer } from "./relay/group-object";
import type { GroupRecord } from "./relay/groups";

export class Group extends DurableObject {
  readonly #seq: GroupSequencer;

  constructor(ctx: DurableObjectState, env: unknown) {
    super(ctx, env as never);
    this.#seq = new GroupSequencer(ctx.storage.sql);
  }

  async apply(hubSeq: number, op: GroupOp): Promise<GroupCallResult> {
    return this.#seq.apply(hubSeq, op);
  }

  async seed(seq: number, record: GroupRecord): Promise<void> {
    this.#seq.seed(seq, record);
  }
}
