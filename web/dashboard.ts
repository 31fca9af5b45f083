/**
 * The dashboard (`/`): polls `/api/status`; renders clients, phase, codec, charts, versions
 * (and the FedBuff buffer), rounds, failures.
 */
import { PLAIN_ROUND_PHASES, SECURE_ROUND_PHASES } from "../coordinator/phases.js";
import type { StatusSnapshot } from "../coordinator/http/status.js";
import { bytesChartSvg, formatBytes as bytes } from "./bytes-chart.js";
import { chartSvg, esc } from "./chart.js";
import { fetchWithToken } from "./token.js";

/** How often the dashboard polls. */
const POLL_MS = 1000;

const $ = (id: string) => document.getElementById(id)!;

const fixed = (v: number | null, digits = 4) => (v === null ? "–" : v.toFixed(digits));
const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
/** Codec timings are often under a millisecond: two decimals there, one above. */
const millis = (ms: number | null) => (ms === null ? "–" : `${ms.toFixed(ms < 1 ? 2 : 1)} ms`);
/** As the coordinator's log line writes it: `×3.97`. */
const ratio = (r: number | null) => (r === null ? "–" : `×${r.toFixed(2)}`);

/** The codec tile: the last round that reported a codec (secure float32 rounds report none). */
function renderCodec(s: StatusSnapshot): void {
  const last = s.history.findLast((p) => p.codec !== null);
  $("codec").textContent =
    last === undefined ? "–" : `${last.codec} ${ratio(last.compressionRatio)}`;
  $("codec-times").innerHTML =
    last === undefined
      ? s.secure
        ? "secure float32 rounds report no codec figures"
        : "no round yet"
      : `<span>encode ${millis(last.encodeMs)}</span> · <span>decode ${millis(last.decodeMs)}</span>`;
  $("codec-times").title = last === undefined ? "" : `round ${last.round}, mean per update`;
}

/** The versions panel: recent versions (the served one marked), and the rollbacks with why. */
function renderVersions(s: StatusSnapshot): void {
  const v = s.versions;
  $("promoted").textContent =
    v.promoted === null ? "" : `· serving v${v.promoted} of ${v.latest ?? v.promoted}`;
  $("versions").innerHTML =
    // The last twelve, and every rejected one the status still holds.
    v.recent
      .filter((p, i) => i >= v.recent.length - 12 || p.status === "rejected")
      .reverse()
      .map((p) => {
        const served = p.version === v.promoted;
        const label = served ? "promoted · served" : p.status;
        return (
          `<tr data-version="${p.version}"><td class="num">v${p.version}</td><td class="num">${p.round}</td>` +
          `<td class="num">${fixed(p.score)}</td>` +
          `<td><span class="status ${p.status}${served ? " served" : ""}">${label}</span></td>` +
          `<td class="wrap" title="${esc(p.reason ?? "")}">${esc(p.reason ?? "")}</td></tr>`
        );
      })
      .join("") || `<tr><td colspan="5" class="muted">no version yet</td></tr>`;
  $("rollbacks").innerHTML =
    [...v.rollbacks]
      .reverse()
      .map(
        (r) =>
          `<li data-rollback="${r.from}">v${r.from} rejected, back to v${r.to}: ${esc(r.reason)}</li>`,
      )
      .join("") || `<li class="muted">none</li>`;
}

/** The FedBuff panel: how full the buffer is, and its updates by staleness (bars, counts written). */
function renderBuffer(s: StatusSnapshot): void {
  const b = s.buffer;
  ($("buffer-panel") as HTMLElement).hidden = b === null;
  if (b === null) return;
  const share = Math.min(100, (100 * b.fill) / b.size);
  $("buffer-fill").innerHTML =
    `<div class="fill" role="progressbar" aria-valuenow="${b.fill}" aria-valuemax="${b.size}"><div style="width:${share}%"></div></div>` +
    `<span>${b.fill} / ${b.size} updates for v${b.version} · ${b.inFlight} clients training</span>`;
  const last = Math.max(
    0,
    b.staleness.findLastIndex((n) => n > 0),
  );
  const counts = b.staleness.slice(0, Math.max(last + 1, 4));
  const top = Math.max(1, ...counts);
  const w = 28;
  const bars = counts
    .map((n, i) => {
      const h = (60 * n) / top;
      return (
        `<rect x="${i * w + 4}" y="${70 - h}" width="${w - 8}" height="${h}"><title>${n} updates ${i} steps stale</title></rect>` +
        `<text x="${i * w + w / 2}" y="84" text-anchor="middle">${i}</text>` +
        `<text x="${i * w + w / 2}" y="${66 - h}" text-anchor="middle">${n}</text>`
      );
    })
    .join("");
  $("staleness").innerHTML =
    `<svg class="staleness" width="${counts.length * w}" height="90" role="img" aria-label="updates by staleness: ${counts.map((n, i) => `${n} at ${i}`).join(", ")}">${bars}</svg>`;
}

/** The cluster panel: every node, its role, clients and last partial; who holds the lease. */
function renderCluster(s: StatusSnapshot): void {
  const c = s.cluster;
  ($("cluster-panel") as HTMLElement).hidden = c === null;
  if (c === null) return;
  const held = c.leaseHeldMs === null ? "" : `, held ${seconds(c.leaseHeldMs)}`;
  const renewed =
    c.leaseRenewedMsAgo === null ? "" : `, renewed ${seconds(c.leaseRenewedMsAgo)} ago`;
  $("cluster-lease").textContent =
    `cluster ${c.name} · this page from ${c.node} · ` +
    (c.leader === null
      ? "no leader now"
      : `lease: ${c.leader}${held}${renewed} (TTL ${seconds(c.leaseTtlMs)})`);
  $("cluster-nodes").innerHTML = c.nodes
    .map(
      (n) =>
        `<tr data-node="${esc(n.node)}"><td>${esc(n.node)}${n.node === c.node ? " (this page)" : ""}</td>` +
        `<td class="role ${n.role}">${n.role}</td><td>${esc(n.url ?? "–")}</td>` +
        `<td class="num">${n.clients}</td>` +
        `<td class="num">${n.partial === null ? "–" : `${bytes(n.partial.bytes)} (round ${n.partial.round})`}</td>` +
        `<td class="num">${n.partial === null ? "–" : bytes(n.partial.clientBytes)}</td>` +
        `<td class="num">${seconds(n.seenMsAgo)} ago</td></tr>`,
    )
    .join("");
}

