/** In-memory SecAgg+ round: n clients and one server, every message through msgpack and the guards. */
import { decode, encode } from "../../protocol/codec.js";
import { createRng, type Rng } from "../../aggregation/random.js";
import {
  SecAggClient,
  SecAggServer,
  clientWeight,
  generateIdentity,
  issueJoinToken,
  majorityThreshold,
  parseAdvertiseKeys,
  parseConsistencyAttestation,
  parseConsistencyRequest,
  parseMaskedInput,
  parseMaskRequest,
  parseNeighbourKeys,
  parseShareKeys,
  parseUnmaskRequest,
  parseUnmaskResponse,
  secureParams,
  type AdvertiseKeys,
  type ClientUpdate,
  type ConsistencyAttestation,
  type ConsistencyRequest,
  type DistributedNoise,
  type KeyPair,
  type MemberCredential,
  type MaskedInput,
  type MaskRequest,
  type NeighbourKeys,
  type SecAggResult,
  type SecAggSetup,
  type SecureParams,
  type ShareKeys,
  type UnmaskRequest,
  type UnmaskResponse,
  toBase64,
} from "../../aggregation/secure/index.js";
import { membershipCheck } from "../../client/options.js";

/** Parameters of a test round; everything but `n` has a small default. */
export interface RoundOptions {
  n: number;
  /** @default n − 1 (complete graph) */
  k: number;
  /** @default the smallest majority of k + 1 */
  t: number;
  /** @default [12, 5] */
  tensorSizes: number[];
  /** @default 0.5 */
  clip: number;
  /** @default 100 */
  maxWeight: number;
  /** Seed of the deltas, weights, graph and stochastic rounding. @default 1 */
  seed: number;
  /** @default 3 */
  round: number;
  /** Give clients Ed25519 identities and make everyone check them. @default false */
  identities: boolean;
  /**
   * Members sign the survivors before unmasking; identities travel as credentials relayed by
   * the server (join tokens of `issuer`, which clients then trust). @default false
   */
  consistency: boolean;
  /** The issuer whose join tokens admit members (with `consistency`). @default a fresh one */
  issuer: KeyPair;
  /** Distributed DP noise members add (then `maxWeight` defaults to 1). @default none */
  dp: DistributedNoise;
}

/** Send a message over the "wire": msgpack out, msgpack in, then the guard. */
export function wire<T>(message: T, parse: (raw: unknown) => T): T {
  return parse(decode(encode(message)));
}

/** A setup for tests. */
export function makeSetup(o: Partial<RoundOptions> & { n: number }): SecAggSetup {
  const k = o.k ?? o.n - 1;
  return {
    session: "test-run",
    round: o.round ?? 3,
    n: o.n,
    k,
    t: o.t ?? majorityThreshold(k),
    graphSeed: ((o.seed ?? 1) * 2654435761) >>> 0,
    clip: o.clip ?? 0.5,
    maxWeight: o.maxWeight ?? (o.dp ? 1 : 100),
    tensorSizes: o.tensorSizes ?? [12, 5],
    ...(o.consistency ? { consistency: true } : {}),
    ...(o.dp ? { dp: o.dp } : {}),
  };
}

/** Random deltas in ±1.2·clip (some get clipped) and example counts up to 1.5·maxWeight. */
export function randomUpdates(setup: SecAggSetup, rng: Rng): ClientUpdate[] {
  return Array.from({ length: setup.n }, () => ({
    delta: setup.tensorSizes.map((size) =>
      Float32Array.from({ length: size }, () => (rng() * 2 - 1) * 1.2 * setup.clip),
    ),
    numExamples: 1 + Math.floor(rng() * 1.5 * setup.maxWeight),
  }));
}

