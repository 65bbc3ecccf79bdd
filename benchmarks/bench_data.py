"""Time loading every target from an empty cache: decoding the real sets, generating the synthetic.

Prints images per second of each (an empty cache is what a fresh clone pays once) and the
ratio of a cache hit's speed to a cold load. Run: ``PYTHONPATH=lib python benchmarks/bench_data.py``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from compstudy import data, paths

SYNTHETIC_PER_CLASS = 100


def _load(name: str) -> int:
    per_class = SYNTHETIC_PER_CLASS if name in data.SYNTHETIC else None
    return sum(len(data.load_dataset(name, split, per_class)) for split in data.SPLITS)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths.ARTIFACTS_DIR = Path(tmp)  # time decoding + saving, never an old cache
        for name in data.REAL + data.SYNTHETIC:
            start = time.perf_counter()
            n = _load(name)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            _load(name)
            warm = time.perf_counter() - start
            print(f"{name:<14} {n:>6} images  cold {n / cold:9.0f} img/s  cache hit {cold / warm:6.1f}x faster")


if __name__ == "__main__":
    main()
