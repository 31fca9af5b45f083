/**
 * A client's end of the compressed downlink: the model version it holds, and the rebuild of the
 * next version from a patch. Node clients, browsers and simulated devices share it.
 */
import { addWeights, modelChecksum, resolveDownlinkCodec } from "../aggregation/downlink.js";
import type { UpdateCodec } from "../aggregation/codec.js";
import { checkWeights } from "../aggregation/weights.js";
import { CohortError } from "../protocol/errors.js";
import type { FitMessage, FitRequest, ModelVersion, TaskSpec } from "../protocol/messages.js";

const codecs = new WeakMap<TaskSpec, UpdateCodec>();

/** The downlink codec a task names, resolved once per task (null: full float32 models only). */
export function taskDownlink(task: TaskSpec): UpdateCodec | null {
  if (task.downlink === undefined) return null;
  let codec = codecs.get(task);
  if (codec === undefined) {
    codec = resolveDownlinkCodec(task.downlink);
    codecs.set(task, codec);
  }
  return codec;
}

/** The model a client was last sent, by version: what the next patch builds on. */
export class HeldModel {
  private held: { version: number; weights: readonly Float32Array[] } | null = null;

  /** The version held, or null. */
  get version(): number | null {
    return this.held?.version ?? null;
  }

  /** The model held, or null. */
  get weights(): readonly Float32Array[] | null {
    return this.held?.weights ?? null;
  }

  /** Forget the held model (a new run, or a base the coordinator no longer agrees with). */
  reset(): void {
    this.held = null;
  }

  /**
   * The full request a checked `round:fit` stands for; what it sends becomes the held model.
   *
   * @throws CohortError `BASE_MISMATCH` when the patch's base is not the model held or the
   *   rebuilt model's checksum differs (the coordinator then sends the full model next time);
   *   the codec's own codes for a payload it cannot decode; `INVALID_MESSAGE` for a patch in a
   *   run without a downlink codec.
   */
  receive(task: TaskSpec, message: FitMessage): FitRequest {
    if (!("patch" in message)) {
      if (message.model !== undefined) {
        const weights = message.weights;
        checkWeights(weights, task.model.weightSpecs, "global weights");
        this.verify(weights, message.model);
        this.held = { version: message.model.version, weights };
      }
      return message;
    }
    const codec = taskDownlink(task);
    if (codec === null) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `round ${message.round} sends a patch, and the task names no downlink codec`,
      );
    }
    const { base, diffs } = message.patch;
    const held = this.held;
    if (held === null || held.version !== base) {
      this.held = null;
      throw new CohortError(
        "BASE_MISMATCH",
        `round ${message.round} patches model version ${base}; this client holds ${held === null ? "none" : `version ${held.version}`}`,
      );
    }
    const specs = task.model.weightSpecs;
    let weights = held.weights;
    try {
      for (const diff of diffs) {
        const decoded = codec.decode(diff.update, specs, { round: diff.version, seed: diff.seed });
        weights = addWeights(weights, decoded);
      }
      checkWeights(weights, specs, "patched weights");
      this.verify(weights, message.model);
    } catch (error) {
      // The coordinator counts this client as holding the new version until it hears of the
      // failure; either way it sends the full model next.
      this.held = null;
      throw error;
    }
    this.held = { version: message.model.version, weights };
    const { patch: _patch, ...rest } = message;
    return { ...rest, weights: weights as Float32Array[] };
  }

  private verify(weights: readonly Float32Array[], model: ModelVersion): void {
    const sum = modelChecksum(weights);
    if (sum !== model.checksum) {
      this.held = null;
      throw new CohortError(
        "BASE_MISMATCH",
        `model version ${model.version} has checksum ${sum.toString(16)}; the coordinator's is ${model.checksum.toString(16)}`,
      );
    }
  }
}
