#!/usr/bin/env python3
"""Per-step percentiles from criterion's samples of `benches/scheduler.rs`.

Each criterion sample is `iters` runs of N steps taking `time` ns; its per-step cost is
time / iters / N. Prints p50 / p95 / max per benchmark."""
import json, os, statistics, sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion/scheduler"
for shape in sorted(os.listdir(root)):
    for n in sorted(os.listdir(os.path.join(root, shape))):
        f = os.path.join(root, shape, n, "new", "sample.json")
        if not os.path.exists(f):
            continue
        s = json.load(open(f))
        per = sorted(t / i / int(n) / 1000.0 for t, i in zip(s["times"], s["iters"]))
        p95 = per[min(len(per) - 1, int(round(0.95 * (len(per) - 1))))]
        print(f"{shape}/{n}: per-step p50 {statistics.median(per):.2f} us, p95 {p95:.2f} us, max {per[-1]:.2f} us ({len(per)} samples)")
