"""Training and forward throughput of the upstream models at their candidate resolutions.

Prints each (model, resolution)'s throughput as a ratio to EfficientNet-Lite0 at 64 px, the
reference the chapters size their runs by. Run: ``PYTHONPATH=lib python benchmarks/bench_00_throughput.py``.
"""

from compstudy import metrics, models
from compstudy.seeding import seed_everything
from compstudy.studies.upstream import train_images_per_second

CANDIDATES = {"efficientnet_lite0": (48, 64, 96), "deit_tiny": (64, 96, 128)}
BATCH = 64

if __name__ == "__main__":
    seed_everything(0, threads=2)
    rates = {}
    for name, sides in CANDIDATES.items():
        for side in sides:
            model = models.upstream_model(name, side)
            forward = metrics.measure_latency(model, BATCH, (3, side, side))["images_per_s"]
            rates[name, side] = (train_images_per_second(model, BATCH, side, seconds=1.0), forward)
    reference_train, reference_forward = rates["efficientnet_lite0", 64]
    for (name, side), (train_rate, forward) in rates.items():
        print(f"{name:<19} {side:>4} px  train {train_rate / reference_train:5.2f}x  "
              f"forward {forward / reference_forward:5.2f}x  (of EfficientNet-Lite0 at 64 px)")
