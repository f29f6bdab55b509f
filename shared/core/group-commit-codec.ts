/**
 * The commit core codec (PROTOCOL.md §9.2): the byte layout documented at the top of
 * group-commit.ts, encoded and decoded exactly; building and checking commits is group-commit.ts.
 */
import { lp } from "../encoding";
import { b64, enc, Reader, u64be } from "./codec";
import { CoreError, malformed } from "./errors";
import type { RosterEntry } from "./group";

export const SIG = 64;
export const TAG = 32;

export interface CommitCore {
  hub: string;
  group: string;
  parentEpoch: number;
  epoch: number;
  /** interim[parent]: the transcript this commit extends (§9.3). */
  parentInterim: Uint8Array;
  committer: string;
  committerIk: Uint8Array;
  roster: RosterEntry[];
  added: string[];
  removed: string[];
  /** Closed groups (§9.7.2): absent for a group without a signed state. */
  access?: CommitAccess | undefined;
}

/** What a closed group's commit carries for every member to check (§9.7.2). */
export interface CommitAccess {
  /** The signed group state of the new epoch. */
  info: Uint8Array;
  /** The authorization of each added member that needs one (by name). */
  adds: { name: string; auth: Uint8Array }[];
  /** The authorization of each removed member (its signed leave or an admin's removal). */
  removals: { name: string; auth: Uint8Array }[];
}

const byEntryName = (a: { name: string }, b: { name: string }) =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

function encodeAccess(a: CommitAccess): Uint8Array {
  const entries = (xs: { name: string; auth: Uint8Array }[]) =>
    lp(...[...xs].sort(byEntryName).map((x) => lp(x.name, x.auth)));
  return lp("parley/v1/group-access", a.info, entries(a.adds), entries(a.removals));
}

function decodeAccess(bytes: Uint8Array): CommitAccess {
  const r = new Reader(bytes, "commit access");
  if (utf8(r.field(64)) !== "parley/v1/group-access") throw malformed("commit access label");
  const info = r.field(8192);
  const entries = (b: Uint8Array) =>
    list(b, (x) => {
      const e = { name: utf8(x.field(64)), auth: x.field(512) };
      x.end();
      return e;
    });
  const adds = entries(r.field());
  const removals = entries(r.field());
  r.end();
  return { info, adds, removals };
}

export const sortNames = (xs: readonly string[]) => [...xs].sort();
const byName = (a: RosterEntry, b: RosterEntry) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export function encodeCommitBody(c: CommitCore): Uint8Array {
  const roster = lp(
    ...[...c.roster].sort(byName).map((m) =>
      lp(
        m.name,
        b64(m.ik, "ik"),
        m.leafId,
        u64be(m.leafEpoch),
        b64(m.leafKey, "leaf"),
        b64(m.leafNonce, "leaf nonce"),
        b64(m.leafSig, "leaf sig"),
        // A hybrid leaf key is named by the hash of its ML-KEM half (§9.2.2): 32 bytes per
        // entry instead of 1184, so a 1000-member core stays far below the limits of §7.1.
        ...(m.leafKem === undefined ? [] : [b64(m.leafKem, "leaf kem hash")]),
      ),
    ),
  );
  return lp(
    "parley/v2/commit",
    c.hub,
    c.group,
    u64be(c.parentEpoch),
    u64be(c.epoch),
    c.parentInterim,
    c.committer,
    c.committerIk,
    roster,
    lp(...sortNames(c.added)),
    lp(...sortNames(c.removed)),
    ...(c.access === undefined ? [] : [encodeAccess(c.access)]),
  );
}

const text = new TextDecoder("utf-8", { fatal: true });
function str(r: Reader): string {
  try {
    return text.decode(r.field(256));
  } catch (e) {
    if (e instanceof CoreError) throw e;
    throw malformed("commit string");
  }
}
/** Bad UTF-8 is a typed error like every other malformed input (never a bare TypeError). */
function utf8(bytes: Uint8Array): string {
  try {
    return text.decode(bytes);
  } catch {
    throw malformed("commit string");
  }
}
function list<T>(bytes: Uint8Array, item: (r: Reader) => T): T[] {
  const r = new Reader(bytes, "commit list");
  const out: T[] = [];
  while (r.remaining() > 0) out.push(item(new Reader(r.field(), "commit list item")));
  return out;
}
function exact(r: Reader, n: number, what: string): Uint8Array {
  const b = r.field(n);
  if (b.length !== n) throw malformed(what);
  return b;
}

export function decodeCommitBody(body: Uint8Array): CommitCore {
  const r = new Reader(body, "commit body");
  if (str(r) !== "parley/v2/commit") throw malformed("commit label");
  const hub = str(r);
  const group = str(r);
  const parentEpoch = new Reader(exact(r, 8, "epoch"), "epoch").u64();
  const epoch = new Reader(exact(r, 8, "epoch"), "epoch").u64();
  const parentInterim = exact(r, 32, "parent transcript");
  const committer = str(r);
  const committerIk = exact(r, 32, "committer key");
  const roster = list(r.field(), (x) => {
    const e: RosterEntry = {
      name: str(x),
      ik: enc(exact(x, 32, "ik")),
      leafId: new Reader(exact(x, 4, "leaf id"), "leaf id").u32(),
      leafEpoch: new Reader(exact(x, 8, "leaf epoch"), "leaf epoch").u64(),
      leafKey: enc(exact(x, 32, "leaf key")),
      leafNonce: enc(exact(x, 16, "leaf nonce")),
      leafSig: enc(exact(x, 64, "leaf sig")),
    };
    if (x.remaining() > 0) e.leafKem = enc(exact(x, 32, "leaf kem hash"));
    x.end();
    return e;
  });
  const added = list(r.field(), (x) => utf8(x.rest()));
  const removed = list(r.field(), (x) => utf8(x.rest()));
  const access = r.remaining() > 0 ? decodeAccess(r.field()) : undefined;
  r.end();
  return {
    hub,
    group,
    parentEpoch,
    epoch,
    parentInterim,
    committer,
    committerIk,
    roster,
    added,
    removed,
    access,
  };
}

export function splitCore(core: Uint8Array): {
  body: Uint8Array;
  sig: Uint8Array;
  tag: Uint8Array;
} {
  const r = new Reader(core, "commit core");
  const body = r.field();
  const sig = r.bytes(SIG);
  const tag = r.bytes(TAG);
  r.end();
  return { body, sig, tag };
}
