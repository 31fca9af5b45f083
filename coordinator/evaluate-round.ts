/**
 * Federated evaluation: a sample of clients evaluates the new global model on its own held-out
 * data; replies are checked (bad ones are failures with codes, left out) and averaged weighted
 * by example counts. The sample is drawn from a generator seeded by the round, so a resumed
 * run evaluates on the same clients.
 */
import createDebug from "debug";
import type { RoundFailure } from "../aggregation/fedavg.js";
import { createRng } from "../aggregation/random.js";
import type { Weights } from "../aggregation/weights.js";
import { decode, encode } from "../protocol/codec.js";
import { CohortError, toCohortError } from "../protocol/errors.js";
import { parseEvaluateResult } from "../protocol/guards.js";
import type { EvaluateRequest, EvaluateResult } from "../protocol/messages.js";
import { objectiveOf, type CoordinatorOptions } from "./options.js";
import { sampleCohort } from "./sampling.js";
import type { CohortTransport } from "./transport.js";

const debug = createDebug("cohort:coordinator:evaluate");

/** What one federated evaluation measured. */
export interface FederatedEvaluation {
  /** Example-weighted mean over the clients that answered; null when none did. */
  accuracy: number | null;
  loss: number | null;
  /** Each metric, example-weighted over the clients that reported it. */
  metrics: Record<string, number>;
  numExamples: number;
  /** Clients whose reply counted. */
  clients: number;
  failures: RoundFailure[];
}

/** Whether round `round` is followed by a federated evaluation. */
export function evaluationDue(opts: CoordinatorOptions, round: number): boolean {
  return opts.fractionEvaluate > 0 && round % opts.evaluateEvery === 0;
}

/** Ask a sample of the available clients to evaluate `weights`, the model after `round`. */
export async function runFederatedEvaluation(
  transport: CohortTransport,
  opts: CoordinatorOptions,
  round: number,
  weights: Weights,
): Promise<FederatedEvaluation> {
  const available = transport.available();
  const rng = createRng((Math.imul(opts.seed + 1, 0x9e3779b1) ^ round) >>> 0);
  const sample = sampleCohort(
    available,
    opts.fractionEvaluate,
    Math.min(opts.minEvaluateClients, available.length),
    rng,
  );
  const request: EvaluateRequest = { kind: "evaluate", round, weights: [...weights] };
  const payload = transport.sealModel(round, encode(request));
  const failures: RoundFailure[] = [];
  const results: EvaluateResult[] = [];
  await Promise.all(
    sample.map(async (clientId) => {
      try {
        const reply = await transport.request(
          clientId,
          payload,
          opts.evaluateTimeoutMs,
          "evaluate",
        );
        const result = parseEvaluateResult(decode(reply));
        if (result.round !== round) {
          throw new CohortError(
            result.round < round ? "STALE_ROUND" : "FUTURE_ROUND",
            `evaluation of round ${result.round}; round ${round} was asked`,
          );
        }
        results.push(result);
      } catch (error) {
        const e = toCohortError(error, "INVALID_MESSAGE");
        debug("round %d: evaluation by %s left out: %s", round, clientId, e.message);
        failures.push({ clientId, code: e.code, message: `evaluate: ${e.message}` });
      }
    }),
  );
  const n = results.reduce((s, r) => s + r.numExamples, 0);
  const mean = (pick: (r: EvaluateResult) => number | null | undefined): number | null => {
    const counted = results.filter((r) => typeof pick(r) === "number");
    const m = counted.reduce((s, r) => s + r.numExamples, 0);
    return m === 0 ? null : counted.reduce((s, r) => s + pick(r)! * r.numExamples, 0) / m;
  };
  const metrics: Record<string, number> = {};
  // The task's metrics only: a client cannot add names of its own to the run's records.
  for (const name of objectiveOf(opts).metrics) {
    const m = mean((r) => r.metrics?.[name]);
    if (m !== null) metrics[name] = m;
  }
  return {
    accuracy: mean((r) => r.accuracy),
    loss: mean((r) => r.loss),
    metrics,
    numExamples: n,
    clients: results.length,
    failures: failures.sort((a, b) => a.clientId.localeCompare(b.clientId)),
  };
}
