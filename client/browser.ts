/**
 * The browser build's entry (`dist/browser/cohort.js`): the same `CohortClient` API, training
 * on webgpu → webgl → wasm → cpu, and a helper to fetch a coordinator's demo MNIST shard.
 */
import { decode } from "../protocol/codec.js";
import type { Dataset } from "../protocol/dataset.js";
import { CohortError } from "../protocol/errors.js";
import { parseDataset } from "../protocol/guards.js";
import {
  selectBrowserBackend,
  type BrowserBackendOptions,
  type BrowserBackendRequest,
} from "../models/browser-backend.js";
import { ClientCore, coordinatorUrls, type ClientOptions } from "./core.js";

export type { ClientProgress, ClientRoundReport } from "./core.js";
export type { ClientMod, FitIns, LocalFit } from "./fit-handler.js";
export type { Dataset } from "../protocol/dataset.js";
export { CohortError } from "../protocol/errors.js";
export { DEFAULT_SECURE_FLOORS, DEFAULT_TASK_LIMITS, parseFloors } from "./options.js";
export {
  BROWSER_BACKENDS,
  parseBrowserBackendRequest,
  selectBrowserBackend,
  type BrowserBackend,
  type BrowserBackendRequest,
  type SelectedBrowserBackend,
} from "../models/browser-backend.js";

/** Options of the browser `CohortClient`: the Node options plus where the wasm files are. */
export type BrowserClientOptions = ClientOptions<BrowserBackendRequest> &
  Partial<BrowserBackendOptions>;

/**
 * A federated-learning client in a web page. `url` is the coordinator (the page's origin when
 * the coordinator serves the page); wasm binaries come from `${url}/static/wasm/` by default.
 *
 * @example
 * const client = new CohortClient({ url: location.origin, data });
 * await client.run();
 */
export class CohortClient extends ClientCore<BrowserBackendRequest> {
  constructor(options: Partial<BrowserClientOptions> & Pick<BrowserClientOptions, "url" | "data">) {
    const wasmPaths =
      options.wasmPaths ?? new URL("/static/wasm/", coordinatorUrls(options.url)[0]).href;
    super(options, {
      backend: "auto",
      selectBackend: (request) =>
        selectBrowserBackend(request, { wasmPaths, wasmThreads: options.wasmThreads }),
    });
  }
}

/** Which demo shard to fetch: shard `index` of `count`, at most `limit` examples. */
export interface ShardRequest {
  index: number;
  count: number;
  /** @default the whole shard */
  limit?: number;
}

/** How `loadDigitsShard` reaches the coordinator. */
export interface ShardFetchOptions {
  /** The coordinator's API token (its `apiToken`), sent as `Authorization: Bearer`. @default none */
  token?: string;
  /** The `fetch` to call (the demo page's asks for the token on a 401). @default globalThis.fetch */
  fetch?: (url: URL, init: RequestInit) => Promise<Response>;
}

/**
 * Fetch shard `index` of `count` of the coordinator's MNIST training digits
 * (`GET /data/mnist-shard`, msgpack), checked by the dataset guard. The coordinator serves them
 * only with `serveDemoData` (`--serve-demo-data`); a page on another origin also needs its
 * origin in the coordinator's `corsOrigins`.
 */
export async function loadDigitsShard(
  url: string,
  shard: ShardRequest,
  options: ShardFetchOptions = {},
): Promise<Dataset> {
  const query = new URLSearchParams({ index: String(shard.index), count: String(shard.count) });
  if (shard.limit !== undefined) query.set("limit", String(shard.limit));
  const get = options.fetch ?? ((u: URL, init: RequestInit) => fetch(u, init));
  const response = await get(new URL(`/data/mnist-shard?${query}`, url), {
    headers: options.token === undefined ? {} : { Authorization: `Bearer ${options.token}` },
  });
  if (!response.ok) {
    throw new CohortError(
      response.status === 401 ? "UNAUTHORIZED" : "DATASET_NOT_FOUND",
      `GET /data/mnist-shard: ${response.status} ${await response.text()}`,
    );
  }
  return parseDataset(decode(new Uint8Array(await response.arrayBuffer())));
}
