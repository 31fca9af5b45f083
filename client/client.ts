/** The Node client: the client core with Node's backend selection (tfjs-node, Dawn WebGPU, wasm, cpu). */
import { backendLabel, selectBackend, type BackendRequest } from "../models/backend.js";
import { ClientCore, type BackendSelector, type ClientOptions } from "./core.js";
import { fileCodecMemory } from "./codec-memory-file.js";

export type { ClientProgress, ClientRoundReport } from "./core.js";

/** Options of the Node `CohortClient`. */
export type CohortClientOptions = ClientOptions<BackendRequest> & {
  /**
   * A directory of this client's own state: its codec memory (top-k's residual) is kept there
   * (`codec-memory.bin`, owner-only), so a restarted client goes on with it. Sets
   * `codecMemoryStore`. @default undefined (memory for the process only)
   */
  stateDir?: string;
};

/** Node's selector: the process-wide `selectBackend`. */
export const nodeBackendSelector: BackendSelector<BackendRequest> = async (request) => {
  const backend = await selectBackend(request);
  return { name: backend.name, label: backendLabel(backend) };
};

/**
 * A federated-learning client. The user supplies data; the model, its training configuration
 * and the global weights come from the coordinator.
 *
 * @example
 * const client = new CohortClient({ url: "http://localhost:8080", data });
 * await client.run(); // resolves when the coordinator ends the run
 */
export class CohortClient extends ClientCore<BackendRequest> {
  constructor(options: Partial<CohortClientOptions> & Pick<CohortClientOptions, "url" | "data">) {
    const { stateDir, ...rest } = options;
    super(
      stateDir === undefined ? rest : { codecMemoryStore: fileCodecMemory(stateDir), ...rest },
      { backend: "auto", selectBackend: nodeBackendSelector },
    );
  }
}
