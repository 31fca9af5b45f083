/**
 * Any task in a browser page: a page in real headless Chromium trains a binary classifier, a
 * regression and a per-timestep sequence model beside two Node clients, in plain and secure
 * rounds, from data the page builds itself (plain arrays, converted by the client).
 */
import { mkdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CohortClient } from "../client/index.js";
import { launchBrowser, type TestBrowser } from "./helpers/browser.js";
import { startClients, startCoordinator } from "./helpers/federation.js";
import { TASKS, taskCoordinatorOptions, type SyntheticTask } from "./helpers/tasks.js";

let browser: TestBrowser;

beforeAll(async () => {
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
});

const FLOORS = { cohort: 3, neighbours: 2, threshold: 2 };

/** Run two rounds of `task` with a page and two Node clients; what the coordinator and page saw. */
async function federate(task: SyntheticTask, secure: boolean) {
  const coordinator = await startCoordinator(
    taskCoordinatorOptions(task, { rounds: 2, secure, seed: 4 }),
  );
  const joins: { clientId: string; platform: string }[] = [];
  coordinator.on("join", (c) => joins.push(c));
  const page = await browser.context.newPage();
  let node: CohortClient[] = [];
  try {
    node = await startClients(coordinator.url, [task.data(0), task.data(1)], "node", {
      secureFloors: FLOORS,
    });
    const own = task.data(2);
    // The page's data as JSON: plain arrays, as an application would build them.
    const data = {
      name: own.name,
      features: [...own.features],
      labels: [...own.labels],
      sampleShape: [...own.sampleShape],
      ...(own.labelShape === undefined ? {} : { labelShape: [...own.labelShape] }),
      ...(own.numClasses === undefined ? {} : { numClasses: own.numClasses }),
    };
    await page.goto(`${coordinator.url}/`);
    await page.evaluate(
      (input) => {
        (globalThis as unknown as { pageInput: unknown }).pageInput = input;
      },
      { url: coordinator.url, data, floors: FLOORS },
    );
    // A string, so the test runner's module transform leaves the page's import() alone.
    await page.evaluate(`(async () => {
      const { url, data, floors } = globalThis.pageInput;
      const { CohortClient } = await import(url + "/static/cohort.js");
      const client = new CohortClient({ url, data, clientId: "page", secureFloors: floors });
      await client.start();
      globalThis.pageDone = client.done.then(() => "done", (e) => "failed: " + String(e));
    })()`);
    const summary = await coordinator.run();
    const pageOutcome = await page.evaluate(
      () => (globalThis as unknown as { pageDone: Promise<string> }).pageDone,
    );
    // The page is the dashboard too: it shows the final round, by loss where there is no accuracy.
    await page.waitForFunction(
      (rounds) => document.body.dataset.round === String(rounds),
      summary.rounds.length,
      { polling: 100 },
    );
    const scoreTitle = await page.textContent("#score-title");
    const score = await page.textContent("#accuracy");
    await mkdir("test-artifacts", { recursive: true });
    await page.screenshot({
      path: `test-artifacts/dashboard-${task.loss}-${secure ? "secure" : "plain"}.png`,
    });
    return { summary, joins, pageOutcome, scoreTitle, score };
  } catch (error) {
    throw new Error(`${String(error)}\npage errors: ${browser.errors.join("\n")}`, {
      cause: error,
    });
  } finally {
    await page.close();
    await Promise.all(node.map((c) => c.close()));
    await coordinator.close();
  }
}

const BROWSER_TASKS = [TASKS[3]!, TASKS[5]!, TASKS[8]!];

describe("tasks in a browser page", () => {
  for (const secure of [false, true]) {
    it.each(BROWSER_TASKS)(
      `$name: ${secure ? "secure" : "plain"} rounds with a page`,
      async (task) => {
        const { summary, joins, pageOutcome, scoreTitle, score } = await federate(task, secure);
        const byLoss = !task.metrics.some((m) => m.includes("accuracy"));
        expect(scoreTitle).toBe(byLoss ? "Loss" : "Accuracy");
        const last = summary.rounds.at(-1)!;
        expect(Number(score)).toBeCloseTo(byLoss ? last.loss! : last.accuracy!, 3);
        expect(pageOutcome).toBe("done");
        expect(joins.find((j) => j.clientId === "page")?.platform).toMatch(/Chrom/);
        expect(summary.rounds.every((r) => r.participants === 3 && r.secure === secure)).toBe(true);
        expect(summary.rounds.at(-1)!.loss!).toBeLessThan(summary.initial!.loss);
        expect(Object.keys(summary.rounds.at(-1)!.metrics!).sort()).toEqual(
          [...task.metrics].sort(),
        );
      },
    );
  }
});
