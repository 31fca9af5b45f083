/**
 * Round benchmark: bytes per round for the 2NN and the CNN, the time of one 3-client 2NN round
 * over socket.io on MNIST digits, and the share of that time spent aggregating.
 *
 * Run with `npm run bench:round` (after `npm run build`).
 */
import { createCoordinator } from "../coordinator/index.js";
import { CohortClient } from "../client/index.js";
import { encode } from "../protocol/codec.js";
import type { FitResult } from "../protocol/messages.js";
import { aggregateRound, resolveStrategy, serverStep } from "../aggregation/index.js";
import { resolveModel, selectBackend } from "../models/index.js";
import { loadMnistDigits, shardDataset, takeExamples } from "../models/datasets/index.js";

const CLIENTS = 3;
const ROUNDS = 4;

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(2)} MiB`;
}

async function payloadSizes(model: "mlp" | "cnn") {
  const { spec, weights } = await resolveModel(model);
  const config = { learningRate: 0.1, localEpochs: 1, batchSize: 10, proximalMu: 0, extra: {} };
  const down = encode({ round: 1, weights, config }).byteLength;
  const result: FitResult = {
    round: 1,
    numExamples: 600,
    delta: weights,
    metrics: { loss: 0.1, accuracy: 0.9, trainMs: 1000, backend: "wasm" },
  };
  const up = encode(result).byteLength;
  // Aggregation cost alone, CLIENTS updates of this model.
  const fedavg = resolveStrategy("fedavg");
  const updates = Array.from({ length: CLIENTS }, (_, i) => ({
    clientId: `c${i}`,
    delta: weights,
    numExamples: 600,
  }));
  const t0 = performance.now();
  const reps = 5;
  const state = fedavg.optimizer.init(weights);
  for (let i = 0; i < reps; i++)
    serverStep(fedavg, weights, state, aggregateRound(fedavg, weights, updates)!, 1);
  const aggMs = (performance.now() - t0) / reps;
  return { params: spec.numParameters, down, up, perRound: CLIENTS * (down + up), aggMs };
}

async function main() {
  await selectBackend("wasm");
  console.log(`# cohort round benchmark (${CLIENTS} clients)`);
  for (const model of ["mlp", "cnn"] as const) {
    const s = await payloadSizes(model);
    console.log(
      `${model}: ${s.params} parameters; fit request ${mib(s.down)}, update ${mib(s.up)}; ` +
        `bytes per ${CLIENTS}-client round ${mib(s.perRound)} (${s.perRound} B); FedAvg of ${CLIENTS} updates ${s.aggMs.toFixed(1)} ms`,
    );
  }

  const train = await loadMnistDigits("train");
  const evalSet = takeExamples(await loadMnistDigits("test"), 1000);
  const coordinator = await createCoordinator({
    host: "127.0.0.1",
    model: "mlp",
    rounds: ROUNDS,
    minAvailableClients: CLIENTS,
    minFitClients: CLIENTS,
    evalDataset: evalSet,
    runDir: null,
    log: () => undefined, // the bench prints its own table
  });
  const clients = Array.from(
    { length: CLIENTS },
    (_, i) =>
      new CohortClient({
        url: coordinator.url,
        data: shardDataset(train, i, CLIENTS),
        backend: "wasm",
      }),
  );
  await Promise.all(clients.map((c) => c.start()));
  const summary = await coordinator.run();
  await Promise.all(clients.map((c) => c.close()));
  await coordinator.close();
  console.log(
    `\n2NN, ${CLIENTS} in-process clients × ${clients[0]!.options.data.labels.length} examples, E=1 B=10, wasm:`,
  );
  for (const r of summary.rounds) {
    const trainMs = Math.max(...r.clients.map((c) => c.trainMs));
    console.log(
      `round ${r.round}: ${r.durationMs.toFixed(0)} ms (slowest client training ${trainMs.toFixed(0)} ms), ` +
        `aggregation ${r.aggregationMs.toFixed(1)} ms = ${((100 * r.aggregationMs) / r.durationMs).toFixed(2)} % of the round, ` +
        `evaluation ${r.evaluationMs.toFixed(0)} ms, up ${mib(r.bytesUp)}, down ${mib(r.bytesDown)}, accuracy ${r.accuracy?.toFixed(4)}`,
    );
  }
  const steady = summary.rounds.slice(1);
  const mean = (f: (r: (typeof steady)[number]) => number) =>
    steady.reduce((s, r) => s + f(r), 0) / steady.length;
  console.log(
    `steady rounds: ${mean((r) => r.durationMs).toFixed(0)} ms per round; aggregation/round = ${(mean((r) => r.aggregationMs) / mean((r) => r.durationMs)).toFixed(4)}`,
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
