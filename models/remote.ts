/** Load a tfjs layers model over HTTP(S) — e.g. a coordinator's `/api/models/…` — in Node or a browser. */
import * as tf from "@tensorflow/tfjs";
import { buildLayersModel } from "./file-handler.js";

/** A model loaded from a URL. */
export type RemoteModel = tf.LayersModel;

/**
 * The model at `url` (its `model.json`; the weights are fetched relative to it), with
 * `headers` on every request (`Authorization: Bearer …`). Uses the platform's `fetch`.
 */
export async function loadRemoteModel(
  url: string,
  headers: Record<string, string> = {},
): Promise<tf.LayersModel> {
  return buildLayersModel(tf.io.http(url, { requestInit: { headers } }), url);
}
