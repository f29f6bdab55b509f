/**
 * The link's inputs (PROTOCOL.md §4, §6.3, §10.1): the socket closing, the relay's `hello` (we
 * authenticate), its `welcome` (we resend what the registry holds and re-evaluate every chat and
 * group), presence, and topping up our one-time prekeys. Pure steps over a `Tx`, like step.ts.
 */
import * as v from "valibot";
import { authTranscript } from "../../auth";
import { ed25519Sign } from "../../crypto";
import { fromB64u, toB64u } from "../../encoding";
import { type FrameOf, LIMITS, Name, PROTOCOL_VERSION, type ServerFrame } from "../../protocol";
import { parseDmRecord } from "../dm";
import {
  addOneTimeKemPrekeys,
  addOneTimePrekeys,
  maintainSpk,
  publicPq,
  publicSpk,
} from "../prekeys";
import { KEYS } from "../store";
import { outboxEntry } from "./answers";
import { seeDeviceList } from "./devices";
import * as direct from "./direct";
import { error, guarded, system, type Tx } from "./effects";
import { scheduleGapCheck } from "./gaps";
import * as commits from "./group-commits";
import * as membership from "./group-membership";
import * as groups from "./group-steps";
import { dropTransient, FLIGHT_PREFIX, FlightRecordSchema, flightFrame } from "./inflight";
import { OFFLINE } from "./link";
import { loadGroup, loadPrekeys } from "./load";
import type { Draft } from "./state";
import { presenceList, resummarize, summarizeDm } from "./summaries";

/** Our own one-time prekey secrets kept at most (the relay stores up to 200 public halves). */
const MAX_OPK_SECRETS = 2 * LIMITS.maxOneTimePrekeysStored;

export async function onDisconnected(tx: Tx): Promise<void> {
  const s: Draft = tx.state;
  s.link = OFFLINE;
  s.online.clear();
  dropTransient(s.flights);
  tx.emit({
    type: "connection",
    state: s.removed ? "removed" : s.retired ? "retired" : "offline",
  });
  await resummarize(tx);
}

export async function onHello(tx: Tx, f: FrameOf<ServerFrame, "hello">): Promise<void> {
  const { env } = tx;
  if (f.hub !== env.hub) {
    error(tx, "relay_error", "relay announced a different hub");
    return;
  }
  const m = await maintainSpk(
    await loadPrekeys(tx),
    env.identity,
    tx.now,
    env.random,
    env.tuning.signedPrekeyRotateMs,
    env.tuning.signedPrekeyGraceMs,
  );
  tx.put(KEYS.prekeys, m.state);
  const spk = publicSpk(m.state);
  const pq = publicPq(m.state);
  if (tx.state.retired) return;
  const device = tx.state.device;
  const sig = await ed25519Sign(
    env.identity.privateKey,
    authTranscript(
      { hub: env.hub, origin: env.origin, challenge: fromB64u(f.challenge) },
      env.username,
      env.identity.publicKey,
      { id: spk.id, key: fromB64u(spk.key), sig: fromB64u(spk.sig) },
      { id: fromB64u(device.id), claim: device.claim },
    ),
  );
  tx.send({
    v: PROTOCOL_VERSION,
    t: "auth",
    username: env.username,
    identityKey: env.identityKey,
    signedPrekey: spk,
    device: device.id,
    claim: device.claim,
    ...(pq === null ? {} : { pqPrekey: pq }),
    sig: toB64u(sig),
  });
}

