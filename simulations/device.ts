/** Virtual devices: ids, and a device's dataset materialised from its partition on demand. */
import type { Dataset } from "../protocol/dataset.js";
import { subsetDataset } from "./datasets/index.js";
import type { Partition } from "./partition.js";

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