/** The exact (float64) weighted mean of the clipped deltas of `who`: plain FedAvg. */
export function plainMean(
  updates: readonly ClientUpdate[],
  who: readonly number[],
  params: SecureParams,
): { sumWeights: number; mean: Float64Array[] } {
  const sumWeights = who.reduce((s, i) => s + clientWeight(updates[i]!.numExamples, params), 0);
  const mean = updates[0]!.delta.map((t, ti) => {
    const acc = new Float64Array(t.length);
    for (const i of who) {
      const w = clientWeight(updates[i]!.numExamples, params);
      const d = updates[i]!.delta[ti]!;
      for (let j = 0; j < d.length; j++) {
        acc[j]! += (w * Math.max(-params.clip, Math.min(params.clip, d[j]!))) / sumWeights;
      }
    }
    return acc;
  });
  return { sumWeights, mean };
}

/** Largest coordinate difference between a result and a float64 reference. */
export function maxDifference(a: readonly Float32Array[], b: readonly Float64Array[]): number {
  let max = 0;
  a.forEach((t, i) => t.forEach((v, j) => (max = Math.max(max, Math.abs(v - b[i]![j]!)))));
  return max;
}

type Phase = "share-keys" | "collect-masked" | "consistency" | "unmask";

/**
 * A round driven step by step, so tests can drop, tamper with or replay messages between
 * steps. Each step returns what the server received, keyed by client.
 */
export class TestRound {
  readonly setup: SecAggSetup;
  readonly server: SecAggServer;
  readonly clients: SecAggClient[];
  readonly updates: ClientUpdate[];
  readonly params: SecureParams;
  private outbox = new Map<
    Phase,
    (NeighbourKeys | MaskRequest | ConsistencyRequest | UnmaskRequest)[]
  >();
  /** Members' identities (with `identities` or `consistency`). */
  readonly identities: KeyPair[] | null;
  /** Each member's credential as the server relays it (with `consistency`). */
  readonly credentials: Map<number, MemberCredential> | null;

  constructor(options: Partial<RoundOptions> & { n: number }) {
    this.setup = makeSetup(options);
    this.params = secureParams(this.setup);
    const rng = createRng(options.seed ?? 1);
    this.updates = randomUpdates(this.setup, rng);
    const ids =
      options.identities || options.consistency
        ? Array.from({ length: this.setup.n }, () => generateIdentity())
        : null;
    this.identities = ids;
    const identityKeys = ids ? new Map(ids.map((id, i) => [i, id.publicKey])) : null;
    const issuer = options.issuer ?? generateIdentity();
    this.credentials =
      options.consistency && ids
        ? new Map(
            ids.map((id, i) => {
              const token = issueJoinToken(issuer.secretKey, id.publicKey, Date.now() + 60_000);
              return [i, { identityKey: id.publicKey, token }] as const;
            }),
          )
        : null;
    this.server = new SecAggServer(this.setup, { identityKeys, credentials: this.credentials });
    const membership = options.consistency
      ? membershipCheck({ issuerKey: toBase64(issuer.publicKey) })
      : null;
    this.clients = Array.from(
      { length: this.setup.n },
      (_, index) =>
        new SecAggClient(this.setup, {
          index,
          identity: ids?.[index]?.secretKey ?? null,
          // With credentials, clients learn (and check) their neighbours' keys from them.
          identityKeys: options.consistency ? null : identityKeys,
          membership,
          rng: createRng((options.seed ?? 1) * 1000 + index),
        }),
    );
  }

  /** Every client except `silent` advertises. */
  advertise(silent: readonly number[] = []): Map<number, AdvertiseKeys> {
    const sent = new Map<number, AdvertiseKeys>();
    for (const c of this.clients) {
      if (silent.includes(c.index)) continue;
      const message = c.advertise();
      sent.set(c.index, message);
      this.server.receiveAdvertisement(wire(message, parseAdvertiseKeys));
    }
    this.outbox.set("share-keys", this.server.closeAdvertise());
    return sent;
  }

  /** Neighbour-key messages, as the server built them. */
  neighbourKeys(): NeighbourKeys[] {
    return this.outbox.get("share-keys") as NeighbourKeys[];
  }

