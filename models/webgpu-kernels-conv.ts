/**
 * WGSL programs for the conv gradients on tfjs-backend-webgpu (see `webgpu-kernels.ts`): both are
 * one shared-memory tiled GEMM whose operands are gathered from the NHWC tensors on the fly.
 * - dW [KH·KW·Cin, Cout] = A [KH·KW·Cin, N·Ho·Wo] × dy [N·Ho·Wo, Cout], A being the transposed
 *   im2col of x. Its reduction (N·Ho·Wo, 78,400 at batch 100) dwarfs its output (800 × 64), so
 *   the reduction is split over workgroups (split-K) and the partial sums are added by a second,
 *   flat program.
 * - dX [N·H·W, Cin] = A [N·H·W, KH·KW·Cout] × W' [KH·KW·Cout, Cin]: a transposed convolution,
 *   A gathering dy at (r + top − i) / stride where that divides exactly and lies inside dy.
 * Sizes are baked into the shader as constants (the CNN has a handful of shapes, each compiled
 * once and cached by its shader key), so the index arithmetic divides by constants.
 */
import type * as tf from "@tensorflow/tfjs";
import type { DataType, KernelBackend, TensorInfo } from "@tensorflow/tfjs";

/** The parts of tfjs-backend-webgpu's `WebGPUProgram` these programs fill in. */
export interface WebGpuProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[]; y?: number[]; z?: number[] };
  dispatch: [number, number, number];
  variableNames: string[];
  workgroupSize: [number, number, number];
  size?: boolean;
  uniforms?: string;
  getUserCode(): string;
}

/** The parts of tfjs-backend-webgpu's `WebGPUBackend` these kernels use. */
export interface WebGpuBackend extends KernelBackend {
  runWebGPUProgram(
    program: WebGpuProgram,
    inputs: TensorInfo[],
    outputDtype: DataType,
    programDefinedUniform?: { type: string; data: number[] }[],
  ): TensorInfo;
}

/** Depth of one shared-memory tile along the reduction. */
const TK = 16;
/** Outputs per thread along each side of the tile. */
const PER_THREAD = 4;
/** About how many workgroups a split-K dispatch aims for (an H200 has 132 SMs). */
const TARGET_WORKGROUPS = 528;
/** Every split reduces at least this many tiles, so partial sums stay few. */
const MIN_TILES_PER_SPLIT = 8;

/** A GEMM whose operands are WGSL expressions over `m`, `n`, `k` (checked in range before). */
interface GemmSpec {
  key: string;
  inputs: [string, string];
  m: number;
  n: number;
  k: number;
  /** WGSL body of `fn loadA(m: i32, k: i32) -> f32`. */
  loadA: string;
  /** WGSL body of `fn loadB(k: i32, n: i32) -> f32`. */
  loadB: string;
  /** Which index of A is contiguous in memory, so the cooperative loads coalesce. */
  aContiguous: "m" | "k";
  bContiguous: "n" | "k";
}

/** Tile sizes and split of a GEMM; exported for tests of the heuristic. */
export interface GemmPlan {
  tm: number;
  tn: number;
  splits: number;
  kPerSplit: number;
}

/** Pick tiles (narrow for a thin side) and a split of K that fills the GPU. */
export function planGemm(m: number, n: number, k: number): GemmPlan {
  const tm = m <= 32 ? 32 : 64;
  const tn = n <= 32 ? 32 : 64;
  const tiles = Math.ceil(m / tm) * Math.ceil(n / tn);
  const kTiles = Math.ceil(k / TK);
  const wanted = Math.max(1, Math.round(TARGET_WORKGROUPS / tiles));
  const most = Math.max(1, Math.floor(kTiles / MIN_TILES_PER_SPLIT));
  const tilesPerSplit = Math.ceil(kTiles / Math.min(wanted, most));
  return { tm, tn, splits: Math.ceil(kTiles / tilesPerSplit), kPerSplit: tilesPerSplit * TK };
}

/**
 * Threads fill a [TK][cols] tile cooperatively; `fast` names the index that is contiguous in
 * memory, so that neighbouring threads read neighbouring addresses.
 */
function loadLoop(target: "As" | "Bs", cols: number, fast: "k" | "col", threads: number): string {
  const decode =
    fast === "col"
      ? `let kk = i / ${cols}; let jj = i % ${cols};`
      : `let jj = i / ${TK}; let kk = i % ${TK};`;
  const load =
    target === "As"
      ? "loadAChecked(m0 + jj, kt + kk, kEnd)"
      : "loadBChecked(kt + kk, n0 + jj, kEnd)";
  return `for (var i = lid; i < ${TK * cols}; i = i + ${threads}) {
        ${decode}
        ${target}[kk][jj] = ${load};
      }`;
}

