/**
 * The arithmetic of DP-FedAvg (McMahan et al. 2018) on weight lists: L2 clipping of an update
 * and Gaussian noise on a sum. Noise comes from the platform's cryptographic generator unless a
 * seeded one is passed (reproducible noise protects nobody: for tests and studies only).
 */
/** The L2 norm of a whole update (all its tensors as one vector). */
export function l2Norm(delta: readonly Float32Array[]): number {
  let s = 0;
  for (const t of delta) for (let i = 0; i < t.length; i++) s += t[i]! * t[i]!;
  return Math.sqrt(s);
}

/**
 * The factor (≤ 1) that scales `delta` into the L2 ball of radius `clip`, and whether it was
 * clipped: an update a client already clipped to `clip` is scaled by float rounding at most,
 * which does not count.
 */
export function clipFactor(
  delta: readonly Float32Array[],
  clip: number,
): { factor: number; clipped: boolean } {
  const norm = l2Norm(delta);
  if (norm <= clip) return { factor: 1, clipped: false };
  return { factor: clip / norm, clipped: norm > clip * (1 + 1e-5) };
}

/** `delta` scaled into the L2 ball of radius `clip` (a copy), and whether it was clipped. */
export function clipL2(
  delta: readonly Float32Array[],
  clip: number,
): { delta: Float32Array[]; clipped: boolean } {
  const { factor, clipped } = clipFactor(delta, clip);
  return {
    delta: delta.map((t) => (factor === 1 ? Float32Array.from(t) : t.map((v) => v * factor))),
    clipped,
  };
}

/** Uniform doubles in (0, 1) from WebCrypto (53 random bits each), 64 KiB at a time. */
export function secureUniform(): () => number {
  const words = new Uint32Array(16_384);
  let at = words.length;
  const next = () => {
    if (at >= words.length) {
      globalThis.crypto.getRandomValues(words);
      at = 0;
    }
    const hi = words[at++]! >>> 5; // 27 bits
    const lo = words[at++]! >>> 6; // 26 bits
    return (hi * 67108864 + lo + 0.5) / 9007199254740992; // never 0 or 1
  };
  return next;
}

/**
 * Add independent N(0, std²) noise to every value of `sum` in place (Box–Muller on `uniform`,
 * which must never return 0).
 */
export function addGaussian(sum: Float64Array[], std: number, uniform: () => number): void {
  if (std === 0) return;
  let spare: number | null = null;
  for (const t of sum) {
    for (let i = 0; i < t.length; i++) {
      if (spare !== null) {
        t[i]! += std * spare;
        spare = null;
        continue;
      }
      const r = Math.sqrt(-2 * Math.log(uniform()));
      const theta = 2 * Math.PI * uniform();
      t[i]! += std * r * Math.cos(theta);
      spare = r * Math.sin(theta);
    }
  }
}
