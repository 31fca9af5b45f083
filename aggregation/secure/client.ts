/** The client side of SecAgg+ as an I/O-free state machine: one instance per client per round. */
import { CohortError } from "../../protocol/errors.js";
import { withDefaults } from "../../protocol/options.js";
import type { Rng } from "../random.js";
import type { Weights } from "../weights.js";
import {
  cryptoRng,
  generateKeyPair,
  isWeakPublicKey,
  randomBytes,
  sign,
  verify,
  type KeyPair,
} from "../crypto.js";
import { dealShares, openBox, type NeighbourLink, type SharePair } from "./dealer.js";
import { checkThreshold, neighbourGraph, type NeighbourGraph } from "./graph.js";
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
import { checkUnmaskRequest } from "./ledger.js";
import { applyMasks, type Mask } from "./prg.js";
import { quantizeUpdate, secureParams, type SecureParams } from "./quantize.js";
import { packMasked } from "./packing.js";
import { advertiseTranscript, consistencyTranscript, isSignedBy } from "./transcript.js";

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

/** Options of a `SecAggClient`. */
export interface SecAggClientOptions {
  /** This client's cohort index (0 … n − 1), assigned by the server with the setup. */
  index: number;
  /** Ed25519 identity secret key (64 bytes) that signs the advertised keys. @default null */
  identity: Uint8Array | null;
  /**
   * Ed25519 public keys of the cohort by index. When set, every neighbour's advertisement must
   * carry a valid signature, or the neighbour keys are rejected with `SECAGG_SIGNATURE`.
   * @default null (no identities: honest-but-curious server model)
   */
  identityKeys: ReadonlyMap<number, Uint8Array> | null;
  /**
   * Decides who may be a neighbour: given the credential the server relayed with a neighbour's
   * keys, returns null to accept it or the reason to refuse. Set, every neighbour must carry a
   * credential this check accepts, distinct identity keys and a signature by its identity key;
   * otherwise the neighbour keys are refused (`SECAGG_SIGNATURE`) before anything is shared.
   * @default null (the server's word is taken for who the members are)
   */
  membership: ((credential: MemberCredential) => string | null) | null;
  /** Uniform [0, 1) source for stochastic rounding. @default cryptoRng() */
  rng: Rng;
  /** Accept thresholds t ≤ (k + 1)/2 (see `ThresholdPolicy`). @default false */
  allowMinorityThreshold: boolean;
  /** Keystreams expanded at once while masking. @default 4 */
  concurrency: number;
}

/** The local update a client contributes. */
export interface ClientUpdate {
  /** `w_local − w_global`, in the model's layout. */
  delta: Weights;
  numExamples: number;
}

/** A neighbour's share box that failed to open: its shares are treated as missing. */
export interface ShareRejection {
  from: number;
  code: "SECAGG_DECRYPT";
  message: string;
}

/**
 * One client's part in one SecAgg+ round. Each phase method takes the server's message and
 * returns the reply; it throws a `CohortError` (the state unchanged) on an out-of-phase,
 * wrong-round, misaddressed or inconsistent message.
 */
export class SecAggClient {
  readonly setup: SecAggSetup;
  readonly index: number;
  readonly params: SecureParams;
  readonly graph: NeighbourGraph;
  private readonly options: SecAggClientOptions;
  private state: SecAggState = "advertise-keys";
  private busy = false;
  private readonly cKeys: KeyPair = generateKeyPair();
  private readonly sKeys: KeyPair = generateKeyPair();
  private readonly selfMaskSeed = randomBytes(32);
  private links = new Map<number, NeighbourLink>();
  private own: SharePair | null = null;
  private received = new Map<number, SharePair>();
  private maskedWith: number[] = [];
  /** Each neighbour's identity key, from the options or the relayed credentials. */
  private readonly neighbourIdentity = new Map<number, Uint8Array>();
  /** The survivors this client signed in the consistency check. */
  private attestedSurvivors: number[] | null = null;
  private readonly rejected: ShareRejection[] = [];

  /** Throws `INVALID_OPTION` when the setup's parameters are unusable or unsafe. */
  constructor(setup: SecAggSetup, options: Partial<SecAggClientOptions> & { index: number }) {
    this.options = withDefaults<SecAggClientOptions>(
      {
        index: options.index,
        identity: null,
        identityKeys: null,
        membership: null,
        rng: cryptoRng(),
        allowMinorityThreshold: false,
        concurrency: 4,
      },
      options,
    );
    this.setup = setup;
    this.params = secureParams(setup);
    this.graph = neighbourGraph({ n: setup.n, k: setup.k, seed: setup.graphSeed });
    checkThreshold(this.graph.degree, setup.t, {
      allowMinority: this.options.allowMinorityThreshold,
    });
    if (!Number.isInteger(options.index) || options.index < 0 || options.index >= setup.n) {
      throw new CohortError("INVALID_OPTION", `index ${options.index} is outside 0…${setup.n - 1}`);
    }
    this.index = options.index;
  }

