/** Client learning-rate schedules over the rounds of a run: constant, step decay, cosine. */
import { CohortError } from "../protocol/errors.js";

/** A schedule by name: what options, flags and `run.json` carry. */
export type LearningRateSchedule =
  | { name: "constant" }
  /** × `gamma` every `every` rounds (round 1 uses the base rate). */
  | { name: "step"; every: number; gamma: number }
  /** Cosine from the base rate at round 1 to `min` at the last round. */
  | { name: "cosine"; min: number };

/** The client learning rate of `round` (1-based) out of `rounds`. */
export function scheduledRate(
  base: number,
  schedule: LearningRateSchedule,
  round: number,
  rounds: number,
): number {
  switch (schedule.name) {
    case "constant":
      return base;
    case "step":
      return base * schedule.gamma ** Math.floor((round - 1) / schedule.every);
    case "cosine": {
      const progress = rounds <= 1 ? 0 : (round - 1) / (rounds - 1);
      return schedule.min + ((base - schedule.min) * (1 + Math.cos(Math.PI * progress))) / 2;
    }
    default: {
      const exhaustive: never = schedule;
      throw new CohortError("INVALID_OPTION", `unknown schedule ${JSON.stringify(exhaustive)}`);
    }
  }
}

/**
 * Parse `constant`, `step:EVERY:GAMMA` or `cosine[:MIN]` (the CLI's form), or check an object.
 * Throws `INVALID_OPTION` naming what is wrong.
 */
export function parseSchedule(spec: unknown, baseRate: number): LearningRateSchedule {
  const bad = (why: string): never => {
    throw new CohortError(
      "INVALID_OPTION",
      `learning-rate schedule ${JSON.stringify(spec)}: ${why} (constant | step:EVERY:GAMMA | cosine[:MIN])`,
    );
  };
  let s: Record<string, unknown>;
  if (typeof spec === "string") {
    const [name, a, b] = spec.split(":");
    if (name === "constant" && a === undefined) s = { name };
    else if (name === "step") s = { name, every: Number(a ?? 10), gamma: Number(b ?? 0.5) };
    else if (name === "cosine" && b === undefined) s = { name, min: Number(a ?? 0) };
    else return bad("unknown form");
  } else if (typeof spec === "object" && spec !== null) {
    s = spec as Record<string, unknown>;
  } else {
    return bad("must be a string or an object");
  }
  switch (s.name) {
    case "constant":
      return { name: "constant" };
    case "step":
      if (!(Number.isInteger(s.every) && (s.every as number) >= 1))
        bad("every must be an integer ≥ 1");
      if (!(typeof s.gamma === "number" && s.gamma > 0 && s.gamma <= 1))
        bad("gamma must be in (0, 1]");
      return { name: "step", every: s.every as number, gamma: s.gamma as number };
    case "cosine":
      if (!(typeof s.min === "number" && s.min >= 0 && s.min < baseRate)) {
        bad(`min must be in [0, ${baseRate})`);
      }
      return { name: "cosine", min: s.min as number };
    default:
      return bad("unknown name");
  }
}
