/**
 * Browser clients and the dashboard in a real headless Chromium (Debian `chromium` driven by
 * playwright-core): demo pages join a federation beside a Node client, plain and secure.
 */
import { mkdir } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import type { Coordinator, CoordinatorOptions, StatusSnapshot } from "../coordinator/index.js";
import type { CohortClient } from "../client/index.js";
import type { Dataset } from "../protocol/dataset.js";
import { launchBrowser, type TestBrowser } from "./helpers/browser.js";
import { mnistShards, startClients, startCoordinator } from "./helpers/federation.js";
import { connectRaw, vandal } from "./helpers/raw-client.js";

/** Examples per client: enough for accuracy to rise in a few rounds, few enough to be quick. */
const PER_CLIENT = 300;

let browser: TestBrowser;
let shards: Dataset[];
let evalSet: Dataset;

beforeAll(async () => {
  browser = await launchBrowser();
  ({ shards, evalSet } = await mnistShards(3, PER_CLIENT, 500));
});

afterAll(async () => {
  await browser?.close();
});

/** Open the demo client page as shard `index` of 3. */
async function openClientPage(url: string, index: number, id: string): Promise<Page> {
  const page = await browser.context.newPage();
  await page.goto(
    `${url}/client?index=${index}&count=3&limit=${PER_CLIENT}&id=${id}&eval=0.2&floors=3,2,2`,
  );
  return page;
}

interface PageState {
  status: string;
  backend: string | null;
  backendLabel: string | null;
  rounds: { round: number; accepted: boolean }[];
  error: string | null;
}

const pageState = (page: Page) =>
  page.evaluate(() => (globalThis as unknown as { cohortPage: PageState }).cohortPage);

/** Two pages and one Node client run `rounds` rounds; returns what each side saw. */
async function federate(
  secure: boolean,
  rounds: number,
  extra: Partial<CoordinatorOptions> = {},
  mode = secure ? "secure" : "plain",
) {
  const coordinator = await startCoordinator({
    model: "mlp",
    rounds,
    minAvailableClients: 3,
    minFitClients: 3,
    runDir: null,
    evalDataset: evalSet,
    secure,
    serveDemoData: true, // the demo pages load their shards from /data/mnist-shard
    // FedProx's proximal term and federated evaluation run in the pages too.
    strategy: { name: "fedprox", params: { proximalMu: 0.01 } },
    fractionEvaluate: 1,
    ...extra,
  });
  const joins: { clientId: string; platform: string; backend: string }[] = [];
  coordinator.on("join", (c) => joins.push(c));
  let node: CohortClient[] = [];
  const pages: Page[] = [];
  try {
    pages.push(await openClientPage(coordinator.url, 0, `page-0-${mode}`));
    pages.push(await openClientPage(coordinator.url, 1, `page-1-${mode}`));
    node = await startClients(coordinator.url, [shards[2]!], `node-${mode}`, {
      evalFraction: 0.2,
      secureFloors: { cohort: 3, neighbours: 2, threshold: 2 },
    });
    const summary = await coordinator.run();
    await Promise.all(node.map((c) => c.done));
    const states = await Promise.all(
      pages.map(async (page) => {
        await page.waitForFunction(
          () => (globalThis as unknown as { cohortPage: PageState }).cohortPage.status === "done",
          undefined,
          { polling: 100 }, // requestAnimationFrame, the default, barely runs in background tabs
        );
        return {
          state: await pageState(page),
          backendText: await page.textContent("#backend"),
        };
      }),
    );
    return { summary, joins, states };
  } catch (error) {
    throw new Error(`${String(error)}\npage errors: ${browser.errors.join("\n")}`, {
      cause: error,
    });
  } finally {
    await Promise.all(pages.map((p) => p.close()));
    await Promise.all(node.map((c) => c.close()));
    await coordinator.close();
  }
}

