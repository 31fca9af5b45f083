/**
 * Serving the run's model versions: the index, each version as a tfjs `model.json` + weights,
 * and predictions of the promoted version. The HTTP routes (`http/models.ts`) ask this.
 */
import type * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import type { ModelSpec } from "../protocol/messages.js";
import { instantiate, packWeights } from "../models/model-file.js";
import { predictExamples, type Prediction } from "../models/predict.js";
import type { ModelVersion, VersionStore } from "./versions.js";

/** A version's `model.json` in the tfjs layers format, its weights beside it. */
export interface ServedModelJson {
  format: "layers-model";
  generatedBy: string;
  convertedBy: null;
  modelTopology: ModelSpec["topology"];
  weightsManifest: {
    paths: string[];
    weights: { name: string; shape: number[]; dtype: "float32" }[];
  }[];
}

/** The most examples one predict request may hold. */
export const MAX_PREDICT_EXAMPLES = 1024;

/** What the model routes serve, once the run has opened its versions. */
export class ModelService {
  /** The promoted model, built once per promoted checksum. */
  private cached: { checksum: string; version: number; model: tf.LayersModel } | null = null;
  /** Predictions run one after another on the cached model. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly spec: ModelSpec,
    private readonly source: () => VersionStore | null,
  ) {}

  /** The run's versions; `NO_ACTIVE_ROUND` before the run has started. */
  store(): VersionStore {
    const store = this.source();
    if (store === null) {
      throw new CohortError("NO_ACTIVE_ROUND", "the run has not started: no model versions yet");
    }
    return store;
  }

  /** A version by number or `promoted`; `INVALID_MESSAGE` for no such version. */
  version(which: number | "promoted"): ModelVersion {
    const store = this.store();
    const v = which === "promoted" ? store.promoted() : which;
    const record = store.get(v);
    if (record === undefined) throw new CohortError("INVALID_MESSAGE", `no version ${v}`);
    return record;
  }

  /** `model.json` of `version`; its weights path (`N/weights.bin`) is relative to `/api/models/`. */
  modelJson(version: ModelVersion): ServedModelJson {
    return {
      format: "layers-model",
      generatedBy: "cohort",
      convertedBy: null,
      modelTopology: this.spec.topology,
      weightsManifest: [
        {
          paths: [`${version.version}/weights.bin`],
          weights: this.spec.weightSpecs.map((s) => ({
            name: s.name,
            shape: [...s.shape],
            dtype: "float32",
          })),
        },
      ],
    };
  }

  /** The float32 bytes of a version's weights, or null when they were pruned. */
  async weightsBin(version: ModelVersion): Promise<Uint8Array | null> {
    const weights = await this.store().weightsOf(version.version);
    return weights === null ? null : packWeights(weights);
  }

  /** Predict `rows` (flat examples) with the promoted version. */
  predict(rows: Float64Array[]): Promise<{ version: number; predictions: Prediction[] }> {
    const run = this.queue.then(async () => {
      const { model, version } = await this.promotedModel();
      const predictions = await predictExamples(model, {
        rows,
        names: rows.map((_, i) => `inputs[${i}]`),
      });
      return { version, predictions };
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Free the cached model. */
  dispose(): void {
    this.cached?.model.dispose();
    this.cached = null;
  }

  private async promotedModel(): Promise<{ model: tf.LayersModel; version: number }> {
    const version = this.version("promoted");
    if (this.cached?.checksum !== version.checksum) {
      const weights = await this.store().weightsOf(version.version);
      if (weights === null) {
        throw new CohortError("INTERNAL", `the promoted version ${version.version} has no weights`);
      }
      const model = await instantiate(this.spec, weights);
      this.cached?.model.dispose();
      this.cached = { checksum: version.checksum, version: version.version, model };
    }
    return { model: this.cached!.model, version: this.cached!.version };
  }
}
