/** Unit tests of the relay's pure modules (no sockets, no storage). */
import { describe, expect, it } from "vitest";
import { LIMITS } from "../../shared/protocol";
import { contentSecurityPolicy, isAllowedOrigin, parseAllowedOrigins } from "../../worker/http";
import { admissionBuckets } from "../../worker/relay/admission";
import { parseAttachment } from "../../worker/relay/attachment";
import { authTranscript, signedPrekeyTranscript } from "../../worker/relay/auth";
import { checkUpload, prekeysLow } from "../../worker/relay/directory";
import type { GroupGateway } from "../../worker/relay/group-object";
import * as groups from "../../worker/relay/groups";
import { Hub, MAX_PENDING_SOCKETS } from "../../worker/relay/hub";
import type { DirectoryGateway } from "../../worker/relay/key-directory";
import type { LinkStore } from "../../worker/relay/links";
import { deliverFrame, mailboxHasRoom, parseMids, windowRoom } from "../../worker/relay/mailbox";
import { BucketMap, debit, fanoutCost, newBucket, take } from "../../worker/relay/ratelimit";
import { Session, SessionRegistry } from "../../worker/relay/session";
import type { Store } from "../../worker/relay/store";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

describe("auth transcripts (PROTOCOL.md §4.2)", () => {
  it("spk transcript: lp('parley/v1/spk', u32 id, key)", () => {
    const key = new Uint8Array(32).fill(0xab);
    const t = signedPrekeyTranscript(0x01020304, key);
    expect(hex(t)).toBe(
      `0000000d${hex(new TextEncoder().encode("parley/v1/spk"))}` +
        `00000004` +
        `01020304` +
        `00000020${"ab".repeat(32)}`,
    );
  });

  it("auth transcript: every field length-prefixed, in order", () => {
    const t = authTranscript(
      { hub: "main", origin: "https://p.test", challenge: new Uint8Array(32).fill(1) },
      "alice",
      new Uint8Array(32).fill(2),
      { id: 7, key: new Uint8Array(32).fill(3), sig: new Uint8Array(64).fill(4) },
      { id: new Uint8Array(16).fill(5), claim: true },
    );
    const s = (x: string) => hex(new TextEncoder().encode(x));
    expect(hex(t)).toBe(
      [
        `0000000e${s("parley/v1/auth")}`,
        `00000004${s("main")}`,
        `0000000e${s("https://p.test")}`,
        `00000020${"01".repeat(32)}`,
        `00000005${s("alice")}`,
        `00000020${"02".repeat(32)}`,
        "0000000400000007",
        `00000020${"03".repeat(32)}`,
        `00000040${"04".repeat(64)}`,
        `00000010${"05".repeat(16)}`,
        "0000000400000001",
      ].join(""),
    );
  });
});

