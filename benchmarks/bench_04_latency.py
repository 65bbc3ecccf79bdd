"""Batch-64 CPU latency of DC-ViT structures against block dropping on DeiT-Tiny.

The cpu profile's model (DeiT-Tiny at its resolution, 10-way head) at random weights, since
latency does not depend on them. Prints MACs kept, latency kept and their ratio for:
attention removed in 4 blocks, MLP removed in 4 blocks, DC-ViT at keep ratio 0.75 (stage A),
and 3 whole blocks dropped. Run: ``.venv/bin/python benchmarks/bench_04_latency.py``.
"""

from __future__ import annotations

from compstudy import config, metrics, models
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
    shape = dcvit.input_size(model)
    base = metrics.measure_latency(model, 64, shape, min_run_time=2.0)["median_ms"]
    print(f"DeiT-Tiny at {cfg.resolution} px ({costs.tokens} tokens), batch 64, 2 threads")
    print(f"{'structure':<28} {'MACs kept':>9} {'latency kept':>12} {'ms':>8}")
    for name, m in variants.items():
        ms = base if m is model else metrics.measure_latency(m, 64, shape, min_run_time=2.0)["median_ms"]
        macs = dcvit.model_macs(m) / costs.total
        print(f"{name:<28} {macs:9.3f} {ms / base:12.3f} {ms:8.1f}")


if __name__ == "__main__":
    main()
