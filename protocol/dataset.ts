/** The in-memory labelled dataset that clients train on and coordinators evaluate on. */

/**
 * Labelled examples stored flat: example `i` occupies
 * `features[i * featureSize .. (i + 1) * featureSize]` where `featureSize` is the product of
 * `sampleShape`. Labels are class indices in `[0, numClasses)`.
 */
export interface Dataset {
  /** Human-readable name, e.g. `mnist:train[0/3]`. */
  readonly name: string;
  readonly features: Float32Array;
  readonly labels: Uint8Array;
  /** Shape of one example, e.g. `[28, 28, 1]`. */
  readonly sampleShape: readonly number[];
  readonly numClasses: number;
}

/** Number of examples in a dataset. */
export function datasetSize(data: Dataset): number {
  return data.labels.length;
}

/** Number of feature values in one example. */
export function featureSize(data: Pick<Dataset, "sampleShape">): number {
  return data.sampleShape.reduce((a, b) => a * b, 1);
}
