/**
 * The fast Walsh–Hadamard transform of the codecs' rotation as a WebAssembly SIMD kernel (four
 * float32 lanes a step), with a JavaScript fallback that computes exactly the same float32
 * values: both run the levels h = 1, 2, 4, … in order, each butterfly `(a + b, a − b)` rounded
 * to float32, so a client without SIMD and a coordinator with it agree bit for bit (the
 * downlink's checksums depend on it).
 *
 * The module is 200-odd bytes, assembled here (no toolchain): one function
 * `fwht(ptr, n)`, in place on n floats (n a multiple of 4) at byte offset `ptr` of its memory.
 * Levels 1 and 2 run inside each vector (shuffles), the others as vector butterflies.
 */

/** Signed LEB128 of a small non-negative integer (what `i32.const` takes). */
function sleb(v: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

/** Unsigned LEB128. */
function uleb(v: number): number[] {
  const out: number[] = [];
  do {
    let byte = v & 0x7f;
    v >>>= 7;
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
}

const f32Bytes = (values: number[]): number[] =>
  Array.from(new Uint8Array(Float32Array.from(values).buffer));

/** Byte lanes of an `i8x16.shuffle` that picks float lanes `lanes` of (a, b). */
const lanesOf = (lanes: number[]): number[] =>
  lanes.flatMap((l) => [0, 1, 2, 3].map((k) => 4 * l + k));

// Opcodes (core and SIMD, prefix 0xfd).
const GET = 0x20;
const SET = 0x21;
const TEE = 0x22;
const I32_CONST = 0x41;
const I32_ADD = 0x6a;
const I32_SHL = 0x74;
const I32_LT_U = 0x49;
const I32_GE_U = 0x4f;
const BLOCK = [0x02, 0x40];
const LOOP = [0x03, 0x40];
const BR_IF = 0x0d;
const END = 0x0b;
const simd = (op: number) => [0xfd, ...uleb(op)];
const LOAD = [...simd(0x00), 4, 0]; // align 2^4, offset 0
const STORE = [...simd(0x0b), 4, 0];
const vconst = (values: number[]) => [...simd(0x0c), ...f32Bytes(values)];
const shuffle = (lanes: number[]) => [...simd(0x0d), ...lanesOf(lanes)];
const F32X4_ADD = simd(0xe4);
const F32X4_SUB = simd(0xe5);
const F32X4_MUL = simd(0xe6);

// Locals: 0 ptr, 1 n, 2 scale (params); 3 end, 4 h (bytes), 5 i, 6 j, 7 stop (i32); 8 v, 9 a,
// 10 b (v128).
const [PTR, N, SCALE, STOP_ALL, H, I, J, STOP, V, A, B] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const F32X4_SPLAT = simd(0x13);
const bytesOfN = [GET, N, I32_CONST, ...sleb(2), I32_SHL];

// One instruction group a line; prettier would put every byte on its own.
// prettier-ignore
const body = [
  // Locals: 5 × i32, 3 × v128.
  2, 5, 0x7f, 3, 0x7b,
  // end = ptr + 4n; j = ptr
  GET, PTR, ...bytesOfN, I32_ADD, SET, STOP_ALL,
  GET, PTR, SET, J,
  // Levels 1 and 2 inside each vector [a, b, c, d]: w = [a+b, a−b, c+d, c−d], then
  // [w0+w2, w1+w3, w0−w2, w1−w3].
  ...LOOP,
  GET, J, ...LOAD, SET, V,
  GET, V, GET, V, ...shuffle([0, 0, 2, 2]),
  GET, V, GET, V, ...shuffle([1, 1, 3, 3]),
  ...vconst([1, -1, 1, -1]), ...F32X4_MUL, ...F32X4_ADD, SET, A,
  GET, J,
  GET, A, GET, A, ...shuffle([0, 1, 0, 1]),
  GET, A, GET, A, ...shuffle([2, 3, 2, 3]),
  ...vconst([1, 1, -1, -1]), ...F32X4_MUL, ...F32X4_ADD,
  ...STORE,
  GET, J, I32_CONST, ...sleb(16), I32_ADD, TEE, J, GET, STOP_ALL, I32_LT_U, BR_IF, 0,
  END,
  // Levels h = 4, 8, … floats (16, 32, … bytes) as vector butterflies.
  I32_CONST, ...sleb(16), SET, H,
  ...BLOCK,
  GET, H, ...bytesOfN, I32_GE_U, BR_IF, 0,
  ...LOOP, // each level
  GET, PTR, SET, I,
  ...LOOP, // each block of 2h
  GET, I, SET, J,
  GET, I, GET, H, I32_ADD, SET, STOP,
  ...LOOP, // each vector of the block's first half
  GET, J, ...LOAD, SET, A,
  GET, J, GET, H, I32_ADD, ...LOAD, SET, B,
  GET, J, GET, A, GET, B, ...F32X4_ADD, ...STORE,
  GET, J, GET, H, I32_ADD, GET, A, GET, B, ...F32X4_SUB, ...STORE,
  GET, J, I32_CONST, ...sleb(16), I32_ADD, TEE, J, GET, STOP, I32_LT_U, BR_IF, 0,
  END,
  GET, I, GET, H, I32_CONST, ...sleb(1), I32_SHL, I32_ADD, TEE, I, GET, STOP_ALL, I32_LT_U,
  BR_IF, 0,
  END,
  GET, H, I32_CONST, ...sleb(1), I32_SHL, TEE, H, ...bytesOfN, I32_LT_U, BR_IF, 0,
  END,
  END,
  // Every value times the scale.
  GET, SCALE, ...F32X4_SPLAT, SET, B,
  GET, PTR, SET, J,
  ...LOOP,
  GET, J, GET, J, ...LOAD, GET, B, ...F32X4_MUL, ...STORE,
  GET, J, I32_CONST, ...sleb(16), I32_ADD, TEE, J, GET, STOP_ALL, I32_LT_U, BR_IF, 0,
  END,
  END, // the function
];

const section = (id: number, content: number[]) => [id, ...uleb(content.length), ...content];
const name = (s: string) => [...uleb(s.length), ...Array.from(new TextEncoder().encode(s))];

const MODULE = Uint8Array.from([
  ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
  ...section(1, [1, 0x60, 3, 0x7f, 0x7f, 0x7d, 0]), // type 0: (i32, i32, f32) → ()
  ...section(3, [1, 0]), // function 0 of type 0
  ...section(5, [1, 0x00, 1]), // a memory of at least one page
  ...section(7, [2, ...name("fwht"), 0x00, 0, ...name("memory"), 0x02, 0]),
  ...section(10, [1, ...uleb(body.length), ...body]),
]);

/** The SIMD kernel and its memory, or null where WebAssembly SIMD is unavailable. */
interface Kernel {
  fwht(ptr: number, n: number, scale: number): void;
  memory: WebAssembly.Memory;
}

function instantiate(): Kernel | null {
  try {
    if (typeof WebAssembly === "undefined" || !WebAssembly.validate(MODULE)) return null;
    const instance = new WebAssembly.Instance(new WebAssembly.Module(MODULE));
    const { fwht, memory } = instance.exports as unknown as Kernel;
    return { fwht, memory };
  } catch {
    return null;
  }
}

const kernel = instantiate();

/** Whether the SIMD kernel runs here (else the JavaScript fallback, to the same bits). */
export const simdKernel = kernel !== null;

/**
 * The kernel's memory as floats, with room for `n` (grown as needed). Fill it, call
 * `transformChunks`, read it back: one copy each way.
 */
export function kernelFloats(n: number): Float32Array | null {
  if (kernel === null) return null;
  const need = n * 4;
  const have = kernel.memory.buffer.byteLength;
  if (need > have) kernel.memory.grow(Math.ceil((need - have) / 65536));
  return new Float32Array(kernel.memory.buffer, 0, n);
}

/** Whether `x` lies in the kernel's memory (a borrowed view). */
export function isKernelView(x: Float32Array): boolean {
  return kernel !== null && x.buffer === kernel.memory.buffer;
}

/**
 * In-place Walsh–Hadamard transform of `x[at … at + n)`, then every value times `scale` (a
 * float32), in JavaScript.
 */
export function fwhtScalar(x: Float32Array, at: number, n: number, scale = 1): void {
  const end = at + n;
  for (let h = 1; h < n; h *= 2) {
    for (let i = at; i < end; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const a = x[j]!;
        const b = x[j + h]!;
        x[j] = a + b; // the Float32Array store rounds, as f32x4.add does
        x[j + h] = a - b;
      }
    }
  }
  // A product of two float32 values is exact in a double: the store rounds it once, as
  // f32x4.mul does.
  const s = Math.fround(scale);
  if (s !== 1) for (let j = at; j < end; j++) x[j] = x[j]! * s;
}

/**
 * Transform every chunk of `x` in place, each then times 1/√(its length) (as a float32): chunk
 * c spans `[c·size, c·size + length(c))`. With the kernel, `x` must be `kernelFloats`' view;
 * chunks under 4 values run in JavaScript.
 */
export function transformChunks(
  x: Float32Array,
  count: number,
  size: number,
  lastSize: number,
): void {
  for (let c = 0; c < count; c++) {
    const at = c * size;
    const n = c === count - 1 ? lastSize : size;
    const scale = Math.fround(1 / Math.sqrt(n));
    if (kernel !== null && n >= 4 && x.buffer === kernel.memory.buffer) {
      kernel.fwht(x.byteOffset + 4 * at, n, scale);
    } else {
      fwhtScalar(x, at, n, scale);
    }
  }
}
