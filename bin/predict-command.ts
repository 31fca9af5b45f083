/** `cohort predict`: run a model (a model directory or a run directory's round) over the examples of a CSV or JSON file. */
import { writeFile } from "node:fs/promises";
import { CohortError } from "../protocol/errors.js";
import { parseBackendRequest, selectBackend } from "../models/backend.js";
import { readExamples } from "../models/examples-file.js";
import { loadModel } from "../models/files.js";
import { predictExamples, type Prediction } from "../models/predict.js";
import { helpText, parseFlags, type CommandSpec, type FlagSpec } from "./args.js";

const FORMATS = ["jsonl", "csv"] as const;
type Format = (typeof FORMATS)[number];

export const predictCommand = {
  name: "predict",
  summary:
    'Predict with a model on the examples of a CSV (a row each) or JSON ([[…], …] or { "inputs": … }) file: one line of outputs per example, with the argmax class of a softmax.',
  flags: {
    model: {
      type: "string",
      placeholder: "DIR|FILE",
      description:
        "a model directory or model.json (saveModel, cohort export), or a run directory (required)",
    },
    round: {
      type: "number",
      defaultText: "the last round checkpointed",
      description: "with a run directory as --model: the round whose global model to use",
    },
    input: {
      type: "string",
      placeholder: "FILE",
      description: "examples: .csv, .json, or either by content (required)",
    },
    output: {
      type: "string",
      placeholder: "FILE",
      defaultText: "standard output",
      description: "write the predictions to FILE",
    },
    format: {
      type: "string",
      placeholder: FORMATS.join("|"),
      defaultText: "csv when --output ends in .csv, else jsonl",
      description: 'jsonl: {"output":[…],"argmax":k} a line; csv: a header, then a row each',
    },
    "batch-size": { type: "number", default: 256, description: "examples per model call" },
    backend: {
      type: "string",
      default: "auto",
      placeholder: "auto|tfjs-node-gpu|tfjs-node|wasm|cpu",
      description: "tfjs backend",
    },
  },
} satisfies CommandSpec<Record<string, FlagSpec>>;

function parseFormat(value: string | undefined, output: string | undefined): Format {
  if (value === undefined) return output?.toLowerCase().endsWith(".csv") ? "csv" : "jsonl";
  if ((FORMATS as readonly string[]).includes(value)) return value as Format;
  throw new CohortError(
    "INVALID_OPTION",
    `--format must be ${FORMATS.join(" or ")}, got "${value}"`,
  );
}

/** The predictions as text: JSON lines, or CSV with a header `output_0,…[,argmax]`. */
export function formatPredictions(predictions: readonly Prediction[], format: Format): string {
  if (format === "jsonl") return predictions.map((p) => JSON.stringify(p) + "\n").join("");
  const width = predictions[0]?.output.length ?? 0;
  const classes = predictions[0]?.argmax !== undefined;
  const header = [
    ...Array.from({ length: width }, (_, i) => `output_${i}`),
    ...(classes ? ["argmax"] : []),
  ];
  const rows = predictions.map((p) => [...p.output, ...(classes ? [p.argmax] : [])].join(","));
  return [header.join(","), ...rows].join("\n") + "\n";
}

/** Run the command; resolves with the process exit code. */
export async function runPredict(argv: string[]): Promise<number> {
  const flags = parseFlags(predictCommand, argv);
  if (flags === null) {
    console.log(helpText(predictCommand));
    return 0;
  }
  if (flags.model === undefined) throw new CohortError("INVALID_OPTION", "--model is required");
  if (flags.input === undefined) throw new CohortError("INVALID_OPTION", "--input is required");
  const batchSize = flags["batch-size"];
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new CohortError(
      "INVALID_OPTION",
      `--batch-size must be a whole number ≥ 1, got ${batchSize}`,
    );
  }
  const format = parseFormat(flags.format, flags.output);
  const backend = parseBackendRequest(flags.backend);
  // Read the examples first: a bad file is reported before any backend starts.
  const examples = await readExamples(flags.input);
  await selectBackend(backend);
  const model = await loadModel(
    flags.model,
    flags.round === undefined ? {} : { round: flags.round },
  );
  let text: string;
  try {
    text = formatPredictions(await predictExamples(model, examples, batchSize), format);
  } finally {
    model.dispose();
  }
  if (flags.output === undefined) {
    process.stdout.write(text);
  } else {
    await writeFile(flags.output, text);
    console.log(`${examples.rows.length} predictions → ${flags.output}`);
  }
  return 0;
}
