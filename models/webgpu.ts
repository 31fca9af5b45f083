/** WebGPU in Node through Dawn (npm `webgpu`): install `navigator.gpu` and describe the adapter. */
import { CohortError } from "../protocol/errors.js";

/** What Cohort reports of a WebGPU adapter. */
export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (SwiftShader, lavapipe, llvmpipe, WARP): slower than wasm. */
  software: boolean;
}

interface GpuAdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

interface GpuAdapterLike {
  info?: GpuAdapterInfoLike;
  requestAdapterInfo?: () => Promise<GpuAdapterInfoLike>;
  isFallbackAdapter?: boolean;
}

interface GpuLike {
  requestAdapter(options?: { powerPreference?: string }): Promise<GpuAdapterLike | null>;
}

interface DawnModule {
  create(flags: string[]): GpuLike;
  globals: Record<string, unknown>;
}

const SOFTWARE = /swiftshader|lavapipe|llvmpipe|softpipe|warp|basic render|cpu/i;

let installed: Promise<GpuLike> | null = null;

/** Describe an adapter; software adapters are flagged by name or by the fallback bit. */
export function describeAdapter(info: GpuAdapterInfoLike, fallback = false): AdapterDescription {
  const d = {
    vendor: info.vendor ?? "",
    architecture: info.architecture ?? "",
    device: info.device ?? "",
    description: info.description ?? "",
  };
  const text = `${d.vendor} ${d.architecture} ${d.device} ${d.description}`;
  return { ...d, software: fallback || info.isFallbackAdapter === true || SOFTWARE.test(text) };
}

/** One line for logs, e.g. `nvidia hopper (NVIDIA H200)`. */
export function adapterLabel(a: AdapterDescription): string {
  const name = [a.vendor, a.architecture].filter(Boolean).join(" ") || "unknown adapter";
  const detail = a.description || a.device;
  return `${name}${detail ? ` (${detail})` : ""}${a.software ? " [software]" : ""}`;
}

/**
 * Give this Node process a `navigator.gpu` backed by Dawn, once. Browsers already have one.
 * Throws `BACKEND_UNAVAILABLE` when the optional `webgpu` package is absent.
 */
export function installNodeWebGpu(): Promise<GpuLike> {
  installed ??= (async () => {
    const nav = (globalThis as { navigator?: { gpu?: GpuLike } }).navigator;
    if (nav?.gpu) return nav.gpu;
    let dawn: DawnModule;
    try {
      dawn = (await import("webgpu")) as unknown as DawnModule;
    } catch (cause) {
      throw new CohortError(
        "BACKEND_UNAVAILABLE",
        "the optional package webgpu (Dawn for Node) is not installed",
        { cause },
      );
    }
    Object.assign(globalThis, dawn.globals);
    const gpu = dawn.create([]);
    if (nav === undefined) {
      Object.defineProperty(globalThis, "navigator", {
        value: { gpu },
        configurable: true,
        writable: true,
      });
    } else {
      Object.defineProperty(nav, "gpu", { value: gpu, configurable: true });
    }
    return gpu;
  })();
  installed.catch(() => {
    installed = null;
  });
  return installed;
}

/** The adapter WebGPU would give tfjs, or `BACKEND_UNAVAILABLE` when there is none. */
export async function probeWebGpuAdapter(): Promise<AdapterDescription> {
  const gpu = await installNodeWebGpu();
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (adapter === null) {
    throw new CohortError(
      "BACKEND_UNAVAILABLE",
      "WebGPU found no adapter (no GPU driver or Vulkan loader)",
    );
  }
  const info = adapter.info ?? (await adapter.requestAdapterInfo?.()) ?? {};
  return describeAdapter(info, adapter.isFallbackAdapter === true);
}
