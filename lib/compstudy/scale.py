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
beside it when the run finishes. The summary notebook (``99_summary``) reads both for every
run and glues ``what_ran_<nb>``, which the chapter page pastes (see ``book/reproduce.md``).
"""

from __future__ import annotations

import json
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


def record_wall_time(results_dir: Path, seconds: float) -> None:
    """Write the wall time of a finished run (the runner calls this)."""
    atomic_write_text(Path(results_dir) / WALL_TIME_FILE, json.dumps({"seconds": round(seconds, 1)}))


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
