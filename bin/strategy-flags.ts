/**
 * Round flags shared by the coordinator and simulate commands. Strategy flags, derived from the registry: `--strategy NAME`, `--strategy-params JSON`, and one
 * flag per strategy parameter (e.g. `--server-lr`, `--proximal-mu`). Shared by the coordinator and
 * simulate commands, so both take the same strategies the same way.
 */
import { strategyDefinitions } from "../aggregation/strategies/index.js";
import type { StrategyRef } from "../aggregation/strategy.js";
import type { Scalar } from "../aggregation/state.js";
import { CohortError } from "../protocol/errors.js";
import type { FlagSpec } from "./args.js";

/** Flag names of parameters whose own name would be unclear on a command line. */
const RENAMED: Record<string, string> = {
  serverLearningRate: "server-lr",
  momentum: "server-momentum",
  beta: "trim-beta",
  f: "krum-f",
  m: "krum-m",
  iterations: "clip-iterations",
};

function flagOf(param: string): string {
  return RENAMED[param] ?? param.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Each parameter once; its help names the strategies that take it (by meaning, where they differ). */
function parameters(): { param: string; flag: string; spec: FlagSpec }[] {
  const seen = new Map<string, { type: FlagSpec["type"]; docs: Map<string, string[]> }>();
  const all = strategyDefinitions();
  for (const def of all) {
    for (const [param, value] of Object.entries(def.defaults)) {
      const doc = (def.docs as Record<string, string>)[param] ?? param;
      const entry = seen.get(param) ?? {
        type: typeof value === "boolean" ? ("boolean" as const) : ("number" as const),
        docs: new Map<string, string[]>(),
      };
      entry.docs.set(doc, [...(entry.docs.get(doc) ?? []), def.name]);
      seen.set(param, entry);
    }
  }
  return [...seen.entries()].map(([param, e]) => {
    const everyone = e.docs.size === 1 && [...e.docs.values()][0]!.length === all.length;
    const description = everyone
      ? [...e.docs.keys()][0]!
      : [...e.docs.entries()].map(([doc, users]) => `${doc} [${users.join(", ")}]`).join("; ");
    return {
      param,
      flag: flagOf(param),
      spec: { type: e.type, defaultText: "the strategy's", description },
    };
  });
}

/** The strategy flags of a command's spec. */
export function strategyFlags(): Record<string, FlagSpec> {
  const flags: Record<string, FlagSpec> = {
    strategy: {
      type: "string",
      default: "fedavg",
      placeholder: strategyDefinitions()
        .map((d) => d.name)
        .join("|"),
      description: "federated strategy (README: Strategies)",
    },
    "strategy-params": {
      type: "string",
      placeholder: "JSON",
      description: "strategy parameters as JSON, e.g. '{\"serverLearningRate\":0.01}'",
    },
  };
  for (const p of parameters()) flags[p.flag] = p.spec;
  return flags;
}

/**
 * The strategy reference the flags name: `--strategy-params` first, then each parameter flag
 * given on the command line (a parameter the strategy lacks is refused when it is resolved).
 */
export function strategyFromFlags(
  values: Record<string, unknown>,
  given: (flag: string) => boolean,
): StrategyRef {
  const params: Record<string, Scalar> = {};
  const json = values["strategy-params"];
  if (typeof json === "string") Object.assign(params, jsonObjectFlag("strategy-params", json));
  for (const p of parameters()) {
    if (given(p.flag)) params[p.param] = values[p.flag] as Scalar;
  }
  return { name: String(values.strategy ?? "fedavg"), params };
}

/** `--fit-config JSON`: the user's own keys for the clients' round configuration. */
export const fitConfigFlag: FlagSpec = {
  type: "string",
  placeholder: "JSON",
  description: "your own keys for the clients' round configuration (config.extra)",
};

/** `--fit-config` as an object of scalars (checked again with the options). */
export function fitConfigFromFlag(json: string | undefined): Record<string, Scalar> | undefined {
  return json === undefined ? undefined : jsonObjectFlag("fit-config", json);
}

/** A flag's JSON object value; `INVALID_OPTION` when it is not one. */
function jsonObjectFlag(flag: string, json: string): Record<string, Scalar> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (cause) {
    throw new CohortError("INVALID_OPTION", `--${flag} is not JSON: ${json}`, { cause });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new CohortError("INVALID_OPTION", `--${flag} must be a JSON object`);
  }
  return parsed as Record<string, Scalar>;
}

/** Whether `--flag` (or `--flag=…`) appears in argv. */
export function flagGiven(argv: readonly string[]): (flag: string) => boolean {
  const given = new Set(
    argv.filter((a) => a.startsWith("--")).map((a) => a.slice(2).split("=")[0]!),
  );
  return (flag) => given.has(flag);
}