describe("group state machine (PROTOCOL.md §7.5)", () => {
  const base: groups.GroupRecord = {
    name: "g",
    epoch: 3,
    members: ["alice", "bob"],
    pendingJoins: ["carol"],
    pendingLeaves: ["bob"],
  };
  const frozen = JSON.stringify(base);

  it("next roster is (committed − leaves) ∪ joins", () => {
    expect(groups.expectedRoster(base)).toEqual(["alice", "carol"]);
    expect(groups.activeMembers(base)).toEqual(["alice"]);
  });

  it("join adds a pending join once, is idempotent, and respects the size bound", () => {
    const r = groups.join(base, "dave", 10);
    expect(r.ok && r.group.pendingJoins).toEqual(["carol", "dave"]);
    const again = groups.join(base, "carol", 10);
    expect(again.ok && again.changed).toBe(false);
    expect(groups.join(base, "dave", 3)).toEqual({ ok: false, code: "group_full" });
    expect(JSON.stringify(base)).toBe(frozen);
  });

  it("a leaver who asks to join again stays in the next roster", () => {
    const r = groups.join(base, "bob", 10);
    expect(r.ok && groups.expectedRoster(r.group)).toEqual(["alice", "bob", "carol"]);
  });

  it("leave: joiner drops its request; member becomes pending leave; stranger not_member", () => {
    const j = groups.leave(base, "carol");
    expect(j.ok && j.group.pendingJoins).toEqual([]);
    const m = groups.leave(base, "alice");
    expect(m.ok && m.group.pendingLeaves).toEqual(["alice", "bob"]);
    expect(groups.leave(base, "zed")).toEqual({ ok: false, code: "not_member" });
    expect(JSON.stringify(base)).toBe(frozen);
  });

  it("commit: checks committer, epoch, roster and wraps, in that order", () => {
    const req = {
      committer: "alice",
      parentEpoch: 3,
      members: ["carol", "alice"],
      wrapsTo: ["carol"],
    };
    const ok = groups.commit(base, req);
    expect(ok).toEqual({
      ok: true,
      changed: true,
      dropped: [],
      group: {
        name: "g",
        epoch: 4,
        members: ["alice", "carol"],
        pendingJoins: [],
        pendingLeaves: [],
      },
    });
    expect(groups.commit(base, { ...req, committer: "bob" })).toEqual({
      ok: false,
      code: "not_member",
    });
    expect(groups.commit(base, { ...req, parentEpoch: 2 })).toEqual({
      ok: false,
      code: "stale_epoch",
    });
    expect(groups.commit(base, { ...req, members: ["alice"] })).toEqual({
      ok: false,
      code: "roster_mismatch",
    });
    // Refusing a pending joiner drops its join (closed groups, PROTOCOL.md §9.7.3)…
    expect(
      groups.commit(base, { ...req, members: ["alice"], wrapsTo: [], refused: ["carol"] }),
    ).toMatchObject({
      ok: true,
      dropped: ["carol"],
      group: { epoch: 4, members: ["alice"], pendingJoins: [] },
    });
    // …but a committed member who stays must be there, and a leaver must not.
    expect(groups.commit(base, { ...req, members: ["carol"], committer: "carol" })).toEqual({
      ok: false,
      code: "roster_mismatch",
    });
    expect(groups.commit(base, { ...req, members: ["alice", "bob", "carol"] })).toEqual({
      ok: false,
      code: "roster_mismatch",
    });
    // Invite-only: a joiner does not commit (a member adds it), unless nobody is committed yet.
    expect(groups.commit(base, { ...req, committer: "carol", inviteOnly: true })).toEqual({
      ok: false,
      code: "not_member",
    });
    expect(
      groups.commit(
        { ...base, members: [], pendingLeaves: [] },
        {
          ...req,
          committer: "carol",
          members: ["carol"],
          wrapsTo: [],
          parentEpoch: 3,
          inviteOnly: true,
        },
      ),
    ).toMatchObject({ ok: true, group: { members: ["carol"] } });
    expect(groups.commit(base, { ...req, members: ["alice", "alice", "carol"] })).toEqual({
      ok: false,
      code: "roster_mismatch",
    });
    expect(groups.commit(base, { ...req, wrapsTo: [] })).toEqual({ ok: false, code: "bad_frame" });
    expect(groups.commit(base, { ...req, wrapsTo: ["carol", "carol"] })).toEqual({
      ok: false,
      code: "bad_frame",
    });
    expect(groups.commit(base, { ...req, wrapsTo: ["carol", "bob"] })).toEqual({
      ok: false,
      code: "bad_frame",
    });
    expect(JSON.stringify(base)).toBe(frozen);
  });

  it("group send: members only, current epoch only, not while a removal is pending", () => {
    expect(groups.checkGroupSend(base, "carol", 3)).toEqual({ ok: false, code: "not_member" });
    expect(groups.checkGroupSend(base, "bob", 3)).toEqual({ ok: false, code: "not_member" });
    expect(groups.checkGroupSend(base, "alice", 2)).toEqual({ ok: false, code: "stale_epoch" });
    expect(groups.checkGroupSend(base, "alice", 3)).toEqual({ ok: false, code: "removal_pending" });
    const calm = { ...base, pendingLeaves: [], members: ["alice", "bob", "dan"] };
    expect(groups.checkGroupSend(calm, "alice", 3)).toEqual({
      ok: true,
      recipients: ["bob", "dan"],
    });
  });
});

