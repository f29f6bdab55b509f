/**
 * Per-object load (docs/ARCHITECTURE.md "The hub's objects"): how many events the busiest
 * Durable Object of a hub handles per second, for hubs of 100, 1,000 and 10,000 users with one
 * fixed per-user traffic mix. Counted, not timed: a small hub of real engines runs the mix
 * through the real relay in Node (test/support/node-relay.ts), which counts the events each
 * object handles (the hub's socket events and alarms, the directory's calls, each group object's
 * calls). Every object of the
 * split handles its own events one at a time, so its event rate is what bounds it (the ~1,000
 * requests/s soft limit per object).
 *
 * Rows: the hub object as it was (one object, every event), the objects as built on the hub's
 * route (the hub, its Directory and its Group objects, measured: a group object takes the group's
 * joins, leaves, removals and commits; its messages stay on the hub's object), a projection of
 * per-user and per-group objects attributed from the same run's frames (each client frame to its
 * sender's object, each stored item to its recipient's, each group message to its group's, each
 * presence delta to its viewer's), and users' routes as built, measured (runRoutedMix). On the
 * hub's route the Directory's calls (a `claim` per authentication, bundle fetches, uploads) grow
 * with the hub; on users' routes each user's object keeps its own prekeys and judges its own
 * reconnects, so the Directory takes only registrations, which are not part of a per-minute mix.
 */
import { LIMITS } from "../shared/protocol";
import { connect, disconnect, online, say, type TestUser } from "../test/support/clients";
import { NodeRelay } from "../test/support/node-relay";
import type { Row } from "./lib";

/** Users of the simulated hub that run the mix with real engines. */
const SAMPLE_USERS = 12;
/** Members of each group in the mix. */
const GROUP_SIZE = 6;
/**
 * The fixed per-user mix, per user and minute: messages to a contact, messages into the user's
 * group, going offline and back (two presence changes), leaving the group and joining it again
 * (membership churn: the joins, leaves and commits a group object takes). Acks, bundle fetches, prekey uploads and
 * presence deltas follow from these as the engines and relay make them.
 */
const MIX = { directPerMin: 2, groupPerMin: 1, reconnectsPerMin: 0.5, rejoinsPerMin: 1 / 12 };
const HUB_SIZES = [100, 1000, 10_000];

export interface ObjectLoadFigures {
  rows: Row[];
  /**
   * Busiest object's events/s at 10,000 users over at 100: as built on the hub's route, as
   * designed (projected), and as built on users' routes (the whole mix, measured).
   */
  growth: { built: number; designed: number; routed: number };
}

/**
 * The whole mix on users' routes, measured: every user on its own object, each group in its
 * home (docs/ARCHITECTURE.md "User objects, group homes ..."). Events per minute of the busiest
 * user object and the busiest home, and directory calls per user-minute.
 */
async function runRoutedMix(
  rounds: number,
): Promise<{ busiestUser: number; busiestHome: number; directory: number }> {
  const relay = new NodeRelay("main", "https://parley.test", null, "contacts", true);
  const names = Array.from({ length: SAMPLE_USERS }, (_, i) => `u${String(i).padStart(2, "0")}`);
  const users = (await online(relay, ...names)) as TestUser[];
  for (const [i, u] of users.entries()) {
    await u.client.joinGroup(groupOf(i));
    await relay.settle();
  }
  for (const [i, u] of users.entries()) {
    const peer = users[(i + 1) % users.length] as TestUser;
    await say(u, await u.client.startChat(peer.name), "hello");
  }
  await relay.advance(LIMITS.presenceDeltaIntervalMs);
  const objects = () => [
    ...[...relay.userObjects].map(([n, o]) => [`u/${n}`, o] as const),
    ...[...relay.homeObjects].map(([n, o]) => [`gh/${n}`, o] as const),
  ];
  const before = new Map(objects().map(([n, o]) => [n, o.events]));
  const dir0 = relay.directory.calls;
  for (let r = 0; r < rounds; r++) {
    await minuteOfMix(relay, users, r);
    await endOfMinute(relay, users, r);
  }
  await relay.settle();
  const handled = (prefix: string) =>
    objects()
      .filter(([n]) => n.startsWith(prefix))
      .map(([n, o]) => o.events - (before.get(n) ?? 0));
  return {
    busiestUser: Math.max(...handled("u/")) / rounds,
    busiestHome: Math.max(0, ...handled("gh/")) / rounds,
    directory: (relay.directory.calls - dir0) / (SAMPLE_USERS * rounds),
  };
}

