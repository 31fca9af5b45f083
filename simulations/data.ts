/**
 * A simulation's data: the devices' training set and the coordinator's evaluation set, from
 * dataset specs or the user's own `Dataset` objects, and the population the `groups`
 * partition implies.
 */
import { holdOut } from "../client/held-out.js";
import { groupCount, type Dataset } from "../protocol/dataset.js";
import { checkedDataset } from "../protocol/dataset-check.js";
import { CohortError } from "../protocol/errors.js";
import { loadDataset, takeExamples } from "../models/datasets/index.js";
import { resolveSimulationConfig, type SimulationConfig, type SimulationInput } from "./config.js";
import { parsePartitionSpec } from "./partition.js";

/** Offsets the seed of the test hold-out from the other seeded draws of a run. */
const HOLD_OUT_SEED = 0x7e57;

/**
 * The training set devices draw from and the evaluation set (its first `evalSize` examples).
 * A spec gives its two splits; a `Dataset` object is checked, and without `testDataset` a
 * seeded `testFraction` of it becomes the evaluation set.
 *
 * @throws CohortError `DATASET_INVALID` for a malformed Dataset, and what `loadDataset` throws.
 */
export async function simulationData(
  cfg: SimulationConfig,
): Promise<{ train: Dataset; test: Dataset }> {
  let train: Dataset;
  let test: Dataset;
  if (typeof cfg.dataset === "string") {
    train = await loadDataset(cfg.dataset, "train");
    test =
      cfg.testDataset === undefined
        ? await loadDataset(cfg.dataset, "test")
        : await evaluationSet(cfg.testDataset);
  } else if (cfg.testDataset === undefined) {
    const parts = holdOut(
      checkedDataset(cfg.dataset),
      cfg.testFraction,
      (cfg.seed ^ HOLD_OUT_SEED) >>> 0,
    );
    train = parts.train;
    test = parts.evaluate;
  } else {
    train = checkedDataset(cfg.dataset);
    test = await evaluationSet(cfg.testDataset);
  }
  return { train, test: cfg.evalSize === undefined ? test : takeExamples(test, cfg.evalSize) };
}

async function evaluationSet(v: string | Dataset): Promise<Dataset> {
  return typeof v === "string" ? loadDataset(v, "test") : checkedDataset(v);
}

/**
 * The configuration with the population the partition implies: under `groups`, one device per
 * distinct group of the training set (`devices` must be unset or that number).
 *
 * @throws CohortError `INVALID_OPTION` when `devices` was given and differs, or the training
 *   set has no groups.
 */
export function withPartitionDevices(
  cfg: SimulationConfig,
  input: SimulationInput,
  train: Dataset,
): SimulationConfig {
  if (parsePartitionSpec(cfg.partition).kind !== "groups") return cfg;
  const count = groupCount(train);
  if (count === 0) {
    throw new CohortError(
      "INVALID_OPTION",
      `the groups partition needs a group id per example; ${train.name} has none (give the Dataset \`groups\`, or a csv: spec ?group=N)`,
    );
  }
  if (input.devices !== undefined && input.devices !== count) {
    throw new CohortError(
      "INVALID_OPTION",
      `the groups partition gives each of the ${count} groups of ${train.name} a device; devices is ${input.devices} (leave it unset, or set it to ${count})`,
    );
  }
  return resolveSimulationConfig({ ...input, devices: count });
}
