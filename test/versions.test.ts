/** The version store and the promotion rule, without a network. */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { VersionStore, weightsChecksum, type NewVersion } from "../coordinator/versions.js";
import { decide, score } from "../coordinator/promotion.js";
import type { TensorSpec } from "../protocol/messages.js";
import { tempRunDir } from "./helpers/federation.js";
import { expectRejectsCode } from "./helpers/errors.js";

const specs: TensorSpec[] = [
  { name: "w", shape: [2, 3] },
  { name: "b", shape: [3] },
];
const weights = (v: number) => [new Float32Array(6).fill(v), new Float32Array(3).fill(-v)];
const state = (v: number) => ({ arrays: { m: weights(v / 10) }, values: { t: v } });
const version = (parent: number | null, round: number): NewVersion => ({
  parent,
  round,
  strategy: "fedavg",
  contributors: ["a", "b"],
  central: { loss: 1 / (round + 1), accuracy: round / 10, metrics: {} },
  federated: null,
});

describe("VersionStore", () => {
  it.each(["disk", "memory"] as const)(
    "numbers versions, keeps their weights and state, and prunes all but the promoted, the latest and `keep` (%s)",
    async (where) => {
      const dir = where === "disk" ? await tempRunDir() : null;
      const store = await VersionStore.open(dir, "run-1", specs, { keep: 2 });
      for (let v = 0; v <= 6; v++) {
        const added = await store.add(version(v === 0 ? null : v - 1, v), weights(v), state(v));
        expect(added.version).toBe(v);
        expect(added.checksum).toBe(weightsChecksum(weights(v)));
        if (v === 1) await store.promote(1);
      }
      expect(store.latest()).toBe(6);
      expect(store.promoted()).toBe(1);
      expect(store.list().map((v) => v.weightsKept)).toEqual([
        false,
        true,
        false,
        false,
        true,
        true,
        true,
      ]);
      expect(await store.weightsOf(2)).toBeNull();
      const back = await store.restore(1);
      expect(back!.weights).toEqual(weights(1));
      expect(back!.strategy).toEqual(state(1));
      if (dir !== null) {
        expect((await readdir(join(dir, "versions"))).sort()).toEqual([
          "index.json",
          "v000001.bin",
          "v000004.bin",
          "v000005.bin",
          "v000006.bin",
        ]);
      }
      const etag = store.etag();
      await store.reject(6, "worse");
      expect(store.etag()).not.toBe(etag);
      expect(store.get(6)).toMatchObject({ status: "rejected", reason: "worse" });
      await expectRejectsCode(store.promote(6), "INVALID_OPTION", /was rejected/);
      await expectRejectsCode(
        store.reject(1, "no"),
        "INTERNAL",
        /promoted version 1 cannot be rejected/,
      );
    },
  );

  it("a crash between a promotion and the ledger's commit resumes with the committed promoted version's weights", async () => {
    const dir = await tempRunDir();
    // keep 0: only what the pointers need survives pruning.
    const store = await VersionStore.open(dir, "run-3", specs, { keep: 0 });
    await store.add(version(null, 0), weights(0), state(0));
    for (let v = 1; v <= 2; v++) {
      await store.add(version(v - 1, v), weights(v), state(v));
      await store.promote(v);
      // The ledger commits round v (promoted v) here, except after round 2: killed first.
    }
    // Round 2's promotion reached the index, not the ledger: the run resumes at version 1.
    const resumed = await VersionStore.open(dir, "run-3", specs, {
      keep: 0,
      resumeAt: 1,
      promoted: 1,
    });
    expect(resumed.promoted()).toBe(1);
    expect(resumed.list().map((v) => v.version)).toEqual([0, 1]);
    const back = await resumed.restore(1);
    expect(back!.weights).toEqual(weights(1));
    expect(back!.strategy).toEqual(state(1));
    // Once the next version is added (round 2 done again), version 0 is let go.
    await resumed.add(version(1, 2), weights(2), state(2));
    await resumed.promote(2);
    await resumed.add(version(2, 3), weights(3), state(3));
    expect(resumed.list().map((v) => v.weightsKept)).toEqual([false, false, true, true]);
  });

  it("a resumed run's store drops versions the ledger never committed; a corrupted file fails its checksum", async () => {
    const dir = await tempRunDir();
    const store = await VersionStore.open(dir, "run-2", specs, { keep: 5 });
    for (let v = 0; v <= 3; v++) await store.add(version(v - 1, v), weights(v), state(v));
    await store.promote(2);
    // The ledger committed version 2; 3 was written just before a crash.
    const resumed = await VersionStore.open(dir, "run-2", specs, { keep: 5, resumeAt: 2 });
    expect(resumed.list().map((v) => v.version)).toEqual([0, 1, 2]);
    expect(resumed.promoted()).toBe(2);
    expect((await readdir(join(dir, "versions"))).includes("v000003.bin")).toBe(false);
    const index = JSON.parse(await readFile(join(dir, "versions", "index.json"), "utf8"));
    expect(index.versions).toHaveLength(3);
    await writeFile(join(dir, "versions", "v000001.bin"), new Uint8Array(9 * 4 * 2).fill(7));
    await expectRejectsCode(resumed.restore(1), "MALFORMED_PAYLOAD", /fail their checksum/);
    await expectRejectsCode(
      VersionStore.open(dir, "another-run", specs, { keep: 5, resumeAt: 2 }),
      "INVALID_OPTION",
      /not this run's version index/,
    );
  });
});

describe("promotion", () => {
  const e = (accuracy: number | null, loss: number) => ({ accuracy, loss, metrics: {} });
  const gate = { promoteThreshold: 0.01, rollbackDrop: 0.05, canaryFraction: 0 };
  it("promotes within the threshold, keeps a candidate past it, rejects past the drop or a non-finite loss", () => {
    expect(decide(e(0.8, 1), e(0.805, 1), gate, 3).action).toBe("promote");
    expect(decide(e(0.78, 1), e(0.8, 1), gate, 3)).toMatchObject({
      action: "keep",
      reason: expect.stringMatching(
        /accuracy 0\.7800 vs accuracy 0\.8000 of v3: worse by more than 0\.01/,
      ),
    });
    expect(decide(e(0.7, 1), e(0.8, 1), gate, 3).action).toBe("reject");
    expect(decide(e(0.9, Number.NaN), e(0.8, 1), gate, 3)).toMatchObject({
      action: "reject",
      reason: "its loss is NaN",
    });
    // Without an accuracy, −loss is the score.
    expect(score(e(null, 0.5))).toBe(-0.5);
    expect(decide(e(null, 0.6), e(null, 0.5), gate, 1).action).toBe("reject");
    // Ungated: every version is promoted.
    const off = { promoteThreshold: undefined, rollbackDrop: undefined, canaryFraction: 0 };
    expect(decide(e(0.1, Number.NaN), e(0.9, 1), off, 1).action).toBe("promote");
  });
});
