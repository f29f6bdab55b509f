/**
 * Binary layout of a direct (1:1) message body — the opaque `body` of `send` / `deliver`
 * (PROTOCOL.md §8.1). Byte 0 is the envelope version (0x01), byte 1 the type:
 *
 *   0x01 hs_init    ik_a(32) ik_b(32) eph_a(32) sig_a(64)
 *   0x02 hs_resp    eph_a(32) eph_b(32) sig_b(64) confirm_b(32)
 *   0x03 hs_confirm sid(16) confirm_a(32)
 *   0x04 prekey     ik_a(32) ik_b(32) spk_id(u32) opk_flag(u8: 0|1) [opk_id(u32)] ek_a(32)
 *                   sig_a(64) sid(16) header(40) ciphertext(≥16)
 *   0x05 message    sid(16) header(40) ciphertext(≥16)
 *   0x06 prekey_pq  ik_a(32) ik_b(32) idh_a(32) spk_id(u32) opk_flag(u8) [opk_id(u32)]
 *                   kem_flag(u8: 0 last-resort | 1 one-time) [kem_id(u32)] ek_a(32) kem_ct(1088)
 *                   sig_a(64) sid(16) header(40) ciphertext(≥16)
 *   0x07 hs_init_pq ik_a(32) ik_b(32) eph_a(32) kem_pk_a(1184) sig_a(64)
 *   0x08 hs_resp_pq eph_a(32) eph_b(32) kem_ct(1088) sig_b(64) confirm_b(32)
 *   0x09 message_kem sid(16) kem_flags(u8: 1 pk | 2 ct | 3 both) [kem_pk(1184)] [kem_ct(1088)]
 *                   header(40) ciphertext(≥16) — a message whose chain carries a KEM step (§8.4.1)
 *
 * For 0x04/0x05/0x06/0x09 everything before the header is the ratchet "prefix" authenticated as AAD.
 */
import { concatBytes, u32be } from "../encoding";
import { Reader } from "./codec";
import { malformed } from "./errors";
import { HEADER_BYTES } from "./ratchet";

export const KEM_CT_BYTES = 1088;

export const ENVELOPE_VERSION = 0x01;
export const ENV = {
  hsInit: 0x01,
  hsResp: 0x02,
  hsConfirm: 0x03,
  prekey: 0x04,
  message: 0x05,
  prekeyPq: 0x06,
  hsInitPq: 0x07,
  hsRespPq: 0x08,
  messageKem: 0x09,
} as const;
export const KEM_PK_BYTES = 1184;

/** The post-quantum fields of a `prekey_pq` envelope (§8.3.5). */
export interface PqFields {
  idhA: Uint8Array;
  /** null: the responder's last-resort KEM prekey (that of `spk_id`). */
  kemOpkId: number | null;
  kemCt: Uint8Array;
}
const MIN_CT = 16;

export type Envelope =
  | {
      type: "hs_init";
      ikA: Uint8Array;
      ikB: Uint8Array;
      ephA: Uint8Array;
      /** The initiator's ephemeral ML-KEM key (hs_init_pq, §8.2.6), or null (classical). */
      kemPk: Uint8Array | null;
      sigA: Uint8Array;
    }
  | {
      type: "hs_resp";
      ephA: Uint8Array;
      ephB: Uint8Array;
      /** The encapsulation to kemPk (hs_resp_pq, §8.2.6), or null (classical). */
      kemCt: Uint8Array | null;
      sigB: Uint8Array;
      confirmB: Uint8Array;
    }
  | { type: "hs_confirm"; sid: Uint8Array; confirmA: Uint8Array }
  | {
      type: "prekey";
      ikA: Uint8Array;
      ikB: Uint8Array;
      spkId: number;
      opkId: number | null;
      ekA: Uint8Array;
      sigA: Uint8Array;
      sid: Uint8Array;
      /** null for a classical (0x04) prekey message. */
      pq: PqFields | null;
      /** Bytes from offset 0 to the header: the ratchet AAD prefix. */
      prefix: Uint8Array;
      header: Uint8Array;
      ciphertext: Uint8Array;
    }
  | {
      type: "message";
      sid: Uint8Array;
      /** The KEM step fields of a `message_kem` (§8.4.1), or null. */
      kem: { pk: Uint8Array | null; ct: Uint8Array | null } | null;
      prefix: Uint8Array;
      header: Uint8Array;
      ciphertext: Uint8Array;
    };

const head = (t: number) => new Uint8Array([ENVELOPE_VERSION, t]);

export function encodeHsInit(e: {
  ikA: Uint8Array;
  ikB: Uint8Array;
  ephA: Uint8Array;
  kemPk?: Uint8Array | null;
  sigA: Uint8Array;
}) {
  if (e.kemPk) return concatBytes(head(ENV.hsInitPq), e.ikA, e.ikB, e.ephA, e.kemPk, e.sigA);
  return concatBytes(head(ENV.hsInit), e.ikA, e.ikB, e.ephA, e.sigA);
}
export function encodeHsResp(e: {
  ephA: Uint8Array;
  ephB: Uint8Array;
  kemCt?: Uint8Array | null;
  sigB: Uint8Array;
  confirmB: Uint8Array;
}) {
  if (e.kemCt) return concatBytes(head(ENV.hsRespPq), e.ephA, e.ephB, e.kemCt, e.sigB, e.confirmB);
  return concatBytes(head(ENV.hsResp), e.ephA, e.ephB, e.sigB, e.confirmB);
}
export function encodeHsConfirm(e: { sid: Uint8Array; confirmA: Uint8Array }) {
  return concatBytes(head(ENV.hsConfirm), e.sid, e.confirmA);
}

