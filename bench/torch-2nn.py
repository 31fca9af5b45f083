"""The 2NN's training throughput in PyTorch, for bench/throughput.ts to print beside Cohort's.

Reads the examples bench/throughput.ts wrote (float32 features, int32 labels) and trains
McMahan's 2NN (784-200-200-10, ReLU) with plain SGD one epoch at a time, each epoch shuffled,
like a device's local run; prints one JSON line: samples/s (median of the timed epochs) per
batch size. Usage: python3 torch-2nn.py FEATURES LABELS N BATCH[,BATCH...] REPS THREADS
"""
import json
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn


def main() -> None:
    features, labels, n, batches, reps, threads = sys.argv[1:7]
    n = int(n)
    torch.set_num_threads(int(threads))
    x = torch.from_numpy(np.fromfile(features, dtype=np.float32).reshape(n, -1))
    y = torch.from_numpy(np.fromfile(labels, dtype=np.int32).astype(np.int64))
    torch.manual_seed(0)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "samplesPerS": {}}
    for batch in [int(b) for b in batches.split(",")]:
        model = nn.Sequential(
            nn.Linear(x.shape[1], 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = nn.CrossEntropyLoss()

        def epoch() -> float:
            start = time.perf_counter()
            order = torch.randperm(n)
            for i in range(0, n, batch):
                idx = order[i : i + batch]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
            return time.perf_counter() - start

        epoch()  # warm-up
        times = [epoch() for _ in range(int(reps))]
        out["samplesPerS"][str(batch)] = n / statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
