/** Human-readable progress lines. */
import type { EvalStats } from "../models/task.js";
import type { RoundMetrics } from "./run-store.js";

/** Bytes with a binary unit, e.g. `6.3 MiB`. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** One line per completed round. */
export function formatRound(m: RoundMetrics, rounds: number): string {
  const parts = [
    `round ${m.round}/${rounds}`,
    m.accuracy !== undefined ? `accuracy ${m.accuracy.toFixed(4)}` : null,
    m.loss !== undefined ? `loss ${m.loss.toFixed(4)}` : null,
    ...Object.entries(m.metrics ?? {})
      .filter(([name]) => name !== "accuracy" && name !== "binary-accuracy")
      .map(([name, v]) => `${name} ${v.toFixed(4)}`),
    m.federatedAccuracy !== undefined
      ? `federated accuracy ${m.federatedAccuracy.toFixed(4)} (${m.federatedClients} clients)`
      : null,
    m.trainLoss !== null ? `train loss ${m.trainLoss.toFixed(4)}` : null,
    m.secure ? "secure" : null,
    m.epsilon !== undefined ? `ε ${m.epsilon.toFixed(3)} (δ ${m.delta})` : null,
    m.aborted ? `ABORTED (${m.abortReason})` : null,
    `clients ${m.participants}/${m.cohortSize}`,
    m.failures > 0 ? `failures ${m.failures}` : null,
    `${(m.durationMs / 1000).toFixed(2)} s`,
    `up ${formatBytes(m.bytesUp)}`,
    `down ${formatBytes(m.bytesDown)}`,
    m.codec !== undefined && m.codec !== "float32" ? describeCodec(m) : null,
    m.downlinkCodec !== undefined && m.downlinkCodec !== "float32"
      ? `downlink ${m.downlinkCodec} (${m.downlinkPatched ?? 0} patched, ${m.downlinkFull ?? 0} full)`
      : null,
  ];
  return parts.filter((p) => p !== null).join("  ");
}

/**
 * A round's codec for its log line: `q8 ×3.97 (encode 2.1 ms, decode 1.0 ms)`; in secure rounds
 * `q8 ×2.84 (11-bit words)`, or `(32-bit words, calibrating)` in a round that measures the range.
 */
function describeCodec(m: RoundMetrics): string {
  const ms = (v: number | null | undefined) =>
    v === null || v === undefined ? "–" : `${v.toFixed(1)} ms`;
  const ratio =
    m.compressionRatio === null || m.compressionRatio === undefined
      ? ""
      : ` ×${m.compressionRatio.toFixed(2)}`;
  if (m.secureWordBits !== undefined) {
    const calibrating = m.secureBits === 32 ? ", calibrating" : "";
    return `${m.codec}${ratio} (${m.secureWordBits}-bit words${calibrating})`;
  }
  return `${m.codec}${ratio} (encode ${ms(m.encodeMs)}, decode ${ms(m.decodeMs)})`;
}

/** A central evaluation for a log line: loss, then each metric. */
export function describeStats(stats: EvalStats): string {
  return [`loss ${stats.loss.toFixed(4)}`]
    .concat(Object.entries(stats.metrics).map(([name, v]) => `${name} ${v.toFixed(4)}`))
    .join(", ");
}

/** A central evaluation's fields of `metrics.jsonl` (accuracy only when the task has one). */
export function evaluationFields(
  stats: EvalStats | null,
): Pick<RoundMetrics, "accuracy" | "loss" | "metrics"> {
  if (stats === null) return {};
  return {
    ...(stats.accuracy === null ? {} : { accuracy: stats.accuracy }),
    loss: stats.loss,
    metrics: stats.metrics,
  };
}