function gemmProgram(spec: GemmSpec, plan: GemmPlan): WebGpuProgram {
  const { tm, tn, splits, kPerSplit } = plan;
  const wx = tn / PER_THREAD;
  const wy = tm / PER_THREAD;
  const threads = wx * wy;
  const { m, n, k } = spec;
  const tilesPerSplit = kPerSplit / TK;
  const loadA = loadLoop("As", tm, spec.aContiguous === "m" ? "col" : "k", threads);
  const loadB = loadLoop("Bs", tn, spec.bContiguous === "n" ? "col" : "k", threads);
  return {
    outputShape: [splits, m, n],
    shaderKey: `cohort_${spec.key}_${tm}_${tn}_${splits}_${kPerSplit}`,
    dispatchLayout: { x: [2], y: [1], z: [0] },
    dispatch: [Math.ceil(n / tn), Math.ceil(m / tm), splits],
    variableNames: spec.inputs,
    workgroupSize: [wx, wy, 1],
    getUserCode: () => `
    var<workgroup> As: array<array<f32, ${tm}>, ${TK}>;
    var<workgroup> Bs: array<array<f32, ${tn}>, ${TK}>;

    fn loadA(m: i32, k: i32) -> f32 { ${spec.loadA} }
    fn loadB(k: i32, n: i32) -> f32 { ${spec.loadB} }
    fn loadAChecked(m: i32, k: i32, kEnd: i32) -> f32 {
      if (m >= ${m} || k >= kEnd) { return 0.0; }
      return loadA(m, k);
    }
    fn loadBChecked(k: i32, n: i32, kEnd: i32) -> f32 {
      if (n >= ${n} || k >= kEnd) { return 0.0; }
      return loadB(k, n);
    }

    fn main() {
      let tx = i32(localId.x);
      let ty = i32(localId.y);
      let lid = i32(localIndex);
      let n0 = i32(workgroupId.x) * ${tn};
      let m0 = i32(workgroupId.y) * ${tm};
      let split = i32(workgroupId.z);
      let kBegin = split * ${kPerSplit};
      let kEnd = min(kBegin + ${kPerSplit}, ${k});
      var acc: array<array<f32, ${PER_THREAD}>, ${PER_THREAD}>;
      // A constant trip count keeps the barriers in uniform control flow.
      for (var t = 0; t < ${tilesPerSplit}; t = t + 1) {
        let kt = kBegin + t * ${TK};
        ${loadA}
        ${loadB}
        workgroupBarrier();
        for (var kk = 0; kk < ${TK}; kk = kk + 1) {
          var a: array<f32, ${PER_THREAD}>;
          var b: array<f32, ${PER_THREAD}>;
          for (var i = 0; i < ${PER_THREAD}; i = i + 1) { a[i] = As[kk][ty + i * ${wy}]; }
          for (var j = 0; j < ${PER_THREAD}; j = j + 1) { b[j] = Bs[kk][tx + j * ${wx}]; }
          for (var i = 0; i < ${PER_THREAD}; i = i + 1) {
            for (var j = 0; j < ${PER_THREAD}; j = j + 1) {
              acc[i][j] = fma(a[i], b[j], acc[i][j]);
            }
          }
        }
        workgroupBarrier();
      }
      for (var i = 0; i < ${PER_THREAD}; i = i + 1) {
        let row = m0 + ty + i * ${wy};
        for (var j = 0; j < ${PER_THREAD}; j = j + 1) {
          let col = n0 + tx + j * ${wx};
          // Reading the uniforms keeps their binding in the pipeline's automatic layout.
          if (row < uniforms.outShape.y && col < uniforms.outShape.z) {
            result[(split * ${m} + row) * ${n} + col] = acc[i][j];
          }
        }
      }
    }
  `,
  };
}

/** out[i] = Σ_s partial[s, i]: the second pass of a split-K GEMM. */
function sumSplitsProgram(splits: number, size: number): WebGpuProgram {
  const workgroup = 64;
  return {
    outputShape: [size],
    shaderKey: `cohort_sumSplits_${splits}`,
    dispatchLayout: { x: [0] },
    dispatch: [Math.ceil(size / workgroup), 1, 1],
    variableNames: ["partial"],
    workgroupSize: [workgroup, 1, 1],
    size: true,
    getUserCode: () => `
    fn main(index: i32) {
      if (index < uniforms.size) {
        var sum = 0.0;
        for (var s = 0; s < ${splits}; s = s + 1) { sum = sum + partial[s * uniforms.size + index]; }
        result[index] = sum;
      }
    }
  `,
  };
}

