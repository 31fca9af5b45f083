/** Model versions over real socket.io: evaluation-gated promotion, rejection and rollback. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { GateOutcome } from "../coordinator/version-gate.js";
import { takeExamples } from "../models/datasets/index.js";
import {
  closeAfterEach,
  mnistShards,
  startClients,
  startCoordinator,
  tempRunDir,
} from "./helpers/federation.js";
import { connectRaw, vandal } from "./helpers/raw-client.js";
import { expectRejectsCode } from "./helpers/errors.js";
import { parsePrometheus, sampleValue } from "./helpers/prometheus.js";

const started = closeAfterEach();

describe("evaluation-gated versions", () => {
  it.each(["central", "canary"] as const)(
    "a destructive update's version is rejected (%s evaluation) and training rolls back to the promoted one",
    async (how) => {
      const { shards, evalSet } = await mnistShards(2, 300, 400);
      const runDir = await tempRunDir();
      started.coordinator = await startCoordinator({
        model: "mlp",
        rounds: 4,
        minAvailableClients: 3,
        minFitClients: 3,
        fractionFit: 1,
        rollbackDrop: 0.1,
        promoteThreshold: 0.05,
        runDir,
        // The vandal never evaluates: its canary request times out quickly.
        ...(how === "central"
          ? { evalDataset: evalSet }
          : { canaryFraction: 1, evaluateTimeoutMs: 2000 }),
      });
      const outcomes: GateOutcome[] = [];
      started.coordinator!.on("version", (o) => outcomes.push(o));
      const raw = await connectRaw(started.coordinator!.url, "vandal");
      started.raws.push(raw);
      vandal(raw, 2);
      started.clients = await startClients(
        started.coordinator!.url,
        shards,
        "honest",
        how === "canary" ? { evalData: takeExamples(evalSet, 200) } : {},
      );
      const summary = await started.coordinator!.run();
      const [r1, r2, r3, r4] = summary.rounds;
      expect(r1!.versionStatus).toBe("promoted");
      expect(r2!.versionStatus).toBe("rejected");
      expect(r2!.rollback).toEqual({
        from: 2,
        to: 1,
        reason: expect.stringMatching(/worse by more than 0\.1$/),
      });
      expect(r3!.versionStatus).toBe("promoted");
      expect(r4!.versionStatus).toBe("promoted");
      expect(r4!.promotedVersion).toBe(4);
      expect(outcomes.map((o) => o.decision.action)).toEqual([
        "promote",
        "reject",
        "promote",
        "promote",
      ]);
      const index = JSON.parse(await readFile(join(runDir, "versions", "index.json"), "utf8")) as {
        promoted: number;
        versions: { version: number; parent: number | null; status: string; reason?: string }[];
      };
      expect(index.promoted).toBe(4);
      // Version 3 was trained from version 1: the rejected one has no descendants.
      expect(index.versions.map((v) => [v.version, v.parent, v.status])).toEqual([
        [0, null, "promoted"],
        [1, 0, "promoted"],
        [2, 1, "rejected"],
        [3, 1, "promoted"],
        [4, 3, "promoted"],
      ]);
      expect(index.versions[2]!.reason).toMatch(/accuracy .* vs accuracy .* of v1/);
      if (how === "canary") {
        // Canaries measured the incumbent too (the initial model once clients had joined).
        const v0 = started.coordinator!.versions()!.get(0)!;
        expect(v0.federated).toMatchObject({ clients: 2, accuracy: expect.any(Number) });
        expect(outcomes[0]!.decision.reason).toMatch(/of v0$/);
      }
      const score = (r: (typeof summary.rounds)[number]) =>
        how === "central"
          ? r.accuracy!
          : started.coordinator!.versions()!.get(r.modelVersion!)!.federated!.accuracy!;
      expect(score(r4!)).toBeGreaterThan(0.5);
      expect(summary.weights.every((w) => w.every(Number.isFinite))).toBe(true);
      // The status and /metrics say the same.
      const status = started.coordinator!.status();
      expect(status.versions).toMatchObject({ promoted: 4, latest: 4, rejected: 1 });
      expect(status.versions.rollbacks).toEqual([
        expect.objectContaining({ from: 2, to: 1, reason: r2!.rollback!.reason }),
      ]);
      const families = parsePrometheus(
        await (await fetch(`${started.coordinator!.url}/metrics`)).text(),
      );
      expect(sampleValue(families, "cohort_promoted_version")).toBe(4);
      expect(sampleValue(families, "cohort_latest_version")).toBe(4);
      expect(sampleValue(families, "cohort_rejected_versions_total")).toBe(1);
      expect(families.has("cohort_buffer_fill")).toBe(false);
    },
  );

  it("refuses, at start, gates nothing could measure and canaries without a gate", async () => {
    await expectRejectsCode(
      startCoordinator({ model: "mlp", rollbackDrop: 0.1, runDir: null }),
      "INVALID_OPTION",
      /need an evaluation/,
    );
    await expectRejectsCode(
      startCoordinator({ model: "mlp", canaryFraction: 0.1, runDir: null }),
      "INVALID_OPTION",
      /canaryFraction needs promoteThreshold or rollbackDrop/,
    );
  });
});
