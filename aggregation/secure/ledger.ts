/** Never both shares of one client: the server's ledger of requests and the client's check of them. */
import { CohortError } from "../../protocol/errors.js";
import type { UnmaskRequest, UnmaskResponse } from "./messages.js";

/** The two shares a client deals: of its self-mask seed b, and of its mask key s. */
export type ShareKind = "self-mask" | "mask-key";

/**
 * Every share kind requested in a round, per client. Revealing b_u unmasks u's input once its
 * pairwise masks cancel; revealing s_u recomputes those masks: both together expose u's input,
 * so a client's kind is fixed by the first request and a conflicting one is refused.
 */
export class ShareLedger {
  private readonly kinds = new Map<number, ShareKind>();

  /** The kind already requested for `client`, if any. */
  kindOf(client: number): ShareKind | undefined {
    return this.kinds.get(client);
  }

  /**
   * Build (and record) an unmask request. Throws `SECAGG_BOTH_SHARES`, recording nothing, when
   * a client is both a survivor and dropped, or was requested with the other kind before.
   */
  request(round: number, index: number, survivors: number[], dropped: number[]): UnmaskRequest {
    const alive = new Set(survivors);
    for (const d of dropped) {
      if (alive.has(d)) {
        throw new CohortError(
          "SECAGG_BOTH_SHARES",
          `refusing to ask client ${index} for both shares of client ${d}`,
        );
      }
    }
    const check = (client: number, kind: ShareKind) => {
      const previous = this.kinds.get(client);
      if (previous !== undefined && previous !== kind) {
        throw new CohortError(
          "SECAGG_BOTH_SHARES",
          `refusing to ask for the ${kind} share of client ${client}: its ${previous} share was requested`,
        );
      }
    };
    survivors.forEach((c) => check(c, "self-mask"));
    dropped.forEach((c) => check(c, "mask-key"));
    survivors.forEach((c) => this.kinds.set(c, "self-mask"));
    dropped.forEach((c) => this.kinds.set(c, "mask-key"));
    return { round, index, survivors: [...survivors], dropped: [...dropped] };
  }
}

/**
 * A client's check of an unmask request before it reveals anything. Refuses with
 * `SECAGG_BOTH_SHARES` when a client is on both lists or `self` (alive: it sent its input) is
 * listed as dropped; `INVALID_MESSAGE` when a client is listed twice or `self` is not a
 * survivor; `NOT_IN_COHORT` for a client that did not share with `self`; `SECAGG_THRESHOLD`
 * when fewer than t survivors are listed.
 */
export function checkUnmaskRequest(
  request: UnmaskRequest,
  mine: { self: number; t: number; shared: readonly number[] },
): void {
  const what = "unmask request";
  const survivors = new Set(request.survivors);
  const dropped = new Set(request.dropped);
  if (survivors.size !== request.survivors.length || dropped.size !== request.dropped.length) {
    throw new CohortError("INVALID_MESSAGE", `${what}: a client is listed twice`);
  }
  const both = request.dropped.find((d) => survivors.has(d) || d === mine.self);
  if (both !== undefined) {
    throw new CohortError("SECAGG_BOTH_SHARES", `${what}: asks for both shares of client ${both}`);
  }
  if (!survivors.has(mine.self)) {
    throw new CohortError(
      "INVALID_MESSAGE",
      `${what}: this client sent its input but is not a survivor`,
    );
  }
  const shared = new Set(mine.shared);
  const stranger = [...request.survivors, ...request.dropped].find(
    (c) => c !== mine.self && !shared.has(c),
  );
  if (stranger !== undefined) {
    throw new CohortError(
      "NOT_IN_COHORT",
      `${what}: client ${stranger} did not share with this client`,
    );
  }
  if (survivors.size < mine.t) {
    throw new CohortError(
      "SECAGG_THRESHOLD",
      `${what}: ${survivors.size} survivors listed, t = ${mine.t}`,
    );
  }
}

/**
 * The server's check of an unmask response: only shares it asked that client for, each once
 * (`INVALID_MESSAGE` otherwise). Missing ones are allowed: a box that failed to open.
 */
export function checkUnmaskResponse(request: UnmaskRequest, response: UnmaskResponse): void {
  const check = (shares: readonly { of: number }[], allowed: readonly number[], kind: string) => {
    const ok = new Set(allowed);
    const seen = new Set<number>();
    for (const { of } of shares) {
      if (!ok.has(of) || seen.has(of)) {
        throw new CohortError(
          "INVALID_MESSAGE",
          `unmask response from ${response.index}: unrequested or repeated ${kind} share of ${of}`,
        );
      }
      seen.add(of);
    }
  };
  check(response.selfMaskShares, request.survivors, "self-mask");
  check(response.maskKeyShares, request.dropped, "mask-key");
}
