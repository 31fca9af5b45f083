/** The demo client page (`/client`): fetches a digits shard, joins the federation, shows progress. */
import {
  CohortClient,
  loadDigitsShard,
  parseBrowserBackendRequest,
  parseFloors,
  type ClientRoundReport,
} from "../client/browser.js";
import { fetchWithToken } from "./token.js";

/** What the page exposes as `window.cohortPage` (tests and curious users read it). */
export interface PageState {
  status: "loading" | "starting" | "connected" | "training" | "done" | "failed";
  clientId: string | null;
  backend: string | null;
  backendLabel: string | null;
  examples: number;
  round: number;
  rounds: ClientRoundReport[];
  error: string | null;
}

const state: PageState = {
  status: "loading",
  clientId: null,
  backend: null,
  backendLabel: null,
  examples: 0,
  round: 0,
  rounds: [],
  error: null,
};
(globalThis as { cohortPage?: PageState }).cohortPage = state;

const $ = (id: string) => document.getElementById(id)!;

function log(line: string): void {
  const el = $("log");
  el.textContent += `${new Date().toLocaleTimeString()}  ${line}\n`;
  el.scrollTop = el.scrollHeight;
}

function setStatus(status: PageState["status"], text: string = status): void {
  state.status = status;
  $("status").textContent = text;
  $("status").className = status === "failed" ? "big bad" : "big";
}

/** An integer query parameter, or its default. */
function intParam(query: URLSearchParams, key: string, fallback: number): number {
  const raw = query.get(key);
  const value = raw === null ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < 0) throw new Error(`?${key} must be an integer ≥ 0`);
  return value;
}

async function main(): Promise<void> {
  const query = new URLSearchParams(location.search);
  const count = Math.max(1, intParam(query, "count", 3));
  const index = intParam(query, "index", Math.floor(Math.random() * count));
  const limit = query.has("limit") ? intParam(query, "limit", 0) : undefined;
  const backend = parseBrowserBackendRequest(query.get("backend") ?? "auto");
  // ?eval=0.2 holds out a fifth of the shard for federated evaluation.
  const evalFraction = query.has("eval") ? Number(query.get("eval")) : 0;
  if (!(evalFraction >= 0 && evalFraction < 1)) throw new Error("?eval must be in [0, 1)");
  // The shard is a data route: behind the coordinator's --api-token, the page asks for it.
  const data = await loadDigitsShard(
    location.origin,
    { index, count, limit },
    { fetch: fetchWithToken },
  );
  state.examples = data.labels.length;
  $("examples").textContent = `${data.labels.length} digits`;
  $("shard").textContent = data.name;
  const client = new CohortClient({
    url: location.origin,
    data,
    backend,
    log,
    evalFraction,
    ...(query.has("id") ? { clientId: query.get("id")! } : {}),
    // ?require-secure refuses plain rounds; ?floors=N,K,T sets the secure-round floors.
    requireSecure: query.has("require-secure"),
    ...(query.has("floors") ? { secureFloors: parseFloors(query.get("floors")!, "?floors") } : {}),
  });
  state.clientId = client.options.clientId;
  $("client-id").textContent = client.options.clientId;
  client.onProgress((p) => {
    if (state.round !== p.round) {
      state.round = p.round;
      $("round").textContent = String(p.round);
    }
    setStatus("training");
    const bar = $("progress") as HTMLProgressElement;
    bar.max = p.batchesTotal;
    bar.value = p.batchesDone;
    $("progress-text").textContent =
      `round ${p.round}: batch ${p.batchesDone} of ${p.batchesTotal}`;
  });
  client.onRound((r) => {
    state.rounds.push(r);
    const outcome = r.accepted ? "sent" : `rejected (${r.code ?? "?"})`;
    $("progress-text").textContent =
      `round ${r.round}: loss ${r.loss.toFixed(4)} in ${Math.round(r.trainMs)} ms, update ${outcome}`;
    setStatus("connected", "waiting");
  });
  setStatus("starting", "starting…");
  await client.start();
  state.backend = client.backendName;
  state.backendLabel = client.backendLabel;
  $("backend").textContent = client.backendName ?? "–";
  $("backend-label").textContent = client.backendLabel ?? "";
  setStatus("connected", "waiting");
  const done = await client.done;
  setStatus("done", `done (${done.rounds} rounds)`);
}

main().catch((error: unknown) => {
  state.error = error instanceof Error ? error.message : String(error);
  setStatus("failed");
  log(`failed: ${state.error}`);
});