describe("browser clients", () => {
  it("two demo pages and a Node client train plain rounds, then secure ones", async () => {
    for (const [secure, rounds] of [
      [false, 3],
      [true, 2],
    ] as const) {
      const { summary, joins, states } = await federate(secure, rounds);
      const mode = secure ? "secure" : "plain";
      // The global model learned.
      const initial = summary.initial!.accuracy!;
      const final = summary.rounds.at(-1)!.accuracy!;
      expect(final, mode).toBeGreaterThan(initial + 0.3);
      expect(summary.rounds.every((r) => r.participants === 3 && r.secure === secure)).toBe(true);
      // Every client evaluated each new model on its held-out fifth: 3 × 60 examples.
      for (const round of summary.rounds) {
        expect(round.evaluationFailures, mode).toEqual([]);
        expect(round.federatedClients, mode).toBe(3);
        expect(round.federatedExamples, mode).toBe(180); // 3 × ⌈0.2 · 300⌉
        expect(round.federatedAccuracy!, mode).toBeGreaterThan(0.1);
      }
      // The pages trained on wasm (auto skips Chromium's software GPU) and said so.
      for (const [i, { state, backendText }] of states.entries()) {
        expect(state.error).toBeNull();
        expect(state.backend).toBe("wasm");
        expect(backendText).toBe("wasm");
        expect(state.backendLabel).toMatch(/^wasm: simd, \d+ threads?$/);
        expect(state.rounds.map((r) => r.round)).toEqual(
          Array.from({ length: rounds }, (_, r) => r + 1),
        );
        const join = joins.find((j) => j.clientId === `page-${i}-${mode}`);
        expect(join?.backend).toBe(state.backendLabel);
        expect(join?.platform).toMatch(/Chrome\/\d+/);
      }
      expect(joins.find((j) => j.clientId === `node-${mode}-0`)?.platform).toMatch(/^node v20/);
      if (!secure) {
        // Plain rounds carry per-client metrics: the pages' backend is there.
        for (const round of summary.rounds) {
          const backends = Object.fromEntries(round.clients.map((c) => [c.clientId, c.backend]));
          expect(backends).toEqual({
            "page-0-plain": "wasm",
            "page-1-plain": "wasm",
            "node-plain-0": "wasm",
          });
        }
      }
    }
  }, 120_000);

  it("the pages rebuild a q8 downlink's patches: every member is patched from round 2, none fails", async () => {
    const { summary, states } = await federate(false, 3, { downlinkCodec: "q8" }, "q8");
    expect(summary.rounds.map((r) => [r.downlinkPatched, r.downlinkFull])).toEqual([
      [0, 3],
      [3, 0],
      [3, 0],
    ]);
    expect(summary.rounds.every((r) => r.failures === 0 && r.participants === 3)).toBe(true);
    expect(summary.rounds.at(-1)!.accuracy!).toBeGreaterThan(summary.initial!.accuracy! + 0.3);
    for (const { state } of states) {
      expect(state.error).toBeNull();
      expect(state.rounds.map((r) => r.accepted)).toEqual([true, true, true]);
    }
  }, 120_000);
});

