/** The dashboard's charts in plain SVG: shared frame and round axis; accuracy and loss per round. */
import type { RoundPoint } from "../coordinator/http/status.js";

/** The size of every dashboard chart (SVG user units) and its margins. */
export const W = 640;
export const H = 240;
export const PAD = { left: 40, right: 44, top: 12, bottom: 28 };

/** Escape text for SVG/HTML. */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A line with one dot per point; each dot carries its round and exact value as data attributes. */
export function series(
  points: { round: number; value: number }[],
  x: (round: number) => number,
  y: (value: number) => number,
  cls: string,
  label: (value: number) => string = (v) => v.toFixed(4),
): string {
  if (points.length === 0) return "";
  const path = points.map(
    (p, i) => `${i ? "L" : "M"}${x(p.round).toFixed(1)},${y(p.value).toFixed(1)}`,
  );
  const dots = points.map(
    (p) =>
      `<circle class="${cls}" data-round="${p.round}" data-value="${p.value}" cx="${x(p.round).toFixed(1)}" cy="${y(p.value).toFixed(1)}" r="3"><title>round ${p.round}: ${label(p.value)}</title></circle>`,
  );
  return `<path class="${cls}" d="${path.join("")}" style="fill:none" stroke-width="2"/>${dots.join("")}`;
}

/**
 * The round axis shared by the charts: the position of a round and the tick labels. It grows with
 * the run (at least 10 rounds, a quarter ahead), up to the rounds planned.
 */
export function roundAxis(
  history: readonly RoundPoint[],
  roundsTotal: number,
  pad: { left: number; right: number } = PAD,
): { x: (round: number) => number; ticks: string } {
  const latest = history.at(-1)?.round ?? 0;
  const last = Math.max(latest, 1, Math.min(roundsTotal, Math.max(10, Math.ceil(latest * 1.25))));
  const x = (round: number) => pad.left + ((W - pad.left - pad.right) * round) / last;
  const step = Math.max(1, Math.ceil(last / 10));
  const ticks: string[] = [];
  for (let r = step; r <= last; r += step) {
    ticks.push(`<text x="${x(r).toFixed(1)}" y="${H - 10}" text-anchor="middle">${r}</text>`);
  }
  ticks.push(`<text x="${pad.left - 6}" y="${H - 10}" text-anchor="end">round</text>`);
  return { x, ticks: ticks.join("") };
}

/** The chart's SVG markup for the rounds so far (an empty frame before the first). */
export function chartSvg(history: readonly RoundPoint[], roundsTotal: number): string {
  const { x, ticks } = roundAxis(history, roundsTotal);
  const acc = history.flatMap((p) =>
    p.accuracy === null ? [] : [{ round: p.round, value: p.accuracy }],
  );
  const fed = history.flatMap((p) =>
    p.federatedAccuracy === null ? [] : [{ round: p.round, value: p.federatedAccuracy }],
  );
  const loss = history.flatMap((p) => (p.loss === null ? [] : [{ round: p.round, value: p.loss }]));
  const maxLoss = Math.max(0.5, ...loss.map((p) => p.value)) * 1.1;
  const plotH = H - PAD.top - PAD.bottom;
  const yAcc = (v: number) => PAD.top + plotH * (1 - v);
  const yLoss = (v: number) => PAD.top + plotH * (1 - v / maxLoss);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((v) => {
    const y = yAcc(v).toFixed(1);
    return (
      `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${y}" y2="${y}" stroke="#e3e6ee"/>` +
      `<text x="${PAD.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${v.toFixed(2)}</text>` +
      `<text x="${W - PAD.right + 6}" y="${y}" dominant-baseline="middle">${(maxLoss * v).toFixed(2)}</text>`
    );
  });
  const secure = history
    .filter((p) => p.secure)
    .map(
      (p) =>
        `<rect x="${(x(p.round) - 4).toFixed(1)}" y="${PAD.top}" width="8" height="${plotH}" fill="#2a8a4a" opacity="0.08"/>`,
    );
  return (
    `<svg data-testid="chart" data-rounds="${history.length}" viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="accuracy and loss per round">` +
    `<style>.acc{stroke:#2f6fde;fill:#2f6fde}.loss{stroke:#d9822b;fill:#d9822b}.fed{stroke:#8a4fd0;fill:#8a4fd0}</style>` +
    grid.join("") +
    secure.join("") +
    ticks +
    series(acc, x, yAcc, "acc") +
    series(loss, x, yLoss, "loss") +
    (fed.length === 0 ? "" : series(fed, x, yAcc, "fed")) +
    `<text x="${PAD.left + 8}" y="${PAD.top + 12}" style="fill:#2f6fde">● accuracy</text>` +
    `<text x="${PAD.left + 90}" y="${PAD.top + 12}" style="fill:#d9822b">● loss (right axis)</text>` +
    (fed.length === 0
      ? ""
      : `<text x="${PAD.left + 220}" y="${PAD.top + 12}" style="fill:#8a4fd0">● federated accuracy</text>`) +
    `</svg>`
  );
}
