/** Where a client keeps its codec memory (top-k's residual) between runs of its process. */

/** Which memory: one per run and codec (another run or codec starts empty). */
export interface CodecMemoryKey {
  runId: string;
  /** The codec's label (`topk:0.01`). */
  codec: string;
}

/**
 * Keeps a client's codec memory across restarts. `load` answers null when it holds none for
 * the key; `save` replaces what it holds. The Node client's `stateDir` option gives a file store
 * (`client/codec-memory-file.ts`); browsers keep the memory for the page's life only.
 */
export interface CodecMemoryStore {
  load(key: CodecMemoryKey): Promise<Float32Array | null>;
  save(key: CodecMemoryKey, residual: Float32Array): Promise<void>;
}