describe("dashboard", () => {
  it("shows the live rounds, bytes, codec and clients of /api/status; screenshot in test-artifacts/", async () => {
    const coordinator = await startCoordinator({
      model: "mlp",
      rounds: 50, // more than the test waits for: clients stay connected while it looks
      minAvailableClients: 2,
      runDir: null,
      codec: "q8", // updates a quarter of the model's bytes: the two byte series part
      evalDataset: evalSet,
      serveDemoData: true,
    });
    const dashboard = await browser.context.newPage();
    let node: CohortClient[] = [];
    let clientPage: Page | undefined;
    try {
      await dashboard.goto(`${coordinator.url}/`);
      clientPage = await openClientPage(coordinator.url, 0, "page-dashboard");
      node = await startClients(coordinator.url, [shards[1]!], "node-dashboard");
      const running = coordinator.run().catch(() => undefined);
      await dashboard.waitForFunction(
        () =>
          Number(document.body.dataset.round ?? 0) >= 3 &&
          document.querySelectorAll("#clients tr").length === 2,
        undefined,
        { polling: 100, timeout: 60_000 },
      );
      // Chart: one accuracy and one loss point per round shown, equal to the status history.
      const points = await dashboard.$$eval("#chart circle", (circles) =>
        circles.map((c) => ({
          kind: c.getAttribute("class"),
          round: Number(c.getAttribute("data-round")),
          value: Number(c.getAttribute("data-value")),
        })),
      );
      const bytes = await dashboard.$$eval("#bytes-chart circle", (circles) =>
        circles.map((c) => ({
          kind: c.getAttribute("class"),
          round: Number(c.getAttribute("data-round")),
          value: Number(c.getAttribute("data-value")),
          cy: Number(c.getAttribute("cy")),
        })),
      );
      // Read after the charts: the run goes on, so the status holds every round they show.
      const status = (await (
        await fetch(`${coordinator.url}/api/status`)
      ).json()) as StatusSnapshot;
      const shown = points.filter((p) => p.kind === "acc");
      expect(shown.length).toBeGreaterThanOrEqual(3);
      for (const p of shown) {
        expect(p.value).toBe(status.history[p.round - 1]!.accuracy);
      }
      for (const p of points.filter((q) => q.kind === "loss")) {
        expect(p.value).toBe(status.history[p.round - 1]!.loss);
      }
      // Bytes chart: an up and a down dot per round shown, equal to the status history; on the
      // log axis down (the float32 model to each client) sits above up (q8 updates).
      const up = bytes.filter((p) => p.kind === "bytes-up");
      const down = bytes.filter((p) => p.kind === "bytes-down");
      expect(up.length).toBeGreaterThanOrEqual(3);
      expect(down.map((p) => p.round)).toEqual(up.map((p) => p.round));
      for (const [i, p] of up.entries()) {
        expect(p.value).toBe(status.history[p.round - 1]!.bytesUp);
        expect(down[i]!.value).toBe(status.history[p.round - 1]!.bytesDown);
        expect(down[i]!.cy).toBeLessThan(p.cy);
      }
      const ticks = await dashboard.$$eval("#bytes-chart text.tick", (t) =>
        t.map((e) => e.textContent),
      );
      expect(ticks.length).toBeGreaterThanOrEqual(3);
      for (const t of ticks) expect(t).toMatch(/^\d+ (B|KiB|MiB|GiB)$/);
      // The codec in the tile and in each round's row, with its ratio and timings.
      const first = status.history[0]!;
      expect(first.codec).toBe("q8");
      const row = (cls: string) => dashboard.textContent(`#rounds tr[data-round="1"] .${cls}`);
      expect(await row("codec")).toBe("q8");
      expect(await row("ratio")).toBe(`×${first.compressionRatio!.toFixed(2)}`);
      expect(await row("encode")).toMatch(/^\d+\.\d+ ms$/);
      expect(await row("decode")).toMatch(/^\d+\.\d+ ms$/);
      expect(await dashboard.textContent("#codec")).toMatch(/^q8 ×3\.\d\d$/);
      expect(await dashboard.textContent("#codec-times")).toMatch(
        /^encode \d+\.\d+ ms · decode \d+\.\d+ ms$/,
      );
      // Client list: the same clients and backends as the status.
      const rows = await dashboard.$$eval("#clients tr", (trs) =>
        trs.map((tr) => ({
          id: tr.getAttribute("data-client"),
          backend: tr.querySelector(".backend")?.textContent,
        })),
      );
      const expected = status.clients.map((c) => ({ id: c.clientId, backend: c.backend }));
      const byId = (a: { id: string | null }, b: { id: string | null }) =>
        String(a.id).localeCompare(String(b.id));
      expect(rows.sort(byId)).toEqual(expected.sort(byId));
      expect(rows.find((r) => r.id === "page-dashboard")?.backend).toMatch(/^wasm: simd/);
      const accuracyCell = await dashboard.textContent(`#rounds tr[data-round="1"] .accuracy`);
      expect(accuracyCell).toBe(status.history[0]!.accuracy!.toFixed(4));
      await mkdir("test-artifacts", { recursive: true });
      await dashboard.screenshot({ path: "test-artifacts/dashboard.png", fullPage: true });
      await coordinator.close();
      await running;
    } finally {
      await dashboard.close();
      await clientPage?.close();
      await Promise.all(node.map((c) => c.close()));
      await coordinator.close();
    }
  }, 90_000);
});

