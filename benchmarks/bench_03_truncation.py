"""Throughput gain of SLS-truncated ViTs against the ideal linear gain (SLS, Han & Tang, ECCV 2024).

For each kept depth d of the 12-block cpu ViT with Convpass adapters: throughput of the
truncated model / throughput of the full model, divided by the ideal gain L / d (blocks are
the whole cost only if patch embedding, final norm and head cost nothing). A ratio near 1
means throughput rises linearly with removed blocks. Kept depths are read from the cpu
results of notebook 03 (when they exist) plus a fixed ladder. Weights do not matter
for speed, so the model is built at random initialisation (no zoo training needed).

Run: ``.venv/bin/python benchmarks/bench_03_truncation.py`` (2 threads; ``COMPSTUDY_THREADS``).
"""

from __future__ import annotations

import os

import pandas as pd
import torch

from compstudy import metrics, models, paths, petl, sls
from compstudy.seeding import seed_everything

MODEL = "vit"
LADDER = (12, 9, 6, 4, 2, 1)


def kept_depths() -> list[int]:
    path = paths.RESULTS_DIR / "cpu" / "03_sls" / "main" / "runs.csv"
    if path.exists():
        runs = pd.read_csv(path)
        depths = runs.loc[runs.kind == "sls", "depth"].dropna().astype(int).unique().tolist()
        if depths:
            return sorted(set(depths) | set(LADDER), reverse=True)
    return list(LADDER)


def main() -> None:
    threads = int(os.environ.get("COMPSTUDY_THREADS", 2))
    seed_everything(0, threads=threads)
    full = petl.attach(models.build_model(MODEL, num_classes=100), "convpass", num_classes=10).eval()
    depth = len(full.blocks)
    speed = {}
    print(f"{MODEL} + convpass, {threads} threads; gain / ideal = (tput_d / tput_L) / (L / d)")
    print(f"{'depth':>5} {'batch':>5} {'img/s':>9} {'gain':>6} {'ideal':>6} {'ratio':>6}")
    for d in kept_depths():
        model = sls.truncate(full, d) if d < depth else full
        for batch in (1, 64):
            tput = metrics.measure_latency(model, batch, num_threads=threads, min_run_time=1.0)["images_per_s"]
            speed[d, batch] = tput
            gain = tput / speed[depth, batch]
            ideal = depth / d
            print(f"{d:>5} {batch:>5} {tput:>9.1f} {gain:>6.2f} {ideal:>6.2f} {gain / ideal:>6.2f}")
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
