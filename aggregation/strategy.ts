/**
 * The strategy seam: an aggregator (how updates combine), a server optimizer (how the
 * aggregate moves the model) and the per-round client configuration. Strategies are named by
 * `{ name, params }` — the form that travels in options, CLI flags, JSON configs and `run.json`
 * — and resolved from the registry (`registry.ts`); users may also pass their own object.
 */
import { CohortError } from "../protocol/errors.js";
import type { Aggregator, WeightedSum } from "./aggregator.js";
import type { ServerOptimizer } from "./optimizer.js";
import type { RoundConfig } from "../protocol/messages.js";
import type { Scalar, StateRecord } from "./state.js";

/** A strategy (or any registered part) by name. */
export interface StrategyRef {
  name: string;
  params?: Record<string, Scalar | undefined>;
}

/** Where the run is when a strategy configures a round. */
export interface RoundContext {
  /** 1-based round number. */
  round: number;
  /** Rounds the run plans. */
  rounds: number;
}

/** What each client of a round trains with; the strategy may change it round by round. */
export type RoundTraining = RoundConfig;

/** A federated strategy: pure, I/O-free, deterministic. */
export interface Strategy {
  readonly name: string;
  /** How `run.json` and the configuration hash name it. */
  readonly ref: StrategyRef;
  readonly aggregator: Aggregator;
  readonly optimizer: ServerOptimizer;
  /**
   * The round's client configuration, from the run's base configuration and the strategy's
   * state (an adaptive clip lives there). @default unchanged
   */
  configureFit?(ctx: RoundContext, base: RoundTraining, state?: StateRecord): RoundTraining;
  /**
   * A look at the round's aggregate before the server step (central noise, clipping of the
   * sum); may change the aggregate and the state. @default unchanged
   */
  afterAggregate?(
    agg: WeightedSum,
    state: StateRecord,
    ctx: RoundContext,
  ): { agg: WeightedSum; state: StateRecord };
}

/** Whether a value is a strategy object (as opposed to a `{ name, params }` reference). */
export function isStrategy(value: unknown): value is Strategy {
  if (typeof value !== "object" || value === null) return false;
  const s = value as Partial<Strategy>;
  return (
    typeof s.name === "string" &&
    typeof s.aggregator?.begin === "function" &&
    typeof s.optimizer?.step === "function" &&
    typeof s.optimizer.init === "function"
  );
}

/**
 * Refuse a strategy that cannot run in this configuration: with secure aggregation the
 * coordinator only ever holds the sum of the cohort's updates, so the aggregator must be linear.
 */
export function checkStrategy(strategy: Strategy, opts: { secure: boolean }): void {
  if (opts.secure && !strategy.aggregator.linear) {
    throw new CohortError(
      "INVALID_OPTION",
      `strategy ${strategy.name} aggregates with ${strategy.aggregator.name}, which needs every client's ` +
        "update in the clear; secure aggregation gives the coordinator only their sum. " +
        "Use a linear aggregator (fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox) with secure rounds.",
    );
  }
}
