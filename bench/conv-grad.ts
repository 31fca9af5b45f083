/**
 * Times the McMahan CNN's conv gradients on webgpu: Cohort's kernels vs tfjs-webgpu's own, side
 * by side, and prints ratios. `BENCH_BATCHES=10,50,100 BENCH_REPS=20 node dist/bench/conv-grad.js`
 * (bench/gpu/run.sh runs it on a GPU machine; on SwiftShader use tiny values, informational only).
 */
import * as tf from "@tensorflow/tfjs";
import {
  registerWebGpuConvKernels,
  unregisterWebGpuConvKernels,
  useBackend,
} from "../models/index.js";

const batches = (process.env.BENCH_BATCHES ?? "10,50,100").split(",").map(Number);
const reps = Number(process.env.BENCH_REPS ?? 20);
/** The CNN's two conv layers (models/builtin.ts): 5×5, 'same', stride 1, NHWC. */
const LAYERS = [
  { name: "conv1", hw: 28, cin: 1, cout: 32 },
  { name: "conv2", hw: 14, cin: 32, cout: 64 },
];

async function time(kernel: string, inputs: tf.NamedTensorMap, attrs: object): Promise<number> {
  const once = async (): Promise<void> => {
    const out = tf.engine().runKernel(kernel, inputs, attrs as tf.NamedAttrMap) as tf.Tensor;
    await out.data();
    out.dispose();
  };
  await once(); // compile
  const start = performance.now();
  const outs: tf.Tensor[] = [];
  for (let i = 0; i < reps; i++) {
    outs.push(tf.engine().runKernel(kernel, inputs, attrs as tf.NamedAttrMap) as tf.Tensor);
  }
  await outs[outs.length - 1]!.data();
  tf.dispose(outs);
  return (performance.now() - start) / reps;
}

const backend = await useBackend("webgpu");
console.log(`backend webgpu, adapter ${JSON.stringify(backend.adapter)}`);
console.log("layer  batch  kernel  ours_ms  tfjs_ms  tfjs/ours  ours_TFLOP/s");
for (const batch of batches) {
  for (const l of LAYERS) {
    const x = tf.randomNormal([batch, l.hw, l.hw, l.cin]);
    const w = tf.randomNormal([5, 5, l.cin, l.cout]);
    const dy = tf.randomNormal([batch, l.hw, l.hw, l.cout]);
    const flops = 2 * batch * l.hw * l.hw * 25 * l.cin * l.cout;
    const common = { strides: 1, pad: "same", dataFormat: "NHWC" };
    const cases: [string, string, tf.NamedTensorMap, object][] = [
      ["dW", "Conv2DBackpropFilter", { x, dy }, { ...common, filterShape: w.shape }],
      ["dX", "Conv2DBackpropInput", { dy, filter: w }, { ...common, inputShape: x.shape }],
    ];
    for (const [label, kernel, inputs, attrs] of cases) {
      registerWebGpuConvKernels();
      const ours = await time(kernel, inputs, attrs);
      unregisterWebGpuConvKernels();
      const theirs = await time(kernel, inputs, attrs);
      registerWebGpuConvKernels();
      const tflops = flops / (ours * 1e-3) / 1e12;
      console.log(
        `${l.name}  ${batch}  ${label}  ${ours.toFixed(3)}  ${theirs.toFixed(3)}  ${(theirs / ours).toFixed(2)}x  ${tflops.toFixed(2)}`,
      );
    }
    tf.dispose([x, w, dy]);
  }
}
