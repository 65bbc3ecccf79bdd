"""Run configuration: the notebook's parameters cell holds the defaults, a YAML the overrides.

Papermill only warns about unknown parameters, so the checks are ours (design.md,
"Conventions"): every key of a YAML must be a parameter of its notebook, keep the type of
its default, and name only known profiles, datasets and models. The same checks run in the
runner before a kernel starts and in the notebook's first cell after the parameters.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from . import paths
from .errors import ConfigError, unknown_choice

PROFILES = ("smoke", "cpu", "paper")
CONTEXT_KEYS = ("profile", "run")  # every notebook has them; the runner sets them


def notebook_names() -> tuple[str, ...]:
    """Notebooks of the study, in dependency order (their names start with the order)."""
    return tuple(sorted(p.stem for p in paths.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py")))


def notebook_path(notebook: str) -> Path:
    if notebook not in notebook_names():
        raise unknown_choice("notebook", notebook, notebook_names())
    return paths.NOTEBOOKS_DIR / f"{notebook}.py"


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise unknown_choice("profile", profile, PROFILES)
    return profile


_CELL_MARKER = re.compile(r"^# %%")
_PARAMETERS_MARKER = re.compile(r'^# %%.*\btags=\[[^\]]*"parameters"')


def _parameters_cells(source: str) -> list[str]:
    """Source of each ``# %%`` cell tagged ``parameters`` in a py:percent notebook.

    A plain scan of the cell markers: importing jupytext (and through it nbformat and
    jsonschema) would add over a second to every notebook kernel's start.
    """
    cells, current = [], None
    for line in source.splitlines():
        if _CELL_MARKER.match(line):
            current = [] if _PARAMETERS_MARKER.match(line) else None
            if current is not None:
                cells.append(current)
        elif current is not None:
            current.append(line)
    return ["\n".join(cell) for cell in cells]


@cache
def _parameters_of_source(source: str, name: str) -> Mapping[str, Any]:
    cells = _parameters_cells(source)
    if len(cells) != 1:
        raise ConfigError(f"notebook {name} needs exactly one cell tagged 'parameters'")
    defaults: dict[str, Any] = {}
    for statement in ast.parse(cells[0]).body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            raise ConfigError(f"notebook {name}: the parameters cell may hold only `name = literal`")
        try:
            defaults[statement.targets[0].id] = ast.literal_eval(statement.value)
        except ValueError as error:
            raise ConfigError(f"notebook {name}: parameter {statement.targets[0].id} "
                              "is not a plain literal") from error
    missing = [k for k in CONTEXT_KEYS if k not in defaults]
    if missing:
        raise ConfigError(f"notebook {name}: parameters cell lacks {', '.join(missing)}")
    return MappingProxyType(defaults)


def notebook_parameters(notebook: str) -> Mapping[str, Any]:
    """Defaults of the notebook's parameters cell (literals only, parsed, never executed)."""
    path = notebook_path(notebook)
    return _parameters_of_source(path.read_text(), notebook)


def _same_type(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check_names(key: str, value: Any) -> None:
    """Value checks shared by every notebook, chosen by the parameter's name."""
    from . import data, models  # imported here: both are heavy and config is imported early

    checks = {"dataset": data.check_dataset_name, "model": models.check_model_name}
    for kind, check in checks.items():
        if key in (kind, f"{kind}s") or key.endswith((f"_{kind}", f"_{kind}s")):
            for name in value if isinstance(value, (list, dict)) else [value]:
                check(name)


def validate(notebook: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` over the notebook defaults; raise ConfigError on any bad key or value."""
    defaults = notebook_parameters(notebook)
    for key, value in overrides.items():
        if key not in defaults:
            raise unknown_choice(f"config key for notebook {notebook}:", key, sorted(defaults))
        if not _same_type(defaults[key], value):
            raise ConfigError(f"config key {key!r} of notebook {notebook} must be "
                              f"{type(defaults[key]).__name__}, got {value!r}")
    merged = {**defaults, **overrides}
    check_profile(merged["profile"])
    for key, value in merged.items():
        _check_names(key, value)
    return merged


def config_path(profile: str, notebook: str, run: str) -> Path:
    return paths.CONFIGS_DIR / profile / notebook / f"{run}.yaml"


def run_names(profile: str, notebook: str) -> tuple[str, ...]:
    """Runs of a notebook in a profile: ``main`` first, then the ablations by name."""
    folder = paths.CONFIGS_DIR / check_profile(profile) / notebook
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    return tuple(sorted(names, key=lambda n: n != "main"))


def load_overrides(profile: str, notebook: str, run: str) -> dict[str, Any]:
    """The YAML overrides of one run plus its context keys, validated."""
    check_profile(profile)
    notebook_path(notebook)
    path = config_path(profile, notebook, run)
    if not path.exists():
        raise unknown_choice(f"run of {notebook} in profile {profile}:", run,
                             run_names(profile, notebook) or ["(none)"])
    overrides = yaml.safe_load(path.read_text()) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path} must hold a mapping of parameter: value")
    for key in CONTEXT_KEYS:
        if key in overrides:
            raise ConfigError(f"{path}: {key!r} is set by the runner, not the YAML")
    overrides.update(profile=profile, run=run)
    validate(notebook, overrides)
    return overrides


@dataclass(frozen=True)
class RunConfig:
    """The resolved parameters of one notebook run, with the places its outputs go."""

    notebook: str
    params: Mapping[str, Any]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.params[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def results_dir(self) -> Path:
        return paths.RESULTS_DIR / self.profile / self.notebook / self.run

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"

    def as_table(self):
        """The resolved parameters as a one-column table, shown at the top of every run."""
        import pandas as pd

        return pd.DataFrame({"value": [json.dumps(v) for v in self.params.values()]},
                            index=pd.Index(list(self.params), name="parameter"))


def resolve(notebook: str, namespace: Mapping[str, Any]) -> RunConfig:
    """Collect a notebook's parameters from its namespace (``globals()``) and validate them."""
    names = notebook_parameters(notebook)
    overrides = {k: namespace[k] for k in names if k in namespace}
    return RunConfig(notebook, MappingProxyType(validate(notebook, overrides)))


def digest(obj: Any) -> str:
    """Stable short hash of a JSON-able object (used for cache keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
