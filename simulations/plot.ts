/** A dependency-free SVG line chart of accuracy and loss per round. */

/** One line of a chart. */
export interface Series {
  label: string;
  points: { x: number; y: number }[];
  color: string;
  dashed?: boolean;
}

/** One chart of a figure: curves over the rounds. */
export interface Panel {
  title: string;
  /** Legend in the lower right (curves that rise) instead of the upper right. */
  legendLow?: boolean;
  yLabel: string;
  series: Series[];
  yRange?: [number, number];
}

const W = 640;
const H = 300;
const M = { left: 56, right: 16, top: 28, bottom: 40 };

function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function niceTicks(lo: number, hi: number, count = 5): number[] {
  const span = hi - lo || 1;
  const step0 = span / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step)
    ticks.push(Number(v.toFixed(10)));
  return ticks;
}

function panel(p: Panel, offsetY: number, xMax: number): string {
  const ys = p.series.flatMap((s) => s.points.map((pt) => pt.y)).filter(Number.isFinite);
  const [lo, hi] = p.yRange ?? [Math.min(0, ...ys), Math.max(...ys, 1e-9) * 1.05];
  const px = (x: number) => M.left + ((W - M.left - M.right) * x) / Math.max(1, xMax);
  const py = (y: number) =>
    offsetY + M.top + (H - M.top - M.bottom) * (1 - (y - lo) / (hi - lo || 1));
  const out: string[] = [];
  out.push(
    `<text x="${W / 2}" y="${offsetY + 18}" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`,
  );
  for (const t of niceTicks(lo, hi)) {
    out.push(
      `<line x1="${M.left}" x2="${W - M.right}" y1="${py(t)}" y2="${py(t)}" stroke="#e5e5e5"/>`,
    );
    out.push(
      `<text x="${M.left - 6}" y="${py(t) + 4}" text-anchor="end" font-size="11">${t}</text>`,
    );
  }
  for (const t of niceTicks(0, xMax).filter((t) => Number.isInteger(t))) {
    out.push(
      `<text x="${px(t)}" y="${offsetY + H - M.bottom + 16}" text-anchor="middle" font-size="11">${t}</text>`,
    );
  }
  out.push(
    `<text x="${W / 2}" y="${offsetY + H - 6}" text-anchor="middle" font-size="12">round</text>`,
  );
  out.push(
    `<text x="14" y="${offsetY + H / 2}" font-size="12" transform="rotate(-90 14 ${offsetY + H / 2})" text-anchor="middle">${esc(p.yLabel)}</text>`,
  );
  out.push(
    `<rect x="${M.left}" y="${offsetY + M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#999"/>`,
  );
  p.series.forEach((s, i) => {
    const pts = s.points.filter((pt) => Number.isFinite(pt.y));
    if (pts.length > 0) {
      const d = pts
        .map((pt, j) => `${j === 0 ? "M" : "L"}${px(pt.x).toFixed(1)},${py(pt.y).toFixed(1)}`)
        .join(" ");
      out.push(
        `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
      );
    }
    const ly = p.legendLow
      ? offsetY + H - M.bottom - 10 - (p.series.length - 1 - i) * 16
      : offsetY + M.top + 14 + i * 16;
    out.push(
      `<line x1="${W - M.right - 170}" x2="${W - M.right - 146}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
    );
    out.push(`<text x="${W - M.right - 140}" y="${ly}" font-size="11">${esc(s.label)}</text>`);
  });
  return out.join("\n");
}

/**
 * Accuracy (top; or another metric, `metric`) and loss (bottom) against rounds, with optional
 * reference lines.
 */
export function accuracyLossSvg(
  title: string,
  accuracy: Series[],
  loss: Series[],
  rounds: number,
  metric = "accuracy",
): string {
  return panelsSvg(accuracyLossPanels(title, accuracy, loss, metric), rounds);
}

/** The two charts of `accuracyLossSvg`, for figures that add more. */
export function accuracyLossPanels(
  title: string,
  accuracy: Series[],
  loss: Series[],
  metric = "accuracy",
): Panel[] {
  const bounded = metric === "accuracy" || metric === "binary-accuracy" || metric === "auc";
  return [
    {
      title: `${title}: ${metric}`,
      yLabel: metric,
      series: accuracy,
      ...(bounded ? { yRange: [0, 1] as [number, number] } : {}),
      legendLow: bounded,
    },
    { title: `${title}: loss`, yLabel: "loss", series: loss },
  ];
}

/** Charts stacked one above the other, over rounds 0 … `rounds`, as one SVG. */
export function panelsSvg(panels: readonly Panel[], rounds: number): string {
  const body = panels.map((p, i) => panel(p, i * H, rounds)).join("\n");
  const height = panels.length * H;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${body}\n</svg>\n`;
}
