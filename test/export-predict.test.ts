/**
 * `cohort export` and `cohort predict` on a real run directory (a small simulation), and the
 * README's deploy snippet run as it stands in a fresh Node process without tfjs-node.
 */
import { createServer, type Server } from "node:http";
import { readFile, symlink, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { examplesFromCsv, loadModel, predictExamples, readWeights } from "../models/index.js";
import { simulate } from "../simulations/index.js";
import { exportCommand } from "../bin/export-command.js";
import { predictCommand } from "../bin/predict-command.js";
import { expectHelpListsFlags, runCli } from "./helpers/cli.js";
import { tempRunDir } from "./helpers/federation.js";
import { consumerProject, runScript } from "./helpers/consumer.js";

const README = new URL("../README.md", import.meta.url);

let runDir: string;
let finalWeights: Float32Array[];
let work: string;

/** `n` examples of 784 pixels, different from one another. */
function pixels(n: number): number[][] {
  return Array.from({ length: n }, (_, i) =>
    Array.from({ length: 784 }, (_, j) => ((i * 7919 + j * 104729) % 1000) / 1000),
  );
}

function csv(rows: (number | string)[][], header = true): string {
  const head = header ? [rows[0]!.map((_, j) => `p${j}`).join(",")] : [];
  return [...head, ...rows.map((r) => r.join(","))].join("\n") + "\n";
}

/** What the model predicts here, in this process. */
async function expected(rows: number[][]): Promise<number[][]> {
  const model = await loadModel(runDir);
  const text = csv(rows);
  const out = await predictExamples(model, examplesFromCsv(text, "x.csv"));
  model.dispose();
  return out.map((p) => p.output);
}

function closeRows(actual: number[][], wanted: number[][]): void {
  expect(actual.map((r) => r.length)).toEqual(wanted.map((r) => r.length));
  actual.forEach((row, i) =>
    row.forEach((v, j) => expect(Math.abs(v - wanted[i]![j]!)).toBeLessThan(1e-5)),
  );
}

function argmax(row: number[]): number {
  return row.indexOf(Math.max(...row));
}

beforeAll(async () => {
  work = await tempRunDir("cohort-export-");
  runDir = join(work, "run");
  const result = await simulate(
    {
      devices: 4,
      fractionFit: 1,
      rounds: 3,
      checkpointEvery: 2,
      model: "mlp",
      dataset: "mnist",
      examplesPerDevice: 20,
      evalSize: 100,
      baselineEpochs: 0,
      runDir,
    },
    { progress: null },
  );
  finalWeights = result.weights;
});

describe("cohort export", () => {
  let server: Server | undefined;
  afterAll(() => server?.close());

  it("is listed by cohort --help with predict; each --help lists every flag with its default", async () => {
    const top = await runCli(["--help"]);
    expect(top.code).toBe(0);
    expect(top.output).toMatch(/^ {2}export +Write the global model of a run directory's round/m);
    expect(top.output).toMatch(/^ {2}predict +Predict with a model/m);
    await expectHelpListsFlags("export", exportCommand.flags);
    await expectHelpListsFlags("predict", predictCommand.flags);
  });

  it("writes the last round's global model, loadable by loadModel and by tf.loadLayersModel(url)", async () => {
    const out = join(work, "exported");
    const { code, output } = await runCli(["export", "--run-dir", runDir, "--out", out]);
    expect(code).toBe(0);
    expect(output).toContain(
      `round 3 of ${runDir} (199210 parameters) → ${join(out, "model.json")} + ${join(out, "weights.bin")} (796840 bytes)`,
    );
    const model = await loadModel(out);
    expect(await readWeights(model)).toEqual(finalWeights);
    const { runId } = JSON.parse(await readFile(join(runDir, "run.json"), "utf8")) as {
      runId: string;
    };
    expect(model.getUserDefinedMetadata()).toEqual({ cohort: { round: 3, runId } });
    model.dispose();

    // A browser loads it from a URL with tfjs's own HTTP handler; so does Node's fetch.
    server = createServer((req, res) => {
      const name =
        req.url === "/model/model.json"
          ? "model.json"
          : req.url === "/model/weights.bin"
            ? "weights.bin"
            : null;
      if (name === null) return void res.writeHead(404).end();
      readFile(join(out, name)).then(
        (body) => res.writeHead(200).end(body),
        () => res.writeHead(500).end(),
      );
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    const remote = await tf.loadLayersModel(`http://127.0.0.1:${port}/model/model.json`);
    expect(await readWeights(remote)).toEqual(finalWeights);
    remote.dispose();
  });

  it("writes round n's with --round; a round without a checkpoint names the rounds there are", async () => {
    const out = join(work, "round-2");
    const ok = await runCli(["export", "--run-dir", runDir, "--round", "2", "--out", out]);
    expect(ok.code).toBe(0);
    const exported = await loadModel(out);
    const checkpoint = await loadModel(runDir, { round: 2 });
    expect(await readWeights(exported)).toEqual(await readWeights(checkpoint));
    expect(await readWeights(exported)).not.toEqual(finalWeights);
    exported.dispose();
    checkpoint.dispose();

    const missing = await runCli(["export", "--run-dir", runDir, "--round", "1", "--out", out]);
    expect(missing.code).toBe(1);
    expect(missing.output).toContain(
      `error INVALID_MODEL: ${runDir} has no checkpoint of round 1; it has rounds 0, 2, 3`,
    );
    const nowhere = await runCli(["export", "--run-dir", join(work, "nope"), "--out", out]);
    expect(nowhere.code).toBe(1);
    expect(nowhere.output).toMatch(/INVALID_MODEL: no model at .*nope/);
    const noOut = await runCli(["export", "--run-dir", runDir]);
    expect(noOut.output).toMatch(/INVALID_OPTION: --out is required/);
  });
});

describe("cohort predict", () => {
  it("predicts CSV and JSON examples: one JSON line each with the argmax class, or CSV rows", async () => {
    const rows = pixels(3);
    const wanted = await expected(rows);
    await writeFile(join(work, "in.csv"), csv(rows));
    await writeFile(join(work, "in.json"), JSON.stringify({ inputs: rows }));
    await writeFile(join(work, "list.json"), JSON.stringify(rows));
    for (const [input, model] of [
      ["in.csv", runDir],
      ["in.json", runDir],
      ["list.json", join(work, "exported")],
    ] as const) {
      const { code, output } = await runCli([
        "predict",
        "--model",
        model,
        "--input",
        join(work, input),
      ]);
      expect(code).toBe(0);
      const lines = output
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { output: number[]; argmax: number });
      expect(lines).toHaveLength(3);
      closeRows(
        lines.map((l) => l.output),
        wanted,
      );
      expect(lines.map((l) => l.argmax)).toEqual(wanted.map(argmax));
    }

    const target = join(work, "out.csv");
    const written = await runCli([
      "predict",
      ...["--model", runDir, "--round", "0", "--input", join(work, "in.csv"), "--output", target],
    ]);
    expect(written.code).toBe(0);
    expect(written.output).toContain(`3 predictions → ${target}`);
    const [header, ...body] = (await readFile(target, "utf8")).trim().split("\n");
    expect(header).toBe(
      [...Array.from({ length: 10 }, (_, i) => `output_${i}`), "argmax"].join(","),
    );
    const initial = await loadModel(runDir, { round: 0 });
    const first = await predictExamples(initial, examplesFromCsv(csv(rows), "x.csv"));
    initial.dispose();
    closeRows(
      body.map((line) => line.split(",").slice(0, 10).map(Number)),
      first.map((p) => p.output),
    );
    expect(body.map((line) => Number(line.split(",")[10]))).toEqual(first.map((p) => p.argmax));
  });

  it("names the line and column of a bad CSV cell, a row of another width, and an example of the wrong size", async () => {
    const rows = pixels(3).map((r) => r.map(String));
    const cases: [string, string, RegExp][] = [
      [
        "cell.csv",
        csv(rows.map((r, i) => (i === 1 ? ["0.5", "abc", ...r.slice(2)] : r))),
        /DATASET_INVALID: .*cell\.csv line 3, column 2 "abc" is not a finite number/,
      ],
      [
        "empty.csv",
        csv(
          rows.map((r, i) => (i === 2 ? ["", ...r.slice(1)] : r)),
          false,
        ),
        /DATASET_INVALID: .*empty\.csv line 3, column 1 is empty/,
      ],
      [
        "width.csv",
        csv(rows.map((r, i) => (i === 2 ? r.slice(0, 700) : r))),
        /DATASET_INVALID: .*width\.csv line 4 has 700 columns; line 1 has 784/,
      ],
      [
        "small.csv",
        "1,2,3\n4,5,6\n",
        /SHAPE_MISMATCH: line 1 \(example 1\) has 3 values; the model's input \[28, 28, 1\] takes 784/,
      ],
      [
        "short.json",
        JSON.stringify([pixels(1)[0], [1, 2, 3]]),
        /SHAPE_MISMATCH: example 2 has 3 values/,
      ],
      [
        "text.json",
        JSON.stringify({ inputs: [[1, "x"]] }),
        /DATASET_INVALID: .*text\.json: example 1 holds "x", not a number/,
      ],
      ["flat.json", JSON.stringify([1, 2, 3]), /example 1 is 1, not an array of numbers/],
    ];
    for (const [name, text, message] of cases) {
      await writeFile(join(work, name), text);
      const { code, output } = await runCli([
        "predict",
        "--model",
        runDir,
        "--input",
        join(work, name),
      ]);
      expect({ name, code }).toEqual({ name, code: 1 });
      expect(output).toMatch(message);
    }
    const missing = await runCli(["predict", "--model", runDir, "--input", join(work, "none.csv")]);
    expect(missing.output).toMatch(/DATASET_NOT_FOUND: cannot read .*none\.csv/);
  });
});

describe("the README's deploy path", () => {
  it("runs its loadModel snippet as it stands in a fresh Node process without tfjs-node", async () => {
    const readme = await readFile(README, "utf8");
    const block = /<!-- deploy snippet[^>]*-->\s*```js\n([\s\S]*?)```/.exec(readme);
    expect(block).not.toBeNull();
    const project = await consumerProject();
    await mkdir(join(project, "runs"));
    await symlink(runDir, join(project, "runs", "mnist-2nn"), "dir");
    const { code, stdout, stderr } = await runScript(project, block![1]!);
    expect(stderr).not.toMatch(/Error/);
    expect(code).toBe(0);
    const printed = JSON.parse(stdout) as number[][];
    const model = await loadModel(runDir);
    const y = model.predict(tf.ones([2, 28, 28, 1])) as tf.Tensor;
    closeRows(printed, (await y.array()) as number[][]);
    tf.dispose(y);
    model.dispose();
    for (const row of printed) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
  });
});
