/**
 * The PWA's socket owner (pwa/src/net/connection.ts) against a scripted fake socket and fake
 * timers: auth-before-welcome sequencing, parse-before-deliver, backoff with jitter, no
 * reconnect when replaced, dead-link detection, and stop().
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { type BackoffPolicy, backoffDelay, VISIBLE_BACKOFF } from "../../pwa/src/net/backoff";
import { Connection, type ConnState, type SocketLike } from "../../pwa/src/net/connection";
import { CLOSE, type ClientFrame, type ServerFrame } from "../../shared/protocol";

class FakeSocket implements SocketLike {
  readyState = 0;
  sent: string[] = [];
  closedWith: number | undefined;
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  constructor(readonly url: string) {}
  send(data: string) {
    this.sent.push(data);
  }
  close(code?: number) {
    this.closedWith = code;
    this.readyState = 3;
  }
  // --- driven by the test
  open() {
    this.readyState = 1;
    this.onopen?.({} as Event);
  }
  receive(data: unknown) {
    this.onmessage?.({
      data: typeof data === "string" ? data : JSON.stringify(data),
    } as MessageEvent);
  }
  drop(code: number) {
    this.readyState = 3;
    this.onclose?.({ code } as CloseEvent);
  }
}

const KEY = "A".repeat(43);
const WELCOME = {
  v: 1,
  t: "welcome",
  username: "alice",
  identityKey: KEY,
  oneTimePrekeysRemaining: 0,
  groups: [],
};
const HELLO = { v: 1, t: "hello", hub: "main", challenge: KEY, time: 0 };
const AUTH = {
  v: 1,
  t: "auth",
  username: "alice",
  identityKey: KEY,
  signedPrekey: { id: 1, key: KEY, sig: "A".repeat(86) },
  device: "A".repeat(22),
  claim: false,
  sig: "A".repeat(86),
} as ClientFrame;
const SEND = { v: 1, t: "send", id: "o1", to: "bob", body: "AAAA" } as ClientFrame;

function setup(rand = 0.5, backoff?: () => BackoffPolicy) {
  const sockets: FakeSocket[] = [];
  const states: ConnState[] = [];
  const frames: ServerFrame[] = [];
  const bad: string[] = [];
  let opened = 0;
  let closed = 0;
  const conn = new Connection({
    url: "ws://relay/ws?hub=main",
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    onOpen: () => opened++,
    onClose: () => closed++,
    onFrame: (f) => frames.push(f),
    onState: (s) => states.push(s),
    onBadFrame: (c) => bad.push(c),
    now: () => Date.now(),
    random: () => rand,
    pingEveryMs: 1000,
    deadAfterMs: 2500,
    ...(backoff ? { backoff } : {}),
  });
  const last = () => {
    const s = sockets[sockets.length - 1];
    if (!s) throw new Error("no socket");
    return s;
  };
  return {
    conn,
    sockets,
    states,
    frames,
    bad,
    last,
    counts: () => ({ opened, closed }),
  };
}

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(1_000_000);
});
afterEach(() => {
  vi.useRealTimers();
});

describe("Connection", () => {
  test("auth goes out at once; other frames wait for welcome, which the engine sees first", () => {
    const t = setup();
    t.conn.start();
    expect(t.conn.current).toEqual({ s: "connecting", attempt: 0 });
    t.last().open();
    expect(t.counts().opened).toBe(1);
    expect(t.conn.current.s).toBe("open");
    t.last().receive(HELLO);
    t.conn.send(AUTH);
    t.conn.send(SEND);
    expect(t.last().sent.map((x) => JSON.parse(x).t)).toEqual(["auth"]);
    t.last().receive(WELCOME);
    expect(t.conn.current.s).toBe("online");
    expect(t.frames.map((f) => f.t)).toEqual(["hello", "welcome"]);
    expect(t.last().sent.map((x) => JSON.parse(x).t)).toEqual(["auth", "send"]);
    t.conn.send(SEND);
    expect(t.last().sent).toHaveLength(3);
  });

  test("a new device's link_offer goes out before any auth (PROTOCOL §4.8.3); other frames still wait", () => {
    const t = setup();
    t.conn.start();
    t.last().open();
    t.last().receive(HELLO);
    const offer = {
      v: 1,
      t: "link_offer",
      id: "o1",
      rendezvous: "01234567",
      offer: {
        device: "A".repeat(22),
        deviceKey: KEY,
        linkKey: "A".repeat(1622),
        name: "phone",
        mac: KEY,
      },
    } as ClientFrame;
    t.conn.send(offer);
    t.conn.send(SEND);
    expect(t.last().sent.map((x) => JSON.parse(x).t)).toEqual(["link_offer"]);
  });

  test("frames that fail the wire schema never reach the engine", () => {
    const t = setup();
    t.conn.start();
    t.last().open();
    t.last().receive("not json");
    t.last().receive({ ...WELCOME, extra: 1 });
    t.last().receive({ v: 1, t: "nope" });
    t.last().receive({ v: 1, t: "pong" });
    expect(t.frames).toEqual([]);
    expect(t.bad).toEqual(["bad_frame", "bad_frame", "unknown_type"]);
  });

  test("a dropped link reconnects after a jittered backoff, and welcome resets it", () => {
    const t = setup(0.5);
    t.conn.start();
    t.last().open();
    t.conn.send(SEND); // held (no welcome yet) …
    t.last().drop(1006);
    expect(t.counts().closed).toBe(1);
    const d0 = backoffDelay(0, 0.5);
    expect(t.conn.current).toEqual({ s: "waiting", attempt: 0, retryAt: 1_000_000 + d0 });
    vi.advanceTimersByTime(d0 - 1);
    expect(t.sockets).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(t.sockets).toHaveLength(2);
    // … and dropped with the old socket: after onClose the engine owns resending.
    t.last().open();
    t.last().receive(WELCOME);
    expect(t.last().sent).toEqual([]);
    // fail twice more: the wait grows
    t.last().drop(1006);
    expect(t.conn.current).toMatchObject({ s: "waiting", attempt: 0 });
    vi.advanceTimersByTime(backoffDelay(0, 0.5));
    t.last().drop(1006);
    const w = t.conn.current;
    expect(w).toMatchObject({ s: "waiting", attempt: 1 });
    if (w.s === "waiting") expect(w.retryAt - Date.now()).toBe(backoffDelay(1, 0.5));
  });

  test("retryNow skips the wait", () => {
    const t = setup(0.9);
    t.conn.start();
    t.last().drop(1006);
    expect(t.conn.current.s).toBe("waiting");
    t.conn.retryNow();
    expect(t.sockets).toHaveLength(2);
    expect(t.conn.current.s).toBe("connecting");
  });

  test("replaced by another connection of this identity: stop, never steal it back", () => {
    const t = setup();
    t.conn.start();
    t.last().open();
    t.last().receive(WELCOME);
    t.last().drop(CLOSE.replaced);
    expect(t.conn.current).toEqual({ s: "stopped", reason: "replaced" });
    vi.advanceTimersByTime(10 * 60_000);
    expect(t.sockets).toHaveLength(1);
  });

  test("refused authentication backs off further", () => {
    const t = setup(1);
    t.conn.start();
    t.last().open();
    t.last().drop(CLOSE.authFailed);
    const w = t.conn.current;
    expect(w).toMatchObject({ s: "waiting", attempt: 4 });
    if (w.s === "waiting") expect(w.retryAt - Date.now()).toBe(backoffDelay(4, 1));
  });

  test("pings while open; a silent link is declared dead and reconnected", () => {
    const t = setup(0);
    t.conn.start();
    t.last().open();
    t.last().receive(WELCOME);
    vi.advanceTimersByTime(1000);
    expect(t.last().sent.map((x) => JSON.parse(x).t)).toEqual(["ping"]);
    vi.advanceTimersByTime(2000); // 3 s without a frame > deadAfterMs 2.5 s
    expect(t.sockets[0]?.closedWith).toBe(CLOSE.normal);
    expect(t.counts().closed).toBe(1);
    expect(t.conn.current.s).toBe("waiting");
    vi.advanceTimersByTime(backoffDelay(0, 0));
    expect(t.sockets).toHaveLength(2);
  });

  test("stop() closes for good", () => {
    const t = setup();
    t.conn.start();
    t.last().open();
    t.conn.stop();
    expect(t.conn.current).toEqual({ s: "stopped", reason: "closed" });
    expect(t.counts().closed).toBe(1);
    vi.advanceTimersByTime(10 * 60_000);
    expect(t.sockets).toHaveLength(1);
    t.conn.send(SEND);
    expect(t.sockets[0]?.sent).toEqual([]);
  });

  test("while visible the wait is capped at 15 s; the policy is asked at every wait", () => {
    let visible = true;
    const t = setup(1, () => (visible ? VISIBLE_BACKOFF : { ...VISIBLE_BACKOFF, capMs: 30_000 }));
    t.conn.start();
    for (let i = 0; i < 8; i++) {
      t.last().drop(1006);
      const w = t.conn.current;
      if (w.s !== "waiting") throw new Error("not waiting");
      expect(w.retryAt - Date.now()).toBeLessThanOrEqual(15_000);
      vi.advanceTimersByTime(w.retryAt - Date.now());
    }
    expect(VISIBLE_BACKOFF.capMs).toBe(15_000);
    visible = false;
    t.last().drop(1006);
    const w = t.conn.current;
    if (w.s === "waiting") expect(w.retryAt - Date.now()).toBe(30_000);
  });

  test("after being replaced, start() takes the connection back (the user chose 'Use here')", () => {
    const t = setup();
    t.conn.start();
    t.last().open();
    t.last().receive(WELCOME);
    t.last().drop(CLOSE.replaced);
    expect(t.conn.current).toEqual({ s: "stopped", reason: "replaced" });
    t.conn.start();
    expect(t.sockets).toHaveLength(2);
    t.last().open();
    t.last().receive(WELCOME);
    expect(t.conn.current.s).toBe("online");
  });
});
