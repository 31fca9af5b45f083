/** tfjs backend selection: the fastest backend this process can start, or the one asked for. */
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import createDebug from "debug";
import { CohortError } from "../protocol/errors.js";
import { registerWasmTrainingKernels } from "./wasm-kernels.js";
import { registerWebGpuConvKernels } from "./webgpu-kernels.js";
import {
  adapterLabel,
  hasHardwareVulkanDriver,
  probeWebGpuAdapter,
  type AdapterDescription,
} from "./webgpu.js";

const debug = createDebug("cohort:models:backend");

/**
 * Backends a Node process can ask for; `auto` tries them fastest first. `webgpu` runs through
 * Dawn (npm `webgpu`) and is taken automatically only on a hardware adapter.
 */
export const NODE_BACKENDS = ["tfjs-node-gpu", "webgpu", "tfjs-node", "wasm", "cpu"] as const;
export type NodeBackend = (typeof NODE_BACKENDS)[number];
export type BackendRequest = NodeBackend | "auto";

/** The backend a process trains on. */
export interface SelectedBackend {
  /** What was loaded, e.g. `tfjs-node` or `wasm`. */
  name: NodeBackend;
  /** The tfjs backend name (`tensorflow`, `webgpu`, `wasm`, `cpu`). */
  tfBackend: string;
  /** The GPU adapter, for `webgpu`. */
  adapter?: AdapterDescription;
}

/** A one-line description of a selected backend, e.g. `webgpu: nvidia hopper (NVIDIA H200)`. */
export function backendLabel(b: SelectedBackend): string {
  return b.adapter ? `${b.name}: ${adapterLabel(b.adapter)}` : b.name;
}

let selected: Promise<SelectedBackend> | null = null;

/** Parse a `--backend` value. */
export function parseBackendRequest(value: string): BackendRequest {
  if (value === "auto" || (NODE_BACKENDS as readonly string[]).includes(value)) {
    return value as BackendRequest;
  }
  throw new CohortError(
    "INVALID_OPTION",
    `unknown backend "${value}"; choose auto, ${NODE_BACKENDS.join(", ")}`,
  );
}

/**
 * tfjs-node(-gpu) are optional: absent, or present without the native library their install
 * script downloads. Importing a package without its library half-registers kernels before it
 * fails, so check for the library first.
 */
function assertNativeBinding(pkg: string): void {
  let root: string;
  try {
    root = dirname(createRequire(import.meta.url).resolve(`${pkg}/package.json`));
  } catch {
    throw new CohortError("BACKEND_UNAVAILABLE", `${pkg} is not installed`);
  }
  const lib = join(root, "lib");
  const found =
    existsSync(lib) && readdirSync(lib).some((d) => existsSync(join(lib, d, "tfjs_binding.node")));
  if (!found) {
    throw new CohortError("BACKEND_UNAVAILABLE", `${pkg} is installed without its native library`);
  }
}

async function tryStart(name: NodeBackend, explicit: boolean): Promise<SelectedBackend> {
  switch (name) {
    case "tfjs-node-gpu":
    case "tfjs-node": {
      const pkg = `@tensorflow/${name}`;
      assertNativeBinding(pkg);
      await import(pkg);
      return activate(name, "tensorflow");
    }
    case "webgpu": {
      if (!explicit && !hasHardwareVulkanDriver()) {
        throw new CohortError("BACKEND_UNAVAILABLE", "no hardware Vulkan driver for WebGPU");
      }
      const adapter = await probeWebGpuAdapter();
      if (adapter.software && !explicit) {
        // A CPU-emulated GPU is slower than wasm: only on request.
        throw new CohortError(
          "BACKEND_UNAVAILABLE",
          `WebGPU adapter is software (${adapterLabel(adapter)})`,
        );
      }
      await import("@tensorflow/tfjs-backend-webgpu");
      registerWebGpuConvKernels();
      return { ...(await activate(name, "webgpu")), adapter };
    }
    case "wasm": {
      await import("@tensorflow/tfjs-backend-wasm");
      const backend = await withoutRethrowingListeners(() => activate(name, "wasm"));
      registerWasmTrainingKernels();
      return backend;
    }
    case "cpu":
      return activate(name, "cpu");
    default: {
      const exhaustive: never = name;
      throw new CohortError("BACKEND_UNAVAILABLE", `unknown backend ${String(exhaustive)}`);
    }
  }
}

