/** Load a tfjs layers model over HTTP(S) — e.g. a coordinator's `/api/models/…` — in Node or a browser. */
import * as tf from "@tensorflow/tfjs";
import { CohortError } from "../protocol/errors.js";

/** A model loaded from a URL. */
export type RemoteModel = tf.LayersModel;

/**
 * The model at `url` (its `model.json`; the weights are fetched relative to it), with
 * `headers` on every request (`Authorization: Bearer …`). Uses the platform's `fetch`; no
 * file system, so browsers bundle it too.
 *
 * @throws CohortError `INVALID_MODEL` naming the URL and why (an HTTP status, a bad file)
 */
export async function loadRemoteModel(
  url: string,
  headers: Record<string, string> = {},
): Promise<RemoteModel> {
  try {
    return await tf.loadLayersModel(tf.io.http(url, { requestInit: { headers } }));
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new CohortError("INVALID_MODEL", `${url}: cannot load the model: ${why}`, { cause });
  }
}