const groupOf = (i: number) => `g${Math.floor(i / GROUP_SIZE)}`;

/** One minute of the mix for every user: 1:1 messages, group messages, membership churn. */
async function minuteOfMix(relay: NodeRelay, users: TestUser[], r: number): Promise<void> {
  for (const [i, u] of users.entries()) {
    const peer = users[(i + 1) % users.length] as TestUser;
    await directOfMinute(u, peer, r);
    for (let k = 0; k < MIX.groupPerMin; k++) await say(u, `group:${groupOf(i)}`, `g${r}.${k}`);
  }
  // Membership churn, spread evenly: rejoinsPerMin of every user is one user a minute here.
  const rejoins = Math.round(MIX.rejoinsPerMin * users.length);
  for (let k = 0; k < rejoins; k++) {
    const u = users[(r * rejoins + k) % users.length] as TestUser;
    const g = groupOf(users.indexOf(u));
    await u.client.leaveGroup(g);
    await relay.settle();
    await u.client.joinGroup(g);
    await relay.settle();
  }
}

interface Counts {
  hub: number;
  directory: number;
  /** Measured: calls each group object handled. */
  groupObjects: Map<string, number>;
  /** Design attribution: events per user object and per group object. */
  users: Map<string, number>;
  groups: Map<string, number>;
}

const bump = (m: Map<string, number>, k: string, n = 1) => m.set(k, (m.get(k) ?? 0) + n);

/** One minute of `u`'s 1:1 messages to `peer` (round `r` of the mix). */
async function directOfMinute(u: TestUser, peer: TestUser, r: number): Promise<void> {
  for (let k = 0; k < MIX.directPerMin; k++) {
    await say(u, await u.client.startChat(peer.name), `m${r}.${k}`);
  }
}

/** The end of round `r`: everyone reconnects every 1/reconnectsPerMin rounds; a minute passes. */
async function endOfMinute(relay: NodeRelay, users: TestUser[], r: number): Promise<void> {
  if ((r + 1) % Math.round(1 / MIX.reconnectsPerMin) === 0) {
    for (const u of users) {
      await disconnect(u);
      await connect(u);
    }
  }
  await relay.advance(60_000);
}

/** Run `rounds` of the mix for SAMPLE_USERS users; the events each object handled. */
async function runMix(rounds: number): Promise<Counts> {
  const relay = new NodeRelay("main", "https://parley.test", null, "contacts");
  const names = Array.from({ length: SAMPLE_USERS }, (_, i) => `u${String(i).padStart(2, "0")}`);
  const users = (await online(relay, ...names)) as TestUser[];
  for (const [i, u] of users.entries()) {
    await u.client.joinGroup(groupOf(i));
    await relay.settle();
  }
  // Everyone has written to the next user once: contacts, sessions and bundles exist.
  for (const [i, u] of users.entries()) {
    const peer = users[(i + 1) % users.length] as TestUser;
    await say(u, await u.client.startChat(peer.name), "hello");
  }
  await relay.advance(LIMITS.presenceDeltaIntervalMs);
  const hub0 = relay.events;
  const dir0 = relay.directory.calls;
  const groups0 = new Map([...relay.groupObjects].map(([g, o]) => [g, o.calls]));
  const client0 = relay.clientLog.length;
  const log0 = relay.log.length;
  // One round = one minute of the mix for every user (the integer parts; reconnects every
  // 1/reconnectsPerMin rounds).
  for (let r = 0; r < rounds; r++) {
    await minuteOfMix(relay, users, r);
    await endOfMinute(relay, users, r);
  }
  await relay.settle();
  // Design attribution from the frames of the same run.
  const counts: Counts = {
    hub: relay.events - hub0,
    directory: relay.directory.calls - dir0,
    groupObjects: new Map(
      [...relay.groupObjects].map(([g, o]) => [g, o.calls - (groups0.get(g) ?? 0)]),
    ),
    users: new Map(),
    groups: new Map(),
  };
  for (const { from, frame } of relay.clientLog.slice(client0)) {
    const who = frame.t === "auth" ? frame.username : (from ?? "");
    bump(counts.users, who); // every frame lands on its sender's object
    if (frame.t === "send") bump(counts.users, frame.to); // one enqueue call
    if (
      frame.t === "group_send" ||
      frame.t === "commit" ||
      frame.t === "join" ||
      frame.t === "leave"
    )
      bump(counts.groups, frame.group);
  }
  for (const { to, frame } of relay.log.slice(log0)) {
    if (to === null) continue;
    // A group message reaches each member's object as one batched enqueue call; a presence
    // delta is one call to the viewer's object.
    if (frame.t === "deliver" && frame.item.kind === "group") bump(counts.users, to);
    if (frame.t === "presence_delta") bump(counts.users, to);
  }
  return counts;
}

