/** `GET /metrics`: the run's status in the Prometheus text exposition format (version 0.0.4). */
import { ENGINE_PHASES } from "../phases.js";
import type { ClusterNodeStatus, ClusterStatus, StatusSnapshot } from "./status.js";

/** One metric family: its `# HELP`, `# TYPE` and samples. */
export interface MetricFamily {
  name: string;
  help: string;
  type: "gauge" | "counter" | "summary";
  samples: { suffix?: string; labels?: Record<string, string>; value: number }[];
}

/** The content type of the text format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const escapeLabel = (v: string) =>
  v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const escapeHelp = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Render families as exposition text (one trailing newline). */
export function exposition(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const f of families) {
    lines.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      const body = labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",");
      lines.push(`${f.name}${s.suffix ?? ""}${body ? `{${body}}` : ""} ${formatValue(s.value)}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** The families `/metrics` serves. */
export function statusFamilies(s: StatusSnapshot): MetricFamily[] {
  const last = s.history.at(-1);
  const evaluated = [...s.history].reverse().find((r) => r.accuracy !== null);
  const gauge = (name: string, help: string, value: number): MetricFamily => ({
    name,
    help,
    type: "gauge",
    samples: [{ value }],
  });
  const counter = (name: string, help: string, value: number): MetricFamily => ({
    name,
    help,
    type: "counter",
    samples: [{ value }],
  });
  const families: MetricFamily[] = [
    {
      name: "cohort_run_info",
      help: "The run: id, model and whether rounds are secure (always 1).",
      type: "gauge",
      samples: [
        {
          labels: { run_id: s.runId, model: s.model.name, secure: String(s.secure) },
          value: 1,
        },
      ],
    },
    gauge("cohort_clients_connected", "Clients connected now.", s.clients.length),
    {
      name: "cohort_client_info",
      help: "One sample per connected client, with its backend and platform (always 1).",
      type: "gauge",
      samples: s.clients.map((c) => ({
        labels: { client_id: c.clientId, backend: c.backend, platform: c.platform },
        value: 1,
      })),
    },
    gauge("cohort_current_round", "The round in progress, or the last one.", s.round),
    {
      name: "cohort_phase",
      help: "1 for the phase the coordinator is in, 0 for the others.",
      type: "gauge",
      samples: ["idle", ...ENGINE_PHASES].map((phase) => ({
        labels: { phase },
        value: phase === s.phase ? 1 : 0,
      })),
    },
    gauge("cohort_rounds_planned", "Rounds the run will take.", s.roundsTotal),
    counter("cohort_rounds_completed_total", "Rounds completed.", s.roundsCompleted),
    {
      name: "cohort_round_duration_seconds",
      help: "Wall time of completed rounds, from sampling to the new global model.",
      type: "summary",
      samples: [
        { suffix: "_sum", value: s.totals.durationMs / 1000 },
        { suffix: "_count", value: s.roundsCompleted },
      ],
    },
    gauge(
      "cohort_last_round_duration_seconds",
      "Wall time of the last completed round.",
      (last?.durationMs ?? 0) / 1000,
    ),
    counter("cohort_bytes_up_total", "Bytes clients sent in completed rounds.", s.totals.bytesUp),
    counter(
      "cohort_bytes_down_total",
      "Bytes sent to clients in completed rounds.",
      s.totals.bytesDown,
    ),
    gauge(
      "cohort_last_round_bytes_up",
      "Bytes clients sent in the last completed round.",
      last?.bytesUp ?? 0,
    ),
    gauge(
      "cohort_last_round_bytes_down",
      "Bytes sent to clients in the last completed round.",
      last?.bytesDown ?? 0,
    ),
    counter(
      "cohort_client_failures_total",
      "Clients that failed a completed round (deadline, disconnect, invalid update).",
      s.totals.failures,
    ),
    counter(
      "cohort_rejected_updates_total",
      "Updates the coordinator rejected.",
      s.totals.rejected,
    ),
  ];
  const federated = [...s.history].reverse().find((r) => r.federatedAccuracy !== null);
  if (federated !== undefined) {
    families.push(
      gauge(
        "cohort_federated_accuracy",
        "Federated accuracy (clients' held-out data, weighted by examples) after the last evaluated round.",
        federated.federatedAccuracy!,
      ),
      gauge(
        "cohort_federated_loss",
        "Federated loss (clients' held-out data, weighted by examples) after the last evaluated round.",
        federated.federatedLoss ?? NaN,
      ),
    );
  }
  families.push(...codecFamilies(s), ...versionFamilies(s));
  const spent = [...s.history].reverse().find((r) => r.epsilon !== null);
  if (spent !== undefined) {
    families.push(
      gauge(
        "cohort_privacy_epsilon",
        "ε the run has spent (differential privacy), after the last round.",
        spent.epsilon!,
      ),
    );
  }
  if (evaluated !== undefined) {
    families.push(
      gauge(
        "cohort_global_accuracy",
        "Centralised accuracy of the global model after the last evaluated round.",
        evaluated.accuracy!,
      ),
      gauge(
        "cohort_global_loss",
        "Centralised loss of the global model after the last evaluated round.",
        evaluated.loss ?? NaN,
      ),
    );
  }
  return families;
}

/** Model versions (once the first was decided on) and, in asynchronous mode, the buffer. */
function versionFamilies(s: StatusSnapshot): MetricFamily[] {
  const families: MetricFamily[] = [];
  const one = (name: string, help: string, type: "gauge" | "counter", value: number) =>
    families.push({ name, help, type, samples: [{ value }] });
  const v = s.versions;
  if (v.latest !== null) {
    one("cohort_latest_version", "The newest model version.", "gauge", v.latest);
    if (v.promoted !== null) {
      one(
        "cohort_promoted_version",
        "The promoted model version (the one served).",
        "gauge",
        v.promoted,
      );
    }
    one(
      "cohort_rejected_versions_total",
      "Versions rejected by the promotion gate (each rolled training back).",
      "counter",
      v.rejected,
    );
  }
  const b = s.buffer;
  if (b !== null) {
    one(
      "cohort_buffer_fill",
      "Asynchronous mode: updates in the buffer over its size.",
      "gauge",
      b.fill / b.size,
    );
    one("cohort_buffer_in_flight", "Asynchronous mode: clients training now.", "gauge", b.inFlight);
  }
  if (s.cluster !== null) families.push(...clusterFamilies(s.cluster));
  return families;
}

/** A cluster's nodes, as any node sees them (from the cluster's Redis). */
function clusterFamilies(c: ClusterStatus): MetricFamily[] {
  const perNode = (
    name: string,
    help: string,
    value: (n: ClusterNodeStatus) => number | null,
  ): MetricFamily => ({
    name,
    help,
    type: "gauge",
    samples: c.nodes.flatMap((n) => {
      const v = value(n);
      return v === null ? [] : [{ labels: { cluster: c.name, node: n.node }, value: v }];
    }),
  });
  const families: MetricFamily[] = [
    {
      name: "cohort_cluster_node_info",
      help: "One sample per node of the cluster, with its role (leader, follower, standby); 1 for the node serving this page.",
      type: "gauge",
      samples: c.nodes.map((n) => ({
        labels: { cluster: c.name, node: n.node, role: n.role },
        value: n.node === c.node ? 1 : 0,
      })),
    },
    perNode("cohort_cluster_node_clients", "Clients connected to each node.", (n) => n.clients),
    perNode(
      "cohort_cluster_node_partial_bytes",
      "Bytes of the last partial sum each follower sent the leader.",
      (n) => n.partial?.bytes ?? null,
    ),
    perNode(
      "cohort_cluster_node_partial_client_bytes",
      "Bytes the members of each follower sent it for that partial.",
      (n) => n.partial?.clientBytes ?? null,
    ),
    perNode(
      "cohort_cluster_node_report_age_seconds",
      "Seconds since each node last reported itself.",
      (n) => n.seenMsAgo / 1000,
    ),
  ];
  const gauges: [string, string, number | null][] = [
    [
      "cohort_cluster_lease_held_seconds",
      "Seconds the leader has held its lease.",
      toSeconds(c.leaseHeldMs),
    ],
    [
      "cohort_cluster_lease_renewed_seconds",
      "Seconds since the leader last renewed its lease (it lapses at the TTL).",
      toSeconds(c.leaseRenewedMsAgo),
    ],
    ["cohort_cluster_lease_ttl_seconds", "The lease's TTL.", c.leaseTtlMs / 1000],
  ];
  for (const [name, help, value] of gauges) {
    if (value !== null) {
      families.push({
        name,
        help,
        type: "gauge",
        samples: [{ labels: { cluster: c.name }, value }],
      });
    }
  }
  if (c.leader !== null) {
    families.push({
      name: "cohort_cluster_leader_info",
      help: "The node holding the cluster's lease (always 1).",
      type: "gauge",
      samples: [{ labels: { cluster: c.name, node: c.leader }, value: 1 }],
    });
  }
  return families;
}

const toSeconds = (ms: number | null) => (ms === null ? null : ms / 1000);

/**
 * The update codec's figures, each from the last completed round that reported it: secure
 * rounds report none, and float32 updates have no encode time. Absent until a round has one.
 */
function codecFamilies(s: StatusSnapshot): MetricFamily[] {
  const latest = <K extends "codec" | "compressionRatio" | "encodeMs" | "decodeMs">(key: K) =>
    s.history.findLast((r) => r[key] !== null)?.[key] ?? null;
  const families: MetricFamily[] = [];
  const codec = latest("codec");
  if (codec !== null) {
    families.push({
      name: "cohort_update_codec_info",
      help: "The update codec of the last plain round, e.g. q8 or topk:0.01 (always 1).",
      type: "gauge",
      samples: [{ labels: { codec }, value: 1 }],
    });
  }
  const gauges: [string, string, number | null][] = [
    [
      "cohort_last_round_compression_ratio",
      "Float32 bytes of the accepted updates over the bytes they were sent in, in the last round that had any.",
      latest("compressionRatio"),
    ],
    [
      "cohort_last_round_encode_seconds",
      "Mean time a client took to encode its update, in the last round that reported it.",
      toSeconds(latest("encodeMs")),
    ],
    [
      "cohort_last_round_decode_seconds",
      "Mean time the coordinator took to decode an update, in the last round that had any.",
      toSeconds(latest("decodeMs")),
    ],
  ];
  for (const [name, help, value] of gauges) {
    if (value !== null) families.push({ name, help, type: "gauge", samples: [{ value }] });
  }
  return families;
}
