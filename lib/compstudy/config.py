"""Run configuration: the notebook's parameters cell holds the defaults, a YAML the overrides.

Each notebook has one typed config (a :class:`NotebookConfig` subclass in
``compstudy.studies``): a field per parameter, with its type and value checks. Papermill only
warns about unknown parameters, so the checks are ours: every key of a YAML must be a
parameter of its notebook and have its type, and the values must make sense. The same
checks run in the runner before a kernel starts and in the notebook's first cell.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, make_dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType, UnionType
from typing import Any, ClassVar, Literal, Self, Union, get_args, get_origin, get_type_hints

import yaml

from . import paths
from .cache import digest  # noqa: F401  (config.digest: the one stable hash of the study)
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


# ----------------------------------------------------------------------------- typed configs


def _type_name(hint: Any) -> str:
    if hint is Any:
        return "Any"
    if hint is type(None):
        return "None"
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(hint, "__name__", str(hint))


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` (a YAML or literal value) has the annotated type ``hint``.

    Understands Any, None, bool, int, float (an int is accepted), str, list[X], dict[K, V],
    unions (``X | None``) and Literal. bool is never taken for int, nor int for bool.
    """
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value if args)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(
            conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items()))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    raise TypeError(f"config annotations support Any, None, bool, int, float, str, list, dict, "
                    f"unions and Literal; got {hint!r}")


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _check_names(key: str, value: Any) -> None:
    """Value checks shared by every notebook, chosen by the parameter's name."""
    for kind in ("dataset", "model"):
        if key in (kind, f"{kind}s") or key.endswith((f"_{kind}", f"_{kind}s")):
            # imported only here: both are heavy, and a notebook without such keys needs neither
            if kind == "dataset":
                from .data import check_dataset_name as check
            else:
                from .models import check_model_name as check
            for name in value if isinstance(value, (list, dict)) else [value]:
                check(name)


@dataclass(frozen=True)
class NotebookConfig:
    """The typed, validated parameters of one notebook run.

    A notebook's subclass (``compstudy.studies.<name>.Config``, a frozen dataclass) declares
    one typed field per parameter of the notebook's parameters cell, without defaults (the
    cell holds them), sets ``NOTEBOOK`` and ``UPSTREAM`` (the runs it reads, as
    ``"<notebook>/<run>"`` of the same profile), and overrides :meth:`validate` for value
    checks. Construction checks the types, the profile and dataset/model names, then calls
    :meth:`validate`; every failure is a one-line ConfigError.

    A notebook that reads result files of other runs rather than their code (the summary
    reads every ``claims.csv``) lists them in ``INPUTS``: glob patterns relative to
    ``results/<profile>/``. The contents of the files they match enter the run key, so the
    run is redone whenever one of them changes.
    """

    NOTEBOOK: ClassVar[str] = ""
    UPSTREAM: ClassVar[tuple[str, ...]] = ()
    INPUTS: ClassVar[tuple[str, ...]] = ()

    profile: str
    run: str

    def __post_init__(self) -> None:
        for key, hint in _type_hints(type(self)).items():
            value = getattr(self, key)
            if not conforms(value, hint):
                raise ConfigError(f"config key {key!r} of notebook {self.NOTEBOOK} must be "
                                  f"{_type_name(hint)}, got {value!r}")
        check_profile(self.profile)
        for key in _type_hints(type(self)):
            _check_names(key, getattr(self, key))
        self.validate()

    def validate(self) -> None:
        """Value checks of the notebook (ranges, choices): raise ConfigError. Override."""

    # -- helpers for validate()

    def check_choices(self, key: str, choices: Iterable[Any]) -> None:
        """Parameter ``key`` (a value or a list of values) holds only ``choices``."""
        choices = tuple(choices)
        value = getattr(self, key)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item not in choices:
                raise unknown_choice(f"{key} value", item, choices)

    def check_range(self, key: str, low: float | None = None, high: float | None = None,
                    low_open: bool = False, high_open: bool = False) -> None:
        """Parameter ``key`` (a number or a list of numbers) lies within [low, high]."""
        value = getattr(self, key)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if (low is not None and (item < low or (low_open and item == low))) or \
                    (high is not None and (item > high or (high_open and item == high))):
                interval = (f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
                            f"{'inf' if high is None else high}{')' if high_open else ']'}")
                raise ConfigError(f"config key {key!r} of notebook {self.NOTEBOOK} must lie in "
                                  f"{interval}, got {item!r}")

    # -- construction

    @classmethod
    def _check_schema(cls, defaults: Mapping[str, Any]) -> None:
        declared = list(_type_hints(cls))
        missing = [k for k in defaults if k not in declared]
        extra = [k for k in declared if k not in defaults]
        if missing or extra:
            raise ConfigError(
                f"{cls.__module__}.{cls.__qualname__} does not match the parameters cell of "
                f"{cls.NOTEBOOK}: " + "; ".join(
                    f"{what} {', '.join(keys)}" for what, keys in
                    (("no field for", missing), ("no parameter for field", extra)) if keys))

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> Self:
        """The notebook's defaults with ``overrides`` merged over them, validated."""
        defaults = notebook_parameters(cls.NOTEBOOK)
        cls._check_schema(defaults)
        for key in overrides:
            if key not in defaults:
                raise unknown_choice(f"config key for notebook {cls.NOTEBOOK}:", key, sorted(defaults))
        return cls(**copy.deepcopy({**defaults, **overrides}))

    @classmethod
    def resolve(cls, namespace: Mapping[str, Any]) -> Self:
        """The config of the running notebook, from its namespace (``globals()``)."""
        return cls.from_overrides({k: namespace[k] for k in notebook_parameters(cls.NOTEBOOK)
                                   if k in namespace})

    # -- what a run needs

    @property
    def notebook(self) -> str:
        return self.NOTEBOOK

    @property
    def params(self) -> Mapping[str, Any]:
        """The parameters by name, in the order of the parameters cell."""
        return MappingProxyType({k: getattr(self, k) for k in notebook_parameters(self.NOTEBOOK)})

    @property
    def results_dir(self) -> Path:
        return paths.RESULTS_DIR / self.profile / self.NOTEBOOK / self.run

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"

    def as_table(self):
        """The resolved parameters as a one-column table, shown at the top of every run: a
        styled frame whose values, JSON text, the book's CSS sets left-aligned
        (``compstudy-text``) where pandas would right-align them as numbers."""
        import pandas as pd

        params = self.params
        frame = pd.DataFrame({"value": [json.dumps(v) for v in params.values()]},
                             index=pd.Index(list(params), name="parameter"))
        return frame.style.set_uuid("parameters").set_table_attributes('class="dataframe compstudy-text"')


