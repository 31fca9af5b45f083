/** The SecAgg+ neighbour graph (Bell et al. 2020): a Harary graph of degree k over a seeded permutation. */
import { CohortError } from "../../protocol/errors.js";
import { createRng, shuffleInPlace } from "../random.js";

/** Who shares secrets and pairwise masks with whom. Symmetric; nobody is their own neighbour. */
export interface NeighbourGraph {
  /** Cohort size; clients are indices `0 … n − 1`. */
  readonly n: number;
  /** Number of neighbours of every client (the requested k, rounded up to even when n is odd). */
  readonly degree: number;
  /** Whether every client neighbours every other (k = n − 1: the original SecAgg). */
  readonly complete: boolean;
  /** The neighbours of `i`, ascending. */
  neighbours(i: number): number[];
  isNeighbour(i: number, j: number): boolean;
}

/** What `neighbourGraph` needs: public and identical on every client and on the server. */
export interface GraphInput {
  n: number;
  /** Requested degree, 1 … n − 1. */
  k: number;
  /** Public 32-bit seed of the permutation (chosen by the server each round). */
  seed: number;
}

/**
 * Build the round's graph: clients are placed on a ring in a seeded random order and each is
 * joined to the ⌊k/2⌋ nearest on either side; an odd k adds the opposite client when n is even,
 * and is rounded up to k + 1 when n is odd (an odd-degree regular graph on an odd number of
 * vertices does not exist). k ≥ n − 1 gives the complete graph. Everyone derives the same graph
 * from the same `{ n, k, seed }`. Throws `INVALID_OPTION` on out-of-range inputs.
 */
export function neighbourGraph(input: GraphInput): NeighbourGraph {
  const { n, k, seed } = input;
  if (!Number.isInteger(n) || n < 2) {
    throw new CohortError("INVALID_OPTION", `cohort size ${n} must be an integer ≥ 2`);
  }
  if (!Number.isInteger(k) || k < 1 || k > n - 1) {
    throw new CohortError("INVALID_OPTION", `degree k = ${k} must be an integer in 1…${n - 1}`);
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new CohortError("INVALID_OPTION", `graph seed ${seed} must be a 32-bit unsigned integer`);
  }
  const complete = k === n - 1;
  const odd = k % 2 === 1 && !complete;
  const antipodal = odd && n % 2 === 0;
  const half = odd && !antipodal ? (k + 1) / 2 : Math.floor(k / 2);
  const degree = complete ? n - 1 : 2 * half + (antipodal ? 1 : 0);

  const order = shuffleInPlace(
    Array.from({ length: n }, (_, i) => i),
    createRng(seed),
  );
  const position = new Uint32Array(n);
  order.forEach((client, p) => (position[client] = p));

  const check = (i: number, name: string): number => {
    if (!Number.isInteger(i) || i < 0 || i >= n) {
      throw new CohortError("NOT_IN_COHORT", `${name} ${i} is not a cohort index (0…${n - 1})`);
    }
    return position[i]!;
  };

  return {
    n,
    degree,
    complete,
    neighbours(i) {
      const p = check(i, "client");
      if (complete) return Array.from({ length: n - 1 }, (_, j) => (j < i ? j : j + 1));
      const out: number[] = [];
      for (let d = 1; d <= half; d++) {
        out.push(order[(p + d) % n]!, order[(p - d + n) % n]!);
      }
      if (antipodal) out.push(order[(p + n / 2) % n]!);
      return out.sort((a, b) => a - b);
    },
    isNeighbour(i, j) {
      const pi = check(i, "client");
      const pj = check(j, "client");
      if (i === j) return false;
      if (complete) return true;
      const gap = Math.abs(pi - pj);
      const distance = Math.min(gap, n - gap);
      return distance <= half || (antipodal && distance === n / 2);
    },
  };
}

/** Policy on the Shamir threshold. */
export interface ThresholdPolicy {
  /**
   * Accept t ≤ (k + 1)/2. Such a threshold lets a malicious server obtain both shares of a
   * client from two disjoint halves of its neighbours, so it is safe only against an honest
   * but curious server.
   * @default false
   */
  allowMinority: boolean;
}

/**
 * Check the threshold t against the degree: shares go to the k neighbours and the client
 * itself, so 1 ≤ t ≤ k + 1; t > (k + 1)/2 is required unless `allowMinority`. A larger t
 * tolerates fewer dropouts (up to k + 1 − t per neighbourhood) and resists more colluders
 * (t − 1). Throws `INVALID_OPTION`.
 */
export function checkThreshold(
  degree: number,
  t: number,
  policy: Partial<ThresholdPolicy> = {},
): void {
  if (!Number.isInteger(t) || t < 1 || t > degree + 1) {
    throw new CohortError(
      "INVALID_OPTION",
      `threshold t = ${t} must be in 1…${degree + 1} (k + 1)`,
    );
  }
  if (!policy.allowMinority && 2 * t <= degree + 1) {
    throw new CohortError(
      "INVALID_OPTION",
      `threshold t = ${t} must exceed (k + 1)/2 = ${(degree + 1) / 2}; set allowMinority to accept it`,
    );
  }
}

/** The smallest majority threshold for a degree: ⌊(k + 1)/2⌋ + 1. */
export function majorityThreshold(degree: number): number {
  return Math.floor((degree + 1) / 2) + 1;
}

/**
 * A heuristic SecAgg+ degree: the smallest even k ≥ 3·log2(n), at most n − 1. Bell et al.
 * show k = O(log n) suffices; their constant depends on the tolerated dropout and corruption
 * rates, so treat this as a starting point, not their bound.
 */
export function logarithmicDegree(n: number): number {
  const k = 2 * Math.ceil((3 * Math.log2(Math.max(2, n))) / 2);
  return Math.min(n - 1, k);
}

/**
 * The largest subset of `alive` in which everyone keeps at least `minNeighbours` alive
 * neighbours: clients below it are removed one by one until none is (a k-core). The removed
 * ones are returned as `pruned`, in removal order.
 */
export function pruneToDegree(
  graph: NeighbourGraph,
  alive: ReadonlySet<number>,
  minNeighbours: number,
): { kept: Set<number>; pruned: number[] } {
  const kept = new Set(alive);
  const count = new Map<number, number>();
  for (const i of kept) count.set(i, graph.neighbours(i).filter((j) => kept.has(j)).length);
  const queue = [...kept].filter((i) => count.get(i)! < minNeighbours);
  const pruned: number[] = [];
  while (queue.length > 0) {
    const i = queue.shift()!;
    if (!kept.has(i)) continue;
    kept.delete(i);
    pruned.push(i);
    for (const j of graph.neighbours(i)) {
      if (!kept.has(j)) continue;
      const c = count.get(j)! - 1;
      count.set(j, c);
      if (c < minNeighbours) queue.push(j);
    }
  }
  return { kept, pruned };
}
