/** The example-weighted mean (FedAvg's aggregate): linear, so it runs on SecAgg+ sums too. */
import { CohortError } from "../../protocol/errors.js";
import { checkLayout, type Aggregator, type WeightedSum } from "../aggregator.js";

/** `Σ nᵢ Δᵢ / Σ nᵢ`, accumulated in float64. */
export const weightedMean: Aggregator = {
  name: "mean",
  linear: true,
  begin(layout) {
    const weighted = layout.map((n) => new Float64Array(n));
    let weight = 0;
    let count = 0;
    const addSum = (s: WeightedSum) => {
      if (
        s.weighted.length !== layout.length ||
        s.weighted.some((t, i) => t.length !== layout[i])
      ) {
        throw new CohortError("SHAPE_MISMATCH", "a partial sum has a different layout");
      }
      s.weighted.forEach((t, i) => {
        const acc = weighted[i]!;
        for (let j = 0; j < t.length; j++) acc[j]! += t[j]!;
      });
      weight += s.weight;
      count += s.count;
    };
    return {
      add(u) {
        checkLayout(u.delta, layout, u.clientId);
        if (!(u.numExamples > 0)) {
          throw new CohortError("BAD_NUM_EXAMPLES", `update of ${u.clientId} carries no examples`);
        }
        const w = u.numExamples;
        u.delta.forEach((t, i) => {
          const acc = weighted[i]!;
          for (let j = 0; j < t.length; j++) acc[j]! += w * t[j]!;
        });
        weight += w;
        count++;
      },
      addSum,
      finish: () => (count === 0 ? null : { weighted, weight, count }),
    };
  },
};
