/** A secure round (SecAgg+): the coordinator drives the four phases and learns only the sum. */
import createDebug from "debug";
import {
  SecAggServer,
  majorityThreshold,
  parseAdvertiseKeys,
  parseConsistencyAttestation,
  parseMaskedInput,
  parseShareKeys,
  parseUnmaskResponse,
  type SecAggPhase,
  type SecAggResult,
  type MemberCredential,
  type SecAggSetup,
  type SecureStep,
  type NoiseParams,
  type SecureQuantizer,
  encodedLength,
  encodedWords,
  packedBytes,
} from "../aggregation/secure/index.js";
import type { RoundFailure } from "../aggregation/fedavg.js";
import { sizeOf } from "../aggregation/weights.js";
import { decode, encode } from "../protocol/codec.js";
import { CohortError, toCohortError } from "../protocol/errors.js";
import type { TaskSpec } from "../protocol/messages.js";
import type { RoundBroadcast } from "./downlink.js";
import type { CoordinatorOptions } from "./options.js";
import type { CohortTransport } from "./transport.js";

const debug = createDebug("cohort:coordinator:secure");

/** What a secure round produced. */
export interface SecureOutcome {
  /** The unmasked aggregate, or null when the round aborted. */
  result: SecAggResult | null;
  abortReason: string | null;
  cohort: string[];
  failures: RoundFailure[];
  bytesUp: number;
  bytesDown: number;
  /** The round's distributed noise (integer units), when members added it. */
  noise: NoiseParams | null;
  /** Bits of the masked words on the wire (null: the round never set up). */
  wordBits: number | null;
  /** Bytes of a 32-bit masked vector over the bytes of this round's (null: never set up). */
  maskedRatio: number | null;
  /**
   * The masked sums other nodes sent for their members: how many, the bytes they arrived in,
   * and the bytes those members sent their nodes. Absent: every member answered here.
   */
  partials?: { nodes: number; wire: number; clients: number };
}

/** A quantizing codec's secure clip is this many times the cohort's mean RMS of last round. */
export const CLIP_PER_RMS = 4;
/**
 * A quantizing codec's secure weight cap is this many times the cohort's mean weight of last
 * round: the shared scale spends a member's levels on weights up to the cap, so a cap far above
 * the members' weights (`secureMaxWeight`, 10,000) would waste most of them.
 */
export const WEIGHT_CAP_PER_MEAN = 2;

/**
 * The fewest contributors a distributed-noise round releases with: the cohort less the dropout
 * tolerance, and never fewer than the threshold t.
 */
export function minContributors(n: number, t: number, tolerance: number): number {
  return Math.min(n, Math.max(t, Math.ceil(n * (1 - tolerance) - 1e-9)));
}

/** The clip and weight cap of a secure round's shared scale (a quantizing codec's). */
export interface SecureRange {
  clip: number;
  maxWeight: number;
}

/** A secure round of a quantizing codec: its quantizer, and the clip and weight cap of its shared scale. */
export interface LinearRound extends SecureRange {
  quantizer: SecureQuantizer;
}

/** The setup of a round: degree k and threshold t from the options, or SecAgg's defaults. */
export function secureSetup(
  opts: CoordinatorOptions,
  task: TaskSpec,
  round: number,
  n: number,
  graphSeed: number,
  /** The noise multiplier members add under distributed DP. */
  noise?: number,
  /** The codec's linear form: the round's quantizer and the clip its shared scale follows. */
  linear?: LinearRound,
): SecAggSetup {
  const k = Math.min(n - 1, opts.secureNeighbours ?? n - 1);
  const t = opts.secureThreshold ?? majorityThreshold(k);
  return {
    session: task.runId,
    round,
    n,
    k,
    t,
    graphSeed,
    clip: linear?.clip ?? opts.secureClip,
    ...(linear === undefined ? {} : { quantizer: linear.quantizer }),
    // Under DP every update weighs one: the cap makes that hold whatever a client claims.
    maxWeight: opts.dpClip > 0 ? 1 : (linear?.maxWeight ?? opts.secureMaxWeight),
    tensorSizes: task.model.weightSpecs.map((s) => sizeOf(s.shape)),
    // Where members have identities, they sign the survivors before anyone unmasks.
    ...(task.signedUpdates ? { consistency: true } : {}),
    // Distributed DP: members add the noise; the coordinator never holds a noiseless sum.
    ...(opts.dpClip > 0 && opts.dpMode === "distributed" && noise !== undefined
      ? {
          dp: {
            clip: opts.dpClip,
            noise,
            minContributors: minContributors(n, t, opts.dpDropoutTolerance),
          },
        }
      : {}),
  };
}