export async function onWelcome(tx: Tx, f: FrameOf<ServerFrame, "welcome">): Promise<void> {
  const { env } = tx;
  const s = tx.state;
  if (f.username !== env.username || f.identityKey !== env.identityKey) {
    error(tx, "relay_error", "relay welcomed a different identity");
    return;
  }
  if (s.link.t === "offline") return;
  s.link = { t: "online", socket: s.link.socket, uploading: false };
  if (s.device.claim) {
    // The relay made us the current device; later connections need not claim again (§4.3).
    s.device = { ...s.device, claim: false };
    tx.put(KEYS.device, s.device);
  }
  // Our name in groups (§4.7): a linked device's own address. Only ours can be named.
  const address = f.address === `${env.username}.${s.device.id}` ? f.address : undefined;
  const before = s.device.address;
  if (f.address !== undefined && address === undefined)
    error(tx, "relay_error", "relay named this device with another address");
  else if (address !== before || f.current !== s.device.current) {
    const { address: _a, current: _c, ...rest } = s.device;
    s.device = {
      ...rest,
      ...(address === undefined ? {} : { address }),
      ...(address === undefined || f.current === undefined ? {} : { current: f.current }),
    };
    tx.put(KEYS.device, s.device);
  }
  tx.emit({ type: "ready", username: env.username, fingerprint: env.fingerprint });
  if (f.presence !== undefined) {
    s.presenceScope = f.presence;
    tx.emit({ type: "settings", presence: f.presence });
  }
  tx.emit({ type: "connection", state: "online" });
  // Our own device list (§4.6): a device linked or removed since we last saw it is shown.
  if (f.devices !== undefined)
    await seeDeviceList(tx, env.username, env.identityKey, f.devices, null);
  if (f.oneTimePrekeysRemaining < LIMITS.oneTimePrekeysLowWatermark) await replenish(tx);
  await resendRegistry(tx);
  for (const { value } of await tx.list("dm/")) {
    const rec = parseDmRecord(value);
    await guarded(
      tx,
      async () => {
        if (rec.queue.length > 0 || rec.pending?.kind === "fetching") {
          await direct.ensureSession(tx, {
            ...rec,
            pending: rec.pending?.kind === "fetching" ? null : rec.pending,
          });
        } else summarizeDm(tx, rec);
      },
      direct.dmId(rec.peer),
    );
  }
  // Per-device sessions (§4.9) waiting to start, or with messages queued: start them again.
  for (const { key, value } of await tx.list("dmd/")) {
    const [peer = "", device] = key.slice("dmd/".length).split("/");
    const rec = parseDmRecord(value);
    if (rec.queue.length === 0 && rec.pending?.kind !== "fetching") continue;
    await guarded(
      tx,
      () =>
        direct.ensureSession(
          tx,
          { ...rec, pending: rec.pending?.kind === "fetching" ? null : rec.pending },
          { peer, device },
        ),
      direct.dmId(peer),
    );
  }
  for (const g of f.groups) s.relayGroups.set(g.group, g);
  for (const g of f.groups)
    await guarded(tx, () => commits.evaluateGroup(tx, g.group), groups.groupId(g.group));
  await joinLinkGroups(tx);
  // A linked device the relay made current (its identity's current device was removed, §4.7
  // rule 3) is now the member `username`: its groups move to that name.
  if (before !== undefined && s.device.address === undefined && f.address === undefined)
    await membership.becameCurrent(tx, before);
  // After the moves above, whose joins are in flight: what is left unlisted was left elsewhere.
  if (f.memberOf !== undefined) await forgetUnlisted(tx, f.memberOf);
  await resummarize(tx);
  // Gaps whose grace ran out while we were offline: decide after this connection's mailbox
  // drain, one grace from now (§8.8).
  if (s.gaps.size > 0) scheduleGapCheck(tx, [...s.gaps.keys()]);
}

/**
 * Groups we hold as a member that the relay no longer lists us in (§6.2 `memberOf`): we were
 * taken out while away — another device of ours left for the person (§4.7), or an admin removed
 * us — and the `left` that said so went to a closed connection. Keys go, as on `left` (§9.4); a
 * group with a join or leave of ours still in flight is left to it.
 */
async function forgetUnlisted(tx: Tx, memberOf: readonly string[]): Promise<void> {
  const listed = new Set(memberOf);
  for (const { key } of await tx.list("group/")) {
    const name = key.slice("group/".length);
    if (listed.has(name)) continue;
    const busy = [...tx.state.flights.values()].some(
      (fl) => (fl.kind === "join" || fl.kind === "leave") && fl.group === name,
    );
    if (busy) continue;
    const rec = await loadGroup(tx, name);
    if (rec.status !== "member") continue;
    await membership.forget(tx, name, `You are no longer in ${name}`);
  }
}

/**
 * A linked device's first welcome (§4.7, §4.8.3): it joins, as its own member, each group the
 * device that linked it is in. Write-ahead like every join; the list is then done with.
 */