def study_module(notebook: str) -> str:
    """The module holding a notebook's typed config: ``04_dcvit`` -> ``compstudy.studies.dcvit``."""
    return f"{__package__}.studies.{notebook.partition('_')[2]}"


_INFERRED = {bool: bool, int: int, float: float, str: str, list: list, dict: dict}


@cache
def _inferred_config(notebook: str, signature: tuple[tuple[str, type], ...]) -> type[NotebookConfig]:
    return make_dataclass(f"InferredConfig_{notebook}",
                          [(k, _INFERRED.get(t, Any)) for k, t in signature if k not in CONTEXT_KEYS],
                          bases=(NotebookConfig,), frozen=True, namespace={"NOTEBOOK": notebook})


def config_class(notebook: str) -> type[NotebookConfig]:
    """The typed config of ``notebook``, found by name without executing the notebook.

    A notebook without a study module yet (a new chapter, a test's toy notebook) gets a
    config whose types are those of its defaults and which has no upstream runs.
    """
    notebook_path(notebook)
    name = study_module(notebook)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        defaults = notebook_parameters(notebook)
        return _inferred_config(notebook, tuple((k, type(v)) for k, v in defaults.items()))
    cls = module.Config
    if cls.NOTEBOOK != notebook:
        raise ConfigError(f"{name}.Config is the config of {cls.NOTEBOOK!r}, not of {notebook!r}")
    return cls


def resolve(notebook: str, namespace: Mapping[str, Any]) -> NotebookConfig:
    """``config_class(notebook).resolve(namespace)``."""
    return config_class(notebook).resolve(namespace)


def validate(notebook: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` over the notebook defaults and validate: the resolved parameters."""
    return dict(config_class(notebook).from_overrides(overrides).params)


def config_path(profile: str, notebook: str, run: str) -> Path:
    return paths.CONFIGS_DIR / profile / notebook / f"{run}.yaml"


def run_names(profile: str, notebook: str) -> tuple[str, ...]:
    """Runs of a notebook in a profile: ``main`` first, then the ablations by name."""
    folder = paths.CONFIGS_DIR / check_profile(profile) / notebook
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    return tuple(sorted(names, key=lambda n: n != "main"))


def read_overrides(profile: str, notebook: str, run: str) -> dict[str, Any]:
    """The YAML overrides of one run plus its context keys (not yet validated)."""
    check_profile(profile)
    notebook_path(notebook)
    path = config_path(profile, notebook, run)
    if not path.exists():
        raise unknown_choice(f"run of {notebook} in profile {profile}:", run,
                             run_names(profile, notebook) or ["(none)"])
    shown = paths.display_path(path)
    try:
        overrides = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = error.problem or error.context or "invalid YAML"
        if error.context and error.problem:
            start = error.context_mark
            since = f" from line {start.line + 1}" if start and start.line != mark.line else ""
            what += f" ({error.context}{since})"
        raise ConfigError(f"{shown}{where}: YAML syntax error: {' '.join(what.split())}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{shown}: YAML error: {' '.join(str(error).split())}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"{shown} must hold a mapping of parameter: value")
    for key in CONTEXT_KEYS:
        if key in overrides:
            raise ConfigError(f"{shown}: {key!r} is set by the runner, not the YAML")
    overrides.update(profile=profile, run=run)
    return overrides


def load_config(profile: str, notebook: str, run: str) -> NotebookConfig:
    """The typed, validated config of one run: its YAML over its notebook's defaults."""
    return config_class(notebook).from_overrides(read_overrides(profile, notebook, run))


def load_overrides(profile: str, notebook: str, run: str) -> dict[str, Any]:
    """The YAML overrides of one run plus its context keys, validated."""
    overrides = read_overrides(profile, notebook, run)
    config_class(notebook).from_overrides(overrides)
    return overrides