  /** The phase whose message this client expects next, or `done`. */
  get phase(): SecAggState {
    return this.state;
  }

  /** Share boxes that failed to authenticate (tampered, or for another round or recipient). */
  get rejections(): readonly ShareRejection[] {
    return this.rejected;
  }

  private enter(phase: SecAggPhase, message: { round: number; index: number }, what: string) {
    if (this.busy) {
      throw new CohortError("SECAGG_PHASE", `${what} arrived while a phase is still computing`);
    }
    expectPhase(this.state, phase, what);
    expectRound(this.setup.round, message.round, what);
    if (message.index !== this.index) {
      throw new CohortError("INVALID_MESSAGE", `${what} is addressed to client ${message.index}`);
    }
  }

  /** Phase advertise-keys: this client's two fresh X25519 public keys, signed if it has an identity. */
  advertise(): AdvertiseKeys {
    expectPhase(this.state, "advertise-keys", "advertise");
    const { publicKey: cPublicKey } = this.cKeys;
    const { publicKey: sPublicKey } = this.sKeys;
    const identity = this.options.identity;
    const transcript = advertiseTranscript(this.setup, this.index, cPublicKey, sPublicKey);
    const signature = identity === null ? null : sign(transcript, identity);
    this.state = nextState("advertise-keys");
    return { round: this.setup.round, index: this.index, cPublicKey, sPublicKey, signature };
  }

  /**
   * Phase share-keys: check the neighbours' keys (graph membership, signatures, threshold),
   * Shamir-share the self-mask seed b and the mask key s among the neighbours and itself, and
   * seal each neighbour's pair under the pairwise c-key bound to (session, round, from, to).
   */
  async shareKeys(message: NeighbourKeys): Promise<ShareKeys> {
    const what = "neighbour keys";
    this.enter("share-keys", message, what);
    const keys = new Map<number, AdvertiseKeys>();
    const identities = this.options.identityKeys;
    const membership = this.options.membership;
    const seenIdentities = new Set<string>();
    if (membership !== null && this.options.identity !== null) {
      seenIdentities.add(hex(this.options.identity.subarray(32)));
    }
    const identityOf = new Map<number, Uint8Array>();
    for (const ad of message.neighbours) {
      expectRound(this.setup.round, ad.round, `${what}: advertisement of ${ad.index}`);
      if (!this.graph.isNeighbour(this.index, ad.index)) {
        throw new CohortError("NOT_IN_COHORT", `${what}: ${ad.index} is not a neighbour`);
      }
      if (keys.has(ad.index)) {
        throw new CohortError("INVALID_MESSAGE", `${what}: ${ad.index} appears twice`);
      }
      if (isWeakPublicKey(ad.cPublicKey) || isWeakPublicKey(ad.sPublicKey)) {
        // An honest server leaves such a member out; one that relays it deviates.
        throw new CohortError("BAD_KEY", `${what}: the keys of ${ad.index} are of small order`);
      }
      const identity = this.neighbourKey(ad, what, seenIdentities) ?? identities?.get(ad.index);
      if (
        (identities !== null || membership !== null || this.setup.consistency === true) &&
        !isSignedBy(this.setup, ad, identity)
      ) {
        throw new CohortError(
          "SECAGG_SIGNATURE",
          `${what}: the keys of ${ad.index} are not signed by its identity`,
        );
      }
      if (identity !== undefined) identityOf.set(ad.index, identity);
      keys.set(ad.index, ad);
    }
    if (keys.size + 1 < this.setup.t) {
      throw new CohortError(
        "SECAGG_THRESHOLD",
        `${what}: ${keys.size} neighbours and this client are fewer than t = ${this.setup.t}`,
      );
    }
    this.busy = true;
    try {
      const dealt = await dealShares({
        id: this.setup,
        index: this.index,
        t: this.setup.t,
        cSecretKey: this.cKeys.secretKey,
        sSecretKey: this.sKeys.secretKey,
        selfMaskSeed: this.selfMaskSeed,
        neighbours: keys,
      });
      this.own = dealt.own;
      this.links = dealt.links;
      for (const [i, k] of identityOf) this.neighbourIdentity.set(i, k);
      this.state = nextState("share-keys");
      return { round: this.setup.round, index: this.index, boxes: dealt.boxes };
    } finally {
      this.busy = false;
    }
  }

