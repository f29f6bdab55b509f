/**
 * Effects: everything a step wants done, as data (PROTOCOL.md §10.1). A step never writes,
 * sends, emits or sets a timer itself; it returns these, and the runner (client.ts) commits
 * every write in ONE atomic batch behind the owner-generation precondition and only then sends
 * the frames, emits the events and sets the timers. `Tx` is the step's working set: it stages
 * writes (later reads in the same step see them) and collects the other effects in order.
 */
import type { ClientFrame, ErrorCode } from "../../protocol";
import type {
  ClientStore,
  ConversationId,
  CoreErrorCode,
  DeliveryState,
  ParleyEvent,
  StoreOp,
  SystemLine,
  SystemLineKind,
} from "../client-api";
import { isCoreError } from "../errors";
import { mayCarry } from "./link";
import { type Draft, draft, type Env } from "./state";
import type { TimerInput } from "./step";

export type Effect =
  | { t: "write"; op: Exclude<StoreOp, { op: "expect" }> }
  | { t: "send"; frame: ClientFrame }
  | { t: "emit"; event: ParleyEvent }
  /**
   * Run `input` after `ms`. `key` dedupes (a timer already set under it is kept; null: none). Timers with
   * `untilDisconnect` are cancelled when the socket closes (a fallback committer's turn only
   * means something on this connection); the others survive it.
   */
  | { t: "timer"; key: string | null; ms: number; input: TimerInput; untilDisconnect: boolean };

/** Read-only access to the durable state, as of the start of the step. */
export type Reads = Pick<ClientStore, "get" | "list">;

const ABSENT = Symbol("absent");

export class Tx {
  readonly effects: Effect[] = [];
  /** Staged writes by key (ABSENT = deleted), read through by `get`/`list`. */
  private staged = new Map<string, unknown>();

  constructor(
    readonly env: Env,
    readonly state: Draft,
    private readonly reads: Reads,
  ) {}

  /**
   * Run `fn` as a unit: if it throws, every effect and state change it made is undone before
   * the error propagates. A step that catches a failure and goes on (one bad message among
   * many) must use this, so a half-made transition — frames staged without the ratchet state
   * that made them — can never be committed (§10.1).
   */
  async attempt<T>(fn: () => Promise<T>): Promise<T> {
    const mark = this.effects.length;
    const staged = new Map(this.staged);
    const saved = draft(this.state);
    try {
      return await fn();
    } catch (e) {
      this.effects.length = mark;
      this.staged = staged;
      Object.assign(this.state, saved);
      throw e;
    }
  }

  async get(key: string): Promise<unknown> {
    if (this.staged.has(key)) {
      const v = this.staged.get(key);
      return v === ABSENT ? undefined : structuredClone(v);
    }
    return this.reads.get(key);
  }

  async list(prefix: string): Promise<Array<{ key: string; value: unknown }>> {
    const rows = new Map<string, unknown>();
    for (const r of await this.reads.list(prefix)) rows.set(r.key, r.value);
    for (const [k, v] of this.staged) {
      if (!k.startsWith(prefix)) continue;
      if (v === ABSENT) rows.delete(k);
      else rows.set(k, structuredClone(v));
    }
    return [...rows.keys()].sort().map((key) => ({ key, value: rows.get(key) }));
  }

  put(key: string, value: unknown): void {
    this.staged.set(key, value);
    this.effects.push({ t: "write", op: { op: "put", key, value } });
  }

  del(key: string): void {
    this.staged.set(key, ABSENT);
    this.effects.push({ t: "write", op: { op: "delete", key } });
  }

  /** Apply ops built by the pure transitions (dm.ts/group.ts callers). */
  write(ops: readonly StoreOp[]): void {
    for (const o of ops) {
      if (o.op === "put") this.put(o.key, o.value);
      else if (o.op === "delete") this.del(o.key);
    }
  }

  /**
   * Queue a frame. Off the link it is dropped here: everything that must survive that is in
   * the persisted in-flight registry and goes again at the next `welcome` (§10.1). Before
   * `welcome` only `auth` may go (the relay answers anything else with not_authenticated, §4.3).
   */
  send(frame: ClientFrame): void {
    const l = this.state.link;
    if (l.t === "offline") return;
    if (!mayCarry(l, l.socket, frame.t)) return;
    this.effects.push({ t: "send", frame });
  }

  emit(event: ParleyEvent): void {
    this.effects.push({ t: "emit", event });
  }

  timer(key: string | null, ms: number, input: TimerInput, untilDisconnect: boolean): void {
    this.effects.push({ t: "timer", key, ms, input, untilDisconnect });
  }

  get now(): number {
    return this.env.now();
  }
}

// ---------------------------------------------------------------------------------------------
// Event helpers (PROTOCOL.md §11)

/** Run `fn` as a unit; a typed failure is reported and the rest of the step goes on. */
export async function guarded(tx: Tx, fn: () => Promise<void>, conversationId?: ConversationId) {
  try {
    await tx.attempt(fn);
  } catch (e) {
    if (!isCoreError(e)) throw e;
    error(tx, e.code, e.message, conversationId);
  }
}

export function system(
  tx: Tx,
  conversationId: ConversationId,
  kind: SystemLineKind,
  text: string,
  extra: Partial<SystemLine> = {},
): void {
  tx.emit({ type: "system", line: { conversationId, kind, text, at: tx.now, ...extra } });
}

export function error(
  tx: Tx,
  code: CoreErrorCode,
  message: string,
  conversationId?: ConversationId,
  relayCode?: ErrorCode,
): void {
  tx.emit({
    type: "error",
    code,
    message,
    ...(conversationId !== undefined ? { conversationId } : {}),
    ...(relayCode !== undefined ? { relayCode } : {}),
  });
}

export function delivery(
  tx: Tx,
  conversationId: ConversationId,
  messageId: string,
  state: DeliveryState,
): void {
  tx.emit({ type: "delivery", conversationId, messageId, state });
}
