/**
 * The coordinator's end of the compressed downlink (`--downlink-codec`): the canonical broadcast
 * chain M̂ (the model clients hold) with server-side error feedback, and each round's requests,
 * full or patched, by the version a client holds.
 */
import type { UpdateCodec } from "../aggregation/codec.js";
import {
  addWeights,
  DOWNLINK_WINDOW,
  downlinkSeeds,
  modelChecksum,
  subtractWeights,
} from "../aggregation/downlink.js";
import { decode, encode } from "../protocol/codec.js";
import type {
  FitPatchRequest,
  FitRequest,
  ModelDiff,
  ModelVersion,
  TensorSpec,
} from "../protocol/messages.js";

/** What a fit request says besides the model. */
export type RequestBody = Pick<FitRequest, "round" | "config" | "seed">;

let chains = 0;

/**
 * One round's fit requests, by the model version a member holds. Transports ask for each
 * member's request, send it, and record `version` as what that connection now holds.
 */
export class RoundBroadcast {
  /** Members sent a patch / the full model so far. */
  patched = 0;
  full = 0;
  private readonly built = new Map<number | null, Uint8Array>();

  constructor(
    readonly round: number,
    /**
     * Which chain the versions belong to (a transport keeps a connection's version together
     * with it), and the version this round sends; null: no versions (the float32 downlink).
     */
    readonly chain: number | null,
    readonly version: number | null,
    private readonly build: (held: number | null) => { payload: Uint8Array; patch: boolean },
    private readonly patchable: (held: number) => boolean = () => false,
  ) {}

  /** The request of one plain broadcast: everyone gets the same bytes (float32 downlink). */
  static plain(round: number, payload: Uint8Array): RoundBroadcast {
    return new RoundBroadcast(round, null, null, () => ({ payload, patch: false }));
  }

  /**
   * The encoded (unsealed) request for a member holding `held` of chain `chain` (null: nothing
   * known), counted as a patch or a full model; each distinct request is encoded once.
   */
  requestFor(
    chain: number | null,
    held: number | null,
  ): { key: number | null; payload: Uint8Array } {
    const base = chain === this.chain && held !== null && this.patchable(held) ? held : null;
    let payload = this.built.get(base);
    let patch = base !== null;
    if (payload === undefined) {
      const made = this.build(base);
      payload = made.payload;
      patch = made.patch;
      this.built.set(base, payload);
    }
    if (patch) this.patched++;
    else this.full++;
    return { key: base, payload };
  }

  /** Whether a member holding version `held` of `chain` can still be sent a patch. */
  canPatch(chain: number | null, held: number): boolean {
    return chain === this.chain && this.chain !== null && this.patchable(held);
  }
}

/**
 * The broadcast chain. For round r with global model G_r the coordinator encodes
 * D_r = G_r − M̂_{r−1} with the downlink codec (seeds from the run seed and r), and moves to
 * M̂_r = M̂_{r−1} + decode(E_r), computed as every client computes it. M̂ is the model clients
 * train from; its distance from G is one encoding's error, never a sum of them, because each
 * difference is taken from what clients hold, not from the last global model. The first
 * version is G itself.
 */
export class DownlinkChain {
  readonly id = ++chains;
  private held: Float32Array[] | null = null;
  private current: ModelVersion | null = null;
  /** The kept encoded differences, oldest first, with their msgpack sizes. */
  private diffs: { diff: ModelDiff; bytes: number }[] = [];
  private readonly fullBytes: number;

  constructor(
    readonly codec: UpdateCodec,
    private readonly specs: readonly TensorSpec[],
    private readonly runSeed: number,
    private readonly window = DOWNLINK_WINDOW,
  ) {
    this.fullBytes = 4 * specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  }

  /** The model clients hold (M̂) at the current version; null before the first. */
  model(): readonly Float32Array[] | null {
    return this.held;
  }

  /** The current version and its checksum. */
  version(): ModelVersion | null {
    return this.current;
  }

  /**
   * Move to `version` for the global model `global`; the same version again (a retried round)
   * changes nothing, so a retry sends the same bytes.
   */
  advance(version: number, global: readonly Float32Array[]): void {
    if (this.current !== null && this.current.version === version) return;
    if (this.held === null || this.current === null || version !== this.current.version + 1) {
      // No usable base (the first round, or a resumed run): M̂ := G, sent in full to everyone.
      this.held = global.map((t) => Float32Array.from(t));
      this.diffs = [];
    } else {
      const { seed, noiseSeed } = downlinkSeeds(this.runSeed, version);
      const update = this.codec.encode(subtractWeights(global, this.held), {
        round: version,
        seed,
        noiseSeed,
      });
      // The coordinator decodes what clients decode: the payload after its trip through msgpack.
      const bytes = encode({ version, seed, update });
      const diff = decode(bytes) as ModelDiff;
      const decoded = this.codec.decode(diff.update, this.specs, { round: version, seed });
      this.held = addWeights(this.held, decoded);
      this.diffs.push({ diff: { version, seed, update }, bytes: bytes.byteLength });
      if (this.diffs.length > this.window) this.diffs.shift();
    }
    this.current = { version, checksum: modelChecksum(this.held) };
  }

  /** The differences from version `base` to the current one (smaller than the full model), or null. */
  chainFrom(base: number): ModelDiff[] | null {
    const current = this.current;
    if (current === null || base > current.version || base < 1) return null;
    const from = current.version - base;
    if (from > this.diffs.length) return null;
    const kept = this.diffs.slice(this.diffs.length - from);
    const bytes = kept.reduce((n, d) => n + d.bytes, 0);
    if (from > 0 && bytes >= this.fullBytes) return null;
    return kept.map((d) => d.diff);
  }

  /** Round `body.round`'s requests, at the current version. */
  broadcast(body: RequestBody): RoundBroadcast {
    const current = this.current;
    const held = this.held;
    if (current === null || held === null) throw new Error("broadcast before advance");
    const extra = body.seed === undefined ? {} : { seed: body.seed };
    return new RoundBroadcast(
      body.round,
      this.id,
      current.version,
      (base) => {
        const diffs = base === null ? null : this.chainFrom(base);
        if (base === null || diffs === null) {
          const request: FitRequest = {
            round: body.round,
            weights: held as Float32Array[],
            config: body.config,
            ...extra,
            model: current,
          };
          return { payload: encode(request), patch: false };
        }
        const request: FitPatchRequest = {
          round: body.round,
          config: body.config,
          ...extra,
          model: current,
          patch: { base, diffs },
        };
        return { payload: encode(request), patch: true };
      },
      (base) => this.chainFrom(base) !== null,
    );
  }
}
