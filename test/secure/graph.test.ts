/** The neighbour graph: regular, symmetric, seeded, complete at k = n − 1; thresholds and pruning. */
import { describe, expect, it } from "vitest";
import {
  checkThreshold,
  logarithmicDegree,
  majorityThreshold,
  neighbourGraph,
  pruneToDegree,
} from "../../aggregation/secure/graph.js";
import { expectCohortError } from "../helpers/errors.js";

function checkRegular(n: number, k: number, seed: number, degree: number) {
  const g = neighbourGraph({ n, k, seed });
  expect(g.degree).toBe(degree);
  for (let i = 0; i < n; i++) {
    const nb = g.neighbours(i);
    expect(nb).toHaveLength(degree);
    expect(new Set(nb).size).toBe(degree);
    expect(nb).not.toContain(i);
    for (const j of nb) {
      expect(g.isNeighbour(i, j)).toBe(true);
      expect(g.neighbours(j)).toContain(i);
    }
  }
  let edges = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (g.isNeighbour(i, j)) edges++;
  expect(edges).toBe(n * degree);
}

describe("neighbourGraph", () => {
  it.each([
    [10, 4, 4],
    [11, 4, 4],
    [10, 3, 3], // odd k, even n: ring ±1 plus the opposite client
    [11, 3, 4], // odd k, odd n: rounded up
    [7, 6, 6], // complete
    [8, 7, 7], // complete, odd
    [30, 8, 8],
  ])("n = %i, k = %i is %i-regular and symmetric", (n, k, degree) => {
    checkRegular(n, k, 42, degree);
  });

  it("is the complete graph at k = n − 1", () => {
    const g = neighbourGraph({ n: 6, k: 5, seed: 1 });
    expect(g.complete).toBe(true);
    expect(g.neighbours(2)).toEqual([0, 1, 3, 4, 5]);
  });

  it("is a function of the public seed", () => {
    const a = neighbourGraph({ n: 40, k: 6, seed: 7 });
    const b = neighbourGraph({ n: 40, k: 6, seed: 7 });
    const c = neighbourGraph({ n: 40, k: 6, seed: 8 });
    const list = (g: typeof a) => Array.from({ length: 40 }, (_, i) => g.neighbours(i));
    expect(list(a)).toEqual(list(b));
    expect(list(a)).not.toEqual(list(c));
  });

  it("rejects out-of-range inputs and indices", () => {
    expectCohortError(() => neighbourGraph({ n: 1, k: 1, seed: 0 }), "INVALID_OPTION");
    expectCohortError(() => neighbourGraph({ n: 5, k: 5, seed: 0 }), "INVALID_OPTION");
    expectCohortError(() => neighbourGraph({ n: 5, k: 2, seed: -1 }), "INVALID_OPTION");
    const g = neighbourGraph({ n: 5, k: 2, seed: 0 });
    expectCohortError(() => g.neighbours(5), "NOT_IN_COHORT");
  });

  it("suggests an O(log n) degree", () => {
    expect(logarithmicDegree(10)).toBe(9);
    expect(logarithmicDegree(100)).toBe(20);
    expect(logarithmicDegree(1000)).toBe(30);
  });
});

describe("thresholds", () => {
  it("accepts majorities up to k + 1, refuses the rest unless minority is allowed", () => {
    expect(majorityThreshold(4)).toBe(3);
    expect(majorityThreshold(5)).toBe(4);
    expect(() => checkThreshold(4, 3)).not.toThrow();
    expect(() => checkThreshold(4, 5)).not.toThrow();
    expectCohortError(() => checkThreshold(4, 6), "INVALID_OPTION", /k \+ 1/);
    expectCohortError(() => checkThreshold(4, 2), "INVALID_OPTION", /allowMinority/);
    expect(() => checkThreshold(4, 2, { allowMinority: true })).not.toThrow();
    expectCohortError(() => checkThreshold(4, 0, { allowMinority: true }), "INVALID_OPTION");
  });
});

describe("pruneToDegree", () => {
  it("removes clients left with too few live neighbours, transitively", () => {
    const g = neighbourGraph({ n: 12, k: 4, seed: 3 });
    const alive = new Set(Array.from({ length: 12 }, (_, i) => i));
    expect(pruneToDegree(g, alive, 4).pruned).toEqual([]);
    alive.delete(0);
    const { kept, pruned } = pruneToDegree(g, alive, 4);
    // with one gone, its 4 neighbours fall to 3 and the cascade empties the graph
    expect(kept.size + pruned.length).toBe(11);
    for (const i of kept) {
      expect(g.neighbours(i).filter((j) => kept.has(j)).length).toBeGreaterThanOrEqual(4);
    }
    const lenient = pruneToDegree(g, alive, 3);
    expect(lenient.pruned).toEqual([]);
  });
});