async function joinLinkGroups(tx: Tx): Promise<void> {
  const raw = await tx.get(KEYS.linkGroups);
  if (raw === undefined) return;
  tx.del(KEYS.linkGroups);
  const names = v.safeParse(v.array(Name), raw);
  if (!names.success) return;
  for (const name of names.output) {
    if (tx.state.relayGroups.has(name)) continue;
    await guarded(tx, () => membership.joinGroup(tx, name), groups.groupId(name));
  }
}

/**
 * Send again everything the registry holds (§10.1), oldest first: the outbox's frames with
 * their same bytes (no nonce is reused) and the persisted joins and leaves. Each entry stands
 * alone: one that no longer parses is set aside, never blocking the rest.
 */
async function resendRegistry(tx: Tx): Promise<void> {
  const rows = [
    ...(await tx.list("outbox/")).map((r) => ({ ...r, seq: Number(r.key.slice(7)) })),
    ...(await tx.list(FLIGHT_PREFIX)).map((r) => ({
      ...r,
      seq: Number(r.key.slice(FLIGHT_PREFIX.length)),
    })),
  ].sort((a, b) => a.seq - b.seq);
  for (const { key, value } of rows) {
    if (key.startsWith("outbox/")) {
      const entry = outboxEntry(tx, key, value);
      if (entry !== null) tx.send(entry.frame);
      continue;
    }
    const r = v.safeParse(FlightRecordSchema, value);
    if (r.success) tx.send(flightFrame(r.output));
    else {
      tx.del(key);
      error(
        tx,
        "outbox_entry_invalid",
        "a stored join or leave could not be sent and was set aside",
      );
    }
  }
}

/**
 * The relay's view of who is online among the people this user may see (§6.3): `presence` is the
 * whole view (after `welcome`), `presence_delta` what changed since.
 */
export async function onPresence(
  tx: Tx,
  f: FrameOf<ServerFrame, "presence"> | FrameOf<ServerFrame, "presence_delta">,
): Promise<void> {
  const s = tx.state;
  const online = f.t === "presence" ? f.users : f.online;
  if (f.t === "presence") s.online.clear();
  else for (const name of f.offline) s.online.delete(name);
  let changed = false;
  for (const u of online) {
    s.online.set(u.username, u.identityKey);
    const c = s.contacts.get(u.username);
    // Presence is relay-asserted: it never pins, but a key different from the pin is shown.
    if (c && c.identityKey !== u.identityKey && c.changedKey !== u.identityKey) {
      const next = { ...c, changedKey: u.identityKey, verified: false };
      tx.put(KEYS.contact(u.username), next);
      s.contacts.set(u.username, next);
      changed = true;
      system(tx, direct.dmId(u.username), "key_changed", `${u.username}'s safety number changed`, {
        username: u.username,
      });
    }
  }
  tx.emit({ type: "presence", users: presenceList(s) });
  for (const name of [...s.relayGroups.keys()])
    await guarded(tx, () => commits.evaluateGroup(tx, name), groups.groupId(name));
  if (changed) await resummarize(tx);
}

/** Top up the relay's one-time prekeys (§8.3.2); one upload at a time. */
export async function replenish(tx: Tx): Promise<void> {
  const l = tx.state.link;
  if (l.t !== "online" || l.uploading) return;
  const r = await addOneTimePrekeys(
    await loadPrekeys(tx),
    tx.env.tuning.oneTimePrekeyBatch,
    tx.env.random,
  );
  // One-time KEM prekeys go with them (§8.3.5): handed out together, they run low together.
  const k = await addOneTimeKemPrekeys(
    r.state,
    Math.min(tx.env.tuning.oneTimePrekeyBatch, LIMITS.maxOneTimeKemPrekeysPerUpload),
    tx.env.identity,
    tx.env.random,
  );
  const opks = k.state.opks.slice(-MAX_OPK_SECRETS);
  tx.put(KEYS.prekeys, { ...k.state, opks });
  tx.state.seq++;
  const id = String(tx.state.seq);
  tx.state.link = { ...l, uploading: true };
  tx.state.flights.set(id, { kind: "upload" });
  tx.send({
    v: PROTOCOL_VERSION,
    t: "upload_prekeys",
    id,
    oneTimePrekeys: r.upload,
    ...(k.upload.length > 0 ? { oneTimeKemPrekeys: k.upload } : {}),
  });
}
