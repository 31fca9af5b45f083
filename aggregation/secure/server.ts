/** The server side of one SecAgg+ round as an I/O-free state machine: it routes, sums and unmasks. */
import { CohortError } from "../../protocol/errors.js";
import { withDefaults } from "../../protocol/options.js";
import { checkThreshold, neighbourGraph, pruneToDegree, type NeighbourGraph } from "./graph.js";
import { checkUnmaskResponse, ShareLedger } from "./ledger.js";
import type {
  AdvertiseKeys,
  ConsistencyAttestation,
  ConsistencyRequest,
  MemberCredential,
  MaskedInput,
  MaskRequest,
  NeighbourKeys,
  SecAggSetup,
  ShareKeys,
  UnmaskRequest,
  UnmaskResponse,
} from "./messages.js";
import {
  expectPhase,
  expectRound,
  nextState,
  type SecAggPhase,
  type SecAggState,
} from "./phases.js";
import { DEFAULT_PRG_CONCURRENCY } from "./prg.js";
import { encodedWords, secureParams, type SecureParams } from "./quantize.js";
import { addMasked } from "./packing.js";
import { recoverAggregate, type SecAggDropout, type SecAggResult } from "./recover.js";
import { consistencyTranscript, isSignedBy } from "./transcript.js";
import { isWeakPublicKey, verify } from "../crypto.js";

/** Options of a `SecAggServer`. */
export interface SecAggServerOptions {
  /** Ed25519 public keys by index: when set, unsigned or forged advertisements are refused. @default null */
  identityKeys: ReadonlyMap<number, Uint8Array> | null;
  /**
   * Each member's credential (identity key and join token), relayed with its keys so that
   * clients can check who their neighbours are. @default null
   */
  credentials: ReadonlyMap<number, MemberCredential> | null;
  /** Accept thresholds t ≤ (k + 1)/2 (see `ThresholdPolicy`). @default false */
  allowMinorityThreshold: boolean;
  /** Keystreams expanded at once while unmasking. @default 4 */
  concurrency: number;
}

/**
 * One round of SecAgg+ on the server. For each phase: `receive…` each client's message (throws
 * a `CohortError`, state unchanged, on a duplicate, out-of-phase, wrong-round or inconsistent
 * one), then at the deadline `close…` returns the next messages, one per client still in.
 * Fewer than t clients left, anywhere, aborts the round with `SECAGG_THRESHOLD`.
 */
export class SecAggServer {
  readonly setup: SecAggSetup;
  readonly params: SecureParams;
  readonly graph: NeighbourGraph;
  private readonly options: SecAggServerOptions;
  private state: SecAggState = "advertise-keys";
  private abortReason: CohortError | null = null;
  private readonly lost: SecAggDropout[] = [];
  private readonly advertised = new Map<number, AdvertiseKeys>();
  private readonly shared = new Map<number, ShareKeys>();
  private readonly maskedFrom = new Set<number>();
  private readonly responses = new Map<number, UnmaskResponse>();
  private readonly requests = new Map<number, UnmaskRequest>();
  private readonly ledger = new ShareLedger();
  /** Members whose masked input is in the sum (U3), fixed when collect-masked closes. */
  private survivors: number[] | null = null;
  private droppedAfterSharing: number[] = [];
  private readonly attested = new Map<number, Uint8Array>();
  private readonly sum: Uint32Array;
  /** Clients still in the round: everyone at first, then whoever each phase kept. */
  private inRound: Set<number>;

  /** Throws `INVALID_OPTION` when the setup's parameters are unusable or unsafe. */
  constructor(setup: SecAggSetup, options: Partial<SecAggServerOptions> = {}) {
    this.options = withDefaults<SecAggServerOptions>(
      {
        identityKeys: null,
        credentials: null,
        allowMinorityThreshold: false,
        concurrency: DEFAULT_PRG_CONCURRENCY,
      },
      options,
    );
    this.setup = setup;
    this.params = secureParams(setup);
    this.graph = neighbourGraph({ n: setup.n, k: setup.k, seed: setup.graphSeed });
    checkThreshold(this.graph.degree, setup.t, {
      allowMinority: this.options.allowMinorityThreshold,
    });
    this.sum = new Uint32Array(encodedWords(this.params, setup.tensorSizes));
    this.inRound = new Set(Array.from({ length: setup.n }, (_, i) => i));
  }

