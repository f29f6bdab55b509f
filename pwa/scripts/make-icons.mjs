/**
 * Writes the PWA's PNG icons with no native dependencies: shapes as signed-distance functions,
 * 4×4 supersampled, encoded with node:zlib. Run once (`node pwa/scripts/make-icons.mjs`); the
 * outputs are committed under pwa/public/icons/ so the build needs no extra step.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";

const OUT = join(dirname(fileURLToPath(import.meta.url)), "..", "public", "icons");

const CRC_TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = (CRC_TABLE[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** RGBA8 PNG (colour type 6), filter 0 on every row. */
function png(size, rgba) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8;
  ihdr[9] = 6;
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0;
    rgba.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  }
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    sig,
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function roundedBox(px, py, cx, cy, hw, hh, r) {
  const qx = Math.abs(px - cx) - hw + r;
  const qy = Math.abs(py - cy) - hh + r;
  return Math.hypot(Math.max(qx, 0), Math.max(qy, 0)) + Math.min(Math.max(qx, qy), 0) - r;
}

function triangle(px, py, a, b, c) {
  // Inside test by edge signs; good enough for a filled shape under supersampling.
  const s = (p1, p2) => (px - p2[0]) * (p1[1] - p2[1]) - (p1[0] - p2[0]) * (py - p2[1]);
  const d1 = s(a, b);
  const d2 = s(b, c);
  const d3 = s(c, a);
  const neg = d1 < 0 || d2 < 0 || d3 < 0;
  const pos = d1 > 0 || d2 > 0 || d3 > 0;
  return !(neg && pos);
}

/**
 * The mark: two overlapping speech bubbles (a conversation) on an indigo field. `safe` shrinks
 * the mark into the maskable safe zone (a centred circle of 40 % radius, W3C manifest spec).
 */
function draw(size, { maskable }) {
  const ss = 4;
  const buf = Buffer.alloc(size * size * 4);
  const scale = maskable ? 0.72 : 1;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      let a = 0;
      for (let sy = 0; sy < ss; sy++) {
        for (let sx = 0; sx < ss; sx++) {
          const u = (x + (sx + 0.5) / ss) / size;
          const v = (y + (sy + 0.5) / ss) / size;
          // Background: full bleed for maskable, rounded square otherwise.
          const inBg = maskable || roundedBox(u, v, 0.5, 0.5, 0.5, 0.5, 0.22) <= 0;
          if (!inBg) continue;
          // Diagonal indigo → violet gradient.
          const t = (u + v) / 2;
          let cr = 79 + (124 - 79) * t;
          let cg = 70 + (58 - 70) * t;
          let cb = 229 + (237 - 229) * t;
          const mu = 0.5 + (u - 0.5) / scale;
          const mv = 0.5 + (v - 0.5) / scale;
          const back =
            roundedBox(mu, mv, 0.6, 0.4, 0.22, 0.16, 0.1) <= 0 ||
            triangle(mu, mv, [0.66, 0.52], [0.8, 0.52], [0.78, 0.66]);
          const front =
            roundedBox(mu, mv, 0.42, 0.58, 0.24, 0.17, 0.1) <= 0 ||
            triangle(mu, mv, [0.26, 0.7], [0.4, 0.7], [0.24, 0.84]);
          const frontEdge = roundedBox(mu, mv, 0.42, 0.58, 0.27, 0.2, 0.13) <= 0;
          if (front) {
            cr = 255;
            cg = 255;
            cb = 255;
          } else if (back && !frontEdge) {
            cr = 199;
            cg = 210;
            cb = 254;
          }
          r += cr;
          g += cg;
          b += cb;
          a += 255;
        }
      }
      const n = ss * ss;
      const i = (y * size + x) * 4;
      const alpha = a / n;
      // Store straight (non-premultiplied) colour: average only the covered samples.
      const cov = a / 255 || 1;
      buf[i] = Math.round(r / cov);
      buf[i + 1] = Math.round(g / cov);
      buf[i + 2] = Math.round(b / cov);
      buf[i + 3] = Math.round(alpha);
    }
  }
  return png(size, buf);
}

mkdirSync(OUT, { recursive: true });
for (const [name, size, maskable] of [
  ["icon-192.png", 192, false],
  ["icon-512.png", 512, false],
  ["maskable-512.png", 512, true],
  ["apple-touch-icon.png", 180, true],
  ["favicon-32.png", 32, false],
]) {
  writeFileSync(join(OUT, name), draw(size, { maskable }));
  console.log(`wrote ${name}`);
}
