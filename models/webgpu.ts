/** WebGPU in Node through Dawn (npm `webgpu`): install `navigator.gpu` and describe the adapter. */
import { existsSync, readdirSync } from "node:fs";
import { basename, join } from "node:path";
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
const SOFTWARE_ICD = /lvp_icd|swiftshader|lavapipe|llvmpipe/i;

/**
 * Whether a hardware Vulkan driver is installed, judged from the ICD manifests the loader would
 * read and the device nodes, without loading Dawn (whose probe prints driver warnings). Only
 * `auto` selection asks; an explicit `webgpu` request always probes.
 */
export function hasHardwareVulkanDriver(env: NodeJS.ProcessEnv = process.env): boolean {
  const listed = (env.VK_DRIVER_FILES ?? env.VK_ICD_FILENAMES ?? "").split(":").filter(Boolean);
  const dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"];
  const manifests =
    listed.length > 0
      ? listed
      : dirs.flatMap((d) => (existsSync(d) ? readdirSync(d).map((f) => join(d, f)) : []));
  const hardware = manifests.filter((m) => !SOFTWARE_ICD.test(basename(m)));
  if (hardware.some((m) => /nvidia/i.test(basename(m))))
    return existsSync("/dev/nvidiactl") || existsSync("/dev/nvidia0");
  const dri =
    existsSync("/dev/dri") && readdirSync("/dev/dri").some((f) => f.startsWith("renderD"));
  return hardware.length > 0 && dri;
}

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
