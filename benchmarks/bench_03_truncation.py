"""Throughput gain of SLS-truncated ViTs against the ideal linear gain (SLS, Han & Tang, ECCV 2024).

For each kept depth d that the ``cpu`` runs of notebook 03 found (``results/cpu/03_sls/*/runs.csv``,
SLS rows), and a fixed ladder when there are none yet: the speed-up of the DeiT-Tiny with
Convpass adapters truncated at d over the full model (the full model's time ÷ the truncated
one's, paired round by round), divided by the ideal gain L / d. A ratio near 1 means
throughput rises linearly with the removed blocks; the patch embedding, the final norm and the
head are a cost no truncation removes, which pulls it below 1.
The model is built at the cpu profile's resolution; weights do not matter for speed.

Run: ``PYTHONPATH=lib .venv/bin/python benchmarks/bench_03_truncation.py`` (threads:
``COMPSTUDY_THREADS``, default 2). Prints ratios; asserts nothing.
"""

from __future__ import annotations

import os

import pandas as pd

from compstudy import claims, config, metrics, models, paths
from compstudy.methods import petl, sls
from compstudy.seeding import seed_everything

LADDER = (12, 10, 8, 6, 4, 2)
BATCHES = (1, 64)
FORWARDS = (50, 10)
"""Timing rounds at each batch: one forward of each model per round (``metrics.measure_latencies``)."""


def kept_depths() -> tuple[list[int], str]:
    """Kept depths of the cpu runs' SLS rows (and the full depth), else the ladder."""
    found = set()
    for path in (paths.RESULTS_DIR / "cpu" / "03_sls").glob("*/runs.csv"):
        runs = pd.read_csv(path)
        if "arm" in runs:
            found |= set(runs.loc[runs.arm == "sls", "depth"].dropna().astype(int))
    if found:
        return sorted(found | {12}, reverse=True), "kept depths of the cpu runs"
    return list(LADDER), "a fixed ladder (no cpu runs of notebook 03 yet)"


def main() -> None:
    threads = int(os.environ.get("COMPSTUDY_THREADS", 2))
    seed_everything(0, threads=threads)
    cfg = config.load_config("cpu", "03_sls", "main")
    side = cfg.resolution
    full = petl.attach(models.upstream_model(cfg.model, side, pretrained=False), "convpass", 10).eval()
    depth = len(full.blocks)
    depths, source = kept_depths()
    print(f"{cfg.model} at {side} px + convpass, {threads} threads, depths: {source}")
    print("gain / ideal = (speed-up at d over L, paired round by round, 95 % interval) / (L / d)")
    print(f"{'depth':>5} {'batch':>5} {'img/s':>9} {'gain [95 % CI]':>20} {'ideal':>6} {'ratio':>6}")
    truncated = {d: sls.truncate(full, d) if d < depth else full for d in depths}
    for batch, forwards in zip(BATCHES, FORWARDS):
        timings = metrics.measure_latencies(truncated, batch, (3, side, side), forwards, reference=depth)
        for d, t in timings.items():
            gain, ideal = t["speedup"], depth / d
            interval = claims.interval_text(gain, t["speedup_low"], t["speedup_high"])
            print(f"{d:>5} {batch:>5} {t['images_per_s']:>9.1f} {interval:>20} {ideal:>6.2f} "
                  f"{gain / ideal:>6.2f}")


if __name__ == "__main__":
    main()
