/**
 * One current device per identity (PROTOCOL.md §4.3): a restore on a new device claims the
 * identity, the old device's one-time prekeys go, and the old device is refused from then on
 * (`device_replaced`), live or reconnecting, until it claims the identity back.
 */
import { describe, expect, it } from "vitest";
import { toB64u } from "../../shared/encoding";
import { CLOSE } from "../../shared/protocol";
import { freshHub, newKeys, oneTimePrekeys, signedPrekey, TestClient } from "./support/client";

const deviceId = (n: number) => toB64u(new Uint8Array(16).fill(n));

async function authAs(
  hub: string,
  keys: Awaited<ReturnType<typeof newKeys>>,
  device: string,
  claim: boolean,
) {
  const c = await TestClient.open(hub);
  c.send(await c.authFrame("alice", keys, { device, claim }));
  return c;
}

describe("relay devices", () => {
  it("a claiming device replaces the live one: the old is told device_replaced and closed", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const laptop = await authAs(hub, keys, deviceId(1), true);
    await laptop.next("welcome");
    const restored = await authAs(hub, keys, deviceId(2), true);
    await restored.next("welcome");
    expect((await laptop.error()).code).toBe("device_replaced");
    expect((await laptop.waitClosed()).code).toBe(CLOSE.deviceReplaced);
    restored.close();
  });

  it("the replaced device is refused when it reconnects, until it claims the identity back", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    (await authAs(hub, keys, deviceId(1), true)).close();
    const restored = await authAs(hub, keys, deviceId(2), true);
    await restored.next("welcome");
    restored.close();
    await restored.waitClosed();

    const old = await authAs(hub, keys, deviceId(1), false);
    expect((await old.error()).code).toBe("device_replaced");
    expect((await old.waitClosed()).code).toBe(CLOSE.deviceReplaced);
    // The current device reconnects without claiming.
    const again = await authAs(hub, keys, deviceId(2), false);
    await again.next("welcome");
    // The old one takes it back by claiming; the current one is then the replaced one.
    const back = await authAs(hub, keys, deviceId(1), true);
    await back.next("welcome");
    expect((await again.error()).code).toBe("device_replaced");
    back.close();
  });

  it("a reconnect of the current device is a plain `replaced`, and keeps the one-time prekeys", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const first = await authAs(hub, keys, deviceId(1), false);
    await first.next("welcome");
    first.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: oneTimePrekeys(1, 5) });
    await first.next("accepted", (f) => f.id === "u");
    const second = await authAs(hub, keys, deviceId(1), true);
    const w = await second.next("welcome");
    expect((await first.error()).code).toBe("replaced");
    expect(w.oneTimePrekeysRemaining).toBe(5);
    second.close();
  });

  it("a takeover drops the old device's one-time prekeys and publishes the new signed prekey", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    const old = await authAs(hub, keys, deviceId(1), false);
    await old.next("welcome");
    old.send({ v: 1, t: "upload_prekeys", id: "u", oneTimePrekeys: oneTimePrekeys(1, 7) });
    await old.next("accepted", (f) => f.id === "u");
    old.close();
    await old.waitClosed();

    const spk = await signedPrekey(keys, 42);
    const c = await TestClient.open(hub);
    c.send(await c.authFrame("alice", keys, { device: deviceId(2), claim: true, spk }));
    const w = await c.next("welcome");
    // Nobody can be handed a one-time prekey whose secret stayed on the old device.
    expect(w.oneTimePrekeysRemaining).toBe(0);
    const { c: bob } = await TestClient.connect(hub, "bob");
    bob.send({ v: 1, t: "fetch_bundle", id: "f", username: "alice" });
    const b = await bob.next("bundle", (f) => f.id === "f");
    expect(b.oneTimePrekey).toBeNull();
    expect(b.signedPrekey).toEqual(spk);
    c.close();
    bob.close();
  });

  it("the device id and the claim are signed: changing either fails auth", async () => {
    const hub = freshHub();
    const keys = await newKeys();
    for (const change of [{ device: deviceId(9) }, { claim: true }]) {
      const c = await TestClient.open(hub);
      const frame = await c.authFrame("alice", keys, { device: deviceId(1), claim: false });
      c.send({ ...frame, ...change });
      expect((await c.error()).code).toBe("auth_failed");
    }
  });
});
