/**
 * The Node client's codec memory on disk: `DIR/codec-memory.bin`, msgpack of the run, the codec
 * and the residual, written atomically (temporary file, fsync, rename) and readable by its owner
 * only — the residual comes from the client's data.
 */
import { chmod, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { decode, encode } from "../protocol/codec.js";
import { CohortError } from "../protocol/errors.js";
import { writeAtomic } from "../models/file-handler.js";
import type { CodecMemoryKey, CodecMemoryStore } from "./codec-memory.js";

const FILE = "codec-memory.bin";

/** A store in `dir` (created when first written). */
export function fileCodecMemory(dir: string): CodecMemoryStore {
  const path = join(dir, FILE);
  return {
    async load(key: CodecMemoryKey): Promise<Float32Array | null> {
      let bytes: Uint8Array;
      try {
        bytes = await readFile(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
        throw new CohortError("INVALID_OPTION", `cannot read ${path}: ${(error as Error).message}`);
      }
      let stored: unknown;
      try {
        stored = decode(bytes);
      } catch {
        throw new CohortError("MALFORMED_PAYLOAD", `${path} is not a codec memory file`);
      }
      const o = stored as { runId?: unknown; codec?: unknown; residual?: unknown };
      if (!(o.residual instanceof Float32Array)) {
        throw new CohortError("MALFORMED_PAYLOAD", `${path} holds no residual`);
      }
      return o.runId === key.runId && o.codec === key.codec ? o.residual : null;
    },
    async save(key: CodecMemoryKey, residual: Float32Array): Promise<void> {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // Created owner-only (and kept so: a file from before may have had another mode).
      await writeAtomic(path, encode({ runId: key.runId, codec: key.codec, residual }), 0o600);
      await chmod(path, 0o600);
    },
  };
}