  /** The phase whose messages the server collects now, or `done` / `aborted`. */
  get phase(): SecAggState {
    return this.state;
  }

  /** Clients that left so far, with the phase they missed. */
  get dropouts(): readonly SecAggDropout[] {
    return this.lost;
  }

  /** Why the round aborted, or null. */
  get error(): CohortError | null {
    return this.abortReason;
  }

  private enter(phase: SecAggPhase, message: { round: number; index: number }, what: string) {
    if (this.abortReason) {
      throw new CohortError("SECAGG_PHASE", `${what}: the round was aborted`, {
        cause: this.abortReason,
      });
    }
    expectPhase(this.state, phase, what);
    expectRound(this.setup.round, message.round, what);
    if (!this.inRound.has(message.index)) {
      throw new CohortError(
        "NOT_IN_COHORT",
        `${what} from ${message.index}, who is not in the round at this phase`,
      );
    }
  }

  private duplicate(seen: { has(i: number): boolean }, index: number, what: string): void {
    if (seen.has(index))
      throw new CohortError("SECAGG_DUPLICATE", `${what} from ${index} arrived twice`);
  }

  private abort(error: CohortError): never {
    this.abortReason = error;
    this.state = "aborted";
    throw error;
  }

  /** Close a phase: everyone expected but silent is dropped; then prune and check t. */
  private close(phase: SecAggPhase, arrived: { has(i: number): boolean }, minNeighbours: number) {
    if (this.abortReason) throw this.abortReason;
    expectPhase(this.state, phase, `closing ${phase}`);
    const present = new Set<number>();
    for (const i of this.inRound) {
      if (arrived.has(i)) present.add(i);
      else this.lost.push({ index: i, phase, reason: "absent" });
    }
    const { kept, pruned } = pruneToDegree(this.graph, present, minNeighbours);
    for (const i of pruned) this.lost.push({ index: i, phase, reason: "insufficient-neighbours" });
    if (kept.size < this.setup.t) {
      const setAside =
        pruned.length > 0 ? `, ${pruned.length} more lacked t − 1 live neighbours` : "";
      const message = `${present.size} of ${this.inRound.size} clients completed ${phase}${setAside}`;
      this.abort(
        new CohortError(
          "SECAGG_THRESHOLD",
          `round ${this.setup.round}: ${message}; ${kept.size} left, fewer than t = ${this.setup.t}`,
        ),
      );
    }
    this.inRound = kept;
    this.state = nextState(phase, this.setup.consistency === true);
    return [...kept].sort((a, b) => a - b);
  }

  private alive(i: number): number[] {
    return this.graph.neighbours(i).filter((j) => this.inRound.has(j));
  }

