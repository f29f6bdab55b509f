/**
 * A tiny stand-in for the protocol engine, used ONLY to develop and screenshot the UI before the
 * real engine lands (`PARLEY_FAKE_ENGINE=1 npx vite build`). It simulates a hub with two peers
 * that answer every message. The shipped app always uses shared/core (pwa/src/engine/create.ts).
 */
import type {
  ChatMessage,
  ContactInfo,
  ConversationId,
  ConversationSummary,
  Listener,
  ParleyClientApi,
  ParleyClientOptions,
  ParleyEvent,
} from "../../shared/core/client-api";
import { identityFingerprint, randomBytes } from "../../shared/crypto";
import { toB64u } from "../../shared/encoding";

function contact(username: string): ContactInfo {
  const key = randomBytes(32);
  return {
    username,
    identityKey: toB64u(key),
    fingerprint: identityFingerprint(key),
    verified: false,
  };
}

export async function createEngine(opts: ParleyClientOptions): Promise<ParleyClientApi> {
  const listeners = new Set<Listener>();
  const emit = (e: ParleyEvent) => {
    for (const l of listeners) l(e);
  };
  const me: ContactInfo = {
    username: opts.username,
    identityKey: toB64u(opts.identity.publicKey),
    fingerprint: identityFingerprint(opts.identity.publicKey),
    verified: false,
  };
  const peers = [contact("bob"), contact("carol"), contact("dave")];
  const convs = new Map<ConversationId, ConversationSummary>();
  const put = (c: ConversationSummary) => {
    convs.set(c.id, c);
    emit({ type: "conversation", conversation: c });
  };
  const later = (ms: number, fn: () => void) => setTimeout(fn, ms);
  let n = 0;
  const api: ParleyClientApi = {
    username: opts.username,
    hub: opts.hub,
    identityKey: me.identityKey,
    fingerprint: me.fingerprint,
    onConnected() {
      later(300, () => {
        emit({ type: "ready", username: opts.username, fingerprint: me.fingerprint });
        emit({ type: "presence", users: [me, ...peers] });
        put({
          id: "group:broadcast",
          kind: "group",
          name: "broadcast",
          status: "secure",
          members: [],
          epoch: -1,
        });
      });
    },
    async onServerFrame() {},
    onDisconnected() {},
    async startChat(username) {
      const id: ConversationId = `dm:${username}`;
      const peer = peers.find((p) => p.username === username) ?? contact(username);
      if (!convs.has(id)) {
        put({ id, kind: "direct", name: username, status: "handshaking", members: [peer] });
        later(600, () => {
          put({
            id,
            kind: "direct",
            name: username,
            status: username === "dave" ? "key_changed" : "secure",
            members: [peer],
          });
          emit({
            type: "system",
            line: {
              conversationId: id,
              kind: "session_started",
              text: `Secure session with ${username} established`,
              at: Date.now(),
            },
          });
        });
      }
      return id;
    },
    async endChat() {},
    async sendText(conversationId, text) {
      const id = `m${++n}`;
      const m: ChatMessage = {
        id,
        conversationId,
        from: opts.username,
        direction: "out",
        text,
        sentAt: Date.now(),
        at: Date.now(),
        delivery: "sending",
      };
      emit({ type: "message", message: m });
      later(200, () => emit({ type: "delivery", conversationId, messageId: id, state: "sent" }));
      later(700, () =>
        emit({ type: "delivery", conversationId, messageId: id, state: "delivered" }),
      );
      const from = conversationId.startsWith("dm:") ? conversationId.slice(3) : "carol";
      later(1000, () =>
        emit({
          type: "message",
          message: {
            id: `r${++n}`,
            conversationId,
            from,
            direction: "in",
            text: `Re: ${text}`,
            sentAt: Date.now(),
            at: Date.now(),
          },
        }),
      );
      return id;
    },
    async joinGroup(name) {
      const id: ConversationId = `group:${name}`;
      put({ id, kind: "group", name, status: "connecting", members: [], epoch: -1, joining: true });
      later(500, () => {
        put({
          id,
          kind: "group",
          name,
          status: "secure",
          members: [me, ...peers.slice(0, 2)],
          epoch: 3,
        });
        emit({
          type: "system",
          line: {
            conversationId: id,
            kind: "joined",
            text: `${opts.username} joined · epoch 3`,
            at: Date.now(),
            epoch: 3,
          },
        });
      });
    },
    async leaveGroup(name) {
      put({ id: `group:${name}`, kind: "group", name, status: "secure", members: [], epoch: -1 });
    },
    async acceptKeyChange(username) {
      const c = convs.get(`dm:${username}`);
      if (c) put({ ...c, status: "secure" });
    },
    async markVerified(username) {
      const c = convs.get(`dm:${username}`);
      if (c)
        put({
          ...c,
          status: "verified",
          members: c.members.map((m) => ({ ...m, verified: true })),
        });
    },
    async safetyNumber() {
      return "052180317642293811047335126094880137325590462217839041166273".slice(0, 60);
    },
    conversations: () => [...convs.values()],
    presence: () => [],
    contact: (u) => peers.find((p) => p.username === u),
    subscribe(l) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  return api;
}
