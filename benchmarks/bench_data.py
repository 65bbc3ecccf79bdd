"""Time generating the cpu-size synthetic suite from scratch (cache in a temporary folder).

Sizes: source 100 classes x (120 train + 30 test); near/middle/far 10 classes x
(100 train + 50 test). Run: ``PYTHONPATH=lib python benchmarks/bench_data.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from compstudy import data

CPU_SUITE = {"source": (120, 30), "near": (100, 50), "middle": (100, 50), "far": (100, 50)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data.ARTIFACTS_DIR = Path(tmp)  # time generation + saving, never an old cache
        total = 0.0
        for name, (n_train, n_test) in CPU_SUITE.items():
            start = time.perf_counter()
            n = sum(len(data.load_dataset(name, s, k)) for s, k in (("train", n_train), ("test", n_test)))
            seconds = time.perf_counter() - start
            total += seconds
            print(f"{name:<8} {n:>6} images  {seconds:6.2f} s")
        print(f"{'total':<8} {'':>6}         {total:6.2f} s")


if __name__ == "__main__":
    main()