describe("token bucket (PROTOCOL.md §7.2)", () => {
  const cfg = { ratePerSec: 10, burst: 3 };
  it("allows a burst, then refills at the rate", () => {
    let b = newBucket(cfg, 0);
    const results: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      const r = take(b, cfg, 0);
      b = r.bucket;
      results.push(r.ok);
    }
    expect(results).toEqual([true, true, true, false]);
    expect(take(b, cfg, 50).ok).toBe(false); // half a token
    expect(take(b, cfg, 100).ok).toBe(true); // one token after 100 ms at 10/s
  });

  it("a clock going backwards neither refills nor breaks the bucket", () => {
    const r = take({ tokens: 0, at: 1000 }, cfg, 0);
    expect(r.ok).toBe(false);
    expect(r.bucket).toEqual({ tokens: 0, at: 1000 });
  });

  it("fanout costs one extra token per fanoutRecipientsPerToken recipients", () => {
    expect(fanoutCost(0, 100)).toBe(0);
    expect(fanoutCost(99, 100)).toBe(0);
    expect(fanoutCost(100, 100)).toBe(1);
    expect(fanoutCost(999, 100)).toBe(9);
    const m = new BucketMap(cfg, 10);
    expect(m.take("a", 0, 3)).toBe(true);
    expect(m.take("a", 0, 1)).toBe(false);
  });

  it("a debit is taken whatever is left: the debt refuses every frame until the refill pays it, and is stored", () => {
    expect(debit({ tokens: 1, at: 0 }, cfg, 0, 5)).toEqual({ tokens: -4, at: 0 });
    const rows = new Map<string, { tokens: number; at: number }>();
    const store = {
      load: (k: string) => rows.get(k) ?? null,
      save: (k: string, b: { tokens: number; at: number }) => void rows.set(k, b),
    };
    const m = new BucketMap(cfg, 10, store);
    m.debit("a", 0, 5);
    expect(m.take("a", 0, 0)).toBe(false);
    expect(m.take("a", 100)).toBe(false); // -2 + 1 token after 100 ms at 10/s
    // A new map over the same store (the object restarted) still holds the debt.
    const again = new BucketMap(cfg, 10, store);
    expect(again.take("a", 200)).toBe(false); // -2 + 2 tokens by 200 ms
    expect(again.take("a", 300)).toBe(true);
  });

  it("BucketMap keys are independent and bounded", () => {
    const m = new BucketMap(cfg, 2);
    for (let i = 0; i < 3; i++) m.take("a", 0);
    expect(m.take("a", 0)).toBe(false);
    expect(m.take("b", 0)).toBe(true);
    m.take("c", 0);
    m.take("d", 0);
    expect(m.size).toBeLessThanOrEqual(2);
  });

  it("a BucketMap with a store writes when a bucket falls saveStep below what is stored, and reads it back", () => {
    const rows = new Map<string, { tokens: number; at: number; full: number }>();
    const store = {
      load: (k: string) => rows.get(k) ?? null,
      save: (k: string, b: { tokens: number; at: number }, full: number) =>
        void rows.set(k, { ...b, full }),
    };
    const big = { ratePerSec: 1, burst: 8 };
    const m = new BucketMap(big, 10, store, 4);
    for (let i = 0; i < 3; i++) expect(m.take("a", 0)).toBe(true);
    expect(rows.size).toBe(0); // 5 left: not 4 below the (full) stored state
    m.take("a", 0);
    expect(rows.get("a")).toEqual({ tokens: 4, at: 0, full: 4000 });
    for (let i = 0; i < 4; i++) m.take("a", 0);
    expect(m.take("a", 0)).toBe(false);
    // Written at the refusal: storage said there were tokens, there are none.
    expect(rows.get("a")?.tokens).toBe(0);
    // A new map over the same store (the object restarted) does not refill it.
    const again = new BucketMap(big, 10, store, 4);
    expect(again.take("a", 0)).toBe(false);
    expect(again.take("a", 1000)).toBe(true);
  });
});

