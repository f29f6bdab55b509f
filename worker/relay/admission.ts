/**
 * Which client a socket comes from, for the per-address bound on unauthenticated sockets
 * (PROTOCOL.md §4.1, §7.2). Cloudflare sets `CF-Connecting-IP` on every request it forwards and
 * overwrites any value a client sent, so it cannot be forged in production. Under `wrangler dev`
 * and in tests it may be absent: every such socket then shares the one bucket "unknown".
 */
import * as v from "valibot";
import { LIMITS } from "../../shared/protocol";

export const UNKNOWN_ADDRESS = "unknown";

/** The bucket as stored in a pending socket's attachment. */
export const AddressBucket = v.pipe(v.string(), v.minLength(1), v.maxLength(64));

const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const HEXTET = /^[0-9a-f]{1,4}$/;

/**
 * The bucket for a `CF-Connecting-IP` value: an IPv4 address as is (also when IPv4-mapped); an
 * IPv6 address by its /64 prefix (one subscriber usually holds a whole /64, so per-address would
 * be no bound at all); anything else, or nothing, "unknown".
 */
export function addressBucket(header: string | null): string {
  if (header === null) return UNKNOWN_ADDRESS;
  const h = header.trim().toLowerCase();
  if (IPV4.test(h)) return h;
  const groups = ipv6Groups(h);
  if (groups === null) return UNKNOWN_ADDRESS;
  // An IPv4-mapped address (::ffff:a.b.c.d) is that IPv4 client, not one shared /64.
  if (groups.slice(0, 6).join(":") === "0:0:0:0:0:ffff") {
    const [hi = 0, lo = 0] = groups.slice(6).map((x) => Number.parseInt(x, 16));
    return [hi >> 8, hi & 255, lo >> 8, lo & 255].join(".");
  }
  return `${groups.slice(0, 4).join(":")}::/64`;
}

/**
 * The buckets a socket from `bucket` counts toward, each with its bound (PROTOCOL.md §7.2): the
 * address (IPv4, or an IPv6 /64), and for IPv6 also its /56 and /48 — so a source holding many
 * /64s (a /48 has 65,536) is still one source.
 */
export function admissionBuckets(bucket: string): Array<{ key: string; max: number }> {
  const out: Array<{ key: string; max: number }> = [
    { key: bucket, max: LIMITS.maxPendingSocketsPerIp },
  ];
  if (!bucket.endsWith("::/64")) return out;
  const [a = "0", b = "0", c = "0", d = "0"] = bucket.slice(0, -"::/64".length).split(":");
  const p56 = (Number.parseInt(d, 16) >> 8).toString(16);
  out.push(
    { key: `${a}:${b}:${c}:${p56}::/56`, max: LIMITS.maxPendingSocketsPer56 },
    { key: `${a}:${b}:${c}::/48`, max: LIMITS.maxPendingSocketsPer48 },
  );
  return out;
}

/**
 * The buckets a new username from `bucket` counts toward, each with its daily bound (§4.3): the
 * same address and prefixes as admission, with the registration maxima. Empty for "unknown" and
 * for loopback: Cloudflare sets `CF-Connecting-IP` on every request to a deployed Worker, and
 * never to a loopback address, so these come only from `wrangler dev` on this machine (which
 * sets 127.0.0.1) and tests, where one shared bucket would bound the whole local hub.
 */
export function registrationBuckets(bucket: string): Array<{ key: string; max: number }> {
  if (bucket === UNKNOWN_ADDRESS || isLoopback(bucket)) return [];
  const max = [
    LIMITS.maxRegistrationsPerIpPerDay,
    LIMITS.maxRegistrationsPer56PerDay,
    LIMITS.maxRegistrationsPer48PerDay,
  ];
  return admissionBuckets(bucket).map((b, i) => ({ key: b.key, max: max[i] as number }));
}

/** 127.0.0.0/8, or the IPv6 /64 holding ::1. */
function isLoopback(bucket: string): boolean {
  return bucket.startsWith("127.") || bucket === "0:0:0:0::/64";
}

/** The eight hextets of an IPv6 address (leading zeros dropped), or null if it is not one. */
function ipv6Groups(h: string): string[] | null {
  if (h.length > 45 || !h.includes(":")) return null;
  const halves = h.split("::");
  if (halves.length > 2) return null;
  const part = (x: string | undefined) => (x === undefined || x === "" ? [] : x.split(":"));
  const head = part(halves[0]);
  const tail = part(halves[1]);
  // An embedded IPv4 tail (::ffff:1.2.3.4) stands for two hextets.
  const last = tail.length > 0 ? tail[tail.length - 1] : head[head.length - 1];
  let v4: string[] = [];
  if (last !== undefined && IPV4.test(last)) {
    const [a = 0, b = 0, c = 0, d = 0] = last.split(".").map(Number);
    v4 = [((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
    if (tail.length > 0) tail.pop();
    else head.pop();
  }
  const given = head.length + tail.length + v4.length;
  if (halves.length === 1 ? given !== 8 : given > 7) return null;
  const all = [...head, ...Array<string>(8 - given).fill("0"), ...tail, ...v4];
  if (!all.every((x) => HEXTET.test(x))) return null;
  return all.map((x) => x.replace(/^0+(?=.)/, ""));
}
