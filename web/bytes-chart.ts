/** The dashboard's traffic chart: bytes up and down per round on a log scale, as plain SVG. */
import type { RoundPoint } from "../coordinator/http/status.js";
import { H, PAD, W, roundAxis, series } from "./chart.js";

/**
 * Room for tick labels such as `256 KiB` on the left; no right axis. The plot is as wide as the
 * accuracy chart's, so the two read side by side.
 */
const BYTES_PAD = { ...PAD, left: 56, right: 28 };

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** Bytes with a binary unit: `12 B`, `199.1 KiB`, `6.3 MiB`, `1.25 GiB`. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A tick at 2^e bytes, whole in its unit: `4 KiB`, `256 KiB`, `1 MiB`. */
function tickLabel(e: number): string {
  const unit = Math.min(Math.floor(e / 10), UNITS.length - 1);
  return `${2 ** (e - 10 * unit)} ${UNITS[unit]}`;
}

/**
 * The exponents (base 2) the axis spans: a doubling of room above the largest value, so the
 * legend stays clear of the dots, and below the smallest; 1 KiB to 1 MiB before any round.
 */
export function bytesDomain(values: readonly number[]): { lo: number; hi: number } {
  const positive = values.filter((v) => v > 0);
  if (positive.length === 0) return { lo: 10, hi: 20 };
  const lo = Math.max(0, Math.floor(Math.log2(Math.min(...positive))) - 1);
  const hi = Math.ceil(Math.log2(Math.max(...positive))) + 1;
  return { lo, hi: Math.max(hi, lo + 3) };
}

/**
 * The SVG markup of bytes per round, oldest first: up (the clients' updates; in secure rounds all
 * their messages) and down (the global model; in secure rounds also the relayed key shares).
 */
export function bytesChartSvg(history: readonly RoundPoint[], roundsTotal: number): string {
  const { x, ticks } = roundAxis(history, roundsTotal, BYTES_PAD);
  // Zero bytes has no place on a log axis: such a round (none sent) shows no dot.
  const up = history.flatMap((p) => (p.bytesUp > 0 ? [{ round: p.round, value: p.bytesUp }] : []));
  const down = history.flatMap((p) =>
    p.bytesDown > 0 ? [{ round: p.round, value: p.bytesDown }] : [],
  );
  const { lo, hi } = bytesDomain([...up, ...down].map((p) => p.value));
  const plotH = H - BYTES_PAD.top - BYTES_PAD.bottom;
  const y = (v: number) => BYTES_PAD.top + (plotH * (hi - Math.log2(v))) / (hi - lo);
  // Ticks at powers of two a whole step apart, so 1 KiB and 1 MiB are among them when in range.
  const step = [1, 2, 5, 10].find((s) => (hi - lo) / s <= 6) ?? 10;
  const grid: string[] = [];
  for (let e = Math.ceil(lo / step) * step; e <= hi; e += step) {
    const ty = y(2 ** e).toFixed(1);
    grid.push(
      `<line x1="${BYTES_PAD.left}" x2="${W - BYTES_PAD.right}" y1="${ty}" y2="${ty}" stroke="#e3e6ee"/>` +
        `<text class="tick" x="${BYTES_PAD.left - 6}" y="${ty}" text-anchor="end" dominant-baseline="middle">${tickLabel(e)}</text>`,
    );
  }
  const label = (arrow: string) => (v: number) => `${arrow} ${formatBytes(v)}`;
  return (
    `<svg data-testid="bytes-chart" data-rounds="${history.length}" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="bytes up and down per round, log scale">` +
    `<style>.bytes-up{stroke:#0f8f7e;fill:#0f8f7e}.bytes-down{stroke:#c0468f;fill:#c0468f}</style>` +
    grid.join("") +
    ticks +
    series(down, x, y, "bytes-down", label("↓")) +
    series(up, x, y, "bytes-up", label("↑")) +
    `<text x="${BYTES_PAD.left + 8}" y="${BYTES_PAD.top + 12}" style="fill:#c0468f">● down (coordinator → clients)</text>` +
    `<text x="${BYTES_PAD.left + 200}" y="${BYTES_PAD.top + 12}" style="fill:#0f8f7e">● up (clients → coordinator)</text>` +
    `</svg>`
  );
}
