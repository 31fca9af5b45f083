/** The shipped non-image experiments: their data loaders and configs, without running them. */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { datasetSize, featureSize, groupCount } from "../protocol/dataset.js";
import { checkedDataset } from "../protocol/dataset-check.js";
import { resolveSimulationConfig, simulationInput } from "../simulations/config.js";
import {
  mailboxOf,
  readSpamAssassin,
  spamAssassinDataset,
  SPAM_BUCKETS,
  tokens,
} from "../simulations/experiments/spam-assassin.js";
import {
  CHAR_STEPS,
  CHAR_VOCABULARY,
  mailCharsDataset,
} from "../simulations/experiments/mail-chars.js";
import {
  DEFAULT_SKLEARN_DATA_DIR,
  DIABETES_TARGET_SCALE,
  loadDiabetes,
} from "../simulations/experiments/diabetes.js";
import { experimentFlags } from "../simulations/experiments/run-experiment.js";
import { expectRejectsCode } from "./helpers/errors.js";

const mails = readSpamAssassin();

describe("experiment data", () => {
  it("Spam Assassin: 6,046 mails, hashed unit-norm bags of words, one group per mailbox", () => {
    const data = spamAssassinDataset(mails);
    checkedDataset(data);
    expect(datasetSize(data)).toBe(6046);
    expect(featureSize(data)).toBe(SPAM_BUCKETS);
    const spam = Array.from(data.labels).reduce((a, b) => a + b, 0);
    expect(spam).toBe(mails.filter((m) => m.folder.startsWith("spam")).length);
    expect(spam).toBeGreaterThan(1800);
    expect(groupCount(data)).toBe(data.mailboxes.length);
    expect(data.mailboxes).toContain("yyyy@netnoteinc.com");
    expect(data.mailboxes).toContain("(other)");
    // Every group holds at least the pooling threshold, and the largest comes first.
    const sizes = data.mailboxes.map((_, g) => data.groups!.filter((x) => x === g).length);
    expect(Math.min(...sizes)).toBeGreaterThanOrEqual(50);
    expect(sizes[0]).toBe(Math.max(...sizes));
    const row = data.features.subarray(0, SPAM_BUCKETS);
    expect(Math.hypot(...row)).toBeCloseTo(1, 5);
    expect(mailboxOf("Delivered-To: yyyy@localhost.netnoteinc.com\nSubject: x")).toBe(
      "yyyy@netnoteinc.com",
    );
    expect(mailboxOf("Subject: none")).toBe("(unknown)");
    expect(tokens("<b>FREE</b> money!!! $100")).toEqual([
      "free",
      "money",
      "!",
      "!",
      "!",
      "$",
      "100",
    ]);
  });

  it("mail characters: 80-character windows of ham bodies labelled with the next character", () => {
    const data = mailCharsDataset(mails);
    checkedDataset(data);
    expect(data.sampleShape).toEqual([CHAR_STEPS]);
    expect(data.labelShape).toEqual([CHAR_STEPS]);
    expect(data.numClasses).toBe(CHAR_VOCABULARY);
    expect(groupCount(data)).toBe(data.mailboxes.length);
    expect(datasetSize(data)).toBe(40 * data.mailboxes.length);
    for (const i of [0, 100, 200]) {
      const x = data.features.subarray(i * CHAR_STEPS, (i + 1) * CHAR_STEPS);
      const y = data.labels.subarray(i * CHAR_STEPS, (i + 1) * CHAR_STEPS);
      expect(Array.from(y.subarray(0, CHAR_STEPS - 1))).toEqual(Array.from(x.subarray(1)));
    }
  });

  it("diabetes: whitespace-separated gzipped tables, standardised features, scaled targets", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cohort-diabetes-"));
    const rows = [
      [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87],
      [48, 1, 21.6, 87, 183, 103.2, 70, 3, 3.8918, 69],
      [72, 2, 30.5, 93, 156, 93.6, 41, 4, 4.6728, 85],
    ];
    await writeFile(
      join(dir, "diabetes_data_raw.csv.gz"),
      gzipSync(rows.map((r) => r.join(" ")).join("\n") + "\n"),
    );
    await writeFile(join(dir, "diabetes_target.csv.gz"), gzipSync("1.51e+02\n7.5e+01\n1.41e+02\n"));
    const data = await loadDiabetes(dir);
    expect(datasetSize(data)).toBe(3);
    expect(Array.from(data.labels)).toEqual(
      [151, 75, 141].map((v) => Math.fround(v / DIABETES_TARGET_SCALE)),
    );
    const age = [0, 1, 2].map((i) => data.features[i * 10]!);
    expect(age.reduce((a, b) => a + b, 0)).toBeCloseTo(0, 5);
    expect(age.reduce((a, b) => a + b * b, 0) / 3).toBeCloseTo(1, 5);
    await writeFile(join(dir, "diabetes_target.csv.gz"), gzipSync("151\n75\nseventy\n"));
    await expectRejectsCode(loadDiabetes(dir), "DATASET_INVALID", /line 3, column 1/);
    await expectRejectsCode(
      loadDiabetes(join(dir, "missing")),
      "DATASET_NOT_FOUND",
      /apt-get install python3-sklearn/,
    );
  });

  it.skipIf(!existsSync(join(DEFAULT_SKLEARN_DATA_DIR, "diabetes_target.csv.gz")))(
    "diabetes from python3-sklearn: 442 patients, 10 variables",
    async () => {
      const data = await loadDiabetes();
      expect(datasetSize(data)).toBe(442);
      expect(featureSize(data)).toBe(10);
    },
  );

  it("the diabetes experiment says how to get its data and exits 1 without it", async () => {
    const script = "dist/simulations/experiments/diabetes.js";
    const { spawnSync } = await import("node:child_process");
    const run = spawnSync(process.execPath, [script], {
      env: { ...process.env, COHORT_SKLEARN_DATA_DIR: join(tmpdir(), "no-sklearn-here") },
      encoding: "utf8",
    });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/^DATASET_NOT_FOUND: .*apt-get install python3-sklearn/m);
  });

  it("every experiment's config is a valid simulation, and the runner takes its three options", async () => {
    const dir = "simulations/experiments";
    for (const file of [
      "spam-assassin-mailboxes.json",
      "diabetes-regression.json",
      "mail-chars-lstm.json",
    ]) {
      const input = simulationInput(JSON.parse(await readFile(join(dir, file), "utf8")));
      const cfg = resolveSimulationConfig({ ...input, dataset: { name: "stand-in" } as never });
      expect(cfg.rounds).toBeGreaterThan(1);
    }
    expect(experimentFlags(["--rounds", "3", "--run-dir", "r", "--figure", "f.svg"])).toEqual({
      overrides: { rounds: 3, runDir: "r" },
      figure: "f.svg",
    });
    expect(() => experimentFlags(["--devices", "3"])).toThrow(/unknown option --devices/);
  });
});
