/** tfjs backend selection in browsers: webgpu → webgl → wasm → cpu, or the one asked for. */
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";
import { withDefaults } from "../protocol/options.js";
import { registerWasmTrainingKernels } from "./wasm-kernels.js";

/** Backends a page can ask for; `auto` tries them fastest first. */
export const BROWSER_BACKENDS = ["webgpu", "webgl", "wasm", "cpu"] as const;
export type BrowserBackend = (typeof BROWSER_BACKENDS)[number];
export type BrowserBackendRequest = BrowserBackend | "auto";

/** Options of `selectBrowserBackend`. */
export interface BrowserBackendOptions {
  /**
   * URL prefix the tfjs wasm binaries are fetched from (ending in `/`); the coordinator serves
   * them at `/static/wasm/`. @default "/static/wasm/"
   */
  wasmPaths: string;
  /**
   * wasm threads when the page is cross-origin isolated (the coordinator's COOP/COEP headers make
   * it so). @default navigator.hardwareConcurrency, at most 4
   */
  wasmThreads: number | undefined;
}

/** The backend a page trains on. */
export interface SelectedBrowserBackend {
  name: BrowserBackend;
  /** e.g. `wasm: simd, 4 threads` or `webgl: ANGLE (NVIDIA …)`. */
  label: string;
}

/** Minimal WebGPU shapes (TypeScript's DOM lib has no WebGPU types yet). */
interface GpuAdapterLike {
  isFallbackAdapter?: boolean;
  info?: { vendor?: string; architecture?: string; description?: string };
}
interface GpuLike {
  requestAdapter(): Promise<GpuAdapterLike | null>;
}

/** Renderers that emulate a GPU on the CPU: slower than wasm, so taken only on request. */
const SOFTWARE_GPU = /swiftshader|llvmpipe|softpipe|software|basic render/i;

/** Parse a `?backend=` value. */
export function parseBrowserBackendRequest(value: string): BrowserBackendRequest {
  if (value === "auto" || (BROWSER_BACKENDS as readonly string[]).includes(value)) {
    return value as BrowserBackendRequest;
  }
  throw new CohortError(
    "INVALID_OPTION",
    `unknown backend "${value}"; choose auto, ${BROWSER_BACKENDS.join(", ")}`,
  );
}

async function webgpuLabel(explicit: boolean): Promise<string> {
  const gpu = (globalThis.navigator as { gpu?: GpuLike } | undefined)?.gpu;
  const adapter = await gpu?.requestAdapter();
  if (adapter === undefined || adapter === null) throw new Error("no WebGPU adapter");
  const info = adapter.info ?? {};
  const label = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ");
  if (!explicit && (adapter.isFallbackAdapter === true || SOFTWARE_GPU.test(label))) {
    throw new Error(`WebGPU adapter is software (${label || "fallback"})`);
  }
  return `webgpu: ${label || "adapter"}`;
}

function webglLabel(explicit: boolean): string {
  const gl = document.createElement("canvas").getContext("webgl2");
  if (gl === null) throw new Error("no WebGL2 context");
  const ext = gl.getExtension("WEBGL_debug_renderer_info");
  const renderer = String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
  gl.getExtension("WEBGL_lose_context")?.loseContext();
  if (!explicit && SOFTWARE_GPU.test(renderer)) {
    throw new Error(`WebGL renderer is software (${renderer})`);
  }
  return `webgl: ${renderer}`;
}

async function tryStart(
  name: BrowserBackend,
  explicit: boolean,
  opts: BrowserBackendOptions,
): Promise<SelectedBrowserBackend> {
  switch (name) {
    case "webgpu": {
      const label = await webgpuLabel(explicit);
      await import("@tensorflow/tfjs-backend-webgpu");
      await activate("webgpu");
      return { name, label };
    }
    case "webgl": {
      const label = webglLabel(explicit);
      await activate("webgl");
      return { name, label };
    }
    case "wasm": {
      const wasm = await import("@tensorflow/tfjs-backend-wasm");
      wasm.setWasmPaths(opts.wasmPaths);
      const threads = opts.wasmThreads ?? Math.min(4, navigator.hardwareConcurrency || 1);
      wasm.setThreadsCount(threads);
      await activate("wasm");
      registerWasmTrainingKernels();
      const simd = (await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")) === true;
      const multi = (await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT")) === true;
      const n = multi ? wasm.getThreadsCount() : 1;
      const parts = [simd ? "simd" : "no simd", `${n} thread${n === 1 ? "" : "s"}`];
      return { name, label: `wasm: ${parts.join(", ")}` };
    }
    case "cpu":
      await activate("cpu");
      return { name, label: "cpu" };
    default: {
      const exhaustive: never = name;
      throw new CohortError("BACKEND_UNAVAILABLE", `unknown backend ${String(exhaustive)}`);
    }
  }
}

async function activate(tfBackend: string): Promise<void> {
  if (!(await tf.setBackend(tfBackend))) {
    throw new Error(`tfjs backend ${tfBackend} failed to initialise`);
  }
  await tf.ready();
}

/**
 * Start a tfjs backend in a browser. `auto` tries webgpu → webgl → wasm → cpu, skipping
 * software-emulated GPUs (SwiftShader, llvmpipe), which train slower than wasm; an explicitly
 * requested backend is used even on a software GPU, and one that cannot start throws
 * `BACKEND_UNAVAILABLE`. With wasm, the Cohort training kernels are registered.
 */
export async function selectBrowserBackend(
  request: BrowserBackendRequest = "auto",
  options: Partial<BrowserBackendOptions> = {},
): Promise<SelectedBrowserBackend> {
  const opts = withDefaults<BrowserBackendOptions>(
    { wasmPaths: "/static/wasm/", wasmThreads: undefined },
    options,
  );
  const name = parseBrowserBackendRequest(request);
  if (name !== "auto") {
    try {
      return await tryStart(name, true, opts);
    } catch (cause) {
      if (cause instanceof CohortError) throw cause;
      const reason = cause instanceof Error ? cause.message : String(cause);
      throw new CohortError("BACKEND_UNAVAILABLE", `backend ${request} cannot start: ${reason}`, {
        cause,
      });
    }
  }
  const reasons: string[] = [];
  for (const candidate of BROWSER_BACKENDS) {
    try {
      return await tryStart(candidate, false, opts);
    } catch (cause) {
      reasons.push(`${candidate}: ${cause instanceof Error ? cause.message : String(cause)}`);
    }
  }
  throw new CohortError(
    "BACKEND_UNAVAILABLE",
    `no tfjs backend could start (${reasons.join("; ")})`,
  );
}
