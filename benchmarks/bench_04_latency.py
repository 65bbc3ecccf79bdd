"""CPU latency of DC-ViT structures against block dropping on DeiT-Tiny.

The cpu profile's model (DeiT-Tiny at its resolution, 10-way head, its latency batch) at
random weights, since latency does not depend on them. Prints MACs kept and latency kept for:
attention removed in 4 blocks, MLP removed in 4 blocks, DC-ViT at keep ratio 0.75 (stage A),
and 3 whole blocks dropped. The structures take turns, one forward each per round, and latency
kept is the mean over rounds of a structure's time ÷ the full model's in the same round
(``metrics.measure_latencies``, as chapter 4 times them, over its cpu run's rounds), with
its 95 % interval.
Run: ``.venv/bin/python benchmarks/bench_04_latency.py``.
"""

from __future__ import annotations

import torch

from compstudy import claims, config, metrics, models
from compstudy.methods import dcvit
from compstudy.seeding import seed_everything


def main() -> None:
    seed_everything(0)
    cfg = config.load_config("cpu", "04_dcvit", "main")
    model = models.upstream_model(cfg.model, cfg.resolution, pretrained=False).eval()
    model.reset_classifier(10)
    costs = dcvit.measure_costs(model)
    plan = dcvit.plan_structure(costs, 0.75, max_blocks=10)
    variants = {
        "full": model,
        "no attention x4": dcvit.structural_model(model, [1, 2, 3, 4], "no_attention"),
        "no MLP x4": dcvit.structural_model(model, [1, 2, 3, 4], "no_mlp"),
        f"DC-ViT keep 0.75 (n={plan.n_blocks})": dcvit.structural_model(
            model, list(range(1, 1 + plan.n_blocks)), "dcvit", plan.kept_units),
        "drop 3 blocks": dcvit.structural_model(model, [1, 2, 3], "drop"),
    }
    rounds = cfg.latency_forwards
    timings = metrics.measure_latencies(variants, cfg.latency_batch, dcvit.input_size(model), rounds,
                                        reference="full")
    print(f"DeiT-Tiny at {cfg.resolution} px ({costs.tokens} tokens), batch {cfg.latency_batch}, "
          f"{torch.get_num_threads()} threads, {rounds} rounds")
    print(f"{'structure':<28} {'MACs kept':>9} {'latency kept [95 % CI]':>24} {'median ms':>10}")
    for name, m in variants.items():
        t = timings[name]
        kept = claims.interval_text(t["ratio"], t["ratio_low"], t["ratio_high"], 3)
        print(f"{name:<28} {dcvit.model_macs(m) / costs.total:9.3f} {kept:>24} {t['median_ms']:10.1f}")


if __name__ == "__main__":
    main()
