/**
 * Hand-written SVG line charts for the bench (no plotting dependency). Log or linear
 * axes, one polyline with markers per series, optional horizontal target lines, a legend.
 */
export interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  points: Array<[number, number]>;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  xLog?: boolean;
  yLog?: boolean;
  series: Series[];
  hlines?: Array<{ y: number; label: string; color: string }>;
}

const W = 640;
const H = 400;
const M = { l: 70, r: 20, t: 40, b: 80 };

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
      }
    }
    return out;
  }
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 4 || 1));
  const s = [1, 2, 5, 10].map((m) => m * step).find((x) => (hi - lo) / x <= 6) ?? step * 10;
  const out: number[] = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-9; v += s) out.push(Number(v.toPrecision(6)));
  return out;
}

function label(v: number): string {
  if (v >= 1000) return `${Number((v / 1000).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

export function lineChart(c: Chart): string {
  const pts = c.series
    .flatMap((s) => s.points)
    .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const ys = [...pts.map((p) => p[1]), ...(c.hlines ?? []).map((h) => h.y)];
  const xs = pts.map((p) => p[0]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (c.yLog) {
    y0 = 10 ** Math.floor(Math.log10(Math.max(y0, 1e-6)));
    y1 = 10 ** Math.ceil(Math.log10(y1));
  } else {
    y0 = Math.min(0, y0);
    y1 = y1 * 1.1;
  }
  if (c.xLog) {
    x0 = x0 / 1.3;
    x1 = x1 * 1.3;
  } else if (x0 === x1) x1 = x0 + 1;
  const fx = (x: number) =>
    M.l +
    ((c.xLog ? Math.log10(x) - Math.log10(x0) : x - x0) /
      (c.xLog ? Math.log10(x1) - Math.log10(x0) : x1 - x0)) *
      (W - M.l - M.r);
  const fy = (y: number) =>
    H -
    M.b -
    ((c.yLog ? Math.log10(y) - Math.log10(y0) : y - y0) /
      (c.yLog ? Math.log10(y1) - Math.log10(y0) : y1 - y0)) *
      (H - M.t - M.b);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif" font-size="12" role="img" aria-labelledby="title">`,
    `<title id="title">${esc(c.title)}</title>`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="600">${esc(c.title)}</text>`,
  );
  for (const t of ticks(x0, x1, c.xLog === true)) {
    const x = fx(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${M.t}" x2="${x}" y2="${H - M.b}" stroke="#eee"/>`);
    out.push(
      `<text x="${x}" y="${H - M.b + 16}" text-anchor="middle" fill="#444">${label(t)}</text>`,
    );
  }
  for (const t of ticks(y0, y1, c.yLog === true)) {
    const y = fy(t).toFixed(1);
    out.push(`<line x1="${M.l}" y1="${y}" x2="${W - M.r}" y2="${y}" stroke="#eee"/>`);
    out.push(
      `<text x="${M.l - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#444">${label(t)}</text>`,
    );
  }
  out.push(
    `<rect x="${M.l}" y="${M.t}" width="${W - M.l - M.r}" height="${H - M.t - M.b}" fill="none" stroke="#888"/>`,
    `<text x="${(M.l + W - M.r) / 2}" y="${H - M.b + 36}" text-anchor="middle">${esc(c.xLabel)}</text>`,
    `<text transform="translate(16 ${(M.t + H - M.b) / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`,
  );
  for (const h of c.hlines ?? []) {
    const y = fy(h.y).toFixed(1);
    out.push(
      `<line x1="${M.l}" y1="${y}" x2="${W - M.r}" y2="${y}" stroke="${h.color}" stroke-dasharray="6 4"/>`,
    );
    out.push(
      `<text x="${W - M.r - 4}" y="${Number(y) - 4}" text-anchor="end" fill="${h.color}">${esc(h.label)}</text>`,
    );
  }
  c.series.forEach((s, i) => {
    const p = s.points.filter(
      ([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!c.yLog || y > 0),
    );
    const d = p
      .map(([x, y], k) => `${k === 0 ? "M" : "L"}${fx(x).toFixed(1)},${fy(y).toFixed(1)}`)
      .join(" ");
    out.push(
      `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ""}/>`,
    );
    for (const [x, y] of p)
      out.push(
        `<circle cx="${fx(x).toFixed(1)}" cy="${fy(y).toFixed(1)}" r="3.5" fill="${s.color}"/>`,
      );
    const lx = M.l + 10 + (i % 3) * 190;
    const ly = H - 22 + Math.floor(i / 3) * 14 - (c.series.length > 3 ? 8 : 0);
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ""}/>`,
    );
    out.push(`<text x="${lx + 28}" y="${ly}" dominant-baseline="middle">${esc(s.name)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