/** Run a GEMM and, when K was split, add up the splits; returns a [M·N] float32 tensor. */
function runGemm(backend: WebGpuBackend, spec: GemmSpec, inputs: TensorInfo[]): TensorInfo {
  const plan = planGemm(spec.m, spec.n, spec.k);
  const partial = backend.runWebGPUProgram(gemmProgram(spec, plan), inputs, "float32", []);
  if (plan.splits === 1) return partial;
  // The partials are viewed as [splits, M·N]: the program only reads the flat buffer.
  const flat = { ...partial, shape: [plan.splits, spec.m * spec.n] };
  try {
    return backend.runWebGPUProgram(
      sumSplitsProgram(plan.splits, spec.m * spec.n),
      [flat],
      "float32",
      [],
    );
  } finally {
    backend.disposeData(partial.dataId);
  }
}

/** The largest GEMM side a dispatch takes (65,535 workgroups of 32 or 64 rows), and i32 indices. */
export function gemmFits(m: number, n: number, k: number, elements: number[]): boolean {
  const plan = planGemm(m, n, k);
  return (
    Math.ceil(m / plan.tm) <= 65_535 &&
    Math.ceil(n / plan.tn) <= 65_535 &&
    plan.splits * m * n < 2 ** 31 &&
    elements.every((e) => e < 2 ** 31)
  );
}

/** dW of an NHWC conv with dilation 1, as one (split-K) GEMM. */
export function filterGradient(
  backend: WebGpuBackend,
  x: TensorInfo,
  dy: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { filterHeight: kh, filterWidth: kw, inChannels: cin, outChannels: cout } = info;
  const { inHeight: h, inWidth: w, outHeight: ho, outWidth: wo } = info;
  const spec: GemmSpec = {
    key: `dW_${[kw, cin, cout, h, w, ho, wo, info.strideHeight, info.strideWidth].join("_")}_${info.padInfo.top}_${info.padInfo.left}_${info.batchSize}`,
    inputs: ["x", "dy"],
    m: kh * kw * cin,
    n: cout,
    k: info.batchSize * ho * wo,
    loadA: `
      let ci = m % ${cin}; let tap = m / ${cin};
      let wc = tap % ${kw}; let wr = tap / ${kw};
      let yc = k % ${wo}; let rest = k / ${wo};
      let yr = rest % ${ho}; let b = rest / ${ho};
      let ih = yr * ${info.strideHeight} - ${info.padInfo.top} + wr;
      let iw = yc * ${info.strideWidth} - ${info.padInfo.left} + wc;
      if (ih < 0 || ih >= ${h} || iw < 0 || iw >= ${w}) { return 0.0; }
      return x[((b * ${h} + ih) * ${w} + iw) * ${cin} + ci];`,
    loadB: `return dy[k * ${cout} + n];`,
    aContiguous: "m",
    bContiguous: "n",
  };
  const out = runGemm(backend, spec, [x, dy]);
  return { ...out, shape: [kh, kw, cin, cout] };
}

/** dX of an NHWC conv with dilation 1: a transposed conv, as one GEMM over the taps and Cout. */
export function inputGradient(
  backend: WebGpuBackend,
  dy: TensorInfo,
  filter: TensorInfo,
  info: tf.backend_util.Conv2DInfo,
): TensorInfo {
  const { filterHeight: kh, filterWidth: kw, inChannels: cin, outChannels: cout } = info;
  const { inHeight: h, inWidth: w, outHeight: ho, outWidth: wo } = info;
  const { strideHeight: sh, strideWidth: sw } = info;
  const spec: GemmSpec = {
    key: `dX_${[kw, cin, cout, h, w, ho, wo, sh, sw].join("_")}_${info.padInfo.top}_${info.padInfo.left}_${info.batchSize}`,
    inputs: ["dy", "W"],
    m: info.batchSize * h * w,
    n: cin,
    k: kh * kw * cout,
    loadA: `
      let co = k % ${cout}; let tap = k / ${cout};
      let wc = tap % ${kw}; let wr = tap / ${kw};
      let c = m % ${w}; let rest = m / ${w};
      let r = rest % ${h}; let b = rest / ${h};
      let nr = r + ${info.padInfo.top} - wr;
      let nc = c + ${info.padInfo.left} - wc;
      if (nr < 0 || nc < 0) { return 0.0; }
      let yr = nr / ${sh}; let yc = nc / ${sw};
      if (yr * ${sh} != nr || yc * ${sw} != nc || yr >= ${ho} || yc >= ${wo}) { return 0.0; }
      return dy[((b * ${ho} + yr) * ${wo} + yc) * ${cout} + co];`,
    loadB: `
      let co = k % ${cout}; let tap = k / ${cout};
      return W[(tap * ${cin} + n) * ${cout} + co];`,
    aContiguous: "k",
    bContiguous: "k",
  };
  const out = runGemm(backend, spec, [dy, filter]);
  return { ...out, shape: [info.batchSize, h, w, cin] };
}
