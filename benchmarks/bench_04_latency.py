"""Batch-64 CPU latency of DC-ViT structures vs block dropping on the cpu-profile ViT.

Random weights (latency does not depend on them). Prints MACs kept, latency kept and their
ratio for: attention removed in 4 blocks, MLP removed in 4 blocks, DC-ViT at keep ratio 0.75
(stage A), and 3 whole blocks dropped. Run: ``.venv/bin/python benchmarks/bench_04_latency.py``.
"""

from __future__ import annotations

from compstudy import dcvit, metrics, models
from compstudy.seeding import seed_everything


def main() -> None:
    seed_everything(0)
    model = models.build_model("vit", 100).eval()
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
    base = metrics.measure_latency(model, 64, min_run_time=2.0)["median_ms"]
    print(f"{'structure':<28} {'MACs kept':>9} {'latency kept':>12} {'ms':>8}")
    for name, m in variants.items():
        ms = base if m is model else metrics.measure_latency(m, 64, min_run_time=2.0)["median_ms"]
        macs = metrics.count_macs(m) / costs.total
        print(f"{name:<28} {macs:9.3f} {ms / base:12.3f} {ms:8.1f}")


if __name__ == "__main__":
    main()