export async function runObjectLoad(log: (s: string) => void): Promise<ObjectLoadFigures> {
  const rounds = Number(process.env.BENCH_OBJECT_ROUNDS ?? 4);
  const c = await runMix(rounds);
  const routed = await runRoutedMix(rounds);
  const userMinutes = SAMPLE_USERS * rounds;
  // Events per user-minute of the mix, per object kind.
  const hubPerUser = c.hub / userMinutes;
  const dirPerUser = c.directory / userMinutes;
  const busiestUser = Math.max(...c.users.values()) / rounds; // per minute, one user's object
  const busiestGroup = Math.max(0, ...c.groups.values()) / rounds;
  // A group object's load depends on its group, not on the hub: the busiest one measured.
  const groupCalls = [...c.groupObjects.values()];
  const busiestGroupObject = Math.max(0, ...groupCalls) / rounds;
  log(
    `  users' routes: busiest user object ${routed.busiestUser.toFixed(1)} events/min, busiest home ${routed.busiestHome.toFixed(1)} events/min, directory ${routed.directory.toFixed(2)} calls per user-minute`,
  );
  log(
    `  mix: ${c.hub} hub events, ${c.directory} directory calls, ${groupCalls.reduce((a, b) => a + b, 0)} calls to ${groupCalls.length} group objects over ${userMinutes} user-minutes`,
  );
  const perSec = (perMin: number) => perMin / 60;
  const rows: Row[] = HUB_SIZES.map((n) => {
    // Before the split the same frames were the same hub events (the directory's work ran
    // inside them); after it, the hub still takes each frame and makes the call.
    const before = perSec(hubPerUser * n);
    const hub = perSec(hubPerUser * n);
    const dir = perSec(dirPerUser * n);
    const group = perSec(busiestGroupObject);
    const designed = perSec(Math.max(busiestUser, busiestGroup));
    const routedUser = perSec(routed.busiestUser);
    const routedHome = perSec(routed.busiestHome);
    const routedDir = perSec(routed.directory * n);
    return {
      "hub users": n,
      "one object (before): events/s": before.toFixed(1),
      "built: hub object events/s": hub.toFixed(1),
      "built: Directory calls/s": dir.toFixed(2),
      "built: busiest Group object calls/s": group.toFixed(2),
      "built: busiest object events/s": Math.max(hub, dir, group).toFixed(1),
      "design (projected): busiest user or group object events/s": designed.toFixed(2),
      "users' routes (measured): busiest user object events/s": routedUser.toFixed(2),
      "users' routes: busiest group home events/s": routedHome.toFixed(2),
      "users' routes: Directory calls/s": routedDir.toFixed(2),
      "users' routes: busiest object events/s": Math.max(routedUser, routedHome, routedDir).toFixed(
        2,
      ),
    };
  });
  const at = (n: number, key: string) => Number(rows[HUB_SIZES.indexOf(n)]?.[key] ?? Number.NaN);
  return {
    rows,
    growth: {
      built:
        at(10_000, "built: busiest object events/s") / at(100, "built: busiest object events/s"),
      designed:
        at(10_000, "design (projected): busiest user or group object events/s") /
        at(100, "design (projected): busiest user or group object events/s"),
      routed:
        at(10_000, "users' routes: busiest object events/s") /
        at(100, "users' routes: busiest object events/s"),
    },
  };
}