describe("directory and mailbox rules", () => {
  const k = (id: number) => ({ id, key: "A".repeat(43) });
  it("upload checks: duplicates, per-upload and stored bounds", () => {
    expect(checkUpload([k(1), k(1)], 0, 1)).toEqual({ ok: false, code: "bad_frame" });
    expect(checkUpload([k(1)], LIMITS.maxOneTimePrekeysStored, 1)).toEqual({
      ok: false,
      code: "limit_reached",
    });
    expect(checkUpload([k(1)], LIMITS.maxOneTimePrekeysStored, 0)).toEqual({ ok: true });
    expect(prekeysLow(LIMITS.oneTimePrekeysLowWatermark - 1)).toBe(true);
    expect(prekeysLow(LIMITS.oneTimePrekeysLowWatermark)).toBe(false);
  });

  it("mailbox bounds: chat items stop at the soft bound, commits at the hard bound", () => {
    expect(mailboxHasRoom("direct", LIMITS.maxMailboxPerRecipient - 1)).toBe(true);
    expect(mailboxHasRoom("direct", LIMITS.maxMailboxPerRecipient)).toBe(false);
    expect(mailboxHasRoom("group", LIMITS.maxMailboxPerRecipient)).toBe(false);
    expect(mailboxHasRoom("commit", LIMITS.maxMailboxPerRecipient)).toBe(true);
    expect(mailboxHasRoom("commit", LIMITS.maxMailboxHardPerRecipient)).toBe(false);
    expect(windowRoom(LIMITS.deliverWindow + 5)).toBe(0);
    expect(windowRoom(1)).toBe(LIMITS.deliverWindow - 1);
  });

  it("parseMids drops duplicates and zero", () => {
    expect(parseMids(["3", "3", "0", "12"])).toEqual([3, 12]);
  });

  it("deliverFrame builds each item kind and refuses inconsistent rows", () => {
    const row = {
      mid: 9,
      sender: "alice",
      senderKey: "K",
      ts: 5,
      kind: "commit" as const,
      group: "g",
      epoch: 2,
      data: "CORE",
      wrap: "WRAP",
    };
    expect(deliverFrame(row).item).toEqual({
      kind: "commit",
      group: "g",
      epoch: 2,
      core: "CORE",
      wrap: "WRAP",
    });
    expect(deliverFrame(row).mid).toBe("9");
    expect(() => deliverFrame({ ...row, wrap: null })).toThrow(TypeError);
    expect(deliverFrame({ ...row, kind: "direct" }).item).toEqual({ kind: "direct", body: "CORE" });
  });
});

describe("http policy", () => {
  const url = new URL("https://chat.example:8443/ws");
  it("Origin must be our own or explicitly allowed, in bare form", () => {
    const allowed = parseAllowedOrigins("http://phone.lan:8787, not a url,ftp://x");
    expect([...allowed]).toEqual(["http://phone.lan:8787"]);
    expect(isAllowedOrigin("https://chat.example:8443", url, allowed)).toBe(true);
    expect(isAllowedOrigin("http://phone.lan:8787", url, allowed)).toBe(true);
    expect(isAllowedOrigin("https://chat.example", url, allowed)).toBe(false);
    expect(isAllowedOrigin("https://chat.example:8443/", url, allowed)).toBe(false);
    expect(isAllowedOrigin(undefined, url, allowed)).toBe(false);
    expect(isAllowedOrigin("null", url, allowed)).toBe(false);
  });

  it("CSP allows sockets to our own host only, wss only on https", () => {
    expect(contentSecurityPolicy(url)).toContain("connect-src 'self' wss://chat.example:8443;");
    expect(contentSecurityPolicy(new URL("http://localhost:8787/"))).toContain(
      "connect-src 'self' ws://localhost:8787 wss://localhost:8787;",
    );
  });
});

describe("attachment (re-validated on wake-up)", () => {
  const good = {
    v: 1,
    state: "pending",
    hub: "main",
    origin: "http://localhost:8787",
    challenge: "A".repeat(43),
    connectedAt: 1,
  };
  it("accepts a well-formed attachment and rejects anything else", () => {
    expect(parseAttachment(good)).toEqual(good);
    expect(parseAttachment({ ...good, extra: 1 })).toBeNull();
    expect(parseAttachment({ ...good, origin: "http://x/path" })).toBeNull();
    expect(parseAttachment({ ...good, state: "authed" })).toBeNull();
    expect(parseAttachment(null)).toBeNull();
    expect(parseAttachment("str")).toBeNull();
  });
});