  /**
   * Phase collect-masked: open the neighbours' share boxes (a box that fails is recorded in
   * `rejections` and its shares count as missing), then return
   * `y = [w, w·Δ] + PRG(b) + Σ_v ±PRG(s_uv)` mod 2^32 (+ when this index is the smaller),
   * packed into the round's word width.
   * The neighbours masked with are exactly the senders of the boxes: the server's view of who
   * completed share-keys.
   */
  async maskedInput(message: MaskRequest, update: ClientUpdate): Promise<MaskedInput> {
    const what = "mask request";
    this.enter("collect-masked", message, what);
    const senders = new Set<number>();
    for (const { from } of message.boxes) {
      if (!this.links.has(from)) {
        throw new CohortError(
          "NOT_IN_COHORT",
          `${what}: ${from} did not take part in share-keys with this client`,
        );
      }
      if (senders.has(from)) {
        throw new CohortError("INVALID_MESSAGE", `${what}: two boxes from ${from}`);
      }
      senders.add(from);
    }
    if (senders.size + 1 < this.setup.t) {
      throw new CohortError(
        "SECAGG_THRESHOLD",
        `${what}: only ${senders.size} neighbours remain, t = ${this.setup.t}`,
      );
    }
    const { tensorSizes } = this.setup;
    const { delta, numExamples } = update;
    const encoded = quantizeUpdate(delta, numExamples, this.params, tensorSizes, this.options.rng);
    const received = new Map<number, SharePair>();
    const rejected: ShareRejection[] = [];
    for (const { from, box } of message.boxes) {
      const pair = openBox(this.links.get(from)!.receiveKey, box);
      if (pair === null) {
        const reason = `the share box from ${from} does not authenticate`;
        rejected.push({ from, code: "SECAGG_DECRYPT", message: reason });
      } else {
        received.set(from, pair);
      }
    }
    const maskedWith = [...senders].sort((a, b) => a - b);
    const masks: Mask[] = [{ seed: this.selfMaskSeed, sign: 1 }];
    for (const v of maskedWith) {
      masks.push({ seed: this.links.get(v)!.maskSeed, sign: this.index < v ? 1 : -1 });
    }
    this.busy = true;
    try {
      await applyMasks(encoded, masks, this.options.concurrency);
    } finally {
      this.busy = false;
    }
    this.received = received;
    this.rejected.push(...rejected);
    this.maskedWith = maskedWith;
    this.state = nextState("collect-masked", this.setup.consistency === true);
    return {
      round: this.setup.round,
      index: this.index,
      masked: packMasked(encoded, this.params),
    };
  }

