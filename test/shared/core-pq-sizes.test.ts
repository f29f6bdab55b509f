/**
 * Sizes with ML-KEM-768 keys (1184 bytes) and ciphertexts (1088) against every limit of
 * PROTOCOL.md §7.1 they touch: the largest direct bodies (`prekey_pq`, `message_kem` with both
 * fields) with the largest content `checkTextFits` admits, a full `upload_prekeys`, an `auth` and
 * a `bundle` with every post-quantum field. Each goes through the real encoders and parsers.
 */
import { describe, expect, it } from "vitest";
import { checkTextFits, encodeContent } from "../../shared/core/content";
import { messagePrefix, prekeyPrefix } from "../../shared/core/envelope";
import { isCoreError } from "../../shared/core/errors";
import { aesGcmEncrypt, randomBytes } from "../../shared/crypto";
import { toB64u, utf8 } from "../../shared/encoding";
import {
  LIMITS,
  PROTOCOL_VERSION,
  parseClientFrame,
  parseServerFrame,
} from "../../shared/protocol";

const b64 = (n: number) => toB64u(randomBytes(n));

describe("post-quantum sizes (§7.1)", () => {
  it("the largest admitted text fits maxBodyChars in the largest envelopes", async () => {
    // The largest text checkTextFits admits pads to the 64 KiB bucket (§8.5): grow it to the edge.
    let text = "x".repeat(60_000);
    const content = (t: string) => ({ t: "text" as const, id: "m", ts: 1, text: t });
    for (;;) {
      const next = `${text}${"é".repeat(200)}`;
      try {
        checkTextFits(content(next), LIMITS.maxBodyChars);
      } catch (e) {
        if (isCoreError(e, "too_long")) break;
        throw e;
      }
      text = next;
    }
    const padded = encodeContent(content(text));
    expect(padded.length).toBe(65_536);
    const sid = randomBytes(16);
    const prefixes = [
      messagePrefix(sid, { pk: randomBytes(1184), ct: randomBytes(1088) }),
      prekeyPrefix({
        ikA: randomBytes(32),
        ikB: randomBytes(32),
        spkId: 1,
        opkId: 2,
        ekA: randomBytes(32),
        sigA: randomBytes(64),
        sid,
        pq: { idhA: randomBytes(32), kemOpkId: 3, kemCt: randomBytes(1088) },
      }),
    ];
    for (const prefix of prefixes) {
      const ct = await aesGcmEncrypt(randomBytes(32), new Uint8Array(12), padded, prefix);
      const body = toB64u(new Uint8Array([...prefix, ...new Uint8Array(40), ...ct]));
      expect(body.length).toBeLessThanOrEqual(LIMITS.maxBodyChars);
      const frame = { v: PROTOCOL_VERSION, t: "send", id: "s1", to: "bob", body };
      expect(parseClientFrame(JSON.stringify(frame)).ok).toBe(true);
    }
  });

  it("a full upload_prekeys (100 X25519 + 50 ML-KEM one-time prekeys) is one valid frame", () => {
    const frame = {
      v: PROTOCOL_VERSION,
      t: "upload_prekeys",
      id: "u1",
      oneTimePrekeys: Array.from({ length: LIMITS.maxOneTimePrekeysPerUpload }, (_, i) => ({
        id: i + 1,
        key: b64(32),
      })),
      oneTimeKemPrekeys: Array.from({ length: LIMITS.maxOneTimeKemPrekeysPerUpload }, (_, i) => ({
        id: i + 1,
        key: b64(1184),
        sig: b64(64),
      })),
    };
    const text = JSON.stringify(frame);
    expect(utf8(text).length).toBeLessThan(LIMITS.maxFrameBytes);
    expect(parseClientFrame(text).ok).toBe(true);
    const over = {
      ...frame,
      oneTimeKemPrekeys: [...frame.oneTimeKemPrekeys, frame.oneTimeKemPrekeys[0]],
    };
    expect(parseClientFrame(JSON.stringify(over)).ok).toBe(false);
  });

  it("auth and bundle with every post-quantum field parse; a wrong-length KEM key does not", () => {
    const pq = { spkId: 7, idh: b64(32), kem: b64(1184), sig: b64(64) };
    const spk = { id: 7, key: b64(32), sig: b64(64) };
    const auth = {
      v: PROTOCOL_VERSION,
      t: "auth",
      username: "alice",
      identityKey: b64(32),
      signedPrekey: spk,
      device: b64(16),
      claim: false,
      pqPrekey: pq,
      sig: b64(64),
    };
    expect(parseClientFrame(JSON.stringify(auth)).ok).toBe(true);
    const bundle = {
      v: PROTOCOL_VERSION,
      t: "bundle",
      id: "f1",
      username: "bob",
      identityKey: b64(32),
      signedPrekey: spk,
      oneTimePrekey: { id: 9, key: b64(32) },
      pqPrekey: pq,
      oneTimeKemPrekey: { id: 11, key: b64(1184), sig: b64(64) },
    };
    expect(parseServerFrame(JSON.stringify(bundle)).ok).toBe(true);
    const short = { ...bundle, pqPrekey: { ...pq, kem: b64(1183) } };
    expect(parseServerFrame(JSON.stringify(short)).ok).toBe(false);
  });
});
