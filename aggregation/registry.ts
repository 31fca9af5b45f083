/** Strategies by name: `{ name, params }` → a `Strategy`, with every parameter checked and defaulted. */
import { CohortError } from "../protocol/errors.js";
import { NamedRegistry } from "./named-registry.js";
import type { Scalar } from "./state.js";
import { isStrategy, type Strategy, type StrategyRef } from "./strategy.js";

/** Parameters of a registered strategy: numbers and booleans. */
export type StrategyParams = Record<string, number | boolean>;

/** A registered strategy: its parameters with defaults and documentation, and a factory. */
export interface StrategyDefinition<P extends StrategyParams = StrategyParams> {
  name: string;
  /** One line for `--help` and the README's table. */
  summary: string;
  /** Whether it runs with secure aggregation (its aggregator is linear). */
  secure: boolean;
  defaults: P;
  /** What each parameter means, and where its default comes from. */
  docs: { [K in keyof P]: string };
  /** Throws `INVALID_OPTION` on out-of-range parameters. */
  check?(params: P): void;
  create(params: P): Strategy;
}

const registry = new NamedRegistry<StrategyDefinition>("strategy");

/** Register a strategy under its name (a later registration of the same name is refused). */
export function registerStrategy<P extends StrategyParams>(def: StrategyDefinition<P>): void {
  registry.register(def as unknown as StrategyDefinition);
}

/** Every registered strategy, in registration order. */
export function strategyDefinitions(): StrategyDefinition[] {
  return registry.all();
}

/** The definition of a registered strategy. */
export function strategyDefinition(name: string): StrategyDefinition {
  return registry.get(name);
}

/** Merge `params` over a definition's defaults: unknown keys and wrong types are errors. */
export function strategyParams(def: StrategyDefinition, params: unknown): StrategyParams {
  if (params === undefined || params === null) return { ...def.defaults };
  if (typeof params !== "object" || Array.isArray(params)) {
    throw new CohortError("INVALID_OPTION", `strategy ${def.name}: params must be an object`);
  }
  const out: StrategyParams = { ...def.defaults };
  for (const [key, value] of Object.entries(params as Record<string, unknown>)) {
    if (value === undefined) continue;
    const fallback = def.defaults[key];
    if (fallback === undefined) {
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${def.name} has no parameter "${key}"; it has ${Object.keys(def.defaults).join(", ")}`,
      );
    }
    if (typeof fallback === "number" && !(typeof value === "number" && Number.isFinite(value))) {
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${def.name}: ${key} must be a finite number, got ${JSON.stringify(value)}`,
      );
    }
    if (typeof fallback === "boolean" && typeof value !== "boolean") {
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${def.name}: ${key} must be true or false, got ${JSON.stringify(value)}`,
      );
    }
    out[key] = value as number | boolean;
  }
  def.check?.(out);
  return out;
}

/** Turn a reference (or a user's own strategy object) into a strategy. */
export function resolveStrategy(ref: StrategyRef | Strategy | string): Strategy {
  if (typeof ref === "string") return resolveStrategy({ name: ref });
  if (isStrategy(ref)) return ref;
  if (typeof ref !== "object" || ref === null || typeof ref.name !== "string") {
    throw new CohortError(
      "INVALID_OPTION",
      "strategy must be a name, { name, params } or a strategy object",
    );
  }
  const def = strategyDefinition(ref.name);
  return def.create(strategyParams(def, ref.params));
}

/** The fully defaulted reference of a registered strategy (what `run.json` records). */
export function canonicalRef(name: string, params: StrategyParams): StrategyRef {
  const sorted: Record<string, Scalar> = {};
  for (const key of Object.keys(params).sort()) sorted[key] = params[key]!;
  return { name, params: sorted };
}

/** Range checks shared by definitions. */
export const need = {
  positive(strategy: string, key: string, v: number | boolean | undefined): void {
    if (!(typeof v === "number" && v > 0)) {
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${strategy}: ${key} must be > 0, got ${String(v)}`,
      );
    }
  },
  nonNegative(strategy: string, key: string, v: number | boolean | undefined): void {
    if (!(typeof v === "number" && v >= 0)) {
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${strategy}: ${key} must be ≥ 0, got ${String(v)}`,
      );
    }
  },
  fraction(strategy: string, key: string, v: number | boolean | undefined, maxExclusive = 1): void {
    if (!(typeof v === "number" && v >= 0 && v < maxExclusive)) {
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${strategy}: ${key} must be in [0, ${maxExclusive}), got ${String(v)}`,
      );
    }
  },
  integer(strategy: string, key: string, v: number | boolean | undefined, min: number): void {
    if (!(typeof v === "number" && Number.isInteger(v) && v >= min)) {
      throw new CohortError(
        "INVALID_OPTION",
        `strategy ${strategy}: ${key} must be an integer ≥ ${min}, got ${String(v)}`,
      );
    }
  },
};
