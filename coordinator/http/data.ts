/** `GET /data/mnist-shard`: a shard of the MNIST training digits for demo pages, as msgpack. */
import { encode } from "../../protocol/codec.js";
import { loadMnistDigits, shardDataset, takeExamples } from "../../models/datasets/index.js";
import { intQuery } from "./query.js";
import { HttpError, type HttpResponse } from "./respond.js";

/** Most shards a demo federation may split the digits into. */
export const MAX_SHARDS = 1000;

/**
 * `?index=i&count=n[&limit=k]`: shard i of n contiguous shards of the 8,000 training digits,
 * its first k examples. The body is a msgpack `Dataset` (Float32Array features, Uint8Array
 * labels) that `parseDataset` checks on the page.
 */
export async function mnistShard(url: URL): Promise<HttpResponse> {
  const q = intQuery(url, {
    index: { min: 0, max: MAX_SHARDS - 1 },
    count: { min: 1, max: MAX_SHARDS },
    limit: { min: 1, max: 8000, default: 8000 },
  });
  if (q.index >= q.count) {
    throw new HttpError(400, `index must be below count (${q.count}), got ${q.index}`);
  }
  const shard = takeExamples(
    shardDataset(await loadMnistDigits("train"), q.index, q.count),
    q.limit,
  );
  return {
    status: 200,
    contentType: "application/msgpack",
    body: encode({ ...shard, name: `mnist:train[${q.index}/${q.count}]` }),
  };
}