describe("admission of unauthenticated sockets", () => {
  function admissionHub() {
    const sessions = new SessionRegistry();
    const hub = new Hub({
      store: {} as Store, // admit never touches storage
      directory: {} as DirectoryGateway, // nor the key directory
      groups: {} as GroupGateway, // nor group objects
      links: {} as LinkStore, // nor link offers
      sessions,
      now: () => 1,
      wakeAt: () => undefined,
      lastAutoPong: () => null,
    });
    const pending = (ip: string, connectedAt: number) => {
      const att = {
        v: 1 as const,
        state: "pending" as const,
        hub: "main",
        origin: "http://localhost:8787",
        challenge: "A".repeat(43),
        connectedAt,
        ip,
      };
      const s = new Session(new WebSocketPair()[1], att, connectedAt);
      sessions.add(s);
      return s;
    };
    return { hub, sessions, pending };
  }

  it(`with ${MAX_PENDING_SOCKETS} waiting to authenticate, a newcomer still gets in: the oldest makes room`, () => {
    const { hub, sessions, pending } = admissionHub();
    const made: Session[] = [];
    // Many sources, each under its own bounds, fill the whole budget.
    for (let i = 0; i < MAX_PENDING_SOCKETS; i++)
      made.push(pending(`10.0.${i >> 8}.${i & 255}`, 100 + i));
    const r = hub.admit("192.0.2.7");
    expect(r.ok).toBe(true);
    if (!r.ok) throw new Error("refused");
    expect(r.evict).toBe(made[0]);
    // Below the budget nobody is evicted.
    sessions.remove(made[0] as Session);
    expect(hub.admit("192.0.2.7")).toEqual({ ok: true, evict: null });
  });

  it("IPv6: the /64, its /56 and its /48 are each bounded, so many /64s are still one source", () => {
    const { hub, pending } = admissionHub();
    // 16 per /64 (the address bound) …
    for (let i = 0; i < LIMITS.maxPendingSocketsPerIp; i++) pending("2001:db8:1:100::/64", i);
    expect(hub.admit("2001:db8:1:100::/64")).toEqual({ ok: false });
    // … 32 per /56: a second /64 of the same /56 fills it, a third /64 there is refused …
    for (let i = 0; i < LIMITS.maxPendingSocketsPer56 - LIMITS.maxPendingSocketsPerIp; i++)
      pending("2001:db8:1:1ff::/64", i);
    expect(hub.admit("2001:db8:1:1aa::/64")).toEqual({ ok: false });
    // … while another /56 of the same /48 still gets in, up to 64 per /48.
    expect(hub.admit("2001:db8:1:200::/64")).toEqual({ ok: true, evict: null });
    for (let i = 0; i < LIMITS.maxPendingSocketsPer48 - LIMITS.maxPendingSocketsPer56; i++)
      pending(`2001:db8:1:${(0x300 + (i >> 4) * 0x100).toString(16)}::/64`, i);
    expect(hub.admit("2001:db8:1:f00::/64")).toEqual({ ok: false });
    // Other sources are unaffected.
    expect(hub.admit("2001:db8:2:100::/64")).toEqual({ ok: true, evict: null });
    expect(hub.admit("198.51.100.1")).toEqual({ ok: true, evict: null });
  });

  it("admission buckets: an IPv6 /64 counts toward its /56 and /48; IPv4 toward itself only", () => {
    expect(admissionBuckets("2001:db8:a:12ff::/64").map((b) => b.key)).toEqual([
      "2001:db8:a:12ff::/64",
      "2001:db8:a:12::/56",
      "2001:db8:a::/48",
    ]);
    expect(admissionBuckets("198.51.100.1").map((b) => b.key)).toEqual(["198.51.100.1"]);
    expect(admissionBuckets("unknown").map((b) => b.key)).toEqual(["unknown"]);
  });

  it("a Session never throws on send or close, whatever the socket's state", () => {
    const pair = new WebSocketPair();
    const s = new Session(
      pair[1],
      {
        v: 1,
        state: "pending",
        hub: "main",
        origin: "http://x",
        challenge: "A".repeat(43),
        connectedAt: 1,
      },
      1,
    );
    // Not accepted: the runtime throws on send; the Session reports false instead.
    expect(s.send({ v: 1, t: "pong" })).toBe(false);
    pair[1].accept();
    expect(s.send({ v: 1, t: "pong" })).toBe(true);
    s.close(1000, "bye");
    expect(() => s.close(1000, "again")).not.toThrow();
    expect(s.send({ v: 1, t: "pong" })).toBe(false);
  });
});