/** The process events whose listeners decide what an uncaught error does. */
const FATAL_EVENTS = ["uncaughtException", "unhandledRejection"] as const;

/**
 * Run `start`, then remove the listeners it added that only rethrow. The wasm backend's
 * emscripten glue adds such a listener for uncaught exceptions and one for unhandled rejections:
 * a listener that throws makes Node exit 7 and print the glue's `throw` as the error's origin,
 * for every uncaught error in the process, the program's own included. Without them Node prints
 * the error and exits 1; listeners the program installed stay, and nothing is swallowed.
 */
async function withoutRethrowingListeners<T>(start: () => Promise<T>): Promise<T> {
  // As a plain emitter: process's typed overloads take one event name at a time.
  const emitter: NodeJS.EventEmitter = process;
  const before = new Map(FATAL_EVENTS.map((event) => [event, new Set(emitter.listeners(event))]));
  try {
    return await start();
  } finally {
    for (const event of FATAL_EVENTS) {
      for (const listener of emitter.listeners(event) as ((...args: unknown[]) => void)[]) {
        if (!before.get(event)?.has(listener) && /\bthrow\b/.test(String(listener))) {
          emitter.off(event, listener);
          debug("removed the wasm glue's rethrowing %s listener", event);
        }
      }
    }
  }
}

async function activate(name: NodeBackend, tfBackend: string): Promise<SelectedBackend> {
  if (!(await tf.setBackend(tfBackend))) {
    throw new CohortError("BACKEND_UNAVAILABLE", `tfjs backend ${tfBackend} failed to initialise`);
  }
  await tf.ready();
  return { name, tfBackend };
}

async function select(request: BackendRequest): Promise<SelectedBackend> {
  if (request !== "auto") return useBackend(request);
  for (const name of NODE_BACKENDS) {
    try {
      const backend = await tryStart(name, false);
      debug("selected %s", name);
      return backend;
    } catch (cause) {
      debug("backend %s unavailable: %s", name, cause instanceof Error ? cause.message : cause);
    }
  }
  throw new CohortError("BACKEND_UNAVAILABLE", "no tfjs backend could start");
}

/**
 * Start `name` now and make it tfjs's current backend, regardless of an earlier selection
 * (benchmarks and tests that compare backends in one process). Software WebGPU adapters are
 * allowed, as for any explicit request.
 */
export async function useBackend(name: NodeBackend): Promise<SelectedBackend> {
  try {
    return await tryStart(name, true);
  } catch (cause) {
    throw toUnavailable(name, cause);
  }
}

function toUnavailable(name: string, cause: unknown): CohortError {
  const reason = cause instanceof Error ? cause.message.split("\n")[0] : String(cause);
  return new CohortError("BACKEND_UNAVAILABLE", `backend ${name} cannot start: ${reason}`, {
    cause,
  });
}

/**
 * Select the tfjs backend once per process: `auto` tries tfjs-node-gpu → webgpu (hardware
 * adapters only) → tfjs-node → wasm → cpu.
 * A missing optional package is skipped; an explicitly requested backend that cannot start
 * throws `BACKEND_UNAVAILABLE`. Later calls return the first selection.
 */
export function selectBackend(request: BackendRequest = "auto"): Promise<SelectedBackend> {
  if (selected === null) {
    selected = select(request);
    selected.catch(() => {
      selected = null;
    });
  }
  return selected;
}