/** The part of a prekey message before the ratchet header (also its AAD prefix). */
export function prekeyPrefix(e: {
  ikA: Uint8Array;
  ikB: Uint8Array;
  spkId: number;
  opkId: number | null;
  ekA: Uint8Array;
  sigA: Uint8Array;
  sid: Uint8Array;
  pq?: PqFields | null;
}): Uint8Array {
  const opk = optionalId(e.opkId);
  if (e.pq) {
    return concatBytes(
      head(ENV.prekeyPq),
      e.ikA,
      e.ikB,
      e.pq.idhA,
      u32be(e.spkId),
      opk,
      optionalId(e.pq.kemOpkId),
      e.ekA,
      e.pq.kemCt,
      e.sigA,
      e.sid,
    );
  }
  return concatBytes(head(ENV.prekey), e.ikA, e.ikB, u32be(e.spkId), opk, e.ekA, e.sigA, e.sid);
}

function optionalId(id: number | null): Uint8Array {
  return id === null ? new Uint8Array([0]) : concatBytes(new Uint8Array([1]), u32be(id));
}

function readOptionalId(r: Reader, what: string): number | null {
  const flag = r.u8();
  if (flag !== 0 && flag !== 1) throw malformed(what);
  return flag === 1 ? r.u32() : null;
}

export function messagePrefix(
  sid: Uint8Array,
  kem: { pk: Uint8Array | null; ct: Uint8Array | null } | null = null,
): Uint8Array {
  if (kem === null || (kem.pk === null && kem.ct === null))
    return concatBytes(head(ENV.message), sid);
  const flags = (kem.pk ? 1 : 0) | (kem.ct ? 2 : 0);
  return concatBytes(
    head(ENV.messageKem),
    sid,
    new Uint8Array([flags]),
    kem.pk ?? new Uint8Array(0),
    kem.ct ?? new Uint8Array(0),
  );
}

export function decodeEnvelope(body: Uint8Array): Envelope {
  const r = new Reader(body, "direct envelope");
  if (r.u8() !== ENVELOPE_VERSION) throw malformed("envelope version");
  const t = r.u8();
  switch (t) {
    case ENV.hsInit:
    case ENV.hsInitPq: {
      const e = {
        type: "hs_init" as const,
        ikA: r.bytes(32),
        ikB: r.bytes(32),
        ephA: r.bytes(32),
        kemPk: t === ENV.hsInitPq ? r.bytes(KEM_PK_BYTES) : null,
        sigA: r.bytes(64),
      };
      r.end();
      return e;
    }
    case ENV.hsResp:
    case ENV.hsRespPq: {
      const e = {
        type: "hs_resp" as const,
        ephA: r.bytes(32),
        ephB: r.bytes(32),
        kemCt: t === ENV.hsRespPq ? r.bytes(KEM_CT_BYTES) : null,
        sigB: r.bytes(64),
        confirmB: r.bytes(32),
      };
      r.end();
      return e;
    }
    case ENV.hsConfirm: {
      const e = { type: "hs_confirm" as const, sid: r.bytes(16), confirmA: r.bytes(32) };
      r.end();
      return e;
    }
    case ENV.prekey:
    case ENV.prekeyPq: {
      const ikA = r.bytes(32);
      const ikB = r.bytes(32);
      const idhA = t === ENV.prekeyPq ? r.bytes(32) : null;
      const spkId = r.u32();
      const opkId = readOptionalId(r, "prekey flag");
      const kemOpkId = idhA === null ? null : readOptionalId(r, "kem flag");
      const ekA = r.bytes(32);
      const pq = idhA === null ? null : { idhA, kemOpkId, kemCt: r.bytes(KEM_CT_BYTES) };
      const sigA = r.bytes(64);
      const sid = r.bytes(16);
      const prefix = body.slice(0, body.length - r.remaining());
      const header = r.bytes(HEADER_BYTES);
      if (r.remaining() < MIN_CT) throw malformed("ciphertext");
      return {
        type: "prekey",
        ikA,
        ikB,
        spkId,
        opkId,
        ekA,
        sigA,
        sid,
        pq,
        prefix,
        header,
        ciphertext: r.rest(),
      };
    }
    case ENV.message: {
      const sid = r.bytes(16);
      const prefix = body.slice(0, 18);
      const header = r.bytes(HEADER_BYTES);
      if (r.remaining() < MIN_CT) throw malformed("ciphertext");
      return { type: "message", sid, kem: null, prefix, header, ciphertext: r.rest() };
    }
    case ENV.messageKem: {
      const sid = r.bytes(16);
      const flags = r.u8();
      if (flags < 1 || flags > 3) throw malformed("kem flags");
      const kem = {
        pk: flags & 1 ? r.bytes(KEM_PK_BYTES) : null,
        ct: flags & 2 ? r.bytes(KEM_CT_BYTES) : null,
      };
      const prefix = body.slice(0, body.length - r.remaining());
      const header = r.bytes(HEADER_BYTES);
      if (r.remaining() < MIN_CT) throw malformed("ciphertext");
      return { type: "message", sid, kem, prefix, header, ciphertext: r.rest() };
    }
    default:
      throw malformed("envelope type");
  }
}