  /**
   * Phase consistency: sign the survivors the server names (this client among them; its
   * neighbours among them only if they shared keys with it). Before unmasking it will check
   * that t members of its neighbourhood signed the same list.
   */
  attest(message: ConsistencyRequest): ConsistencyAttestation {
    const what = "consistency request";
    this.enter("consistency", message, what);
    const identity = this.options.identity;
    if (identity === null) {
      throw new CohortError(
        "SECAGG_SIGNATURE",
        `${what}: this client has no identity to sign with`,
      );
    }
    const { survivors } = message;
    if (survivors.some((v, i) => v >= this.setup.n || (i > 0 && v <= survivors[i - 1]!))) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `${what}: survivors must be ascending cohort indices`,
      );
    }
    const shared = new Set(this.maskedWith);
    const stranger = survivors.find(
      (v) => v !== this.index && this.graph.isNeighbour(this.index, v) && !shared.has(v),
    );
    if (!survivors.includes(this.index) || stranger !== undefined) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `${what}: ${stranger === undefined ? "this client is missing" : `${stranger} never shared keys with this client`}`,
      );
    }
    this.checkNoiseFloor(survivors.length, what);
    this.attestedSurvivors = [...survivors];
    this.state = nextState("consistency");
    return {
      round: this.setup.round,
      index: this.index,
      signature: sign(consistencyTranscript(this.setup, survivors), identity),
    };
  }

  /**
   * Phase unmask: reveal the self-mask shares of the survivors and the mask-key shares of the
   * dropped, after `checkUnmaskRequest`: never both shares of one client (`SECAGG_BOTH_SHARES`),
   * only clients that shared with this one, at least t survivors. A share this client never
   * received (its box failed to open) is left out.
   */
  unmask(message: UnmaskRequest): UnmaskResponse {
    const what = "unmask request";
    this.enter("unmask", message, what);
    checkUnmaskRequest(message, { self: this.index, t: this.setup.t, shared: this.maskedWith });
    if (this.setup.consistency === true) this.checkConsistency(message);
    // On a complete graph the survivors named are all of them; on a sparse one the signed list
    // (the consistency phase) is where their number was checked.
    if (this.graph.degree === this.setup.n - 1)
      this.checkNoiseFloor(message.survivors.length, what);
    const holding = (c: number) => (c === this.index ? this.own : this.received.get(c));
    const selfMaskShares = message.survivors.flatMap((of) => {
      const pair = holding(of);
      return pair ? [{ of, share: pair.selfMask }] : [];
    });
    const maskKeyShares = message.dropped.flatMap((of) => {
      const pair = holding(of);
      return pair ? [{ of, share: pair.maskKey }] : [];
    });
    this.state = nextState("unmask");
    this.forgetSecrets();
    return { round: this.setup.round, index: this.index, selfMaskShares, maskKeyShares };
  }

  /**
   * Distributed DP: a sum of fewer than `dp.minContributors` members carries less noise than the
   * round promised, so this member will not help unmask it (`SECAGG_UNSAFE`).
   */
  private checkNoiseFloor(survivors: number, what: string): void {
    const dp = this.setup.dp;
    if (dp !== undefined && survivors < dp.minContributors) {
      throw new CohortError(
        "SECAGG_UNSAFE",
        `${what}: ${survivors} survivors, but the round's noise needs ${dp.minContributors} contributors`,
      );
    }
  }

  /**
   * The unmask request must agree with the survivors this client signed, and carry the same
   * signature from at least t members of its neighbourhood (itself included): a server that
   * told members different stories cannot collect both shares of anyone.
   */
  private checkConsistency(message: UnmaskRequest): void {
    const what = "unmask request";
    const signed = new Set(this.attestedSurvivors ?? []);
    const outside = message.survivors.find((v) => !signed.has(v));
    if (outside !== undefined) {
      throw new CohortError(
        "INVALID_MESSAGE",
        `${what}: survivor ${outside} is not on the signed list`,
      );
    }
    const revived = message.dropped.find((u) => signed.has(u));
    if (revived !== undefined) {
      throw new CohortError(
        "SECAGG_BOTH_SHARES",
        `${what}: ${revived} is on the signed list of survivors but asked for as dropped`,
      );
    }
    const transcript = consistencyTranscript(this.setup, [...signed]);
    const own = this.options.identity?.subarray(32);
    const valid = new Set<number>();
    for (const { index, signature } of message.attestations ?? []) {
      const key = index === this.index ? own : this.neighbourIdentity.get(index);
      if (key !== undefined && verify(transcript, signature, key)) valid.add(index);
    }
    if (valid.size < this.setup.t) {
      throw new CohortError(
        "SECAGG_SIGNATURE",
        `${what}: ${valid.size} members of this neighbourhood signed the survivors, t = ${this.setup.t}`,
      );
    }
  }

  /**
   * A neighbour's identity key from its relayed credential, after the membership check (when
   * set): throws `SECAGG_SIGNATURE` for a missing or refused credential, or an identity seen twice.
   */
  private neighbourKey(ad: AdvertiseKeys, what: string, seen: Set<string>): Uint8Array | undefined {
    const membership = this.options.membership;
    const credential = ad.credential ?? null;
    if (membership === null) return credential?.identityKey;
    const refusal = credential === null ? "carries no credential" : membership(credential);
    if (refusal !== null) {
      throw new CohortError("SECAGG_SIGNATURE", `${what}: neighbour ${ad.index} ${refusal}`);
    }
    const id = hex(credential!.identityKey);
    if (seen.has(id)) {
      throw new CohortError(
        "SECAGG_SIGNATURE",
        `${what}: neighbour ${ad.index} has an identity already in this neighbourhood`,
      );
    }
    seen.add(id);
    return credential!.identityKey;
  }

  private forgetSecrets(): void {
    // After unmasking nothing here is needed; wiping limits what a later compromise reveals.
    this.cKeys.secretKey.fill(0);
    this.sKeys.secretKey.fill(0);
    this.selfMaskSeed.fill(0);
    for (const link of this.links.values()) {
      link.maskSeed.fill(0);
      link.receiveKey.fill(0);
    }
    this.links = new Map();
    this.received = new Map();
    this.own = null;
  }
}
