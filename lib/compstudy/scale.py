"""What a run ran: its scale, stated by the run itself, and its wall time.

Each chapter page shows a "what ran" table (profile, models, resolution, targets, budgets,
seeds, test images per target, wall time) under its hand-written prose, so that the prose
never has to type a scale that a config can change. A chapter notebook states its scale
once, after its study has run::

    from compstudy import scale
    scale.record_scale(cfg, models=cfg.upstream_models, resolution=cfg.resolution,
                       targets=cfg.targets, budgets={"epochs": cfg.epochs, "shots": cfg.shots},
                       seeds=cfg.seeds, test_images_per_target=results.test_images)

It writes ``results/<profile>/<nb>/<run>/scale.json``; the runner adds ``wall_time.json``
beside it after every execution. The summary notebook (``99_summary``) reads both for every
run and glues ``what_ran_<nb>``, which the chapter page pastes (see ``book/reproduce.md``).

Hosts of the same size differ in speed (two 2-core machines of this project trained the same
54 models of chapter 2 in 4,651 and 1,561 CPU-seconds), so a wall time alone does not say
whether a run fits its budget. With it, ``wall_time.json`` holds the host's time for one fixed
workload (``host_reference_seconds``): wall times from two hosts compare after dividing by it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from .results import atomic_write_text

SCALE_FILE = "scale.json"
WALL_TIME_FILE = "wall_time.json"
FIELDS = ("models", "resolution", "targets", "budgets", "seeds", "test_images_per_target")
"""What every run states, in the order of the "what ran" table (after the profile)."""


def record_scale(cfg, *, models: Any, resolution: Any, targets: Any, budgets: Any, seeds: Any,
                 test_images_per_target: Any) -> None:
    """Write the scale of the run of ``cfg`` (a ``NotebookConfig``) to its ``scale.json``.

    Every value is plain JSON: a number, a string, a list, or a mapping when it differs by
    model or target (``resolution={"deit_tiny": 96}``, ``test_images_per_target={"cifar10":
    2000}``); ``budgets`` names its units (``{"epochs": 10}``). The values are what the run
    used, measured where they can differ from the config (e.g. the test images a small
    target really has). Returns nothing, so that a notebook's last line prints no path.
    """
    values = {"models": models, "resolution": resolution, "targets": targets,
              "budgets": budgets, "seeds": seeds, "test_images_per_target": test_images_per_target}
    try:
        text = json.dumps({"profile": cfg.profile, **values}, indent=1)
    except TypeError as error:
        raise TypeError(f"record_scale takes plain JSON values (cast numpy scalars): {error}") from None
    atomic_write_text(cfg.results_dir / SCALE_FILE, text + "\n")


def record_wall_time(results_dir: Path, seconds: float, host_reference: float, finished: bool = True,
                     reused: tuple[int, float] = (0, 0.0)) -> None:
    """Add one execution of a run to its ``wall_time.json`` (the runner calls this).

    ``seconds`` and ``host_reference_s`` are those of the last execution that finished. A
    re-execution skips the work its cache holds, so it also keeps ``total_seconds`` and
    ``executions``: every execution since the results were last reset (a change of the run's
    config or code), an interrupted one included. Their sum is what these results cost, except
    for the artifacts that an earlier run left in the cache: ``reused`` counts those the run
    loaded without building them and sums their build seconds (``cache.reused_build_time``).
    """
    path = Path(results_dir) / WALL_TIME_FILE
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded["total_seconds"] = round(recorded.get("total_seconds", 0.0) + seconds, 1)
    recorded["executions"] = recorded.get("executions", 0) + 1
    recorded["reused_artifacts"], recorded["reused_build_seconds"] = reused
    if finished:
        recorded.update(seconds=round(seconds, 1), host_reference_s=round(host_reference, 3))
    atomic_write_text(path, json.dumps(recorded))


_host_reference: list[float] = []
_host_reference_lock = threading.Lock()


def host_reference_seconds() -> float:
    """Wall seconds this host takes for a fixed one-thread workload: training steps of a small
    CIFAR-style CNN and of a DeiT-Tiny-sized transformer encoder, the two kinds of model the
    chapters train (best of three repeats, after a warm-up).

    Measured once per process (a second caller waits for the first), so the runner measures
    it before its first run starts; the thread count is restored afterwards.
    """
    with _host_reference_lock:
        if not _host_reference:
            _host_reference.append(_measure_reference())
        return _host_reference[0]


def _measure_reference() -> float:
    import torch
    from torch import nn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            cnn = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
            encoder = nn.Sequential(nn.TransformerEncoder(
                nn.TransformerEncoderLayer(192, 3, 768, batch_first=True), 2,
                enable_nested_tensor=False), nn.Flatten(),
                nn.Linear(17 * 192, 10))
        batches = [(cnn, torch.randn(64, 3, 32, 32, generator=generator)),
                   (encoder, torch.randn(32, 17, 192, generator=generator))]
        labels = {len(x): torch.randint(0, 10, (len(x),), generator=generator) for _, x in batches}

        def steps(count: int) -> float:
            start = time.perf_counter()
            for model, x in batches:
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
                for _ in range(count):
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(x), labels[len(x)]).backward()
                    optimizer.step()
            return time.perf_counter() - start

        steps(2)
        return min(steps(10) for _ in range(3))
    finally:
        torch.set_num_threads(threads)


def read_scale(results_dir: Path) -> dict[str, Any]:
    """The recorded scale of a run, with ``seconds`` (its wall time) when it finished.

    Empty when the run recorded nothing.
    """
    results_dir = Path(results_dir)
    found: dict[str, Any] = {}
    for name in (SCALE_FILE, WALL_TIME_FILE):
        path = results_dir / name
        if path.exists():
            found.update(json.loads(path.read_text()))
    return found
