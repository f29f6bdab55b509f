/**
 * A hub from before the Directory object owned the bindings (docs/ARCHITECTURE.md "Migration"):
 * its object kept each name's identity and signed prekey in `users` and each linked device's
 * signed prekey in `device_prekeys`. On its next start it hands them to the directory before its
 * first directory call, and nobody's name, identity or bundle changes in the move.
 */
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { freshHub, newKeys, signedPrekey, TestClient } from "./support/client";
import { countInDirectory, relaySql, stubFor } from "./support/relay-store";

const PHONE = "AAAAAAAAAAAAAAAAAAAAAA";

describe("the move of bindings and signed prekeys into the Directory object", () => {
  it("an existing name keeps its identity and bundle; another identity cannot take it; the old tables are gone", async () => {
    const hub = freshHub("mig");
    const old = await newKeys();
    const spk = await signedPrekey(old, 3);
    const phoneSpk = await signedPrekey(old, 4);
    // The hub's storage as the earlier version left it.
    await runInDurableObject(stubFor(hub), (_i, state) => {
      const sql = state.storage.sql;
      sql.exec("DROP TABLE IF EXISTS users");
      sql.exec(`CREATE TABLE users (
         username TEXT PRIMARY KEY, identity_key TEXT NOT NULL UNIQUE, spk_id INTEGER NOT NULL,
         spk_key TEXT NOT NULL, spk_sig TEXT NOT NULL, created_at INTEGER NOT NULL,
         seen_at INTEGER NOT NULL)`);
      sql.exec(
        "INSERT INTO users VALUES ('olduser', ?, ?, ?, ?, ?, ?)",
        old.identityKey,
        spk.id,
        spk.key,
        spk.sig,
        Date.now(),
        Date.now(),
      );
      sql.exec(`CREATE TABLE device_prekeys (address TEXT PRIMARY KEY, spk_id INTEGER NOT NULL,
         spk_key TEXT NOT NULL, spk_sig TEXT NOT NULL)`);
      sql.exec(
        "INSERT INTO device_prekeys VALUES (?, ?, ?, ?)",
        `olduser.${PHONE}`,
        phoneSpk.id,
        phoneSpk.key,
        phoneSpk.sig,
      );
    });
    await evictDurableObject(stubFor(hub));

    // Another identity asking for the name is refused (on the hub's copy, without a call).
    const thief = await TestClient.open(hub);
    thief.send(await thief.authFrame("olduser", await newKeys()));
    expect((await thief.error()).code).toBe("name_taken");
    // The first directory call hands everything over: the directory holds the binding, the
    // bundle carries the signed prekey the hub had, and the linked device's entry moved too.
    const { c: bob } = await TestClient.connect(hub, "bob");
    bob.send({ v: 1, t: "fetch_bundle", id: "b", username: "olduser" });
    const bundle = await bob.next("bundle", (f) => f.id === "b");
    expect(bundle.identityKey).toBe(old.identityKey);
    expect(bundle.signedPrekey).toEqual(spk);
    expect(
      await countInDirectory(
        hub,
        `SELECT COUNT(*) AS n FROM bindings WHERE username = 'olduser' AND identity_key = '${old.identityKey}'`,
      ),
    ).toBe(1);
    expect(
      await countInDirectory(
        hub,
        `SELECT COUNT(*) AS n FROM signed_prekeys WHERE entry = 'olduser.${PHONE}' AND id = 4`,
      ),
    ).toBe(1);
    // The owner gets in as before.
    const { welcome } = await TestClient.connect(hub, "olduser", old);
    expect(welcome.identityKey).toBe(old.identityKey);
    // Nothing is left to hand over, and the hub's tables have their present shape.
    const left = await runInDurableObject(stubFor(hub), (_i, state) => {
      const sql = relaySql(state);
      const seed = Number(sql.exec("SELECT COUNT(*) AS n FROM directory_seed").one().n);
      const columns = sql.exec("SELECT * FROM users LIMIT 1").columnNames;
      const legacy = sql
        .exec("SELECT name FROM sqlite_master WHERE name IN ('device_prekeys', 'registrations')")
        .toArray().length;
      return { seed, columns, legacy };
    });
    expect(left).toEqual({
      seed: 0,
      columns: ["username", "identity_key", "created_at", "seen_at"],
      legacy: 0,
    });
    bob.close();
  });
});
