/** A client's side of secure rounds: answers each SecAgg+ step, masking its update before it leaves. */
import { SecAggClient, parseSecureStep, type ClientUpdate } from "../aggregation/secure/index.js";
import { decode, encode } from "../protocol/codec.js";
import { parseFitRequest } from "../protocol/guards.js";
import { CohortError } from "../protocol/errors.js";
import type { FitRequest } from "../protocol/messages.js";
import type { MemberCredential, SecAggSetup } from "../aggregation/secure/index.js";
import { DEFAULT_SECURE_FLOORS, type ClientOptions } from "./options.js";

/** The least cohort size, neighbour degree and threshold a client accepts. */
export type SecureFloors = ClientOptions<string>["secureFloors"];

/** Throw `SECAGG_UNSAFE` when a setup is below the client's floors. */
export function checkFloors(setup: SecAggSetup, floors: SecureFloors): void {
  const degree = Math.min(setup.k, setup.n - 1);
  const below = [
    setup.n < floors.cohort ? `cohort size ${setup.n} < ${floors.cohort}` : null,
    degree < floors.neighbours ? `neighbour degree ${degree} < ${floors.neighbours}` : null,
    setup.t < floors.threshold ? `threshold ${setup.t} < ${floors.threshold}` : null,
  ].filter((b) => b !== null);
  if (below.length > 0) {
    throw new CohortError(
      "SECAGG_UNSAFE",
      `secure round ${setup.round} is below this client's floors (${below.join(", ")}): refused before sending any key`,
    );
  }
}

/** Throw `SECAGG_UNSAFE` when a setup's members add less distributed noise than `minNoise`. */
export function checkNoise(setup: SecAggSetup, minNoise: number | null): void {
  if (minNoise === null) return;
  const noise = setup.dp?.noise;
  if (noise === undefined || noise < minNoise) {
    throw new CohortError(
      "SECAGG_UNSAFE",
      `secure round ${setup.round} ${noise === undefined ? "adds no distributed noise" : `adds distributed noise z = ${noise}`}; this client requires z ≥ ${minNoise}: refused before sending any key`,
    );
  }
}

/** What a secure session enforces. */
export interface SecureSessionOptions {
  /** @default DEFAULT_SECURE_FLOORS */
  floors: SecureFloors;
  /** The least distributed-noise multiplier a setup must carry (`requireNoise`). @default null */
  minNoise: number | null;
  /** Signs this client's keys and its consistency attestations. @default null */
  identity: { publicKey: Uint8Array; secretKey: Uint8Array } | null;
  /** Checks each neighbour's credential (see `SecAggClientOptions.membership`). @default null */
  membership: ((credential: MemberCredential) => string | null) | null;
}

/** Trains on a fit request and returns the update in the clear (it never leaves unmasked). */
export type SecureTrain = (request: FitRequest) => Promise<ClientUpdate>;

/**
 * Holds the SecAgg+ state of the current secure round. Training starts with the first step
 * (which carries the global weights) and runs while keys are agreed; its result is only ever
 * sent masked.
 */
export class SecureSession {
  private client: SecAggClient | null = null;
  private round = 0;
  private training: Promise<ClientUpdate> | null = null;

  /**
   * @param train trains on the round's model
   * @param openModel decodes (and, where models are signed, verifies) the round's model
   */
  constructor(
    private readonly train: SecureTrain,
    private readonly openModel: (payload: Uint8Array) => FitRequest = (p) =>
      parseFitRequest(decode(p)),
    options: Partial<SecureSessionOptions> = {},
  ) {
    this.options = {
      floors: DEFAULT_SECURE_FLOORS,
      minNoise: null,
      identity: null,
      membership: null,
      ...options,
    };
  }

  private readonly options: SecureSessionOptions;

  /** Answer one encoded step with the encoded reply; throws a CohortError to refuse. */
  async step(payload: unknown): Promise<Uint8Array> {
    const step = parseSecureStep(decode(payload));
    switch (step.phase) {
      case "advertise-keys": {
        if (step.setup.round < this.round) {
          throw new CohortError(
            "STALE_ROUND",
            `setup for round ${step.setup.round}; round ${this.round} started`,
          );
        }
        const { floors, identity, membership, minNoise } = this.options;
        checkFloors(step.setup, floors);
        checkNoise(step.setup, minNoise);
        if (membership !== null && step.setup.consistency !== true) {
          // Without it, a server could tell members different stories about who survived.
          throw new CohortError(
            "SECAGG_UNSAFE",
            `secure round ${step.setup.round} skips the consistency check this client requires`,
          );
        }
        this.round = step.setup.round;
        this.client = new SecAggClient(step.setup, {
          index: step.index,
          identity: identity?.secretKey ?? null,
          membership,
        });
        const fit = this.openModel(step.model);
        if (fit.round !== step.setup.round) {
          throw new CohortError(
            "INVALID_MESSAGE",
            `model of round ${fit.round} in the setup of round ${step.setup.round}`,
          );
        }
        this.training = this.train(fit);
        // The masked-input step awaits the result; keep an early failure from going unhandled.
        this.training.catch(() => undefined);
        return encode(this.client.advertise());
      }
      case "share-keys":
        return encode(await this.current(step.message.round).shareKeys(step.message));
      case "collect-masked": {
        const client = this.current(step.message.round);
        const update = await this.training!;
        return encode(await client.maskedInput(step.message, update));
      }
      case "consistency":
        return encode(this.current(step.message.round).attest(step.message));
      case "unmask":
        return encode(this.current(step.message.round).unmask(step.message));
      default: {
        const exhaustive: never = step;
        throw new CohortError("INVALID_MESSAGE", `unknown step ${JSON.stringify(exhaustive)}`);
      }
    }
  }

  private current(round: number): SecAggClient {
    if (this.client === null || round !== this.round) {
      throw new CohortError(
        "SECAGG_PHASE",
        `no secure round ${round} in progress (current: ${this.round})`,
      );
    }
    return this.client;
  }
}
