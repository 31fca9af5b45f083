/** Virtual devices: ids, and a device's dataset materialised from its partition on demand. */
import { datasetSize, type Dataset } from "../protocol/dataset.js";
import { subsetDataset } from "../models/datasets/index.js";
import type { Partition } from "./partition.js";
import { holdOut } from "../client/held-out.js";

/** The id of device `d`, zero-padded so ids sort in device order. */
export function deviceId(d: number, population: number): string {
  return `device-${String(d).padStart(String(population - 1).length, "0")}`;
}

/** The device number of an id made by `deviceId`. */
export function deviceIndex(id: string): number {
  return Number(id.slice("device-".length));
}

/** A device's local data, copied out of the shared dataset only while it trains. */
export function materialise(data: Dataset, partition: Partition, device: number): Dataset {
  const local = subsetDataset(data, partition.indicesOf(device));
  return { ...local, name: `${data.name}#${device}` };
}

/**
 * A device's data with `evalFraction` of it held out for federated evaluation (seeded per
 * device); a device too small to split keeps everything for training.
 */
export function deviceSplit(
  data: Dataset,
  partition: Partition,
  device: number,
  evalFraction: number,
  seed: number,
): { train: Dataset; evaluate: Dataset | null } {
  const local = materialise(data, partition, device);
  if (evalFraction === 0 || datasetSize(local) < 2) return { train: local, evaluate: null };
  return holdOut(local, evalFraction, (seed * 7919 + device) >>> 0);
}