/**
 * Run one secure round over `cohort`. Client `cohort[i]` is SecAgg index i. A member that
 * misses a phase (deadline, disconnect, refusal, invalid reply) is a dropout from then on;
 * fewer than t members left aborts the round, which the engine records and moves past.
 */
export async function runSecureRound(
  transport: CohortTransport,
  opts: CoordinatorOptions,
  task: TaskSpec,
  round: number,
  cohort: string[],
  /** The round's fit requests, by the model version each member holds. */
  broadcast: RoundBroadcast,
  graphSeed: number,
  /** Hears when each phase starts (the dashboard shows it). */
  onPhase: (phase: SecAggPhase) => void = () => undefined,
  /** The noise multiplier members add under distributed DP. */
  noise?: number,
  linear?: LinearRound,
): Promise<SecureOutcome> {
  const failures = new Map<string, RoundFailure>();
  let bytesUp = 0;
  let bytesDown = 0;
  let wordBits: number | null = null;
  let maskedRatio: number | null = null;
  const partials = { nodes: 0, wire: 0, clients: 0 };
  const outcome = (
    result: SecAggResult | null,
    abortReason: string | null,
    noise: NoiseParams | null,
  ): SecureOutcome => ({
    result,
    abortReason,
    cohort,
    failures: [...failures.values()],
    bytesUp,
    bytesDown,
    noise,
    wordBits,
    maskedRatio,
    ...(partials.nodes === 0 ? {} : { partials: { ...partials } }),
  });
  if (cohort.length < 2) {
    // Poisson sampling can draw fewer: a sum of one member would be that member's update.
    return outcome(
      null,
      `SECAGG_THRESHOLD: ${cohort.length} sampled; a secure round needs at least 2`,
      null,
    );
  }
  const setup = secureSetup(opts, task, round, cohort.length, graphSeed, noise, linear);
  const credentials = new Map<number, MemberCredential>();
  cohort.forEach((id, i) => {
    const credential = transport.credentialOf?.(id) ?? null;
    if (credential !== null) credentials.set(i, credential);
  });
  const identities = credentials.size === 0 ? null : credentials;
  const server = new SecAggServer(setup, {
    credentials: identities,
    identityKeys:
      identities === null
        ? null
        : new Map([...identities].map(([i, c]) => [i, c.identityKey] as const)),
  });
  wordBits = server.params.wordBits;
  const words = encodedWords(server.params, setup.tensorSizes);
  maskedRatio = (4 * encodedLength(setup.tensorSizes)) / packedBytes(server.params, words);

  /** Send one step to each addressee; feed valid replies to the server machine. */
  const phase = async <M extends { index: number }>(
    steps: { index: number; step: SecureStep }[],
    timeoutMs: number,
    parse: (raw: unknown) => M,
    receive: (m: M) => void,
  ) => {
    const first = steps[0];
    if (first !== undefined) onPhase(first.step.phase);
    const started = performance.now();
    let answered = 0;
    await Promise.all(
      steps.map(async ({ index, step }) => {
        const clientId = cohort[index]!;
        try {
          const payload = encode(step);
          bytesDown += payload.byteLength;
          const reply = await transport.request(clientId, payload, timeoutMs);
          bytesUp += reply.byteLength;
          const message = parse(decode(reply));
          if (message.index !== index) {
            throw new CohortError(
              "INVALID_MESSAGE",
              `reply claims index ${message.index}; the sender is ${index}`,
            );
          }
          receive(message);
          answered++;
        } catch (error) {
          const e = toCohortError(error, "INVALID_MESSAGE");
          debug("round %d %s: %s dropped: %s", round, step.phase, clientId, e.message);
          failures.set(clientId, {
            clientId,
            code: e.code,
            message: `${step.phase}: ${e.message}`,
          });
        }
      }),
    );
    debug(
      "round %d %s: %d of %d members answered in %d ms",
      round,
      first?.step.phase ?? "(nobody left)",
      answered,
      steps.length,
      Math.round(performance.now() - started),
    );
  };

  const stepTimeout = opts.secureStepTimeoutMs;
  try {
    // The model travels with the first step, signed like a plain round's broadcast: each
    // member's by the version it holds (a patch under a compressed downlink).
    await phase(
      cohort.map((clientId, index) => ({
        index,
        step: {
          phase: "advertise-keys",
          setup,
          index,
          model: transport.modelFor(clientId, broadcast),
        },
      })),
      stepTimeout,
      parseAdvertiseKeys,
      (m) => server.receiveAdvertisement(m),
    );
    // A member that did not take the model may not hold it: its next one is full.
    for (const clientId of cohort) {
      if (failures.has(clientId)) transport.forgetModel(clientId);
    }
    const neighbours = server.closeAdvertise();
    await phase(
      neighbours.map((message) => ({
        index: message.index,
        step: { phase: "share-keys", message },
      })),
      stepTimeout,
      parseShareKeys,
      (m) => server.receiveShareKeys(m),
    );
    const masks = server.closeShareKeys().map((message) => ({
      index: message.index,
      step: { phase: "collect-masked", message } as const,
    }));
    // Members behind other nodes send their node, which sends one sum for them all.
    const groups =
      transport.requestMasked?.(
        masks.map(({ index, step }) => {
          const payload = encode(step);
          bytesDown += payload.byteLength;
          return { clientId: cohort[index]!, index, payload };
        }),
        opts.roundTimeoutMs,
        setup,
      ) ?? [];
    const grouped = new Set(groups.flatMap((g) => g.clientIds));
    const here = masks.filter(({ index }) => !grouped.has(cohort[index]!));
    if (here.length === 0 && groups.length > 0) onPhase("collect-masked");
    await Promise.all([
      phase(here, opts.roundTimeoutMs, parseMaskedInput, (m) => server.receiveMaskedInput(m)),
      ...groups.map(async (group) => {
        try {
          const sum = await group.sum;
          bytesUp += sum.bytesUp;
          partials.nodes++;
          partials.wire += sum.wireBytes;
          partials.clients += sum.bytesUp;
          for (const f of sum.failures) failures.set(f.clientId, f);
          if (sum.masked !== null) {
            server.receiveMaskedSum({ round, indices: sum.indices, masked: sum.masked });
          }
        } catch (error) {
          const e = toCohortError(error, "INVALID_MESSAGE");
          debug("round %d collect-masked: a node's sum refused: %s", round, e.message);
          for (const clientId of group.clientIds) {
            failures.set(clientId, {
              clientId,
              code: e.code,
              message: `collect-masked: its node's sum was lost or refused: ${e.message}`,
            });
          }
        }
      }),
    ]);
    let unmasks;
    if (setup.consistency === true) {
      const checks = server.closeMaskedInputForCheck();
      await phase(
        checks.map((message) => ({
          index: message.index,
          step: { phase: "consistency", message },
        })),
        stepTimeout,
        parseConsistencyAttestation,
        (m) => server.receiveConsistency(m),
      );
      unmasks = server.closeConsistency();
    } else {
      unmasks = server.closeMaskedInput();
    }
    await phase(
      unmasks.map((message) => ({ index: message.index, step: { phase: "unmask", message } })),
      stepTimeout,
      parseUnmaskResponse,
      (m) => server.receiveUnmask(m),
    );
    const result = await server.finish();
    for (const d of result.dropouts) {
      const id = cohort[d.index]!;
      if (!failures.has(id))
        failures.set(id, {
          clientId: id,
          code: "CLIENT_DISCONNECTED",
          message: `${d.phase}: ${d.reason}`,
        });
    }
    return outcome(result, null, server.params.noise ?? null);
  } catch (error) {
    // A protocol failure (too few members left, a bad transcript) aborts the round; a bug does not
    // hide as an abort: it surfaces.
    if (!(error instanceof CohortError) || error.code === "INTERNAL") throw error;
    const e = error;
    return outcome(
      null,
      `${e.code}: ${e.message}${refusals(failures.values())}`,
      server.params.noise ?? null,
    );
  }
}

/** Why members left, by code, for an abort reason: "; members refused: SECAGG_UNSAFE ×3". */
function refusals(failures: Iterable<RoundFailure>): string {
  const counts = new Map<string, number>();
  for (const f of failures) counts.set(f.code, (counts.get(f.code) ?? 0) + 1);
  if (counts.size === 0) return "";
  const list = [...counts].map(([code, n]) => (n > 1 ? `${code} ×${n}` : code)).join(", ");
  return `; members left with ${list}`;
}
