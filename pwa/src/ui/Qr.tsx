/** A QR code as one SVG path (from uqr's module matrix): no canvas, no inline style, crisp at any size. */
import { createMemo } from "solid-js";
import { encode } from "uqr";

export function Qr(props: { text: string; label: string }) {
  const qr = createMemo(() => {
    const r = encode(props.text, { ecc: "M", border: 2 });
    let d = "";
    r.data.forEach((row, y) => {
      row.forEach((dark, x) => {
        if (dark) d += `M${x} ${y}h1v1h-1z`;
      });
    });
    return { d, size: r.size };
  });
  return (
    <svg
      class="qr"
      role="img"
      aria-label={props.label}
      viewBox={`0 0 ${qr().size} ${qr().size}`}
      shape-rendering="crispEdges"
    >
      <rect class="qr-bg" width={qr().size} height={qr().size} />
      <path class="qr-fg" d={qr().d} />
    </svg>
  );
}
