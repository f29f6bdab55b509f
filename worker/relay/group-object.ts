/**
 * The `Group` Durable Object's logic (worker/group.ts; `idFromName(hub + "/g/" + group)`): the
 * single writer of one group's roster, epoch and pending joins and leaves, running the pure
 * state machine of groups.ts (PROTOCOL.md §7.5) over its own SQLite.
 *
 * Only the hub's object calls it (the Worker routes no request here), and every call names the
 * user it acts for as the hub bound it to the caller's connection (`AuthedAttachment.username`),
 * never a name a client chose; `by` for a removal is the admin the hub checked (§9.7.4).
 *
 * The hub keeps a copy of each group's record (its `groups` tables) so that a `group_send`, a
 * `welcome` and presence read it with no call. A transition is applied here first and returned
 * with its sequence number `seq`; the hub writes it to its copy, with the frames it causes, in
 * the same synchronous step. The hub makes one call per group at a time and names, with each, the
 * `seq` its copy holds: if that is the one before ours, the hub never applied our last
 * transition (the call threw, timed out, or the hub restarted before the answer came), nobody
 * was told of it, and it is undone before the new call runs. Re-sending a call is therefore
 * idempotent: the same transition on the same record gives the same result (groups.ts is pure).
 * A `seq` we cannot place (a hub copy from before this object existed, or a group the hub
 * deleted as abandoned and that is being created again) gets `resync`, and the hub hands over its
 * copy with `seed`.
 */
import type { ErrorCode } from "../../shared/protocol";
import type { CommitRequest, GroupRecord } from "./groups";
import * as groups from "./groups";

/** A transition the hub asks for, for the user it bound (see above). */
export type GroupOp =
  | { t: "join"; user: string; maxGroupSize: number }
  | { t: "leave"; user: string }
  | { t: "remove"; user: string; by: string }
  | { t: "commit"; req: CommitRequest };

export type GroupCallResult =
  | { t: "resync" }
  | { t: "refused"; code: ErrorCode; seq: number; group: GroupRecord }
  | { t: "ok"; seq: number; group: GroupRecord; changed: boolean; dropped: string[] };

/**
 * The group objects as the hub calls them (one per group of a hub). Every method may reject (the
 * object restarted, was unreachable or overloaded); the hub answers `internal` then.
 */
export interface GroupGateway {
  apply(hub: string, group: string, hubSeq: number, op: GroupOp): Promise<GroupCallResult>;
  /** Take the hub's copy as the group's state (a group this object does not know yet). */
  seed(hub: string, group: string, seq: number, record: GroupRecord): Promise<void>;
}

const SCHEMA = [
  // `head`: the latest transition; `prev`: the state before it, kept until the hub confirms
  // `head` (by naming its seq in a later call).
  `CREATE TABLE IF NOT EXISTS group_state (
     slot TEXT PRIMARY KEY CHECK (slot IN ('head', 'prev')),
     seq INTEGER NOT NULL,
     record TEXT NOT NULL
   )`,
];

interface Versioned {
  seq: number;
  group: GroupRecord;
}

export class GroupSequencer {
  readonly #sql: Pick<SqlStorage, "exec">;
  #head: Versioned | null;
  #prev: Versioned | null;

  constructor(sql: Pick<SqlStorage, "exec">) {
    this.#sql = sql;
    for (const s of SCHEMA) sql.exec(s);
    this.#head = this.#load("head");
    this.#prev = this.#load("prev");
  }

  /** The group's state and its seq (tests and the hub's resync read it). */
  state(): Versioned | null {
    return this.#head;
  }

  seed(seq: number, record: GroupRecord): void {
    this.#head = { seq, group: record };
    this.#prev = null;
    this.#save();
  }

  apply(hubSeq: number, op: GroupOp): GroupCallResult {
    const head = this.#head;
    if (head === null) return { t: "resync" };
    if (hubSeq !== head.seq) {
      // The hub never applied our last transition: undo it; it was told to nobody.
      if (this.#prev === null || hubSeq !== this.#prev.seq) return { t: "resync" };
      this.#head = this.#prev;
      this.#prev = null;
      this.#save();
    }
    const cur = this.#head as Versioned;
    const r = transition(cur.group, op);
    if (!r.ok) return { t: "refused", code: r.code, seq: cur.seq, group: cur.group };
    if (!r.changed) return { t: "ok", seq: cur.seq, group: cur.group, changed: false, dropped: [] };
    this.#prev = cur;
    this.#head = { seq: cur.seq + 1, group: r.group };
    this.#save();
    return { t: "ok", seq: cur.seq + 1, group: r.group, changed: true, dropped: r.dropped };
  }

  #load(slot: "head" | "prev"): Versioned | null {
    const r = this.#sql
      .exec("SELECT seq, record FROM group_state WHERE slot = ?", slot)
      .toArray()[0];
    if (r === undefined) return null;
    return { seq: Number(r.seq), group: JSON.parse(String(r.record)) as GroupRecord };
  }

  #save(): void {
    for (const [slot, v] of [
      ["head", this.#head],
      ["prev", this.#prev],
    ] as const) {
      if (v === null) this.#sql.exec("DELETE FROM group_state WHERE slot = ?", slot);
      else
        this.#sql.exec(
          `INSERT INTO group_state (slot, seq, record) VALUES (?, ?, ?)
           ON CONFLICT (slot) DO UPDATE SET seq = excluded.seq, record = excluded.record`,
          slot,
          v.seq,
          JSON.stringify(v.group),
        );
    }
  }
}

/** One op on the pure machine (groups.ts), with the dropped joiners a commit names. */
function transition(
  g: GroupRecord,
  op: GroupOp,
):
  | { ok: true; group: GroupRecord; changed: boolean; dropped: string[] }
  | { ok: false; code: ErrorCode } {
  switch (op.t) {
    case "join": {
      const r = groups.join(g, op.user, op.maxGroupSize);
      return r.ok ? { ...r, dropped: [] } : r;
    }
    case "leave": {
      const r = groups.leave(g, op.user);
      return r.ok ? { ...r, dropped: [] } : r;
    }
    case "remove": {
      // The hub checked the admin's signed removal (§9.7.4); both must still be active here.
      const active = groups.activeMembers(g);
      if (!active.includes(op.by)) return { ok: false, code: "not_member" };
      if (!active.includes(op.user)) return { ok: false, code: "unknown_user" };
      const r = groups.leave(g, op.user);
      return r.ok ? { ...r, dropped: [] } : r;
    }
    case "commit":
      return groups.commit(g, op.req);
  }
}
