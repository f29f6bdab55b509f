/**
 * Closed-group authorization checks (PROTOCOL.md §9.7), pure: each way an add, a removal or a
 * state change can be refused, and the accepted cases next to them.
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  AccessError,
  checkAdd,
  checkCommitAccess,
  checkInfoChange,
  checkRemoval,
  decodeGroupInfo,
  type GroupInfo,
  linkKeyPair,
  policyOf,
  type SignedGroupInfo,
  signAdd,
  signGroupInfo,
  signLeave,
  signLinkJoin,
  signRemoval,
  verifyGroupInfo,
} from "../../shared/core/group-access";
import { ed25519KeyPairFromSeed, ed25519Sign, type IdentityKeyPair } from "../../shared/crypto";
import { fromB64u, toB64u } from "../../shared/encoding";

const HUB = "main";
const G = "club";
let alice: IdentityKeyPair;
let bob: IdentityKeyPair;
let carol: IdentityKeyPair;
let mallory: IdentityKeyPair;
const k = (p: IdentityKeyPair) => toB64u(p.publicKey);
const who = (name: string, p: IdentityKeyPair) => ({ name, ik: k(p) });
const signer = (p: IdentityKeyPair) => (m: Uint8Array) => ed25519Sign(p.privateKey, m);

beforeAll(async () => {
  const keys = await Promise.all(
    [1, 2, 3, 4].map((n) => ed25519KeyPairFromSeed(new Uint8Array(32).fill(n))),
  );
  [alice, bob, carol, mallory] = keys as [
    IdentityKeyPair,
    IdentityKeyPair,
    IdentityKeyPair,
    IdentityKeyPair,
  ];
});

function info(over: Partial<GroupInfo> = {}): GroupInfo {
  return {
    version: 1,
    title: "Club",
    description: "",
    policy: "invite",
    admins: [k(alice)],
    links: [],
    ...over,
  };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AccessError) return e.refusal;
    throw e;
  }
  return "accepted";
}

async function add(
  by: IdentityKeyPair,
  byName: string,
  to: IdentityKeyPair,
  toName: string,
  expiry = 2000,
) {
  return signAdd({
    hub: HUB,
    group: G,
    inviter: byName,
    inviterIk: by.publicKey,
    invitee: toName,
    inviteeIk: to.publicKey,
    expiry,
    sign: signer(by),
  });
}

describe("joining (§9.7.3)", () => {
  const base = () => ({
    hub: HUB,
    group: G,
    info: info(),
    parentRoster: [who("alice", alice), who("bob", bob)],
    invitee: who("carol", carol),
    now: 1000,
  });

  it("accepts a member's signed add, and needs nothing in an open group or for a rejoin", async () => {
    expect(
      await refusal(checkAdd({ ...base(), auth: await add(bob, "bob", carol, "carol") })),
    ).toBe("accepted");
    expect(await refusal(checkAdd({ ...base(), info: info({ policy: "open" }), auth: null }))).toBe(
      "accepted",
    );
    expect(await refusal(checkAdd({ ...base(), info: null, auth: null }))).toBe("accepted");
    expect(await refusal(checkAdd({ ...base(), invitee: who("bob", bob), auth: null }))).toBe(
      "accepted",
    );
  });

  it("refuses a join without an invitation", async () => {
    expect(await refusal(checkAdd({ ...base(), auth: null }))).toBe("no_auth");
  });

  it("refuses a malformed invitation", async () => {
    expect(await refusal(checkAdd({ ...base(), auth: new Uint8Array([0, 0, 0, 9, 1]) }))).toBe(
      "malformed",
    );
    // a leave is not an invitation
    const leave = await signLeave({
      hub: HUB,
      group: G,
      name: "carol",
      ik: carol.publicKey,
      epoch: 1,
      sign: signer(carol),
    });
    expect(await refusal(checkAdd({ ...base(), auth: leave }))).toBe("malformed");
  });

  it("refuses an add by a non-member, or by a member's name under another key", async () => {
    const byMallory = await add(mallory, "mallory", carol, "carol");
    expect(await refusal(checkAdd({ ...base(), auth: byMallory }))).toBe("inviter_not_member");
    const asBob = await add(mallory, "bob", carol, "carol");
    expect(await refusal(checkAdd({ ...base(), auth: asBob }))).toBe("inviter_not_member");
  });

  it("refuses an expired add at the committer; a member reading later skips the clock", async () => {
    const old = await add(bob, "bob", carol, "carol", 999);
    expect(await refusal(checkAdd({ ...base(), auth: old }))).toBe("expired");
    expect(await refusal(checkAdd({ ...base(), auth: old, now: null }))).toBe("accepted");
  });

  it("refuses an add made for someone else (name or key)", async () => {
    const forMallory = await add(bob, "bob", mallory, "carol");
    expect(await refusal(checkAdd({ ...base(), auth: forMallory }))).toBe("bad_signature");
    const otherName = await add(bob, "bob", carol, "dave");
    expect(await refusal(checkAdd({ ...base(), auth: otherName }))).toBe("bad_signature");
  });

  it("accepts a join signed with a listed link key; refuses a revoked link and a forged join", async () => {
    const secret = new Uint8Array(32).fill(7);
    const link = await linkKeyPair(secret);
    const auth = await signLinkJoin({
      hub: HUB,
      group: G,
      joiner: "carol",
      joinerIk: carol.publicKey,
      link,
      sign: ed25519Sign,
    });
    const listed = info({ links: [toB64u(link.publicKey)] });
    expect(await refusal(checkAdd({ ...base(), info: listed, auth }))).toBe("accepted");
    expect(await refusal(checkAdd({ ...base(), auth }))).toBe("unknown_link");
    // the relay saw carol's join: it cannot use it for its own account
    expect(
      await refusal(checkAdd({ ...base(), info: listed, invitee: who("mallory", mallory), auth })),
    ).toBe("bad_signature");
    // the same secret always gives the same key (the link is the secret)
    expect((await linkKeyPair(secret)).publicKey).toEqual(link.publicKey);
  });
});

describe("leaving and removal (§9.7.4)", () => {
  const base = () => ({
    hub: HUB,
    group: G,
    info: info({ admins: [k(alice)] }),
    member: who("bob", bob),
    since: 3,
  });
  const leave = (p: IdentityKeyPair, epoch: number) =>
    signLeave({ hub: HUB, group: G, name: "bob", ik: bob.publicKey, epoch, sign: signer(p) });
  const removal = (p: IdentityKeyPair, epoch: number) =>
    signRemoval({
      hub: HUB,
      group: G,
      adminIk: p.publicKey,
      member: { name: "bob", ik: bob.publicKey },
      epoch,
      sign: signer(p),
    });

  it("accepts the member's own signed leave and an admin's signed removal", async () => {
    expect(await checkRemoval({ ...base(), auth: await leave(bob, 3) })).toBe("leave");
    expect(await checkRemoval({ ...base(), auth: await removal(alice, 5) })).toBe("remove");
    expect(await checkRemoval({ ...base(), info: null, auth: null })).toBe("unchecked");
  });

  it("refuses a removal with no authorization (the relay's word alone)", async () => {
    expect(await refusal(checkRemoval({ ...base(), auth: null }))).toBe("no_auth");
  });

  it("refuses a malformed or wrong-kind authorization", async () => {
    expect(await refusal(checkRemoval({ ...base(), auth: new Uint8Array(3) }))).toBe("malformed");
    const anAdd = await add(alice, "alice", bob, "bob");
    expect(await refusal(checkRemoval({ ...base(), auth: anAdd }))).toBe("malformed");
  });

  it("refuses a leave signed by someone else", async () => {
    expect(await refusal(checkRemoval({ ...base(), auth: await leave(mallory, 3) }))).toBe(
      "bad_signature",
    );
  });

  it("refuses a removal by a non-admin, and a forged admin signature", async () => {
    expect(await refusal(checkRemoval({ ...base(), auth: await removal(carol, 3) }))).toBe(
      "not_admin",
    );
    const forged = await removal(alice, 3);
    forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
    expect(await refusal(checkRemoval({ ...base(), auth: forged }))).toBe("bad_signature");
  });

  it("refuses a leave signed before the member was last added (a replay)", async () => {
    expect(await refusal(checkRemoval({ ...base(), auth: await leave(bob, 2) }))).toBe("stale");
  });
});

describe("signed group state (§9.7.1)", () => {
  const signed = (i: GroupInfo, by: IdentityKeyPair) =>
    signGroupInfo(HUB, G, i, by.publicKey, signer(by));
  const change = (prev: SignedGroupInfo | null, next: SignedGroupInfo | null, over = {}) =>
    refusal(
      Promise.resolve().then(() =>
        checkInfoChange({
          prev,
          next,
          parentEpoch: 4,
          committerIk: k(alice),
          joining: false,
          ...over,
        }),
      ),
    );

  it("round-trips, verifies, and tells the relay only the policy", async () => {
    const s = await signed(info({ links: [k(carol)] }), alice);
    expect(decodeGroupInfo(fromB64u(s.blob), HUB, G).info).toEqual(info({ links: [k(carol)] }));
    expect((await verifyGroupInfo(fromB64u(s.blob), HUB, G)).signer).toBe(k(alice));
    expect(policyOf(s.blob, HUB, G)).toBe("invite");
    expect(policyOf(undefined, HUB, G)).toBe("open");
    expect(() => decodeGroupInfo(fromB64u(s.blob), HUB, "other")).toThrow();
    const bad = fromB64u(s.blob);
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
    expect(await refusal(verifyGroupInfo(bad, HUB, G))).toBe("bad_signature");
  });

  it("accepts a new version signed by an admin and the same state carried forward", async () => {
    const v1 = await signed(info(), alice);
    const v2 = await signed(info({ version: 2, title: "Renamed" }), alice);
    expect(await change(v1, v2)).toBe("accepted");
    expect(await change(v1, v1)).toBe("accepted");
    expect(await change(null, null)).toBe("accepted");
  });

  it("refuses a state signed by a non-admin", async () => {
    const v1 = await signed(info(), alice);
    const byBob = await signed(info({ version: 2, admins: [k(alice), k(bob)] }), bob);
    expect(await change(v1, byBob)).toBe("not_admin");
  });

  it("refuses a rollback, a second state of one version, and a dropped state", async () => {
    const v1 = await signed(info(), alice);
    const v2 = await signed(info({ version: 2 }), alice);
    const v2b = await signed(info({ version: 2, policy: "open" }), alice);
    expect(await change(v2, v1)).toBe("state_rollback");
    expect(await change(v2, v2b)).toBe("state_forged");
    expect(await change(v1, null)).toBe("state_missing");
  });

  it("accepts a first state only from the creating commit's committer, or when we join", async () => {
    const mine = await signed(info(), alice);
    const theirs = await signed(info({ admins: [k(mallory)] }), mallory);
    expect(await change(null, mine, { parentEpoch: 0 })).toBe("accepted");
    expect(await change(null, theirs, { parentEpoch: 0 })).toBe("not_admin");
    // an open group without a state cannot be taken over later
    expect(await change(null, mine)).toBe("state_forged");
    expect(await change(null, theirs, { joining: true })).toBe("accepted");
  });

  it("a whole commit: an add without invitation is refused even if the committer is a member", async () => {
    const v1 = await signed(info(), alice);
    const commit = {
      parentEpoch: 4,
      committerIk: alice.publicKey,
      roster: [who("alice", alice), who("bob", bob), who("mallory", mallory)],
      added: ["mallory"],
      removed: [],
      access: { info: fromB64u(v1.blob), adds: [], removals: [] },
    };
    const prev = { info: v1.blob, roster: [who("alice", alice), who("bob", bob)], since: {} };
    expect(
      await refusal(checkCommitAccess({ hub: HUB, group: G, prev, commit, joining: false })),
    ).toBe("no_auth");
    const withAdd = {
      ...commit,
      access: {
        ...commit.access,
        adds: [{ name: "mallory", auth: await add(bob, "bob", mallory, "mallory") }],
      },
    };
    const out = await checkCommitAccess({
      hub: HUB,
      group: G,
      prev,
      commit: withAdd,
      joining: false,
    });
    expect(out?.blob).toBe(v1.blob);
    // a commit that drops the state of a closed group is refused
    expect(
      await refusal(
        checkCommitAccess({
          hub: HUB,
          group: G,
          prev,
          commit: { ...withAdd, access: undefined },
          joining: false,
        }),
      ),
    ).toBe("state_missing");
  });
});