  /** Phase advertise-keys: accept one client's keys (signature checked when identities are known). */
  receiveAdvertisement(message: AdvertiseKeys): void {
    const what = "advertise-keys";
    this.enter("advertise-keys", message, what);
    this.duplicate(this.advertised, message.index, what);
    const identities = this.options.identityKeys;
    if (identities !== null && !isSignedBy(this.setup, message, identities.get(message.index))) {
      throw new CohortError(
        "SECAGG_SIGNATURE",
        `${what} from ${message.index}: not signed by its identity`,
      );
    }
    if (isWeakPublicKey(message.cPublicKey) || isWeakPublicKey(message.sPublicKey)) {
      // Every secret agreed with such a key is public: the member is left out (a dropout).
      throw new CohortError(
        "BAD_KEY",
        `${what} from ${message.index}: a public key of small order; left out of the round`,
      );
    }
    if (message.cPublicKey.every((b, i) => b === message.sPublicKey[i])) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `${what} from ${message.index}: c and s keys are equal`,
      );
    }
    this.advertised.set(message.index, message);
  }

  /** End of advertise-keys: each remaining client gets its remaining neighbours' keys. */
  closeAdvertise(): NeighbourKeys[] {
    const clients = this.close("advertise-keys", this.advertised, this.setup.t - 1);
    return clients.map((index) => ({
      round: this.setup.round,
      index,
      neighbours: this.alive(index).map((v) => ({
        ...this.advertised.get(v)!,
        credential: this.options.credentials?.get(v) ?? null,
      })),
    }));
  }

  /** Phase share-keys: accept one client's sealed shares, exactly one per neighbour it was sent. */
  receiveShareKeys(message: ShareKeys): void {
    const what = "share-keys";
    this.enter("share-keys", message, what);
    this.duplicate(this.shared, message.index, what);
    const expected = this.alive(message.index);
    const targets = new Set(message.boxes.map((b) => b.to));
    if (
      targets.size !== message.boxes.length ||
      expected.length !== targets.size ||
      expected.some((v) => !targets.has(v))
    ) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `${what} from ${message.index}: boxes must go to its ${expected.length} neighbours, once each`,
      );
    }
    this.shared.set(message.index, message);
  }

  /** End of share-keys: each remaining client gets the boxes of its remaining neighbours. */
  closeShareKeys(): MaskRequest[] {
    const clients = this.close("share-keys", this.shared, this.setup.t - 1);
    return clients.map((index) => ({
      round: this.setup.round,
      index,
      boxes: this.alive(index).map((from) => ({
        from,
        box: this.shared.get(from)!.boxes.find((b) => b.to === index)!.box,
      })),
    }));
  }

  /** Phase collect-masked: add one client's masked vector, as packed for the round, to the running sum (mod 2^32). */
  receiveMaskedInput(message: MaskedInput): void {
    const what = "masked input";
    this.enter("collect-masked", message, what);
    this.duplicate(this.maskedFrom, message.index, what);
    addMasked(this.sum, message.masked, this.params, `${what} from ${message.index}`);
    this.maskedFrom.add(message.index);
  }

  /**
   * Phase collect-masked: add the masked inputs of several members, summed (mod 2^32 per word)
   * and packed by the node that holds them. All or nothing: an index out of the round, seen
   * before, or listed twice, or a sum of the wrong length, refuses the whole sum.
   */
  receiveMaskedSum(message: {
    round: number;
    indices: readonly number[];
    masked: Uint32Array | Uint8Array;
  }): void {
    const what = `masked sum of ${message.indices.length} members`;
    const seen = new Set<number>();
    for (const index of message.indices) {
      this.enter("collect-masked", { round: message.round, index }, what);
      this.duplicate(this.maskedFrom, index, what);
      this.duplicate(seen, index, what);
      seen.add(index);
    }
    if (seen.size === 0) throw new CohortError("INVALID_MESSAGE", `${what}: it names nobody`);
    addMasked(this.sum, message.masked, this.params, what);
    for (const index of seen) this.maskedFrom.add(index);
  }

  /**
   * End of collect-masked: survivors are asked for the self-mask shares of their surviving
   * neighbours and the mask-key shares of the dropped ones, never both for one client. Aborts
   * when some survivor's or dropped client's shares could not reach t. In a round with the
   * consistency check, use `closeMaskedInputForCheck` instead.
   */
  closeMaskedInput(): UnmaskRequest[] {
    if (this.setup.consistency === true) {
      throw new CohortError("SECAGG_PHASE", "this round checks consistency before unmasking");
    }
    this.closeMasked();
    return this.unmaskRequests(this.inRound);
  }

  /**
   * End of collect-masked in a round with the consistency check: every survivor is told the
   * survivors and asked to sign them.
   */
  closeMaskedInputForCheck(): ConsistencyRequest[] {
    if (this.setup.consistency !== true) {
      throw new CohortError("SECAGG_PHASE", "this round has no consistency check");
    }
    const survivors = this.closeMasked();
    return survivors.map((index) => ({ round: this.setup.round, index, survivors }));
  }

  /** Phase consistency: accept one survivor's signature of the survivors, checked against its identity. */
  receiveConsistency(message: ConsistencyAttestation): void {
    const what = "consistency attestation";
    this.enter("consistency", message, what);
    this.duplicate(this.attested, message.index, what);
    const key = this.options.identityKeys?.get(message.index);
    const transcript = consistencyTranscript(this.setup, this.survivors!);
    if (key === undefined || !verify(transcript, message.signature, key)) {
      throw new CohortError(
        "SECAGG_SIGNATURE",
        `${what} from ${message.index}: not signed by its identity`,
      );
    }
    this.attested.set(message.index, message.signature);
  }

  /** End of the consistency check: the members that signed are asked to unmask. */
  closeConsistency(): UnmaskRequest[] {
    this.close("consistency", this.attested, 0);
    return this.unmaskRequests(this.inRound);
  }

  /** Close collect-masked: the survivors (U3) are fixed here, whoever answers later phases. */
  private closeMasked(): number[] {
    const sharedIn = new Set(this.inRound); // U2
    const survivors = this.close("collect-masked", this.maskedFrom, 0);
    const floor = this.setup.dp?.minContributors ?? 0;
    if (survivors.length < floor) {
      // Members would refuse to unmask a sum with less noise than the round promised.
      this.abort(
        new CohortError(
          "SECAGG_THRESHOLD",
          `round ${this.setup.round}: ${survivors.length} masked inputs arrived; the round's distributed noise needs ${floor}`,
        ),
      );
    }
    this.survivors = survivors;
    this.droppedAfterSharing = [...sharedIn]
      .filter((i) => !this.inRound.has(i))
      .sort((a, b) => a - b);
    return survivors;
  }

  /** Unmask requests for `holders`, after checking every secret can still reach t shares. */
  private unmaskRequests(holders: ReadonlySet<number>): UnmaskRequest[] {
    const survivors = new Set(this.survivors);
    const dropped = this.droppedAfterSharing;
    const held = (i: number) => this.graph.neighbours(i).filter((j) => holders.has(j)).length;
    const short = [
      ...this.survivors!.filter((v) => held(v) + (holders.has(v) ? 1 : 0) < this.setup.t),
      ...dropped.filter((u) => held(u) < this.setup.t),
    ];
    if (short.length > 0) {
      this.abort(
        new CohortError(
          "SECAGG_THRESHOLD",
          `round ${this.setup.round}: fewer than t = ${this.setup.t} surviving holders of the shares of client ${short[0]}`,
        ),
      );
    }
    const isDropped = new Set(dropped);
    return [...holders]
      .sort((a, b) => a - b)
      .map((index) => {
        const neighbours = this.graph.neighbours(index);
        const request = this.ledger.request(
          this.setup.round,
          index,
          [index, ...neighbours.filter((v) => survivors.has(v))].sort((a, b) => a - b),
          neighbours.filter((u) => isDropped.has(u)),
        );
        if (this.setup.consistency === true) {
          request.attestations = [index, ...neighbours]
            .filter((v) => this.attested.has(v))
            .sort((a, b) => a - b)
            .map((v) => ({ index: v, signature: this.attested.get(v)! }));
        }
        this.requests.set(index, request);
        return request;
      });
  }

  /** Phase unmask: accept one survivor's revealed shares, only those it was asked for. */
  receiveUnmask(message: UnmaskResponse): void {
    const what = "unmask response";
    this.enter("unmask", message, what);
    this.duplicate(this.responses, message.index, what);
    checkUnmaskResponse(this.requests.get(message.index)!, message);
    this.responses.set(message.index, message);
  }

  /**
   * End of unmask: rebuild the secrets from t shares each, strip the masks and decode the
   * weighted mean. Aborts with `SECAGG_THRESHOLD` when some secret has fewer than t shares.
   */
  async finish(): Promise<SecAggResult> {
    const contributors = this.survivors ?? [];
    const dropped = this.lost.filter((d) => d.phase === "collect-masked").map((d) => d.index);
    this.close("unmask", this.responses, 0); // from here on, late responses are refused
    const sPublicKeys = new Map([...this.advertised].map(([i, ad]) => [i, ad.sPublicKey]));
    try {
      return await recoverAggregate({
        id: this.setup,
        t: this.setup.t,
        graph: this.graph,
        params: this.params,
        tensorSizes: this.setup.tensorSizes,
        survivors: contributors,
        dropped,
        dropouts: [...this.lost],
        sPublicKeys,
        responses: this.responses.values(),
        sum: this.sum,
        concurrency: this.options.concurrency,
      });
    } catch (error) {
      this.abort(
        error instanceof CohortError
          ? error
          : new CohortError("INTERNAL", String(error), { cause: error }),
      );
    }
  }
}