/** A short platform: the browser and version from a user agent, or Node's own line. */
function platform(text: string): string {
  const browser = /(HeadlessChrome|Chrome|Firefox|Safari)\/(\d+)/.exec(text);
  return browser ? `${browser[1]} ${browser[2]}` : text.split(" ").slice(0, 2).join(" ");
}

function render(s: StatusSnapshot): void {
  $("run").textContent =
    `run ${s.runId} · ${s.model.name} (${s.model.numParameters.toLocaleString()} parameters)`;
  $("mode").textContent = `${s.strategy}${s.secure ? " · secure aggregation" : " · plain"}`;
  $("mode").className = s.secure ? "badge secure" : "badge";
  $("round").textContent = `${s.round} / ${s.roundsTotal}`;
  $("client-count").textContent = String(s.clients.length);
  // Accuracy where the task has one; a regression's runs show their loss instead.
  const lastEval = [...s.history].reverse().find((p) => p.accuracy !== null || p.loss !== null);
  const byLoss = lastEval !== undefined && lastEval.accuracy === null;
  $("score-title").textContent = byLoss ? "Loss" : "Accuracy";
  $("accuracy").textContent = fixed(byLoss ? lastEval.loss : (lastEval?.accuracy ?? null));
  // Two unbreakable halves: a narrow tile puts ↓ under ↑ rather than clipping it.
  $("bytes").innerHTML =
    `<span>↑ ${bytes(s.totals.bytesUp)}</span> <span>↓ ${bytes(s.totals.bytesDown)}</span>`;
  const phases = ["idle", ...(s.secure ? SECURE_ROUND_PHASES : PLAIN_ROUND_PHASES), "done"];
  $("phases").innerHTML = phases
    .map((p) => `<span data-phase="${p}" class="${p === s.phase ? "on" : ""}">${p}</span>`)
    .join("");
  renderCodec(s);
  renderVersions(s);
  renderBuffer(s);
  renderCluster(s);
  $("chart").innerHTML = chartSvg(s.history, s.roundsTotal);
  $("bytes-chart").innerHTML = bytesChartSvg(s.history, s.roundsTotal);
  $("clients").innerHTML = s.clients
    .map(
      (c) =>
        `<tr data-client="${esc(c.clientId)}"><td title="${esc(c.clientId)}">${esc(c.clientId.slice(0, 12))}</td>` +
        `<td class="backend">${esc(c.backend)}</td><td title="${esc(c.platform)}">${esc(platform(c.platform))}</td>` +
        `<td class="num">${fixed(c.lastRound?.loss ?? null)}</td>` +
        `<td class="num">${c.lastRound ? seconds(c.lastRound.trainMs) : "–"}</td></tr>`,
    )
    .join("");
  $("rounds").innerHTML = [...s.history]
    .reverse()
    .map(
      (p) =>
        `<tr data-round="${p.round}"><td class="num">${p.round}</td><td class="kind">${p.secure ? "secure" : p.async ? "async" : "plain"}${p.aborted ? " (aborted)" : ""}</td>` +
        `<td class="num accuracy">${fixed(p.accuracy)}</td><td class="num">${fixed(p.loss)}</td>` +
        `<td class="num federated">${fixed(p.federatedAccuracy)}</td>` +
        `<td class="num epsilon">${p.epsilon === null ? "–" : p.epsilon.toFixed(3)}</td>` +
        `<td class="num">${p.participants}</td><td class="num${p.failures ? " bad" : ""}">${p.failures}</td>` +
        `<td class="num">${seconds(p.durationMs)}</td><td class="num up">${bytes(p.bytesUp)}</td><td class="num down">${bytes(p.bytesDown)}</td>` +
        `<td class="codec">${esc(p.codec ?? "–")}</td><td class="num ratio">${ratio(p.compressionRatio)}</td>` +
        `<td class="num encode">${millis(p.encodeMs)}</td><td class="num decode">${millis(p.decodeMs)}</td></tr>`,
    )
    .join("");
  $("failures").innerHTML =
    [...s.failures]
      .reverse()
      .map(
        (f) =>
          `<tr><td class="num">${f.round}</td><td>${esc(f.clientId.slice(0, 12))}</td><td class="bad">${esc(f.code)}</td><td class="wrap" title="${esc(f.message)}">${esc(f.message)}</td></tr>`,
      )
      .join("") || `<tr><td colspan="4" class="muted">none</td></tr>`;
  document.body.dataset.round = String(s.roundsCompleted);
}

async function poll(): Promise<void> {
  try {
    // With the coordinator's --api-token, the first 401 asks for the token (polling waits).
    const response = await fetchWithToken("/api/status", { cache: "no-store" });
    if (response.ok) render((await response.json()) as StatusSnapshot);
    else $("run").textContent = `status: HTTP ${response.status}`;
  } catch {
    $("run").textContent = "coordinator unreachable; retrying";
  }
  setTimeout(() => void poll(), POLL_MS);
}

void poll();
