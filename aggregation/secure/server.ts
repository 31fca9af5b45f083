/** The server side of one SecAgg+ round as an I/O-free state machine: it routes, sums and unmasks. */
import { CohortError } from "../../protocol/errors.js";
import { withDefaults } from "../../protocol/options.js";
import { checkThreshold, neighbourGraph, pruneToDegree, type NeighbourGraph } from "./graph.js";
import { checkUnmaskResponse, ShareLedger } from "./ledger.js";
import type {
  AdvertiseKeys,
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
import { encodedLength, secureParams, type SecureParams } from "./quantize.js";
import { recoverAggregate, type SecAggDropout, type SecAggResult } from "./recover.js";
import { isSignedBy } from "./transcript.js";
import { isWeakPublicKey } from "../crypto.js";

/** Options of a `SecAggServer`. */
export interface SecAggServerOptions {
  /** Ed25519 public keys by index: when set, unsigned or forged advertisements are refused. @default null */
  identityKeys: ReadonlyMap<number, Uint8Array> | null;
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
  private readonly sum: Uint32Array;
  /** Clients still in the round: everyone at first, then whoever each phase kept. */
  private inRound: Set<number>;

  /** Throws `INVALID_OPTION` when the setup's parameters are unusable or unsafe. */
  constructor(setup: SecAggSetup, options: Partial<SecAggServerOptions> = {}) {
    this.options = withDefaults<SecAggServerOptions>(
      { identityKeys: null, allowMinorityThreshold: false, concurrency: DEFAULT_PRG_CONCURRENCY },
      options,
    );
    this.setup = setup;
    this.params = secureParams(setup);
    this.graph = neighbourGraph({ n: setup.n, k: setup.k, seed: setup.graphSeed });
    checkThreshold(this.graph.degree, setup.t, {
      allowMinority: this.options.allowMinorityThreshold,
    });
    this.sum = new Uint32Array(encodedLength(setup.tensorSizes));
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
    this.state = nextState(phase);
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
      neighbours: this.alive(index).map((v) => this.advertised.get(v)!),
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

  /** Phase collect-masked: add one client's masked vector to the running sum (mod 2^32). */
  receiveMaskedInput(message: MaskedInput): void {
    const what = "masked input";
    this.enter("collect-masked", message, what);
    this.duplicate(this.maskedFrom, message.index, what);
    if (message.masked.length !== this.sum.length) {
      throw new CohortError(
        "SHAPE_MISMATCH",
        `${what} from ${message.index}: ${message.masked.length} words, expected ${this.sum.length}`,
      );
    }
    const { masked } = message;
    for (let i = 0; i < masked.length; i++) this.sum[i]! += masked[i]!;
    this.maskedFrom.add(message.index);
  }

  /**
   * End of collect-masked: survivors are asked for the self-mask shares of their surviving
   * neighbours and the mask-key shares of the dropped ones, never both for one client. Aborts
   * when some survivor's or dropped client's shares could not reach t.
   */
  closeMaskedInput(): UnmaskRequest[] {
    const sharedIn = new Set(this.inRound); // U2
    const clients = this.close("collect-masked", this.maskedFrom, 0);
    const dropped = [...sharedIn].filter((i) => !this.inRound.has(i)).sort((a, b) => a - b);
    const short = [
      ...clients.filter((v) => this.alive(v).length + 1 < this.setup.t),
      ...dropped.filter((u) => this.alive(u).length < this.setup.t),
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
    return clients.map((index) => {
      const neighbours = this.graph.neighbours(index);
      const survivors = [index, ...neighbours.filter((v) => this.inRound.has(v))].sort(
        (a, b) => a - b,
      );
      const request = this.ledger.request(
        this.setup.round,
        index,
        survivors,
        neighbours.filter((u) => isDropped.has(u)),
      );
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
    const contributors = [...this.inRound].sort((a, b) => a - b);
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