  /** Every client still asked, except `silent`, shares its keys; `edit` may alter the reply. */
  async shareKeys(
    silent: readonly number[] = [],
    edit: (m: ShareKeys) => ShareKeys = (m) => m,
  ): Promise<Map<number, ShareKeys>> {
    const sent = new Map<number, ShareKeys>();
    for (const raw of this.neighbourKeys()) {
      const message = wire(raw, parseNeighbourKeys);
      if (silent.includes(message.index)) continue;
      const reply = edit(await this.clients[message.index]!.shareKeys(message));
      sent.set(message.index, reply);
      this.server.receiveShareKeys(wire(reply, parseShareKeys));
    }
    this.outbox.set("collect-masked", this.server.closeShareKeys());
    return sent;
  }

  /** Mask requests, as the server built them (tests may tamper before `masked`). */
  maskRequests(): MaskRequest[] {
    return this.outbox.get("collect-masked") as MaskRequest[];
  }

  /** Every client still asked, except `silent`, sends its masked input. */
  async masked(silent: readonly number[] = []): Promise<Map<number, MaskedInput>> {
    const sent = new Map<number, MaskedInput>();
    for (const raw of this.maskRequests()) {
      const message = wire(raw, parseMaskRequest);
      if (silent.includes(message.index)) continue;
      const reply = await this.clients[message.index]!.maskedInput(
        message,
        this.updates[message.index]!,
      );
      sent.set(message.index, reply);
      this.server.receiveMaskedInput(wire(reply, parseMaskedInput));
    }
    this.closeMasked();
    return sent;
  }

  /** Close collect-masked (after masked inputs reached the server some other way). */
  closeMasked(): void {
    if (this.setup.consistency) {
      this.outbox.set("consistency", this.server.closeMaskedInputForCheck());
    } else {
      this.outbox.set("unmask", this.server.closeMaskedInput());
    }
  }

  /** Consistency requests, as the server built them. */
  consistencyRequests(): ConsistencyRequest[] {
    return this.outbox.get("consistency") as ConsistencyRequest[];
  }

  /** Every client still asked, except `silent`, signs the survivors; `edit` may alter requests. */
  attest(
    silent: readonly number[] = [],
    edit: (m: ConsistencyRequest) => ConsistencyRequest = (m) => m,
  ): Map<number, ConsistencyAttestation> {
    const sent = new Map<number, ConsistencyAttestation>();
    for (const raw of this.consistencyRequests()) {
      const message = wire(edit(raw), parseConsistencyRequest);
      if (silent.includes(message.index)) continue;
      const reply = this.clients[message.index]!.attest(message);
      sent.set(message.index, reply);
      try {
        this.server.receiveConsistency(wire(reply, parseConsistencyAttestation));
      } catch {
        // A member that signed another list is refused: it is left out, as a dropout.
      }
    }
    this.outbox.set("unmask", this.server.closeConsistency());
    return sent;
  }

  /** Unmask requests, as the server built them. */
  unmaskRequests(): UnmaskRequest[] {
    return this.outbox.get("unmask") as UnmaskRequest[];
  }

  /** Every client still asked, except `silent`, reveals its shares. */
  unmask(silent: readonly number[] = []): Map<number, UnmaskResponse> {
    const sent = new Map<number, UnmaskResponse>();
    for (const raw of this.unmaskRequests()) {
      const message = wire(raw, parseUnmaskRequest);
      if (silent.includes(message.index)) continue;
      const reply = this.clients[message.index]!.unmask(message);
      sent.set(message.index, reply);
      this.server.receiveUnmask(wire(reply, parseUnmaskResponse));
    }
    return sent;
  }

  /** Close unmask and return the server's result. */
  async finish(): Promise<SecAggResult> {
    return this.server.finish();
  }
}

/** A whole round with optional dropouts before each phase. */
export async function runRound(
  options: Partial<RoundOptions> & { n: number },
  drop: Partial<Record<"advertise-keys" | Phase, number[]>> = {},
): Promise<{ round: TestRound; result: SecAggResult }> {
  const round = new TestRound(options);
  round.advertise(drop["advertise-keys"]);
  await round.shareKeys(drop["share-keys"]);
  await round.masked(drop["collect-masked"]);
  if (round.setup.consistency) round.attest(drop.consistency);
  round.unmask(drop.unmask);
  return { round, result: await round.finish() };
}