describe("the dashboard's versions and FedBuff panels", () => {
  it("lists versions with the served one, a rejected one and its rollback, and the buffer's fill and staleness", async () => {
    const coordinator = await startCoordinator({
      model: "mlp",
      mode: "async",
      buffer: 2,
      asyncConcurrency: 3,
      rounds: 60, // more than the test waits for
      minAvailableClients: 3,
      minFitClients: 1,
      rollbackDrop: 0.1,
      evalDataset: evalSet,
      runDir: null,
    });
    const dashboard = await browser.context.newPage();
    const raw = await connectRaw(coordinator.url, "vandal");
    // Its destructive updates come once the honest ones have taught the model something (in
    // whichever of rounds 10–14 it is sent: in async mode it is not sent every one).
    vandal(raw, 10, 100, 14);
    const node = await startClients(coordinator.url, [shards[0]!, shards[1]!], "node-async");
    try {
      await dashboard.goto(`${coordinator.url}/`);
      const running = coordinator.run().catch(() => undefined);
      await dashboard.waitForFunction(
        () =>
          document.querySelectorAll("#rollbacks li[data-rollback]").length >= 1 &&
          Number(document.body.dataset.round ?? 0) >= 12,
        undefined,
        { polling: 100, timeout: 60_000 },
      );
      // Read before the status: the run goes on, so the status holds every version shown.
      const served = await dashboard.$$eval("#versions .status.served", (e) =>
        e.map((x) => x.closest("tr")!.getAttribute("data-version")),
      );
      const status = (await (
        await fetch(`${coordinator.url}/api/status`)
      ).json()) as StatusSnapshot;
      const rollback = status.versions.rollbacks[0]!;
      expect(await dashboard.textContent(`#rollbacks li[data-rollback="${rollback.from}"]`)).toBe(
        `v${rollback.from} rejected, back to v${rollback.to}: ${rollback.reason}`,
      );
      expect(
        await dashboard.textContent(`#versions tr[data-version="${rollback.from}"] .status`),
      ).toBe("rejected");
      // Exactly one row is marked as served, and it is a promoted version.
      expect(served).toHaveLength(1);
      expect(status.versions.recent.find((v) => String(v.version) === served[0])?.status).toBe(
        "promoted",
      );
      // The rounds table names FedBuff's steps as such.
      const kinds = await dashboard.$$eval("#rounds td.kind", (e) => e.map((x) => x.textContent));
      expect(kinds.length).toBeGreaterThan(0);
      expect(kinds.every((k) => k === "async")).toBe(true);
      expect(await dashboard.isVisible("#buffer-panel")).toBe(true);
      expect(await dashboard.textContent("#buffer-fill span")).toMatch(
        /^\d \/ 2 updates for v\d+ · \d clients training$/,
      );
      const label = await dashboard.getAttribute("#staleness svg", "aria-label");
      expect(label).toMatch(/^updates by staleness: \d+ at 0, \d+ at 1/);
      await mkdir("test-artifacts", { recursive: true });
      await dashboard.screenshot({ path: "test-artifacts/dashboard-versions.png", fullPage: true });
      await coordinator.close();
      await running;
    } finally {
      raw.close();
      await dashboard.close();
      await Promise.all(node.map((c) => c.close()));
      await coordinator.close();
    }
  }, 90_000);
});

describe("pages behind an API token", () => {
  it("a page without the token is asked for it, asked again after a wrong one, and keeps it for the tab", async () => {
    const token = "browser-token-0123456789";
    const coordinator = await startCoordinator({
      model: "mlp",
      rounds: 1,
      runDir: null,
      apiToken: token,
      serveDemoData: true,
    });
    const dashboard = await browser.context.newPage();
    let clientPage: Page | undefined;
    const showsRun = () =>
      dashboard.waitForFunction(
        (runId) => document.getElementById("run")?.textContent?.includes(runId) === true,
        coordinator.runId,
        { polling: 100, timeout: 10_000 },
      );
    try {
      await dashboard.goto(`${coordinator.url}/`);
      await dashboard.fill("#token-input", "wrong-token-0123456789");
      await dashboard.click("#token-form button");
      await dashboard.waitForSelector("#token-form label:has-text('refused')");
      await dashboard.fill("#token-input", token);
      await dashboard.click("#token-form button");
      await showsRun();
      expect(await dashboard.evaluate(() => sessionStorage.getItem("cohort.apiToken"))).toBe(token);
      // The tab keeps it: a reload polls with the token and asks nothing.
      await dashboard.reload();
      await showsRun();
      expect(await dashboard.$("#token-form")).toBeNull();
      // The demo client page asks as well before it loads its shard.
      clientPage = await browser.context.newPage();
      await clientPage.goto(`${coordinator.url}/client?index=0&count=3&limit=50&id=page-token`);
      await clientPage.fill("#token-input", token);
      await clientPage.click("#token-form button");
      await clientPage.waitForFunction(
        () => (globalThis as unknown as { cohortPage: { examples: number } }).cohortPage.examples,
        undefined,
        { polling: 100, timeout: 10_000 },
      );
      expect(await clientPage.textContent("#examples")).toBe("50 digits");
    } catch (error) {
      throw new Error(`${String(error)}\npage errors: ${browser.errors.join("\n")}`, {
        cause: error,
      });
    } finally {
      await dashboard.close();
      await clientPage?.close();
      await coordinator.close();
    }
  }, 60_000);
});
