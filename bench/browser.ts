/**
 * Browser vs Node benchmark: per-round local training time of the demo client page in headless
 * Chromium and of a Node `CohortClient`, on the same MNIST shard, both on the wasm backend.
 * Each runs alone against its own coordinator (two cores here: running them together would
 * make them compete), and the ratio browser/Node is the median over rounds after the first.
 *
 * `npm run bench:browser [-- --models mlp,cnn --rounds 6 --examples 600 --screenshot PATH]`
 * (after `npm run build`); `--screenshot` also saves the dashboard of a run with both clients.
 */
import { parseArgs } from "node:util";
import type { BrowserContext } from "playwright-core";
import { createCoordinator, type Coordinator } from "../coordinator/index.js";
import { CohortClient } from "../client/index.js";
import type { Dataset } from "../protocol/dataset.js";
import { loadMnistDigits, shardDataset, takeExamples } from "../models/datasets/index.js";
import { launchChromium } from "./chromium.js";

const { values: flags } = parseArgs({
  options: {
    models: { type: "string", default: "mlp,cnn" },
    rounds: { type: "string", default: "6" },
    examples: { type: "string", default: "600" },
    screenshot: { type: "string" },
  },
});
const ROUNDS = Number(flags.rounds);
const EXAMPLES = Number(flags.examples);
/** The shard both clients train on: shard 0 of 10, its first EXAMPLES digits. */
const SHARD = { index: 0, count: 10 };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function coordinator(model: string, clients: number, evalSet: Dataset, rounds = ROUNDS) {
  return createCoordinator({
    host: "127.0.0.1",
    model,
    rounds,
    minAvailableClients: clients,
    minFitClients: clients,
    runDir: null,
    evalDataset: evalSet,
    serveDemoData: true, // the demo page loads its shard from /data/mnist-shard
    log: () => undefined,
  });
}

function pageUrl(c: Coordinator, id: string): string {
  return `${c.url}/client?backend=wasm&index=${SHARD.index}&count=${SHARD.count}&limit=${EXAMPLES}&id=${id}`;
}

/** Client-side training ms of `clientId` in each round. */
function trainTimes(rounds: Awaited<ReturnType<Coordinator["run"]>>["rounds"], clientId: string) {
  return rounds.map((r) => r.clients.find((c) => c.clientId === clientId)!.trainMs);
}

async function browserRun(context: BrowserContext, model: string, evalSet: Dataset) {
  const c = await coordinator(model, 1, evalSet);
  const page = await context.newPage();
  try {
    await page.goto(pageUrl(c, "browser"));
    // A page that fails never joins: stop waiting for it and say why.
    const failed = page
      .waitForFunction(
        () =>
          (globalThis as unknown as { cohortPage: { error: string | null } }).cohortPage.error !==
          null,
        undefined,
        { polling: 500, timeout: 0 },
      )
      .then(async () => {
        const error = await page.evaluate(
          () => (globalThis as unknown as { cohortPage: { error: string } }).cohortPage.error,
        );
        throw new Error(`the demo page failed: ${error}`);
      });
    failed.catch(() => undefined); // the page closes when the run ends
    const summary = await Promise.race([c.run(), failed]);
    const label = await page.evaluate(
      () =>
        (globalThis as unknown as { cohortPage: { backendLabel: string } }).cohortPage.backendLabel,
    );
    return { times: trainTimes(summary.rounds, "browser"), label };
  } finally {
    await page.close();
    await c.close();
  }
}

async function nodeRun(model: string, shard: Dataset, evalSet: Dataset) {
  const c = await coordinator(model, 1, evalSet);
  const client = new CohortClient({ url: c.url, data: shard, clientId: "node", backend: "wasm" });
  try {
    await client.start();
    const summary = await c.run();
    return { times: trainTimes(summary.rounds, "node"), label: client.backendLabel ?? "?" };
  } finally {
    await client.close();
    await c.close();
  }
}

/** A run with both clients and the dashboard open, screenshotted mid-run (clients connected). */
async function screenshot(context: BrowserContext, path: string, shard: Dataset, evalSet: Dataset) {
  const c = await coordinator("mlp", 2, evalSet, 20);
  const dashboard = await context.newPage();
  const page = await context.newPage();
  const client = new CohortClient({ url: c.url, data: shard, clientId: "node-1", backend: "wasm" });
  try {
    await dashboard.setViewportSize({ width: 1200, height: 760 });
    await dashboard.goto(`${c.url}/`);
    await page.goto(pageUrl(c, "browser-1"));
    await client.start();
    const running = c.run().catch(() => undefined); // closed mid-run below
    await dashboard.waitForFunction(
      () =>
        Number(document.body.dataset.round ?? 0) >= 6 &&
        document.querySelectorAll("#clients tr").length === 2,
      undefined,
      { polling: 100, timeout: 120_000 },
    );
    await dashboard.screenshot({ path });
    await c.close();
    await running;
  } finally {
    await Promise.all([dashboard.close(), page.close(), client.close()]);
    await c.close();
  }
}

async function main(): Promise<void> {
  const train = await loadMnistDigits("train");
  const shard = takeExamples(shardDataset(train, SHARD.index, SHARD.count), EXAMPLES);
  const evalSet = takeExamples(await loadMnistDigits("test"), 500);
  const { context, close } = await launchChromium();
  try {
    console.log(
      `# browser vs Node: local training per round, ${shard.labels.length} examples (${shard.name}), ` +
        `${ROUNDS} rounds, E=1 B=10, median of rounds 2..${ROUNDS}`,
    );
    for (const model of (flags.models ?? "").split(",")) {
      const browser = await browserRun(context, model, evalSet);
      const node = await nodeRun(model, shard, evalSet);
      const b = median(browser.times.slice(1));
      const n = median(node.times.slice(1));
      const ms = (xs: number[]) => xs.map((x) => Math.round(x)).join(", ");
      console.log(
        `${model}: browser ${Math.round(b)} ms (${browser.label}; ${ms(browser.times)}), ` +
          `node ${Math.round(n)} ms (${node.label}; ${ms(node.times)}), ratio browser/node ${(b / n).toFixed(2)}`,
      );
    }
    if (flags.screenshot !== undefined) {
      await screenshot(context, flags.screenshot, shard, evalSet);
      console.log(`dashboard screenshot: ${flags.screenshot}`);
    }
  } finally {
    await close();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
