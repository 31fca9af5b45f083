/** The dashboard's bytes chart as markup: the dots' data, the log axis and its KiB/MiB ticks. */
import { describe, expect, it } from "vitest";
import type { RoundPoint } from "../coordinator/http/index.js";
import { bytesChartSvg, bytesDomain, formatBytes } from "../web/bytes-chart.js";

const KiB = 1024;
const MiB = 1024 ** 2;

function point(round: number, bytesUp: number, bytesDown: number): RoundPoint {
  return {
    round,
    secure: false,
    async: false,
    accuracy: null,
    loss: null,
    federatedAccuracy: null,
    federatedLoss: null,
    trainLoss: null,
    participants: 2,
    failures: 0,
    durationMs: 100,
    bytesUp,
    bytesDown,
    codec: "q8",
    compressionRatio: bytesDown / bytesUp,
    encodeMs: 1,
    decodeMs: 1,
    aborted: false,
    epsilon: null,
  };
}

/** The dots of one series: round, exact value and vertical position. */
function dots(svg: string, cls: string): { round: number; value: number; cy: number }[] {
  const pattern = new RegExp(
    `<circle class="${cls}" data-round="(\\d+)" data-value="([\\d.e+]+)" cx="[\\d.]+" cy="([\\d.]+)"`,
    "g",
  );
  return [...svg.matchAll(pattern)].map((m) => ({
    round: Number(m[1]),
    value: Number(m[2]),
    cy: Number(m[3]),
  }));
}

/** The y-axis ticks, bottom to top: label and height. */
const tickMarks = (svg: string) =>
  [...svg.matchAll(/<text class="tick" x="[\d.]+" y="([\d.]+)"[^>]*>([^<]+)<\/text>/g)].map(
    (m) => ({ label: m[2], y: Number(m[1]) }),
  );
const ticks = (svg: string) => tickMarks(svg).map((t) => t.label);

describe("bytes chart", () => {
  it("plots one dot per round and direction, down above up on a log axis", () => {
    // Two clients: the float32 model down to each, q8 updates up (about a quarter).
    const history = [1, 2, 3].map((r) => point(r, 2 * 199 * KiB + r, 2 * 778 * KiB));
    const svg = bytesChartSvg(history, 10);
    const up = dots(svg, "bytes-up");
    const down = dots(svg, "bytes-down");
    expect(up.map((d) => [d.round, d.value])).toEqual(history.map((p) => [p.round, p.bytesUp]));
    expect(down.map((d) => [d.round, d.value])).toEqual(history.map((p) => [p.round, p.bytesDown]));
    for (const [i, d] of down.entries()) expect(d.cy).toBeLessThan(up[i]!.cy);
    // A doubling of room beyond both ends, ticks at every power of two in between.
    const { lo, hi } = bytesDomain([...up, ...down].map((d) => d.value));
    expect([lo, hi]).toEqual([17, 22]);
    expect(ticks(svg)).toEqual(["128 KiB", "256 KiB", "512 KiB", "1 MiB", "2 MiB", "4 MiB"]);
    // Log scale: every doubling is the same height.
    const ys = tickMarks(svg).map((t) => t.y);
    const gaps = ys.slice(1).map((y, i) => ys[i]! - y);
    for (const gap of gaps) expect(gap).toBeCloseTo(gaps[0]!, 0);
    expect(gaps[0]).toBeGreaterThan(30);
    expect(svg).toContain("<title>round 2: ↑ 398.0 KiB</title>");
    expect(svg).toContain("<title>round 2: ↓ 1.5 MiB</title>");
  });

  it("keeps both series readable when one is over a hundred times the other", () => {
    const svg = bytesChartSvg([point(1, 8 * KiB, MiB), point(2, 8 * KiB, MiB)], 5);
    const [up, down] = [dots(svg, "bytes-up"), dots(svg, "bytes-down")];
    // 7 doublings apart: far from both edges and from each other.
    expect(up[0]!.cy - down[0]!.cy).toBeGreaterThan(100);
    // Ticks every other power of two, so there are no more than six.
    expect(ticks(svg)).toEqual(["4 KiB", "16 KiB", "64 KiB", "256 KiB", "1 MiB"]);
  });

  it("draws an empty 1 KiB – 1 MiB frame before the first round and no dot for zero bytes", () => {
    expect(ticks(bytesChartSvg([], 10))).toEqual([
      "1 KiB",
      "4 KiB",
      "16 KiB",
      "64 KiB",
      "256 KiB",
      "1 MiB",
    ]);
    const svg = bytesChartSvg([point(1, 0, 3 * KiB)], 10);
    expect(dots(svg, "bytes-up")).toEqual([]);
    expect(dots(svg, "bytes-down").map((d) => d.value)).toEqual([3 * KiB]);
  });

  it("formats bytes with binary units", () => {
    expect([12, 1536, 6.3 * MiB, 1.25 * 1024 * MiB].map(formatBytes)).toEqual([
      "12 B",
      "1.5 KiB",
      "6.3 MiB",
      "1.25 GiB",
    ]);
  });
});
