/** The mask PRG: a 32-byte seed expanded into 32-bit words by AES-256-CTR (WebCrypto, Node and browsers). */
import { CohortError } from "../../protocol/errors.js";
import { KEY_BYTES } from "../crypto.js";

/** A seed and the sign with which its keystream is added to a vector (mod 2^32). */
export interface Mask {
  seed: Uint8Array;
  sign: 1 | -1;
}

/** Default number of keystreams expanded at once: WebCrypto runs them on the thread pool. */
export const DEFAULT_PRG_CONCURRENCY = 4;

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;
let zeros = new Uint8Array(0);

function subtleCrypto(): SubtleCrypto {
  const subtle = globalThis.crypto?.subtle;
  if (subtle === undefined) {
    throw new CohortError(
      "BACKEND_UNAVAILABLE",
      "WebCrypto (crypto.subtle) is unavailable: browsers expose it only in secure contexts (https or localhost)",
    );
  }
  return subtle;
}

/**
 * Expand `seed` into `length` pseudo-random 32-bit words: the AES-256-CTR keystream with key
 * `seed` and an all-zero initial counter block (64-bit counter), read as little-endian words
 * on every platform. Same seed, same words, in Node and in browsers.
 */
export async function expandSeed(seed: Uint8Array, length: number): Promise<Uint32Array> {
  if (!(seed instanceof Uint8Array) || seed.length !== KEY_BYTES) {
    throw new TypeError(`seed must be a ${KEY_BYTES}-byte Uint8Array`);
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new TypeError("length must be a non-negative integer");
  }
  if (length === 0) return new Uint32Array(0);
  const subtle = subtleCrypto();
  const bytes = 4 * length;
  // Encrypting zeros yields the bare keystream; one shared zero buffer, never written to.
  if (zeros.length < bytes) zeros = new Uint8Array(bytes);
  const key = await subtle.importKey("raw", new Uint8Array(seed), { name: "AES-CTR" }, false, [
    "encrypt",
  ]);
  const stream = await subtle.encrypt(
    { name: "AES-CTR", counter: new Uint8Array(16), length: 64 },
    key,
    zeros.subarray(0, bytes),
  );
  const words = new Uint32Array(stream);
  if (!LITTLE_ENDIAN) {
    const view = new DataView(stream);
    for (let i = 0; i < length; i++) words[i] = view.getUint32(4 * i, true);
  }
  return words;
}

/** `target ← target + sign · PRG(seed)` modulo 2^32, in place. */
export async function addMask(target: Uint32Array, mask: Mask): Promise<void> {
  const words = await expandSeed(mask.seed, target.length);
  addWords(target, words, mask.sign);
}

function addWords(target: Uint32Array, words: Uint32Array, sign: 1 | -1): void {
  // Uint32Array stores wrap modulo 2^32, and sums of two words stay exact in a double.
  if (sign === 1) for (let i = 0; i < target.length; i++) target[i]! += words[i]!;
  else for (let i = 0; i < target.length; i++) target[i]! -= words[i]!;
}

/**
 * Add every mask's keystream to `target` (mod 2^32), expanding up to `concurrency` seeds at
 * once so both cores work while memory stays at `concurrency` keystreams.
 */
export async function applyMasks(
  target: Uint32Array,
  masks: readonly Mask[],
  concurrency = DEFAULT_PRG_CONCURRENCY,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < masks.length) {
      const mask = masks[next++]!;
      const words = await expandSeed(mask.seed, target.length);
      addWords(target, words, mask.sign);
    }
  };
  const workers = Math.max(1, Math.min(Math.floor(concurrency), masks.length));
  await Promise.all(Array.from({ length: workers }, worker));
}
